package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/lockfile"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/wal"
)

const segSize = wal.DefaultSegmentSize

// tableChecksums fingerprints every pgbench table's content.
const tableChecksums = `select string_agg(t || '=' || s, ',' order by t) from (
  select 'accounts' t, md5(string_agg(a::text, ';' order by aid)) s from pgbench_accounts a
  union all select 'branches', md5(string_agg(b::text, ';' order by bid)) from pgbench_branches b
  union all select 'tellers', md5(string_agg(x::text, ';' order by tid)) from pgbench_tellers x
  union all select 'history', md5(string_agg(h::text, ';' order by tid, bid, aid, mtime, delta)) from pgbench_history h
) q`

// TestArchiveEndToEnd: a real cluster under pgbench load archives through
// walgo; every segment from the first to the last is stored with no gap and
// fetches back byte-identical; and Postgres itself replays the archive on
// top of a base backup (restore_command = walgo wal-fetch, with prefetch)
// to exactly the source's final data.
func TestArchiveEndToEnd(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			pgtest.Require(t)
			r := rk.make(t)
			ref := pgtest.OwnedDir(t, "ref")
			base := pgtest.OwnedDir(t, "base")
			// The reference copy is taken before walgo sees the file.
			src := pgtest.New(t, pgtest.Options{
				InitdbArgs: []string{"-k"},
				Env:        r.env,
				Conf: []string{
					"archive_mode = on",
					fmt.Sprintf("archive_command = 'cp %%p %s/%%f && %s wal-push %%p'", ref, walgoBin),
				},
			})
			src.Start(t)
			src.PgBench(t, "-i", "-s", "5", "-q")

			ctx := context.Background()
			bb := src.Command(ctx, "pg_basebackup", "-D", filepath.Join(base, "data"), "-X", "none", "-c", "fast", "-d", src.DSN())
			if out, err := bb.CombinedOutput(); err != nil {
				t.Fatalf("pg_basebackup: %v\n%s", err, out)
			}

			first := src.SQL(t, "select pg_walfile_name(pg_current_wal_lsn())")
			firstSeg, _ := wal.ParseSegment(first)
			for i := 0; ; i++ {
				cur, _ := wal.ParseSegment(src.SQL(t, "select pg_walfile_name(pg_current_wal_lsn())"))
				if cur.No(segSize)-firstSeg.No(segSize) >= 42 {
					break
				}
				src.PgBench(t, "-n", "-T", "1", "-c", "2")
				if i%2 == 0 {
					src.SQL(t, "select pg_switch_wal()")
				}
			}
			want := src.SQL(t, tableChecksums)
			last := src.SQL(t, "select pg_walfile_name(pg_switch_wal())")
			pgtest.WaitFor(t, 3*time.Minute, func() bool {
				return src.SQL(t, "select coalesce(last_archived_wal, '') >= '"+last+"' from pg_stat_archiver") == "t"
			}, "the last segment "+last+" archived")
			if failed := src.SQL(t, "select failed_count from pg_stat_archiver"); failed != "0" {
				t.Errorf("pg_stat_archiver.failed_count = %s, want 0", failed)
			}

			// Every segment Postgres handed over, first to last, no gap.
			refSegs := segmentsIn(t, ref)
			if len(refSegs) < 40 {
				t.Fatalf("only %d segments archived, want at least 40", len(refSegs))
			}
			for i := 1; i < len(refSegs); i++ {
				prev, _ := wal.ParseSegment(refSegs[i-1])
				if prev.Next(segSize).Name() != refSegs[i] {
					t.Fatalf("Postgres archived %s after %s: not contiguous", refSegs[i], refSegs[i-1])
				}
			}
			var tls []catalog.Timeline
			out := mustWalgo(t, r.env, "wal-list", "--json")
			if err := json.Unmarshal([]byte(out.stdout), &tls); err != nil {
				t.Fatalf("wal-list --json: %v\n%s", err, out.stdout)
			}
			if len(tls) != 1 || tls[0].ID != 1 || tls[0].Count != len(refSegs) || len(tls[0].Gaps) != 0 ||
				tls[0].First != refSegs[0] || tls[0].Last != refSegs[len(refSegs)-1] {
				t.Fatalf("wal-list: %+v; Postgres archived %d segments %s..%s", tls, len(refSegs), refSegs[0], refSegs[len(refSegs)-1])
			}
			table := mustWalgo(t, r.env, "wal-list")
			if !strings.Contains(table.stdout, refSegs[0]) || !strings.Contains(table.stdout, refSegs[len(refSegs)-1]) {
				t.Errorf("wal-list table does not show first and last:\n%s", table.stdout)
			}

			// Each one fetches back byte-identical.
			fetchesAsCopied(t, r.env, ref, append(refSegs, filesOfKind(t, ref, wal.KindBackup)...))

			// Postgres replays the archive through walgo onto the base backup.
			restored := pgtest.OpenExisting(t, filepath.Join(base, "data"), pgtest.Options{
				Env: r.env,
				Conf: []string{
					"archive_mode = off",
					fmt.Sprintf("restore_command = '%s wal-fetch %%f %%p'", walgoBin),
				},
			})
			if err := os.WriteFile(filepath.Join(restored.DataDir(), "recovery.signal"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			pgtest.Chown(t, restored.DataDir())
			restored.Start(t)
			pgtest.WaitFor(t, 5*time.Minute, func() bool {
				out, err := restored.Exec(ctx, "select pg_is_in_recovery()")
				return err == nil && out == "f"
			}, "recovery to finish and the restored cluster to promote")
			if got := restored.SQL(t, tableChecksums); got != want {
				t.Fatalf("restored data differs from the source:\n got %s\nwant %s", got, want)
			}
			logb, _ := os.ReadFile(restored.LogFile())
			if !strings.Contains(string(logb), `"prefetched": true`) {
				t.Errorf("recovery never used a prefetched segment; server log:\n%s", lastLines(string(logb), 40))
			}
		})
	}
}

// filesOfKind lists the WAL files of one kind in dir, sorted.
func filesOfKind(t *testing.T, dir string, kind wal.Kind) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if wal.Classify(e.Name()) == kind {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func segmentsIn(t *testing.T, dir string) []string { return filesOfKind(t, dir, wal.KindSegment) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestBacklogDrain: a backlog of .ready segments (archive_command left
// empty while the cluster writes WAL) is drained by Postgres' archiver
// through walgo. wal-push starts its background pusher, most calls find
// their segment stored by it, and every segment is stored once, fetches
// back identical to what Postgres had, with no failed call; the pusher
// exits and leaves no claim behind.
func TestBacklogDrain(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			pgtest.Require(t)
			r := rk.make(t)
			ref := pgtest.OwnedDir(t, "ref")
			env := withEnv(r.env, "WALGO_LOG_LEVEL=info", "WALGO_UPLOAD_CONCURRENCY=3")
			src := pgtest.New(t, pgtest.Options{
				Env:  env,
				Conf: []string{"archive_mode = on", "archive_command = ''", "max_wal_size = 1GB"},
			})
			src.Start(t)
			src.PgBench(t, "-i", "-s", "2", "-q")
			for range 18 {
				src.PgBench(t, "-n", "-t", "200", "-c", "2")
				src.SQL(t, "select pg_switch_wal()")
			}
			last := src.SQL(t, "select pg_walfile_name(pg_switch_wal())")
			walDir := filepath.Join(src.DataDir(), "pg_wal")
			var ready []string
			ents, err := os.ReadDir(filepath.Join(walDir, "archive_status"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if n, ok := strings.CutSuffix(e.Name(), ".ready"); ok && wal.Classify(n) == wal.KindSegment {
					ready = append(ready, n)
					b, err := os.ReadFile(filepath.Join(walDir, n))
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(ref, n), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			if len(ready) < 15 {
				t.Fatalf("only %d segments wait as .ready, want a backlog of at least 15", len(ready))
			}

			src.SQL(t, fmt.Sprintf("alter system set archive_command = '%s wal-push %%p'", walgoBin))
			src.SQL(t, "select pg_reload_conf()")
			pgtest.WaitFor(t, 3*time.Minute, func() bool {
				return src.SQL(t, "select coalesce(last_archived_wal, '') >= '"+last+"' from pg_stat_archiver") == "t"
			}, "the backlog archived up to "+last)
			if failed := src.SQL(t, "select failed_count from pg_stat_archiver"); failed != "0" {
				t.Errorf("pg_stat_archiver.failed_count = %s, want 0", failed)
			}
			// The pusher exits once idle; nothing of it stays behind.
			pgtest.WaitFor(t, time.Minute, func() bool { return !lockfile.Held(filepath.Join(walDir, "walgo", "ahead.lock")) },
				"the background pusher to exit")
			if left, _ := os.ReadDir(filepath.Join(walDir, "walgo", "pushing")); len(left) != 0 {
				t.Errorf("%d claims left in pg_wal/walgo/pushing", len(left))
			}

			logb, _ := os.ReadFile(src.LogFile())
			log := string(logb)
			ahead, marked := strings.Count(log, "\tpushed ahead\t"), strings.Count(log, "\talready pushed ahead\t")
			t.Logf("%d segments in the backlog: %d pushed by the background pusher, %d calls answered by its markers", len(ready), ahead, marked)
			if ahead < len(ready)/2 || marked < len(ready)/2 {
				t.Errorf("background pusher stored %d and markers answered %d of %d backlog segments; want most of them\n%s",
					ahead, marked, len(ready), lastLines(log, 30))
			}

			var tls []catalog.Timeline
			out := mustWalgo(t, r.env, "wal-list", "--json")
			if err := json.Unmarshal([]byte(out.stdout), &tls); err != nil {
				t.Fatalf("wal-list --json: %v\n%s", err, out.stdout)
			}
			if len(tls) != 1 || len(tls[0].Gaps) != 0 || tls[0].Last < ready[len(ready)-1] {
				t.Fatalf("wal-list after the drain: %+v", tls)
			}
			fetchesAsCopied(t, r.env, ref, ready)
		})
	}
}

// fetchesAsCopied fetches each named WAL file from the repository (no
// prefetch) and fails unless it equals the copy of it in ref, taken before
// walgo saw the file.
func fetchesAsCopied(t *testing.T, env []string, ref string, names []string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	noPrefetch := withEnv(env, "WALGO_PREFETCH=0")
	for _, n := range names {
		mustWalgo(t, noPrefetch, "wal-fetch", n, dest)
		if !sameAsCopied(t, dest, ref, n) {
			t.Fatalf("%s: fetched copy differs from what Postgres archived", n)
		}
	}
}

// sameAsCopied reports whether the file at got equals WAL file n's copy in
// ref.
func sameAsCopied(t *testing.T, got, ref, n string) bool {
	t.Helper()
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(filepath.Join(ref, n))
	return bytes.Equal(b, orig)
}
