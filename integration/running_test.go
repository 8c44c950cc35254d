package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
)

// bgWalgo is a walgo command running in the background as the Postgres
// user, with its output readable while it runs.
type bgWalgo struct {
	args   []string
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

func startWalgoAs(t *testing.T, c *pgtest.Cluster, env []string, args ...string) *bgWalgo {
	t.Helper()
	b := &bgWalgo{args: args, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	b.cmd = c.Command(context.Background(), walgoBin, args...)
	b.cmd.Env = append(b.cmd.Env, env...)
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = b.cmd.Process.Signal(syscall.SIGCONT)
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// waitLog waits until the command logged s.
func (b *bgWalgo) waitLog(t *testing.T, s string) {
	t.Helper()
	pgtest.WaitFor(t, 2*time.Minute, func() bool {
		select {
		case <-b.done:
			t.Fatalf("walgo %v exited before logging %q: %v\n%s", b.args, s, b.err, b.stderr.String())
		default:
		}
		return strings.Contains(b.stderr.String(), s)
	}, fmt.Sprintf("walgo %v to log %q", b.args, s))
}

func (b *bgWalgo) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to walgo %v: %v", sig, b.args, err)
	}
}

// wait returns the command's result once it exits.
func (b *bgWalgo) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(5 * time.Minute):
		t.Fatalf("walgo %v still running after 5 minutes\n%s", b.args, b.stderr.String())
	}
	r := result{stdout: b.stdout.String(), stderr: b.stderr.String()}
	var ee *exec.ExitError
	switch {
	case b.err == nil:
	case errors.As(b.err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("walgo %v: %v", b.args, b.err)
	}
	return r
}

// unfinishedFolders lists the backup folders of a file repository that
// have no sentinel and hold at least min partitions.
func unfinishedFolders(t *testing.T, r repo, min int) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(r.root, "basebackups_005"))
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(r.root, catalog.SentinelKey(e.Name()))); err == nil {
			continue
		}
		parts, _ := filepath.Glob(filepath.Join(r.root, "basebackups_005", e.Name(), "part_*"))
		if len(parts) >= min {
			out = append(out, e.Name())
		}
	}
	return out
}

// overlappingPushes runs a slow backup-push, held still once started, and
// a second one meanwhile: the second is refused naming the first, which
// then finishes as the only backup and leaves no lock behind. It returns
// the first's name.
func overlappingPushes(t *testing.T, r repo, src *pgtest.Cluster, fast []string) string {
	t.Helper()
	a := startWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=4MB"}, r.env...), "backup-push")
	a.waitLog(t, "backup started")
	a.signal(t, syscall.SIGSTOP)
	b := walgoAs(t, src, fast, "backup-push")
	a.signal(t, syscall.SIGCONT)
	if b.code != 3 {
		t.Errorf("second backup-push while one runs: exit %d, want 3 (refused)\n%s", b.code, b.stderr)
	}
	host, _ := os.Hostname()
	for _, want := range []string{"another backup-push", host, fmt.Sprintf("pid %d", a.cmd.Process.Pid), catalog.LockPrefix, "taken over"} {
		if !strings.Contains(b.stderr, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, b.stderr)
		}
	}
	if res := a.wait(t); res.code != 0 {
		t.Fatalf("first backup-push: exit %d\n%s", res.code, res.stderr)
	}
	list := listBackups(t, r)
	if len(list) != 1 {
		t.Fatalf("backups after the overlapping runs: %v, want one", list)
	}
	for _, k := range storeKeys(t, r.openStore(t)) {
		if strings.HasPrefix(k, catalog.LockPrefix) {
			t.Errorf("lock left after the backup finished: %s", k)
		}
	}
	return list[0]
}

// TestBackupPushLockS3: the same on a real S3 server.
func TestBackupPushLockS3(t *testing.T) {
	r := s3Repo(t)
	src, fast := smallCluster(t, r)
	overlappingPushes(t, r, src, fast)
}

// TestBackupPushConcurrent: a second backup-push of the same cluster while
// one runs is refused with who holds the lock, and overwrites nothing; a
// stale lock is taken over, a fresh one held by another host is not (until
// it is removed); backups from an idle standby, which all start at the same
// restartpoint, get names of their own and every one restores.
func TestBackupPushConcurrent(t *testing.T) {
	r := fileRepo(t)
	src, fast := smallCluster(t, r)
	first := overlappingPushes(t, r, src, fast)
	archiveAll(t, src)

	// An idle standby: its backups start at its last restartpoint, which
	// is where the first backup started.
	sb := restoreAndStart(t, r, []string{first, "--standby"}, "hot_standby = on", "archive_mode = on")
	pgtest.WaitFor(t, 2*time.Minute, func() bool {
		out, err := sb.Exec(context.Background(), "select pg_is_in_recovery()")
		return err == nil && out == "t"
	}, "the standby to accept connections")
	for range 2 {
		mustWalgoAs(t, sb, fast, "backup-push")
	}
	list := listBackups(t, r)
	if len(list) != 3 {
		t.Fatalf("after two standby backups: %v, want three backups", list)
	}
	suffixed := 0
	for _, n := range list {
		id, err := catalog.ParseBackupName(n)
		if err != nil {
			t.Errorf("invalid name %s", n)
		}
		if id.Seq > 0 {
			suffixed++
		}
	}
	t.Logf("backups: %v", list)
	if suffixed != 2 {
		t.Errorf("backups %v: want the two standby backups named after the first one's start segment, with a suffix", list)
	}
	if sorted := slices.Sorted(slices.Values(list)); sorted[0] != first {
		t.Errorf("names %v: the first backup %s does not sort first", list, first)
	}
	out := walgo(t, r.env, "backup-verify", "--all")
	if out.code != 0 {
		t.Fatalf("backup-verify --all: exit %d\n%s\n%s", out.code, out.stdout, out.stderr)
	}

	// A lock nobody refreshed for longer than the timeout is taken over;
	// one refreshed now by another host is honoured until removed.
	sysID := src.SQL(t, "select system_identifier from pg_control_system()")
	key := catalog.BackupLockKey(sysID, 1)
	writeLock := func(host string, refreshed time.Time) {
		l := catalog.BackupLock{Format: catalog.LockFormat, Token: "foreign", SystemID: sysID, Timeline: 1, Host: host, PID: 1,
			Started: refreshed.Add(-time.Hour), Refreshed: refreshed}
		b, _ := json.Marshal(&l)
		path := filepath.Join(r.root, key)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeLock("gone-host", time.Now().Add(-catalog.LockStaleAfter-time.Minute))
	res := mustWalgoAs(t, src, fast, "backup-push")
	if !strings.Contains(res.stderr, "took over a stale backup lock") || !strings.Contains(res.stderr, "gone-host") {
		t.Errorf("taking over a stale lock is not logged:\n%s", res.stderr)
	}
	writeLock("other-host", time.Now())
	res = walgoAs(t, src, fast, "backup-push")
	if res.code != 3 || !strings.Contains(res.stderr, "other-host") || !strings.Contains(res.stderr, key) {
		t.Errorf("backup-push with another host's fresh lock: exit %d\n%s", res.code, res.stderr)
	}
	if err := os.Remove(filepath.Join(r.root, key)); err != nil {
		t.Fatal(err)
	}
	mustWalgoAs(t, src, fast, "backup-push")
	if got := len(listBackups(t, r)); got != 5 {
		t.Errorf("%d backups at the end, want 5", got)
	}
}

// TestRetentionKeepsRunningBackup: delete garbage while a backup-push is
// storing partitions, and delete retain 1 while one is running and a
// fork's backup finishes: neither removes what the running backup needs,
// and both backups restore.
func TestRetentionKeepsRunningBackup(t *testing.T) {
	r := fileRepo(t)
	src, fast := smallCluster(t, r)
	mustWalgoAs(t, src, fast, "backup-push")
	parent := listBackups(t, r)[0]
	forkPoint := mark(t, src, 1)

	// 1. delete garbage --min-age 0 while a slow backup stores small
	// partitions: they look like a killed backup's leftovers.
	a1 := startWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=4MB", "WALGO_PART_SIZE=1MB"}, r.env...), "backup-push")
	var folder string
	pgtest.WaitFor(t, 2*time.Minute, func() bool {
		if f := unfinishedFolders(t, r, 2); len(f) == 1 {
			folder = f[0]
			return true
		}
		return false
	}, "the slow backup to store two partitions")
	a1.signal(t, syscall.SIGSTOP)
	garbage := walgo(t, r.env, "delete", "garbage", "--min-age", "0", "--confirm")
	a1.signal(t, syscall.SIGCONT)
	if garbage.code != 0 {
		t.Fatalf("delete garbage: exit %d\n%s", garbage.code, garbage.stderr)
	}
	if res := a1.wait(t); res.code != 0 {
		t.Fatalf("the backup running during delete garbage: exit %d\n%s\ndelete garbage said:\n%s", res.code, res.stderr, garbage.stdout)
	}
	if v := walgo(t, r.env, "backup-verify", folder); v.code != 0 {
		t.Errorf("the backup that ran during delete garbage (%s) does not verify: exit %d\n%s\n%s\ndelete garbage said:\n%s",
			folder, v.code, v.stdout, v.stderr, garbage.stdout)
	}

	// 2. delete retain 1 while a backup runs and a fork (same system id,
	// timeline 2, same repository) finishes a backup.
	src.SQL(t, "insert into marker values (2, 'before the second backup')")
	a2 := startWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=4MB"}, r.env...), "backup-push")
	a2.waitLog(t, "backup started")
	a2.signal(t, syscall.SIGSTOP)
	// A long backup: the WAL from its start is archived while it runs.
	src.SQL(t, "insert into marker values (3, 'while the second backup runs')")
	archiveAll(t, src)
	fork := restoreAndStart(t, r, []string{parent, "--target-lsn", forkPoint.lsn}, "archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin))
	waitPromoted(t, fork)
	mustWalgoAs(t, fork, fast, "backup-push")
	fork.Stop(t)
	retain := walgo(t, r.env, "delete", "retain", "1", "--confirm")
	a2.signal(t, syscall.SIGCONT)
	if retain.code != 0 {
		t.Fatalf("delete retain 1: exit %d\n%s", retain.code, retain.stderr)
	}
	res := a2.wait(t)
	if res.code != 0 {
		t.Fatalf("the backup running during delete retain: exit %d\n%s", res.code, res.stderr)
	}
	var list []struct {
		Name     string `json:"name"`
		Timeline uint32 `json:"timeline"`
	}
	out := mustWalgo(t, r.env, "backup-list", "--json")
	if err := json.Unmarshal([]byte(out.stdout), &list); err != nil {
		t.Fatal(err)
	}
	var name string
	for _, b := range list {
		if b.Timeline == 1 {
			name = b.Name
		}
	}
	if name == "" {
		t.Fatalf("the backup that ran during delete retain 1 is not listed: %s\ndelete retain said:\n%s", out.stdout, retain.stdout)
	}
	src.SQL(t, "insert into marker values (4, 'after the second backup')")
	want := state(t, src)
	archiveAll(t, src)

	// Timeline 1's history, not the fork's.
	dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
	mustWalgo(t, r.env, "backup-fetch", dir, name, "--target-timeline", "1")
	pgtest.Chown(t, dir)
	c := pgtest.OpenExisting(t, dir, pgtest.Options{Env: r.env, Conf: []string{"archive_mode = off"}})
	if err := c.TryStart(); err != nil {
		t.Fatalf("the backup that ran during delete retain 1 (%s) does not start: %v\ndelete retain said:\n%s", name, err, retain.stdout)
	}
	waitPromoted(t, c)
	if got := state(t, c); got != want {
		t.Fatalf("restored %s: state differs\n got %s\nwant %s", name, got, want)
	}
}
