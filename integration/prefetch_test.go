package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/proctest"
)

// TestPrefetchSmallPgWal: a restore whose pg_wal is a small file system
// (1 MiB segments, 32 MiB), where recovery without prefetch fits,
// recovers with the default prefetch and with 32 segments ahead too, and
// pg_wal never runs full: the prefetch keeps within the free space
// Postgres needs (it used to take as many segments as it was told:
// "PANIC: could not write to file pg_wal/xlogtemp...: No space left on
// device"). After the promotion, at the end of the archive or at a
// target before it, nothing is left in the prefetch folder, though
// nothing archives there (archive_mode = off): the prefetch stops and
// removes what it held.
func TestPrefetchSmallPgWal(t *testing.T) {
	r := fileRepo(t)
	// 1 MiB segments: many of them from a small load.
	src := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{"-k", "--wal-segsize=1"},
		Env:        r.env,
		Conf: []string{
			"archive_mode = on",
			"archive_command = '" + walgoBin + " wal-push %p'",
			"max_wal_size = 4MB", "min_wal_size = 2MB", "checkpoint_timeout = 30s",
		},
	})
	src.Start(t)
	mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
	src.PgBench(t, "-i", "-s", "2", "-q")
	mid := src.SQL(t, tableChecksums)
	midLSN := src.SQL(t, "select pg_current_wal_lsn()")
	src.PgBench(t, "-n", "-T", "2", "-c", "2")
	final := src.SQL(t, tableChecksums)
	archiveAll(t, src)

	size := int64(32 << 20)
	if s := os.Getenv("WALGO_TEST_PGWAL_MIB"); s != "" {
		n, _ := strconv.Atoi(s)
		size = int64(n) << 20
	}
	for _, tc := range []struct {
		name     string
		prefetch string
		target   []string
		want     string
	}{
		{"prefetch 0", "0", nil, final},
		{"default prefetch", "", nil, final},
		{"prefetch 32", "32", nil, final},
		// Promoted before the end of the archive: the segments after the
		// target were prefetched for nothing and must go too.
		{"default prefetch, PITR", "", []string{"--target-lsn", midLSN}, mid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := r.env
			if tc.prefetch != "" {
				env = append([]string{"WALGO_PREFETCH=" + tc.prefetch}, env...)
			}
			walDir := pgtest.OwnedSmallFS(t, "pg_wal", size)
			dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
			mustWalgo(t, env, append([]string{"backup-fetch", dir, "LATEST", "--waldir", walDir}, tc.target...)...)
			pgtest.Chown(t, dir)
			pgtest.Chown(t, walDir)
			c := pgtest.OpenExisting(t, dir, pgtest.Options{Env: env, Conf: []string{"archive_mode = off"}})
			stopPeak := make(chan struct{})
			peakDone := make(chan int64)
			go func() {
				var peak int64
				for {
					var st syscall.Statfs_t
					if syscall.Statfs(walDir, &st) == nil {
						peak = max(peak, int64(st.Blocks-st.Bfree)*st.Bsize)
					}
					select {
					case <-stopPeak:
						peakDone <- peak
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()
			c.Start(t)
			ctx := context.Background()
			var nices []int // of the prefetch's threads, each time it was seen
			pgtest.WaitFor(t, 5*time.Minute, func() bool {
				nices = append(nices, threadNices("wal-prefetch", filepath.Join(dir, "pg_wal"))...)
				if !c.Running() {
					logb, _ := os.ReadFile(c.LogFile())
					t.Fatalf("the restored cluster stopped during recovery:\n%s", lastLines(string(logb), 30))
				}
				out, err := c.Exec(ctx, "select pg_is_in_recovery()")
				return err == nil && out == "f"
			}, "recovery to finish and the restored cluster to promote")
			if got := c.SQL(t, tableChecksums); got != tc.want {
				t.Fatalf("restored data differs from the source:\n got %s\nwant %s", got, tc.want)
			}
			pdir := filepath.Join(walDir, "walgo", "prefetch")
			pgtest.WaitFor(t, 30*time.Second, func() bool {
				ents, _ := os.ReadDir(pdir)
				return len(ents) == 0
			}, "the prefetch folder to be emptied after promotion")
			logb, _ := os.ReadFile(c.LogFile())
			log := string(logb)
			if strings.Contains(log, "no space left on device") {
				t.Errorf("pg_wal ran full during recovery:\n%s", grepLines(log, "no space left on device"))
			}
			close(stopPeak)
			// The prefetch works ahead of the replay: it yields the cores
			// to the startup process (nice 10 on every thread).
			if tc.prefetch != "0" {
				if len(nices) == 0 {
					t.Error("the prefetch process was never seen during recovery")
				}
				for _, n := range nices {
					if n != 10 {
						t.Errorf("a prefetch thread runs at nice %d, want 10 (all seen: %v)", n, nices)
						break
					}
				}
			}
			t.Logf("prefetched segments taken: %d; pg_wal's peak use %.1f MiB of %d", strings.Count(log, `"prefetched": true`), float64(<-peakDone)/(1<<20), size>>20)
		})
	}
}

// threadNices lists the nice value of every thread of the processes whose
// command line holds all of args.
func threadNices(args ...string) []int {
	var out []int
	for _, pid := range proctest.Matching(args...) {
		nices, err := proctest.ThreadNices(pid)
		if err != nil {
			continue // the process ended
		}
		for _, n := range nices {
			out = append(out, n)
		}
	}
	return out
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
