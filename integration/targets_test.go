package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
)

// TestTargetsInTheArchive: a restore point older than the newest backup
// restores from the backup before it, to exactly its state; a restore
// point, xid, time or LSN the archive does not reach is refused before
// anything is restored, saying how far the archive reaches.
func TestTargetsInTheArchive(t *testing.T) {
	r := fileRepo(t)
	src, fast := smallCluster(t, r)
	mustWalgoAs(t, src, fast, "backup-push")
	first := listBackups(t, r)[0]

	mark(t, src, 1)
	src.SQL(t, "select pg_create_restore_point('before_batch')")
	wantOld := state(t, src)
	oldXID := strings.TrimSpace(src.SQL(t, "begin; insert into marker values (2, 'the batch'); select txid_current(); commit;"))
	src.PgBench(t, "-n", "-t", "200", "-c", "2")
	mustWalgoAs(t, src, fast, "backup-push")
	mark(t, src, 3)
	src.SQL(t, "select pg_create_restore_point('after_second')")
	wantNew := state(t, src)
	beforeLast := mark(t, src, 4)
	last := mark(t, src, 5) // no commit after last.time
	archiveAll(t, src)

	// The restore point before the newest backup: recovery starts from
	// the first backup and stops there.
	c := restoreAndStart(t, r, []string{"--target-name", "before_batch"})
	waitPromoted(t, c)
	if got := state(t, c); got != wantOld {
		t.Fatalf("restored to before_batch: state differs\n got %s\nwant %s", got, wantOld)
	}
	c.Stop(t)
	c = restoreAndStart(t, r, []string{"--target-name", "after_second"})
	waitPromoted(t, c)
	if got := state(t, c); got != wantNew {
		t.Fatalf("restored to after_second: state differs\n got %s\nwant %s", got, wantNew)
	}
	c.Stop(t)
	// The batch's own commit, by xid, from the backup before it.
	res := mustWalgo(t, r.env, "backup-fetch", filepath.Join(pgtest.OwnedDir(t, "xid"), "data"), "--target-xid", oldXID)
	if !strings.Contains(res.stdout, "restored "+first) {
		t.Errorf("--target-xid %s of a commit before the second backup restored:\n%s", oldXID, res.stdout)
	}

	// Refusals, before anything is restored.
	future := time.Now().UTC().Add(time.Hour).Format(time.RFC3339)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown restore point", []string{"--target-name", "no_such_point"}, []string{`restore point "no_such_point" is not in the archived WAL`}},
		{"restore point before the backup named", []string{first, "--target-name", "no_such_point"}, []string{"not in the archived WAL after the start of backup " + first}},
		{"xid never used", []string{"--target-xid", "2000000000"}, []string{"xid 2000000000 is not in the archived WAL"}},
		{"time past the archive", []string{"--target-time", future}, []string{"the archive reaches LSN", "last commit or abort at"}},
		{"time after the last commit", []string{"--target-time", last.time}, []string{"not before the last commit"}},
		{"lsn past the archive", []string{"--target-lsn", "FF/0"}, []string{"past the end of the archive", "the archive reaches LSN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(pgtest.OwnedDir(t, "refused"), "data")
			res := walgo(t, r.env, append([]string{"backup-fetch", dir}, tc.args...)...)
			if res.code != 2 {
				t.Fatalf("exit %d, want 2 (refused)\n%s\n%s", res.code, res.stdout, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("the refusal does not say %q:\n%s", w, res.stderr)
				}
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("the refused restore created %s", dir)
			}
		})
	}
	// Before the last commit: reachable, and Postgres gets there.
	c = restoreAndStart(t, r, []string{"--target-time", beforeLast.time})
	waitPromoted(t, c)
	if got := state(t, c); got != beforeLast.checksums {
		t.Fatalf("restored to %s: state differs\n got %s\nwant %s", beforeLast.time, got, beforeLast.checksums)
	}
}
