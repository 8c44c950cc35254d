package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
)

// TestRestoreTest: restore-test of a good backup passes, prints its phases
// and leaves nothing behind; the private server never archived into the
// repository (its promotion to timeline 2 pushed no history file). A
// flipped byte in a partition exits 5 naming the partition; WAL missing
// from the archive fails with the server's log; both clean up too.
func TestRestoreTest(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
	names := listBackups(t, r)
	if len(names) != 1 {
		t.Fatalf("backups: %v", names)
	}
	name := names[0]
	st := r.openStore(t)
	ctx := context.Background()
	sn, err := catalog.ReadSentinel(ctx, st, name)
	if err != nil {
		t.Fatal(err)
	}

	work := pgtest.OwnedDir(t, "drill-work")
	// The private server's socket folder goes into TMPDIR: a folder of its
	// own shows it is removed too.
	tmp := pgtest.OwnedDir(t, "drill-tmp")
	env := append([]string{"TMPDIR=" + tmp}, r.env...)
	restoreTest := func(t *testing.T, args ...string) result {
		t.Helper()
		res := walgoAs(t, src, env, append([]string{"restore-test", "--work-dir", work}, args...)...)
		for _, d := range []string{work, tmp} {
			if ents, _ := os.ReadDir(d); len(ents) != 0 {
				t.Errorf("restore-test left %s behind in %s", ents[0].Name(), d)
			}
		}
		return res
	}

	t.Run("good backup", func(t *testing.T) {
		before := storeKeys(t, st)
		res := restoreTest(t)
		if res.code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
		}
		t.Logf("restore-test:\n%s", res.stdout)
		if !strings.Contains(res.stdout, "restore-test "+name+": OK") {
			t.Errorf("the report does not name the backup:\n%s", res.stdout)
		}
		for _, phase := range []string{"download", "replay", "check", "total"} {
			if !strings.Contains(res.stdout, "\n  "+phase+" ") {
				t.Errorf("the report lacks the %s phase:\n%s", phase, res.stdout)
			}
		}
		if !strings.Contains(res.stderr, "--heapallindexed") {
			t.Errorf("pg_amcheck did not run with --heapallindexed:\n%s", res.stderr)
		}
		// Not on a terminal: each phase is a log line.
		for _, phase := range []string{"download", "replay", "check"} {
			if !strings.Contains(res.stderr, `"op": "restore-test", "phase": "`+phase+`"`) {
				t.Errorf("no log line for the %s phase:\n%s", phase, res.stderr)
			}
		}
		// archive_mode was off: promotion made timeline 2 but pushed
		// nothing of it.
		for _, k := range storeKeys(t, st) {
			if strings.HasPrefix(k, "wal_005/00000002") || strings.Contains(k, ".history") {
				t.Errorf("the restored copy archived %s into the repository", k)
			}
		}
		if after := storeKeys(t, st); len(after) < len(before) {
			t.Errorf("objects disappeared: %d before, %d after", len(before), len(after))
		}
	})

	// On a terminal (script(1) gives it one) restore-test and backup-fetch
	// draw the progress bar, each phase on its own line.
	t.Run("on a terminal", func(t *testing.T) {
		onTerminal := func(args ...string) string {
			t.Helper()
			q := []string{pgtest.ShellQuote(walgoBin)}
			for _, a := range args {
				q = append(q, pgtest.ShellQuote(a))
			}
			line := strings.Join(q, " ")
			cmd := src.Command(ctx, "script", "-qefc", line, "/dev/null")
			cmd.Env = append(cmd.Env, env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s on a terminal: %v\n%s", line, err, out)
			}
			return string(out)
		}
		out := onTerminal("restore-test", "--work-dir", work, name)
		for _, want := range []string{"restore-test download [==============================]", "ETA ", "restore-test replay", "restore-test check", "done in"} {
			if !strings.Contains(out, want) {
				t.Errorf("restore-test on a terminal shows no %q:\n%q", want, out)
			}
		}
		dir := filepath.Join(pgtest.OwnedDir(t, "terminal-restore"), "data")
		out = onTerminal("backup-fetch", dir, name)
		if !strings.Contains(out, "backup-fetch [==============================] ") || !strings.Contains(out, "/s  ETA ") {
			t.Errorf("backup-fetch on a terminal shows no full bar:\n%q", out)
		}
	})

	t.Run("damaged partition", func(t *testing.T) {
		key := sn.Parts[0].Key
		orig := readObject(t, st, key)
		defer st.Put(ctx, key, bytes.NewReader(orig))
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 0x20
		if err := st.Put(ctx, key, bytes.NewReader(bad)); err != nil {
			t.Fatal(err)
		}
		res := restoreTest(t, "LATEST")
		if res.code != 5 || !strings.Contains(res.stderr, key) {
			t.Errorf("exit %d, stderr:\n%s\nwant 5 naming %s", res.code, res.stderr, key)
		}
	})

	t.Run("missing WAL", func(t *testing.T) {
		// The segment the backup ends in: without it the copy never
		// becomes consistent and Postgres stops.
		seg := strings.TrimPrefix(name, "base_")
		var key string
		for _, k := range storeKeys(t, st) {
			if strings.HasPrefix(k, "wal_005/"+seg+".") && !strings.Contains(k, ".backup") {
				key = k
			}
		}
		if key == "" {
			t.Fatalf("no WAL object for %s in %v", seg, storeKeys(t, st))
		}
		defer hide(t, r, key)()
		res := restoreTest(t, name)
		if res.code == 0 || !strings.Contains(res.stderr, "server log") {
			t.Errorf("exit %d, stderr:\n%s\nwant a failure with the server log", res.code, res.stderr)
		}
		t.Logf("stderr:\n%s", lastLines(res.stderr, 15))
	})

	t.Run("interrupted", func(t *testing.T) {
		// SIGTERM once the private server runs: walgo stops it and
		// removes everything. (Should the drill finish first, the clean-up
		// is checked all the same.)
		cmd := src.Command(ctx, walgoBin, "restore-test", "--work-dir", work)
		cmd.Env = append(cmd.Env, env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var pidFile []byte
	poll:
		for {
			select {
			case err := <-done:
				t.Logf("restore-test finished before the signal (%v)", err)
				done <- err
				break poll
			case <-time.After(5 * time.Millisecond):
			}
			m, _ := filepath.Glob(filepath.Join(work, "walgo-drill-*", "data", "postmaster.pid"))
			if len(m) > 0 {
				if pidFile, _ = os.ReadFile(m[0]); len(pidFile) > 0 {
					cmd.Process.Signal(syscall.SIGTERM)
					break
				}
			}
		}
		err := <-done
		var ee *exec.ExitError
		if pidFile != nil && (!errors.As(err, &ee) || ee.ExitCode() == 0) {
			t.Errorf("restore-test after SIGTERM: %v; want a failure\n%s", err, stderr.String())
		}
		for _, d := range []string{work, tmp} {
			if ents, _ := os.ReadDir(d); len(ents) != 0 {
				t.Errorf("an interrupted restore-test left %s behind in %s", ents[0].Name(), d)
			}
		}
		if pid, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0]); err == nil {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("the private postgres (pid %d) still runs", pid)
			}
		}
		t.Logf("stderr:\n%s", lastLines(stderr.String(), 5))
	})

	t.Run("unknown backup", func(t *testing.T) {
		res := restoreTest(t, "base_000000010000000000000099")
		if res.code != 1 || !strings.Contains(res.stderr, "base_000000010000000000000099") {
			t.Errorf("exit %d, stderr %q; want 1 naming the backup", res.code, res.stderr)
		}
	})

	t.Run("as root", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Log("not running as root: the refusal is covered by pgserver's unit tests")
			return
		}
		res := walgo(t, append([]string{"TMPDIR=" + tmp}, r.env...), "restore-test", "--work-dir", work)
		if res.code != 2 || !strings.Contains(res.stderr, "e.g. postgres") {
			t.Errorf("exit %d, stderr %q; want 2 and a hint to run as postgres", res.code, res.stderr)
		}
		if ents, _ := os.ReadDir(work); len(ents) != 0 {
			t.Errorf("a refused restore-test left %s", filepath.Join(work, ents[0].Name()))
		}
	})

	// Last: it damages the source itself. A page damaged on disk before
	// the backup is stored faithfully (its sha256s all match); only the
	// check of the restored copy can tell.
	t.Run("damaged page caught by pg_amcheck", func(t *testing.T) {
		src.SQL(t, "create table drill_victim as select g, md5(g::text) as h from generate_series(1, 1000) g")
		rel := src.SQL(t, "select pg_relation_filepath('drill_victim')")
		src.Stop(t)
		f, err := os.OpenFile(filepath.Join(src.DataDir(), rel), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 16), 8000); err != nil { // tuples of block 0
			t.Fatal(err)
		}
		f.Close()
		src.Start(t)
		mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
		res := restoreTest(t)
		if res.code != 5 || !strings.Contains(res.stderr, "pg_amcheck found corruption") || !strings.Contains(res.stderr, "drill_victim") {
			t.Errorf("exit %d, stderr:\n%s\nwant 5 and pg_amcheck's report naming drill_victim", res.code, res.stderr)
		}
		t.Logf("stdout:\n%s\nstderr:\n%s", res.stdout, lastLines(res.stderr, 12))
		if !strings.Contains(res.stdout, "FAILED") {
			t.Errorf("the report does not say FAILED:\n%s", res.stdout)
		}
	})
}
