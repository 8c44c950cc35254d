package torture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
)

// restoreCase is one restore the harness makes and checks.
type restoreCase struct {
	id     string
	point  *point  // the moment restored to; nil for TargetImmediate
	backup *backup // the backup named on the command line; nil lets walgo choose
	kind   TargetKind
	want   *Fingerprint
	// timeline names the history the restore is in (lineageFlag), as a
	// user restoring a point where forks share the repository names it:
	// the point's timeline (for an end-of-backup restore, the backup's).
	timeline uint32
	// refuse: the target is beyond the archive; backup-fetch must fail
	// and leave nothing behind.
	refuse bool
}

func (rc *restoreCase) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "restore %s: ", rc.id)
	if rc.refuse {
		fmt.Fprintf(&b, "%s beyond the end of %s's archive (timeline %d), walgo choosing the backup: must be refused", rc.kind, ClusterName(rc.point.cluster), rc.point.tl)
		return b.String()
	}
	if rc.point != nil {
		fmt.Fprintf(&b, "point %d (%s, step %d, timeline %d) by %s", rc.point.n, ClusterName(rc.point.cluster), rc.point.step, rc.point.tl, rc.kind)
	} else {
		fmt.Fprintf(&b, "%s of backup %d", rc.kind, rc.backup.Number)
	}
	if rc.backup != nil {
		fmt.Fprintf(&b, " from backup %d (%s)", rc.backup.Number, rc.backup.Name)
	} else {
		b.WriteString(", walgo choosing the backup")
	}
	return b.String()
}

// lineageFlag names the history a restore follows.
const lineageFlag = "--lineage"

// fetchArgs is the backup-fetch command line for a case, restoring into
// dir with the tablespace mapped to tsDir.
func (r *runner) fetchArgs(rc *restoreCase, dir, tsDir string) []string {
	args := []string{"backup-fetch", dir}
	if rc.backup != nil {
		args = append(args, rc.backup.Name)
	}
	p := rc.point
	switch rc.kind {
	case TargetTime:
		args = append(args, "--target-time", p.time.UTC().Format(time.RFC3339Nano))
	case TargetLSN:
		args = append(args, "--target-lsn", p.lsn.String())
	case TargetXID:
		args = append(args, "--target-xid", strconv.FormatUint(p.xid, 10))
	case TargetName:
		args = append(args, "--target-name", p.name)
	case TargetImmediate:
		args = append(args, "--target-immediate")
	}
	if rc.timeline != 0 {
		args = append(args, lineageFlag, strconv.FormatUint(uint64(rc.timeline), 10))
	}
	if r.plan.Features[Tablespace] {
		args = append(args, "--tablespace", TablespaceName+"="+tsDir)
	}
	return args
}

// cases lists the restores of a run (see Coverage).
func (r *runner) cases() []*restoreCase {
	rng := rand.New(rand.NewPCG(r.plan.Seed, 0x72657374))
	f := r.plan.Features
	kinds := []TargetKind{TargetTime, TargetLSN, TargetXID}
	if f[NameTargets] {
		kinds = append(kinds, TargetName)
	}
	covers := func(b *backup, p *point) bool { return r.inHistory(b.Cluster, b.Step, p.cluster, p.step) }
	var cs []*restoreCase
	for _, p := range r.points {
		want := p.fp.Restored()
		for _, k := range kinds {
			cs = append(cs, &restoreCase{id: fmt.Sprintf("p%d-%s", p.n, k), point: p, kind: k, want: want, timeline: p.tl})
		}
		if f[NamedBackups] && r.cfg.Coverage == Exhaustive {
			for _, b := range r.backups {
				if covers(b, p) {
					for _, k := range kinds {
						cs = append(cs, r.namedCase(p, b, k))
					}
				}
			}
		}
	}
	for _, b := range r.backups {
		if f[Immediate] && b.fp != nil {
			cs = append(cs, &restoreCase{id: fmt.Sprintf("b%d-immediate", b.Number), backup: b, kind: TargetImmediate, want: b.fp.Restored(), timeline: b.Timeline})
		}
		if f[NamedBackups] && r.cfg.Coverage == Sample {
			var ps []*point
			for _, p := range r.points {
				if covers(b, p) {
					ps = append(ps, p)
				}
			}
			if len(ps) > 0 {
				cs = append(cs, r.namedCase(ps[rng.IntN(len(ps))], b, kinds[rng.IntN(len(kinds))]))
			}
		}
	}
	// Targets the archive does not reach, walgo choosing the backup: an
	// hour after its end, 64 MiB of WAL past it, a restore point never made.
	if f[BeyondArchive] {
		for _, cl := range r.clusters {
			if cl.end == nil || cl.endLSN == 0 {
				continue
			}
			tl := r.timelineOf(cl.idx)
			beyond := &point{n: 0, cluster: cl.idx, tl: tl, time: cl.endTime.Add(time.Hour),
				lsn: cl.endLSN + 64<<20, name: fmt.Sprintf("torture_s%d_never_made", r.plan.Seed)}
			for _, k := range []TargetKind{TargetTime, TargetLSN, TargetName} {
				cs = append(cs, &restoreCase{id: fmt.Sprintf("%s-beyond-%s", ClusterName(cl.idx), k), point: beyond, kind: k, timeline: tl, refuse: true})
			}
		}
	}
	// The end of each cluster's archive: its state at the end of the run,
	// on the timeline of its last point.
	for _, cl := range r.clusters {
		var last *point
		for _, p := range r.points {
			if p.cluster == cl.idx {
				last = p
			}
		}
		if last != nil && cl.end != nil {
			cs = append(cs, &restoreCase{id: ClusterName(cl.idx) + "-end", point: last, kind: TargetEnd, want: cl.end.Restored(), timeline: last.tl})
		}
	}
	return cs
}

// namedCase restores point p from backup b, in p's history.
func (r *runner) namedCase(p *point, b *backup, k TargetKind) *restoreCase {
	return &restoreCase{id: fmt.Sprintf("p%d-%s-b%d", p.n, k, b.Number), point: p, backup: b, kind: k, want: p.fp.Restored(), timeline: p.tl}
}

// restoreAll runs the cases, Config.Parallel at a time, each as a
// subtest.
func (r *runner) restoreAll(cs []*restoreCase) {
	ch := make(chan *restoreCase)
	var wg sync.WaitGroup
	for range r.cfg.Parallel {
		wg.Go(func() {
			for rc := range ch {
				r.t.Run(rc.id, func(t *testing.T) { r.restore(t, rc) })
			}
		})
	}
	for _, rc := range cs {
		ch <- rc
	}
	close(ch)
	wg.Wait()
}

func (r *runner) backupByName(name string) *backup {
	for _, b := range r.backups {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// restore runs one case: backup-fetch, the fault if any, Postgres started
// on the result until it has reached the target and promoted, then the
// fingerprint compared with the source's.
func (r *runner) restore(t *testing.T, rc *restoreCase) {
	ctx := context.Background()
	where := rc.describe()
	t0 := time.Now()
	var phases []string
	phase := func(what string) {
		phases = append(phases, fmt.Sprintf("%s %s", what, time.Since(t0).Round(time.Millisecond)))
	}
	defer func() { phase("done"); t.Logf("%s: %s", where, strings.Join(phases, ", ")) }()
	base := pgtest.OwnedMemDir(t, "torture-"+rc.id)
	dir, ts := filepath.Join(base, "data"), filepath.Join(base, "ts")
	// Runs once the server has stopped (cleanups run last first), before
	// the folder itself goes.
	t.Cleanup(func() { removeAll(t, dir) })
	args := r.fetchArgs(rc, dir, ts)
	res, err := r.walgo(ctx, nil, args...)
	r.mu.Lock()
	if rc.refuse {
		r.rep.Refusals++
	} else {
		r.rep.Restores++
		r.rep.Targets[rc.kind]++
	}
	r.mu.Unlock()
	if err != nil {
		r.fail(where, "backup-fetch could not run", err.Error(), false)
		return
	}
	if rc.refuse {
		left, _ := os.ReadDir(dir)
		switch {
		case res.code == 0:
			r.fail(where, "backup-fetch restored a target the archive does not reach", res.String(), false)
		case len(left) > 0:
			r.fail(where, fmt.Sprintf("backup-fetch refused a target beyond the archive but left %d entries in %s", len(left), dir), res.String(), false)
		}
		return
	}
	if res.code != 0 {
		r.fail(where, "backup-fetch failed", res.String(), false)
		return
	}
	phase("fetched")
	faulted := false
	if r.cfg.Fault != nil {
		site := &FaultSite{Case: rc.id, Dir: dir, Kind: rc.kind, Scratch: pgtest.OwnedMemDir(t, "torture-fault"), r: r}
		if rc.point != nil {
			site.LSN, site.Timeline = rc.point.lsn, rc.point.tl
		}
		site.Restored = restoredBackup(res.stdout)
		if b := r.backupByName(site.Restored); b != nil {
			site.Parent, site.Files = b.Parent, b.files
		}
		if faulted, err = r.cfg.Fault.Break(ctx, site); err != nil {
			r.fail(where, "the fault could not be applied", err.Error(), true)
			return
		}
		if faulted {
			r.mu.Lock()
			r.rep.Faulted++
			r.mu.Unlock()
			where += " [broken on purpose]"
		}
	}
	pgtest.Chown(t, base)
	pg := pgtest.OpenExisting(t, dir, pgtest.Options{Env: r.repoEnv, Conf: []string{"archive_mode = off"}})
	if err := pg.TryStart(); err != nil {
		r.fail(where, "Postgres did not start on the restore", err.Error()+"\n"+res.String(), faulted)
		return
	}
	if err := waitPromoted(ctx, pg); err != nil {
		r.fail(where, "recovery did not reach the target", err.Error()+"\n"+res.String(), faulted)
		return
	}
	phase("promoted")
	conn, err := connect(ctx, pg)
	if err != nil {
		r.fail(where, "cannot connect to the restore", err.Error(), faulted)
		return
	}
	defer conn.Close(ctx)
	got, err := takeFingerprint(ctx, conn, opener(pg), amcheck(pg))
	if err != nil {
		r.fail(where, "cannot read the restore", err.Error(), faulted)
		return
	}
	phase("compared")
	if d := Diff(rc.want, got); len(d) > 0 {
		r.fail(where, "the restore differs from the source", strings.Join(d, "\n")+"\n"+res.String()+
			"\nserver log:\n"+tailFile(pg.LogFile(), 25), faulted)
		return
	}
	// A transaction restored as prepared must still commit.
	for _, p := range got.Prepared {
		gid, _, _ := strings.Cut(p, " ")
		if _, err := conn.Exec(ctx, "commit prepared '"+gid+"'"); err != nil {
			r.fail(where, "a restored prepared transaction does not commit", fmt.Sprintf("%s: %v", gid, err), faulted)
			return
		}
	}
	if r.plan.Checksums {
		conn.Close(ctx)
		if out, err := pg.Command(ctx, "pg_ctl", "stop", "-D", dir, "-m", "fast", "-w").CombinedOutput(); err != nil {
			r.fail(where, "the restore did not stop", fmt.Sprintf("%v: %s", err, out), faulted)
			return
		}
		if out, err := pg.Command(ctx, "pg_checksums", "--check", "-D", dir).CombinedOutput(); err != nil {
			r.fail(where, "pg_checksums --check failed on the restore", fmt.Sprintf("%v: %s", err, out), faulted)
		}
	}
}

// restoredBackup reads the backup name from backup-fetch's "restored NAME
// into DIR" line.
func restoredBackup(stdout string) string {
	for l := range strings.Lines(stdout) {
		if rest, ok := strings.CutPrefix(l, "restored "); ok {
			name, _, _ := strings.Cut(rest, " ")
			return name
		}
	}
	return ""
}

// removeAll removes a restored data directory. wal-fetch's background
// prefetch may still be writing into its pg_wal for a moment after the
// server stopped, so a folder that refills is tried again.
func removeAll(t *testing.T, dir string) {
	var err, first error
	for i := range 50 {
		if err = os.RemoveAll(dir); err == nil {
			if i > 0 {
				t.Logf("torture: %s refilled after the server stopped; removed at try %d (%v)", dir, i+1, first)
			}
			return
		}
		if i == 0 {
			first = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("torture: %v", err)
}

// timelineOf is the timeline a cluster's last point is on (1 without one).
func (r *runner) timelineOf(c int) uint32 {
	tl := uint32(1)
	for _, p := range r.points {
		if p.cluster == c {
			tl = p.tl
		}
	}
	return tl
}
