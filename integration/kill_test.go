package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// killSeed seeds the kill delays: WALGO_KILL_SEED, or a fixed one.
func killSeed(t *testing.T) uint64 {
	if s := os.Getenv("WALGO_KILL_SEED"); s != "" {
		var v uint64
		if _, err := fmt.Sscan(s, &v); err != nil {
			t.Fatalf("WALGO_KILL_SEED=%q: %v", s, err)
		}
		return v
	}
	return 9
}

// killAfter starts cmd and sends it SIGKILL after delay, unless it exits
// first. It reports whether it was killed, and the exit code otherwise.
func killAfter(t *testing.T, cmd *exec.Cmd, delay time.Duration) (killed bool, code int, took time.Duration) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err = <-done
		killed = true
	}
	took = time.Since(start)
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return killed, -1, took
		}
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	if killed {
		// Exited on its own just as the timer fired.
		killed = false
	}
	if code != 0 {
		t.Logf("exited %d before the kill:\n%s", code, lastLines(stderr.String(), 5))
	}
	return killed, code, took
}

// tempFiles lists the file backend's temp files (Puts cut short) under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".walgo-tmp-") {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// TestKillWalPush: kill -9 at random moments of a slow (rate-limited)
// wal-push, with look-ahead: whatever the archive lists afterwards is
// whole, a rerun succeeds, and in the end every segment fetches back
// byte-identical with no gap.
func TestKillWalPush(t *testing.T) {
	pgtest.Require(t)
	r := fileRepo(t)
	rng := rand.New(rand.NewPCG(killSeed(t), 1))
	dir := waltest.PgWal(t)
	const runs = 10
	first, _ := wal.ParseSegment("000000010000000000000010")
	var names []string
	orig := map[string][]byte{}
	for i := range runs {
		seg := first
		for range i {
			seg = seg.Next(segSize)
		}
		n := seg.Name()
		names = append(names, n)
		orig[n] = waltest.Segment(t, n, segSize, uint64(i))
		waltest.WriteFile(t, dir, n, orig[n])
		waltest.WriteFile(t, filepath.Join(dir, "archive_status"), n+".ready", nil)
	}
	// ~370 KB compressed per segment, two at a time (one look-ahead), at
	// 256 KiB/s: a push takes about 3 s.
	slow := append([]string{"WALGO_NETWORK_RATE_LIMIT=256KiB", "WALGO_UPLOAD_CONCURRENCY=2"}, r.env...)
	one := append([]string{"WALGO_UPLOAD_CONCURRENCY=1"}, r.env...)
	st := r.openStore(t)
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	noPrefetch := append([]string{"WALGO_PREFETCH=0"}, r.env...)
	fetchSame := func(n string) {
		t.Helper()
		mustWalgo(t, noPrefetch, "wal-fetch", n, dest)
		got, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, orig[n]) {
			t.Fatalf("%s: fetched copy differs from the segment pushed", n)
		}
	}

	killedRuns := 0
	var summary []string
	for i, n := range names {
		delay := time.Duration(rng.Int64N(int64(3500 * time.Millisecond)))
		cmd := exec.Command(walgoBin, "wal-push", filepath.Join(dir, n))
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, slow...)
		killed, code, took := killAfter(t, cmd, delay)
		if killed {
			killedRuns++
		} else if code != 0 {
			t.Fatalf("run %d: wal-push %s exited %d without being killed", i, n, code)
		}

		// Whatever the archive lists is whole and fetches back identical.
		listed, err := catalog.ListWAL(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, o := range listed {
			if seen[o.Name] {
				t.Fatalf("after kill %d: %s is stored twice", i, o.Name)
			}
			seen[o.Name] = true
			if orig[o.Name] == nil {
				t.Fatalf("after kill %d: unexpected WAL object %s", i, o.Key)
			}
			fetchSame(o.Name)
		}

		// Postgres runs archive_command again; it must succeed.
		res := mustWalgo(t, one, "wal-push", filepath.Join(dir, n))
		if err := os.Rename(filepath.Join(dir, "archive_status", n+".ready"), filepath.Join(dir, "archive_status", n+".done")); err != nil {
			t.Fatal(err)
		}
		fetchSame(n)
		what := fmt.Sprintf("exited %d after %v", code, took.Round(time.Millisecond))
		if killed {
			what = fmt.Sprintf("killed after %v", took.Round(time.Millisecond))
		}
		rerun := "pushed it"
		switch {
		case strings.Contains(res.stderr, "already pushed ahead"):
			rerun = "found the look-ahead marker"
		case strings.Contains(res.stderr, `"already_archived": true`):
			rerun = "found it archived"
		}
		summary = append(summary, fmt.Sprintf("run %d (%s): %s, %d listed after it, rerun %s", i, n, what, len(listed), rerun))
	}

	var tls []catalog.Timeline
	out := mustWalgo(t, r.env, "wal-list", "--json")
	if err := json.Unmarshal([]byte(out.stdout), &tls); err != nil {
		t.Fatalf("wal-list --json: %v\n%s", err, out.stdout)
	}
	if len(tls) != 1 || tls[0].Count != runs || len(tls[0].Gaps) != 0 || tls[0].First != names[0] || tls[0].Last != names[runs-1] {
		t.Fatalf("wal-list after the kills: %+v; want %s..%s, %d segments, no gap", tls, names[0], names[runs-1], runs)
	}
	for _, n := range names {
		fetchSame(n)
	}
	temps := tempFiles(t, r.root)
	for _, s := range summary {
		t.Log(s)
	}
	t.Logf("KILL wal-push: %d runs, %d killed mid-push, %d segments lost, %d temp files left in the repository %v",
		runs, killedRuns, 0, len(temps), temps)

	// delete garbage removes the killed uploads' temp files, and no WAL
	// (there is no backup to judge it by).
	mustWalgo(t, r.env, "delete", "garbage", "--confirm", "--min-age=0s")
	if left := tempFiles(t, r.root); len(left) != 0 {
		t.Errorf("delete garbage left temp files of killed uploads: %v", left)
	}
	for _, n := range names {
		fetchSame(n)
	}
	if killedRuns == 0 {
		t.Error("no run was killed before it finished: the kill delays miss the push")
	}
}

// TestKillBackupPush: kill -9 at random moments of a slow (disk
// rate-limited) backup-push under a live cluster: backup-list never lists
// an incomplete backup, a rerun succeeds, archiving goes on with no
// segment lost, the last backup restores to the source's state, and
// delete garbage leaves no object of an unfinished
// backup.
func TestKillBackupPush(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	src.SQL(t, markerSQL)
	rng := rand.New(rand.NewPCG(killSeed(t), 2))
	// Small partitions, so a kill can fall between two of them.
	slow := append([]string{"WALGO_DISK_RATE_LIMIT=8MB", "WALGO_PART_SIZE=8MiB"}, r.env...)
	fast := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	st := r.openStore(t)
	ctx := context.Background()

	finished := 0
	killedRuns := 0
	var summary []string
	for i := range 10 {
		delay := time.Duration(rng.Int64N(int64(5 * time.Second)))
		cmd := src.Command(ctx, walgoBin, "backup-push")
		cmd.Env = append(cmd.Env, slow...)
		killed, code, took := killAfter(t, cmd, delay)
		what := fmt.Sprintf("killed after %v", took.Round(time.Millisecond))
		switch {
		case killed:
			killedRuns++
		case code == 0:
			finished++
			what = fmt.Sprintf("finished in %v", took.Round(time.Millisecond))
		default:
			t.Fatalf("run %d: backup-push exited %d without being killed", i, code)
		}
		// A kill after the sentinel was written leaves a finished backup.
		listed := checkListedBackups(t, st)
		if len(listed) != finished && !(killed && len(listed) == finished+1) {
			t.Fatalf("after run %d: %d backups listed, %d finished", i, len(listed), finished)
		}
		finished = len(listed)
		leftovers := unfinishedObjects(t, st)

		// The operator's cron runs it again, right away: it must succeed.
		mustWalgoAs(t, src, fast, "backup-push")
		finished++
		if got := len(checkListedBackups(t, st)); got != finished {
			t.Fatalf("after the rerun of run %d: %d backups listed, want %d", i, got, finished)
		}
		rerunName := listed0(checkListedBackups(t, st))
		summary = append(summary, fmt.Sprintf("run %d: %s, then rerun %s; objects of no finished backup: %v", i, what, rerunName, leftovers))
		src.PgBench(t, "-n", "-t", "200", "-c", "2")
	}
	src.SQL(t, "insert into marker values (1, 'after the last backup')")
	want := state(t, src)
	archiveAll(t, src)
	leftovers := unfinishedObjects(t, st)
	temps := tempFiles(t, r.root)

	res := mustWalgo(t, r.env, "delete", "garbage", "--confirm", "--min-age=0s")
	left := unfinishedObjects(t, st)
	for _, k := range left {
		t.Errorf("delete garbage left %s, an object of no finished backup", k)
	}
	leftTemps := tempFiles(t, r.root)
	for _, k := range leftTemps {
		t.Errorf("delete garbage left %s, the temp file of a killed upload", k)
	}
	if got := len(checkListedBackups(t, st)); got != finished {
		t.Errorf("delete garbage changed the backups listed: %d, want %d\n%s", got, finished, res.stdout)
	}
	garbage := fmt.Sprintf("removed %d objects of unfinished backups and %d temp files of killed uploads; left: %d objects, %d temp files",
		len(leftovers), len(temps), len(left), len(leftTemps))

	// Archiving never stopped: no gap from the oldest backup on, and the
	// newest backup replays to the source's final state.
	var tls []catalog.Timeline
	out := mustWalgo(t, r.env, "wal-list", "--json")
	if err := json.Unmarshal([]byte(out.stdout), &tls); err != nil {
		t.Fatalf("wal-list --json: %v\n%s", err, out.stdout)
	}
	if len(tls) != 1 || len(tls[0].Gaps) != 0 {
		t.Fatalf("WAL after the kills: %+v", tls)
	}
	c := restoreAndStart(t, r, []string{"LATEST"})
	waitPromoted(t, c)
	if got := state(t, c); got != want {
		t.Fatalf("restored the last backup: state differs\n got %s\nwant %s", got, want)
	}
	for _, s := range summary {
		t.Log(s)
	}
	t.Logf("KILL backup-push: 10 runs, %d killed mid-backup, %d backups listed (all whole), WAL %s..%s no gap; "+
		"before delete garbage: %d objects of unfinished backups, %d temp files; delete garbage: %s",
		killedRuns, finished, tls[0].First, tls[0].Last, len(leftovers), len(temps), garbage)
	if killedRuns == 0 {
		t.Error("no run was killed before it finished: the kill delays miss the backup")
	}
}

// listed0 names the newest backup.
func listed0(list []*catalog.Sentinel) string {
	if len(list) == 0 {
		return "-"
	}
	return list[len(list)-1].Name
}

// checkListedBackups returns the backups the repository lists, after
// checking that each is whole: its manifest and every partition are stored
// with the size its sentinel says.
func checkListedBackups(t *testing.T, st storage.Store) []*catalog.Sentinel {
	t.Helper()
	ctx := context.Background()
	list, err := catalog.ListBackups(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range list {
		if _, err := st.Stat(ctx, sn.ManifestKey); err != nil {
			t.Fatalf("listed backup %s has no manifest: %v", sn.Name, err)
		}
		for _, p := range sn.Parts {
			oi, err := st.Stat(ctx, p.Key)
			if err != nil || oi.Size != p.Size {
				t.Fatalf("listed backup %s: partition %s: %v (size %d, sentinel says %d)", sn.Name, p.Key, err, oi.Size, p.Size)
			}
		}
	}
	return list
}

// unfinishedObjects lists the objects under the backup folder that no
// finished backup's sentinel accounts for: leftovers of killed backups,
// including stale partitions in the folder of a backup that a rerun with
// the same name finished.
func unfinishedObjects(t *testing.T, st storage.Store) []string {
	t.Helper()
	ctx := context.Background()
	list, err := catalog.ListBackups(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, sn := range list {
		known[catalog.SentinelKey(sn.Name)] = true
		known[sn.ManifestKey] = true
		for _, p := range sn.Parts {
			known[p.Key] = true
		}
	}
	var out []string
	if err := st.List(ctx, catalog.BackupPrefix, func(oi storage.ObjectInfo) error {
		if !known[oi.Key] {
			out = append(out, oi.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
