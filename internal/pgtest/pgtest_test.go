package pgtest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
)

func TestClusterBasics(t *testing.T) {
	t.Parallel()
	c := pgtest.New(t, pgtest.Options{InitdbArgs: []string{"-k"}})
	c.Start(t)

	if got := c.SQL(t, "select 1"); got != "1" {
		t.Fatalf("select 1 = %q", got)
	}
	if got := c.SQL(t, "show data_checksums"); got != "on" {
		t.Errorf("data_checksums = %q, want on (InitdbArgs -k)", got)
	}
	if got := c.SQL(t, "show port"); got != strconv.Itoa(c.Port()) {
		t.Errorf("port = %q, want %d", got, c.Port())
	}
	// Several statements, each printed.
	if got := c.SQL(t, "select 1; select 'a', 2"); got != "1\na|2" {
		t.Errorf("multi-statement output = %q", got)
	}
	if _, err := c.Exec(context.Background(), "select nonsense_column"); err == nil ||
		!strings.Contains(err.Error(), "nonsense_column") {
		t.Errorf("Exec of bad SQL: err = %v, want one naming the column", err)
	}

	c.PgBench(t, "-i", "-s", "1", "-q")
	if got := c.SQL(t, "select count(*) from pgbench_accounts"); got != "100000" {
		t.Fatalf("pgbench_accounts rows = %q", got)
	}
	c.PgBench(t, "-t", "20", "-c", "2")

	c.Restart(t)
	if got := c.SQL(t, "select count(*) from pgbench_accounts"); got != "100000" {
		t.Fatalf("after restart, pgbench_accounts rows = %q", got)
	}

	c.Crash(t)
	if got := c.ControlData(t)["Database cluster state"]; got != "in production" {
		t.Errorf("after crash, cluster state = %q, want in production", got)
	}
	c.Start(t)
	if got := c.SQL(t, "select count(*) from pgbench_accounts"); got != "100000" {
		t.Fatalf("after crash recovery, pgbench_accounts rows = %q", got)
	}
	c.Stop(t)
	if c.Running() {
		t.Fatal("Running after Stop")
	}
	if got := c.ControlData(t)["Database cluster state"]; got != "shut down" {
		t.Errorf("after stop, cluster state = %q, want shut down", got)
	}
}

// The server's environment (Options.Env) must reach archive_command, and
// archive_command must be able to write into an OwnedDir.
func TestServerEnvReachesArchiveCommand(t *testing.T) {
	t.Parallel()
	archive := pgtest.OwnedDir(t, "archive")
	c := pgtest.New(t, pgtest.Options{
		Env: []string{"FOO=bar"},
		Conf: []string{
			"archive_mode = on",
			`archive_command = 'test "$FOO" = bar && cp %p ` + archive + `/%f'`,
		},
	})
	c.Start(t)
	seg := c.SQL(t, "create table t(x int); insert into t select generate_series(1, 1000);"+
		" select pg_walfile_name(pg_current_wal_lsn()); select pg_switch_wal()")
	seg = strings.Split(seg, "\n")[0]

	pgtest.WaitFor(t, 2*time.Minute, func() bool {
		return c.SQL(t, "select archived_count > 0 or failed_count > 0 from pg_stat_archiver") == "t"
	}, "the archiver to run")
	if got := c.SQL(t, "select archived_count, failed_count from pg_stat_archiver"); !strings.HasSuffix(got, "|0") {
		t.Fatalf("pg_stat_archiver archived|failed = %s, want no failures", got)
	}
	if _, err := os.Stat(filepath.Join(archive, seg)); err != nil {
		t.Fatalf("segment %s not archived: %v", seg, err)
	}
}

// A stopped cluster's data directory copied elsewhere starts with
// OpenExisting on its own port, next to the original.
func TestOpenExisting(t *testing.T) {
	t.Parallel()
	src := pgtest.New(t, pgtest.Options{})
	src.Start(t)
	src.SQL(t, "create table kept(v text); insert into kept values ('hello')")
	src.Stop(t)

	copyDir := filepath.Join(pgtest.OwnedDir(t, "copy"), "data")
	if out, err := exec.Command("cp", "-a", src.DataDir(), copyDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	pgtest.Chown(t, copyDir)
	src.Start(t)

	c := pgtest.OpenExisting(t, copyDir, pgtest.Options{Conf: []string{"work_mem = '7MB'"}})
	if c.Port() == src.Port() {
		t.Fatalf("both clusters on port %d", c.Port())
	}
	c.Start(t)
	if got := c.SQL(t, "select v from kept"); got != "hello" {
		t.Fatalf("copied row = %q", got)
	}
	if got := c.SQL(t, "show data_directory"); got != copyDir {
		t.Errorf("data_directory = %q, want %q", got, copyDir)
	}
	if got := c.SQL(t, "show work_mem"); got != "7MB" {
		t.Errorf("Options.Conf not applied: work_mem = %q, want 7MB", got)
	}
	if got := src.SQL(t, "select count(*) from kept"); got != "1" {
		t.Errorf("source cluster rows = %q", got)
	}
	c.Stop(t)
}

func TestOpenExistingRejectsForeignOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ownership only matters when running as root")
	}
	pgtest.Require(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ft := &fatalRecorder{TB: t}
	func() {
		defer func() { _ = recover() }()
		pgtest.OpenExisting(ft, dir, pgtest.Options{})
	}()
	if !strings.Contains(ft.msg, "pgtest.Chown") {
		t.Fatalf("OpenExisting on a root-owned dir: message %q, want a hint to call pgtest.Chown", ft.msg)
	}
}

// fatalRecorder turns Fatalf into a recorded message and a panic.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = strings.TrimSpace(fmt.Sprintf(format, args...))
	panic("fatal")
}

func TestAsUser(t *testing.T) {
	t.Parallel()
	pgtest.Require(t)
	out, err := pgtest.AsUser(context.Background(), []string{"X=42"}, "sh", "-c", `id -un; echo "$X"; command -v initdb`).CombinedOutput()
	if err != nil {
		t.Fatalf("AsUser: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		t.Fatalf("output %q", out)
	}
	if os.Geteuid() == 0 && lines[0] != "postgres" {
		t.Errorf("ran as %q, want postgres", lines[0])
	}
	if lines[1] != "42" {
		t.Errorf("X = %q, want 42", lines[1])
	}
	if want := filepath.Join(pgtest.BinDir(t), "initdb"); lines[2] != want {
		t.Errorf("initdb in PATH = %q, want %q", lines[2], want)
	}

	// An OwnedDir is writable by that user.
	dir := pgtest.OwnedDir(t, "writable/sub")
	if out, err := pgtest.AsUser(context.Background(), nil, "touch", filepath.Join(dir, "f")).CombinedOutput(); err != nil {
		t.Fatalf("touch in OwnedDir as the Postgres user: %v\n%s", err, out)
	}
}

// OwnedMemDir is a folder the Postgres user can write into, in memory
// when the machine has a big enough tmpfs, and gone when the test ends.
func TestOwnedMemDir(t *testing.T) {
	t.Parallel()
	var dir string
	t.Run("use", func(t *testing.T) {
		dir = pgtest.OwnedMemDir(t, "mem")
		out, err := pgtest.AsUser(context.Background(), nil, "sh", "-c", "echo hi > "+dir+"/f && cat "+dir+"/f").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "hi" {
			t.Fatalf("the Postgres user cannot write into %s: %v %s", dir, err, out)
		}
		t.Logf("OwnedMemDir: %s", dir)
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s is still there after the test: %v", dir, err)
	}
}

// TestServerBinDir: every major of the matrix has a server whose
// postgres --version says that major (scripts/install-pg.sh installs
// those Debian lacks).
func TestServerBinDir(t *testing.T) {
	for _, m := range pgtest.MatrixMajors(t) {
		dir := pgtest.ServerBinDir(t, m)
		out, err := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
		if err != nil || !strings.Contains(string(out), fmt.Sprintf("(PostgreSQL) %d.", m)) {
			t.Errorf("PostgreSQL %d: %s/postgres --version: %q, %v", m, dir, out, err)
		}
	}
}
