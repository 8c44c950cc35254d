package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/walgo/walgo/internal/torture"
)

// ciFeatures are the workload features TestTorture runs in CI: every one.
var ciFeatures = torture.AllFeatures()

// ciSeeds are the seeds TestTorture runs in CI.
var ciSeeds = []uint64{1, 9, 6} // 9 runs without data checksums, 6 on S3

// TestTorture is the randomized restore-equivalence harness (package
// internal/torture): for each seed a workload with full and delta
// backups, forks and points, then every point restored with walgo and
// compared with the source. WALGO_TORTURE_SEEDS ("7", "1,5,9" or "1-50"),
// WALGO_TORTURE_SCALE, WALGO_TORTURE_FEATURES ("all" or a list),
// WALGO_TORTURE_COVERAGE ("sample" or "exhaustive") and
// WALGO_TORTURE_PARALLEL (restores at once) change what it runs;
// bench/torture.sh runs many seeds that way.
func TestTorture(t *testing.T) {
	seeds, err := parseSeeds(os.Getenv("WALGO_TORTURE_SEEDS"))
	if err != nil {
		t.Fatal(err)
	}
	if seeds == nil {
		seeds = ciSeeds
	}
	scale := 1
	if s := os.Getenv("WALGO_TORTURE_SCALE"); s != "" {
		if scale, err = strconv.Atoi(s); err != nil || scale < 1 {
			t.Fatalf("WALGO_TORTURE_SCALE=%q: want a positive number", s)
		}
	}
	features := ciFeatures
	if s, ok := os.LookupEnv("WALGO_TORTURE_FEATURES"); ok {
		if features, err = torture.ParseFeatures(s); err != nil {
			t.Fatal(err)
		}
	}
	parallel := 0
	if s := os.Getenv("WALGO_TORTURE_PARALLEL"); s != "" {
		if parallel, err = strconv.Atoi(s); err != nil || parallel < 1 {
			t.Fatalf("WALGO_TORTURE_PARALLEL=%q: want a positive number", s)
		}
	}
	coverage := torture.Sample
	switch s := os.Getenv("WALGO_TORTURE_COVERAGE"); s {
	case "", "sample":
	case "exhaustive":
		coverage = torture.Exhaustive
	default:
		t.Fatalf("WALGO_TORTURE_COVERAGE=%q: want sample or exhaustive", s)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed_%d", seed), func(t *testing.T) {
			repro := fmt.Sprintf("WALGO_TORTURE_SEEDS=%d WALGO_TORTURE_SCALE=%d WALGO_TORTURE_FEATURES=%s WALGO_TORTURE_COVERAGE=%s go test ./integration -run '^TestTorture$' -count=1 -v -timeout 60m",
				seed, scale, features, map[torture.Coverage]string{torture.Sample: "sample", torture.Exhaustive: "exhaustive"}[coverage])
			rep := torture.Run(t, torture.Config{Seed: seed, Scale: scale, Features: features, Walgo: walgoBin,
				Repro: repro, Coverage: coverage, Parallel: parallel})
			// bench/torture.sh reads this line.
			t.Log(rep.Summary())
			if rep.Failed() {
				t.Fatal(rep.String())
			}
		})
	}
}

// parseSeeds reads "7", "1,5,9", "1-50" or a mix; "" gives nil.
func parseSeeds(s string) ([]uint64, error) {
	var seeds []uint64
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		b := a
		if err == nil && isRange {
			b, err = strconv.ParseUint(hi, 10, 64)
		}
		if err != nil || b < a {
			return nil, fmt.Errorf("WALGO_TORTURE_SEEDS: %q: want N, N-M or a comma separated list", part)
		}
		for x := a; x <= b; x++ {
			seeds = append(seeds, x)
		}
	}
	return seeds, nil
}

// sanityFault breaks chosen restore cases of sanityPlan.
type sanityFault map[string]torture.Fault

func (f sanityFault) Break(ctx context.Context, s *torture.FaultSite) (bool, error) {
	if x, ok := f[s.Case]; ok {
		return x.Break(ctx, s)
	}
	return false, nil
}

// sanityPlan: a full backup, point 1, rows added to the same table's
// pages, a delta backup, point 2. Nothing touches the table after the
// delta, so WAL replay cannot repair a page the restore got wrong.
func sanityPlan() *torture.Plan {
	sql := func(what, q string) torture.Step { return torture.Step{Kind: torture.KindSQL, What: what, SQL: q} }
	return &torture.Plan{Seed: 0, Scale: 1, Checksums: true, Features: torture.Features{}, Steps: []torture.Step{
		sql("create table", "create table t1 (id bigint primary key, k int not null, v text not null, s bigint not null default nextval('torture_seq'), big text) with (autovacuum_enabled = off)"),
		sql("insert", "insert into t1 (id, k, v) select g, g % 1000, md5(g::text) from generate_series(1, 2000) g"),
		sql("checkpoint", "checkpoint"),
		{Kind: torture.KindBackup, Backup: 1},
		{Kind: torture.KindPoint, Point: 1, Name: "sanity_p1"},
		sql("insert", "insert into t1 (id, k, v) select g, g % 1000, md5(g::text) from generate_series(2001, 2600) g"),
		sql("checkpoint", "checkpoint"),
		{Kind: torture.KindBackup, Backup: 2, Delta: true},
		{Kind: torture.KindPoint, Point: 2, Name: "sanity_p2"},
	}}
}

// TestTortureNoticesBrokenRestores is the harness's own check: restores
// broken on purpose (a delta page left out, a WAL segment withheld, both
// loud and silent) must each make it report a failure, and the restores
// left alone must pass.
func TestTortureNoticesBrokenRestores(t *testing.T) {
	broken := map[string]string{
		"p1-time":     "a WAL segment withheld: recovery cannot reach the target",
		"primary-end": "a WAL segment withheld: recovery stops early and promotes, silently",
		"p2-time":     "a delta page left out: silently wrong rows",
		"p2-lsn":      "a delta page left out",
		"p2-xid":      "a delta page left out",
	}
	fault := sanityFault{"p1-time": torture.WithholdWAL{}, "primary-end": torture.WithholdWAL{}}
	for _, c := range []string{"p2-time", "p2-lsn", "p2-xid"} {
		fault[c] = torture.SkipDeltaPage{}
	}
	rep := torture.Run(t, torture.Config{Plan: sanityPlan(), Walgo: walgoBin, Fault: fault,
		Repro: "go test ./integration -run '^TestTortureNoticesBrokenRestores$' -count=1 -v"})
	t.Log(rep.Summary())
	failed := map[string]torture.Failure{}
	for _, f := range rep.Failures {
		id, _, _ := strings.Cut(strings.TrimPrefix(f.Where, "restore "), ":")
		if !f.Faulted {
			t.Errorf("a restore that was not broken on purpose failed:\n%s", rep)
		}
		failed[id] = f
	}
	for id, why := range broken {
		f, ok := failed[id]
		if !ok {
			t.Errorf("restore %s was broken on purpose (%s) but the harness did not notice", id, why)
			continue
		}
		t.Logf("restore %s (%s): the harness reported: %s", id, why, f.What)
	}
	if rep.Faulted != len(broken) {
		t.Errorf("%d restores broken on purpose, want %d", rep.Faulted, len(broken))
	}
	if rep.Restores != len(broken)+2 { // p1-lsn and p1-xid are left alone
		t.Errorf("%d restores, want %d:\n%s", rep.Restores, len(broken)+2, rep)
	}
}
