// Package pgtest runs real PostgreSQL clusters for integration tests.
//
// Every cluster lives in its own temporary folder, listens on a loopback port
// and a private unix socket, and is stopped and removed when the test ends.
// Postgres refuses to run as root, so when the tests run as root (as CI does)
// every Postgres binary, and every command started through [AsUser] or
// [Cluster.Command], runs as the existing "postgres" OS user: the process is
// started with that user's uid/gid (syscall.SysProcAttr.Credential), with
// exactly the environment the harness builds, so settings passed in
// [Options.Env] reach the server and the archive_command/restore_command it
// runs. Folders that such commands must write into come from [OwnedDir].
//
// A cluster runs the default installation's server (see [BinDir]) or, with
// [Options.Major], a server of that major version (see [ServerBinDir]: the
// relocatable builds scripts/install-pg.sh installs for the version matrix,
// [MatrixMajors]). Client tools (psql, pgbench, pg_amcheck, ...) come from
// the server's folder when it has them, else from the default installation.
//
// A missing PostgreSQL installation skips the test, unless CI=true or
// WALGO_TEST_NO_SKIP=1 is set: then it fails.
package pgtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Superuser is the name of the superuser every cluster made by [New] has.
const Superuser = "postgres"

// DefaultStartTimeout bounds how long Start waits for the server to accept
// connections when Options.StartTimeout is zero.
const DefaultStartTimeout = 3 * time.Minute

// Options configure a cluster. The zero value is a plain cluster on a free
// loopback port.
type Options struct {
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// InitdbArgs are extra initdb arguments, e.g. "-k" (data checksums) or
	// "--wal-segsize=1". Ignored by OpenExisting.
	InitdbArgs []string
	// Conf holds postgresql.conf lines such as "archive_mode = on" or
	// "archive_command = 'walgo wal-push %p'". New appends them to
	// postgresql.conf after the harness defaults; OpenExisting appends them
	// to postgresql.auto.conf, so they override what the data directory
	// brought with it (a restored postgresql.conf still holds the source
	// cluster's archive_command, for instance).
	Conf []string
	// Env is extra environment ("KEY=value") for the server process, and so
	// for the archive_command and restore_command it runs, and for commands
	// started with Cluster.Command.
	Env []string
	// StartTimeout bounds how long Start waits for the server to be ready;
	// 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// Major is the PostgreSQL major version of the server (13, ..., 18);
	// 0 means the default installation's. OpenExisting takes it from the
	// data directory's PG_VERSION when it is 0.
	Major int
}

// Cluster is one PostgreSQL cluster: a data directory plus the folder that
// holds its log file and unix socket.
type Cluster struct {
	opt      Options
	dir      string // harness folder: log file and unix socket
	dataDir  string
	port     int
	autoPort bool
	bin      string // the server's bin folder
	major    int
}

// Require fails or skips the test when PostgreSQL cannot be run here: its
// binaries are missing, or the tests run as root and there is no "postgres"
// OS user to run it as.
func Require(t testing.TB) {
	t.Helper()
	if _, err := binDir(); err != nil {
		unavailable(t, err)
	}
	if _, err := pgUser(); err != nil {
		unavailable(t, err)
	}
}

func unavailable(t testing.TB, err error) {
	t.Helper()
	msg := fmt.Sprintf("PostgreSQL is not usable here: %v", err)
	if !strings.Contains(msg, "install it with") { // a matrix major names its own
		msg += " (install it with: apt-get install -y postgresql)"
	}
	if os.Getenv("CI") == "true" || os.Getenv("WALGO_TEST_NO_SKIP") == "1" {
		t.Fatal(msg + "; not skipping because CI=true or WALGO_TEST_NO_SKIP=1")
	}
	t.Skip(msg)
}

// BinDir returns the folder that holds the PostgreSQL server binaries
// (initdb, pg_ctl, postgres, psql, pgbench, ...). It calls Require first.
func BinDir(t testing.TB) string {
	t.Helper()
	Require(t)
	dir, _ := binDir()
	return dir
}

// New initialises a fresh cluster (initdb) in a folder owned by the
// Postgres user and writes its configuration. It does not start it. The
// server is stopped and every file removed when the test ends.
func New(t testing.TB, opt Options) *Cluster {
	t.Helper()
	Require(t)
	c := newCluster(t, opt)
	c.dataDir = filepath.Join(c.dir, "data")

	args := []string{"-D", c.dataDir, "-U", Superuser, "--auth=trust", "-E", "UTF8",
		"--locale=C", "--no-sync"}
	args = append(args, opt.InitdbArgs...)
	if out, err := asUserIn(context.Background(), c.bin, nil, "initdb", args...).CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	conf := []string{
		"",
		"# written by walgo's internal/pgtest",
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(c.port),
		"unix_socket_directories = " + quoteConf(c.dir),
		"logging_collector = off",
		"log_line_prefix = '%m [%p] '",
		"wal_level = replica",
		"max_wal_senders = 5",
		"max_replication_slots = 5",
	}
	conf = append(conf, opt.Conf...)
	if err := appendLines(filepath.Join(c.dataDir, "postgresql.conf"), conf); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c
}

// OpenExisting wraps a data directory made elsewhere, typically restored
// from a backup, so that it can be started like a cluster made by New. The
// directory must belong to the Postgres user (see Chown). The server listens
// on Options.Port (or a free port) and a socket in a new folder whatever the
// data directory's own configuration says; Options.Conf is appended to its
// postgresql.auto.conf. When the test ends the server is stopped; the data
// directory itself is left to whoever made it.
func OpenExisting(t testing.TB, dataDir string, opt Options) *Cluster {
	t.Helper()
	Require(t)
	u, _ := pgUser()
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	fi, err := os.Stat(filepath.Join(abs, "PG_VERSION"))
	if err != nil {
		t.Fatalf("pgtest: %s is not a PostgreSQL data directory: %v", abs, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && u.switchUser && int(st.Uid) != u.uid {
		t.Fatalf("pgtest: %s is owned by uid %d but Postgres runs as %s (uid %d): call pgtest.Chown first",
			abs, st.Uid, u.name, u.uid)
	}
	if opt.Major == 0 {
		b, err := os.ReadFile(filepath.Join(abs, "PG_VERSION"))
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		if m, _ := strconv.Atoi(strings.TrimSpace(string(b))); m != DefaultMajor(t) {
			opt.Major = m
		}
	}
	c := newCluster(t, opt)
	c.dataDir = abs
	if len(opt.Conf) > 0 {
		lines := append([]string{"# written by walgo's internal/pgtest"}, opt.Conf...)
		if err := appendLines(filepath.Join(abs, "postgresql.auto.conf"), lines); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	return c
}

// newCluster makes the harness folder, picks the port and registers the
// cleanup that dumps the log on failure, stops the server and removes the
// folder.
func newCluster(t testing.TB, opt Options) *Cluster {
	t.Helper()
	dir, err := makeOwnedDir("", "walgo-pg-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// A unix socket path is limited to 107 bytes.
	if n := len(filepath.Join(dir, ".s.PGSQL.65535")); n > 100 {
		os.RemoveAll(dir)
		t.Fatalf("pgtest: socket folder %s is too long for a unix socket (%d bytes): set TMPDIR to a shorter path", dir, n)
	}
	c := &Cluster{opt: opt, dir: dir, port: opt.Port}
	c.bin, c.major = BinDir(t), DefaultMajor(t)
	if opt.Major != 0 {
		c.bin, c.major = ServerBinDir(t, opt.Major), opt.Major
	}
	if c.port == 0 {
		c.autoPort = true
		if c.port, err = freePort(); err != nil {
			os.RemoveAll(dir)
			t.Fatalf("pgtest: %v", err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: tail of server log %s:\n%s", c.LogFile(), tail(c.LogFile(), 80))
		}
		if c.dataDir != "" && c.Running() {
			if out, err := c.pgCtl(context.Background(), "stop", "-m", "immediate", "-w"); err != nil {
				t.Errorf("pgtest: stopping server in %s: %v\n%s", c.dataDir, err, out)
			}
		}
		if err := os.RemoveAll(c.dir); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// Major is the PostgreSQL major version of the cluster's server.
func (c *Cluster) Major() int { return c.major }

// ServerBinDir is the folder of the cluster's server binaries (initdb,
// pg_ctl, postgres); it may lack the client tools (see Command).
func (c *Cluster) ServerBinDir() string { return c.bin }

// DataDir returns the cluster's data directory (PGDATA).
func (c *Cluster) DataDir() string { return c.dataDir }

// Port returns the TCP port the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// LogFile returns the server log file (pg_ctl -l).
func (c *Cluster) LogFile() string { return filepath.Join(c.dir, "postgres.log") }

// SocketDir returns the folder that holds the server's unix socket.
func (c *Cluster) SocketDir() string { return c.dir }

// DSN returns a libpq/pgx connection string for the superuser.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable", c.port, Superuser)
}

// ConnEnv returns the PG* environment that points libpq, pgx and walgo at
// this cluster as its superuser: PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGSSLMODE and PGDATA.
func (c *Cluster) ConnEnv() []string {
	return []string{
		"PGHOST=127.0.0.1",
		"PGPORT=" + strconv.Itoa(c.port),
		"PGUSER=" + Superuser,
		"PGDATABASE=postgres",
		"PGSSLMODE=disable",
		"PGDATA=" + c.dataDir,
	}
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.TryStart(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// TryStart is Start that returns the error (with the new part of the server
// log) instead of failing the test, for tests that expect a start to fail.
func (c *Cluster) TryStart() error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var logSize int64
		if fi, statErr := os.Stat(c.LogFile()); statErr == nil {
			logSize = fi.Size()
		}
		timeout := c.opt.StartTimeout
		if timeout <= 0 {
			timeout = DefaultStartTimeout
		}
		opts := fmt.Sprintf("-p %d -k %s -h 127.0.0.1", c.port, ShellQuote(c.dir))
		var out []byte
		out, err = c.pgCtl(context.Background(), "start", "-w", "-t", strconv.Itoa(max(1, int(timeout.Seconds()))),
			"-l", c.LogFile(), "-o", opts)
		if err == nil {
			return nil
		}
		newLog := logSince(c.LogFile(), logSize, 80)
		err = fmt.Errorf("start server in %s on port %d: %v\n%s\nserver log:\n%s", c.dataDir, c.port, err, out, newLog)
		// An automatically chosen port may have been taken since; pick another.
		if !c.autoPort || !strings.Contains(newLog, "could not bind") || c.pidFileExists() {
			return err
		}
		if c.port, err = freePort(); err != nil {
			return err
		}
	}
	return err
}

// Stop shuts the server down in fast mode and waits for it to exit.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if out, err := c.pgCtl(context.Background(), "stop", "-m", "fast", "-w"); err != nil {
		t.Fatalf("pgtest: stop server in %s: %v\n%s", c.dataDir, err, out)
	}
}

// Crash stops the server in immediate mode: no shutdown checkpoint, so the
// next start runs crash recovery, as after a power loss or kill -9.
func (c *Cluster) Crash(t testing.TB) {
	t.Helper()
	if out, err := c.pgCtl(context.Background(), "stop", "-m", "immediate", "-w"); err != nil {
		t.Fatalf("pgtest: crash server in %s: %v\n%s", c.dataDir, err, out)
	}
}

// Restart stops the server (fast) and starts it again.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop(t)
	c.Start(t)
}

// Running reports whether pg_ctl sees a running server in the data directory.
func (c *Cluster) Running() bool {
	_, err := c.pgCtl(context.Background(), "status")
	return err == nil
}

func (c *Cluster) pidFileExists() bool {
	_, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid"))
	return err == nil
}

func (c *Cluster) pgCtl(ctx context.Context, action string, args ...string) ([]byte, error) {
	args = append([]string{action, "-D", c.dataDir}, args...)
	return c.serverCommand(ctx, "pg_ctl", args...).CombinedOutput()
}

// serverCommand runs name as the Postgres user with the server environment.
func (c *Cluster) serverCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return asUserIn(ctx, c.bin, c.opt.Env, name, args...)
}

// Command returns a command that runs as the Postgres user with the
// server's environment (Options.Env) plus ConnEnv, so psql, pgbench,
// pg_basebackup or walgo itself reach this cluster without flags. A name
// without a slash is looked up in the server's bin folder first, then in
// the default installation's (client tools a server build may lack), then
// in PATH; PATH holds the same folders first. See AsUser.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	env := append(append([]string{}, c.opt.Env...), c.ConnEnv()...)
	return asUserIn(ctx, c.bin, env, name, args...)
}

// Exec runs SQL through psql (-X, unaligned, tuples only, stop on the first
// error) as the superuser and returns its output, trimmed. Several
// statements may be given, each runs in its own transaction.
func (c *Cluster) Exec(ctx context.Context, query string) (string, error) {
	cmd := c.Command(ctx, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-f", "-")
	cmd.Stdin = strings.NewReader(query)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("psql on port %d: %w: %s\nquery: %s",
			c.port, err, strings.TrimSpace(stderr.String()), query)
	}
	return strings.TrimSpace(stdout.String()), nil
}

// SQL is Exec that fails the test on error.
func (c *Cluster) SQL(t testing.TB, query string) string {
	t.Helper()
	out, err := c.Exec(context.Background(), query)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return out
}

// PgBench runs pgbench against the cluster (e.g. "-i", "-s", "5" or "-T",
// "10", "-c", "4") and returns its output; it fails the test on error.
func (c *Cluster) PgBench(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Command(context.Background(), "pgbench", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: pgbench %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ControlData returns pg_controldata's fields for the data directory, keyed
// by their labels (e.g. "Database system identifier", "Database cluster
// state", "Latest checkpoint's TimeLineID").
func (c *Cluster) ControlData(t testing.TB) map[string]string {
	t.Helper()
	if c.major != DefaultMajor(t) && !isExecutable(filepath.Join(c.bin, "pg_controldata")) {
		t.Fatalf("pgtest: no pg_controldata for PostgreSQL %d in %s (another major's cannot read its pg_control)", c.major, c.bin)
	}
	out, err := asUserIn(context.Background(), c.bin, nil, "pg_controldata", "-D", c.dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: pg_controldata -D %s: %v\n%s", c.dataDir, err, out)
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return fields
}

// AsUser returns a command that runs as the Postgres user: the current
// user, or "postgres" when running as root. Its environment is not the test
// process's: it is PATH (PostgreSQL bin folder first), HOME, USER, LOGNAME,
// LC_ALL=C, TMPDIR (if set), then env, later entries winning. Its working
// directory is the temp folder (the test's own folder may not be readable
// by that user); callers may change Dir, Env, Stdin and the like. A name
// without a slash is looked up in the PostgreSQL bin folder first, then in
// PATH. If the Postgres user cannot be resolved the command fails to start.
func AsUser(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	return asUserIn(ctx, "", env, name, args...)
}

// asUserIn is AsUser with serverBin ("" for none) looked in before the
// default installation's folder, for names and in PATH.
func asUserIn(ctx context.Context, serverBin string, env []string, name string, args ...string) *exec.Cmd {
	var dirs []string
	if serverBin != "" {
		dirs = append(dirs, serverBin)
	}
	if dir, err := binDir(); err == nil && dir != serverBin {
		dirs = append(dirs, dir)
	}
	if !strings.Contains(name, "/") {
		for _, dir := range dirs {
			if p := filepath.Join(dir, name); isExecutable(p) {
				name = p
				break
			}
		}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = os.TempDir()
	u, err := pgUser()
	if err != nil {
		cmd.Err = err
		return cmd
	}
	path := strings.Join(append(dirs, os.Getenv("PATH")), string(os.PathListSeparator))
	cmd.Env = []string{"PATH=" + path, "HOME=" + u.home, "USER=" + u.name, "LOGNAME=" + u.name, "LC_ALL=C"}
	if tmp := os.Getenv("TMPDIR"); tmp != "" {
		cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	}
	cmd.Env = append(cmd.Env, env...)
	if u.switchUser {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{uint32(u.gid)},
		}}
	}
	return cmd
}

// OwnedDir creates a new empty folder (mode 0755) owned by the Postgres
// user, for things that commands running as that user must write: file
// storage, copies of WAL, restored data directories. The name only makes it
// recognisable. It is removed when the test ends; cleanups run last-in
// first-out, so make it before the cluster that writes into it (e.g. the
// archive_command's storage) and it outlives that cluster.
func OwnedDir(t testing.TB, name string) string {
	t.Helper()
	Require(t)
	return ownedDir(t, "", name)
}

// OwnedMemDir is OwnedDir in memory, on a tmpfs (/dev/shm) with at least
// 2 GiB free, when the machine has one, and OwnedDir otherwise: for the
// short-lived restored data directories a test makes many of, where
// fsync costs nothing in memory and durability does not matter.
func OwnedMemDir(t testing.TB, name string) string {
	t.Helper()
	Require(t)
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != tmpfsMagic || st.Bavail*uint64(st.Bsize) < 2<<30 {
		return ownedDir(t, "", name)
	}
	return ownedDir(t, "/dev/shm", name)
}

// OwnedSmallFS is an empty file system of size bytes (a tmpfs mounted
// for the test, unmounted when it ends) owned by the Postgres user: a
// small pg_wal (backup-fetch --waldir) to see what fills it. Mounting
// needs root: elsewhere the test is skipped, or fails in CI.
func OwnedSmallFS(t testing.TB, name string, size int64) string {
	t.Helper()
	Require(t)
	if os.Geteuid() != 0 {
		unavailable(t, errors.New("mounting a tmpfs needs root"))
	}
	u, _ := pgUser()
	dir := ownedDir(t, "", name)
	opts := fmt.Sprintf("size=%d,mode=0700,uid=%d,gid=%d", size, u.uid, u.gid)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "walgo-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("pgtest: mount a tmpfs on %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("pgtest: umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

func ownedDir(t testing.TB, parent, name string) string {
	t.Helper()
	dir, err := makeOwnedDir(parent, "walgo-"+sanitize(name)+"-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return dir
}

// Chown gives dir and everything below it to the Postgres user (a no-op
// unless running as root), e.g. after the test restored a data directory as
// root.
func Chown(t testing.TB, dir string) {
	t.Helper()
	Require(t)
	u, _ := pgUser()
	if !u.switchUser {
		return
	}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.uid, u.gid)
	})
	if err != nil {
		t.Fatalf("pgtest: chown %s to %s: %v", dir, u.name, err)
	}
}

// WaitFor polls cond until it returns true and fails the test if that does
// not happen within timeout. what says what is awaited, for the message.
// The timeout is a generous bound against hangs, not a timing assertion.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: gave up after %v waiting for %s", timeout, what)
		}
		time.Sleep(delay)
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// osUser is the OS user that runs Postgres.
type osUser struct {
	name       string
	uid, gid   int
	home       string
	switchUser bool // running as root: commands switch to uid/gid
}

var pgUser = sync.OnceValues(func() (*osUser, error) {
	if os.Geteuid() != 0 {
		cur, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("current user: %w", err)
		}
		home, _ := os.UserHomeDir()
		if home == "" {
			home = os.TempDir()
		}
		return &osUser{name: cur.Username, uid: os.Geteuid(), gid: os.Getegid(), home: home}, nil
	}
	pu, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, Postgres must run as the OS user \"postgres\": %w", err)
	}
	uid, err1 := strconv.Atoi(pu.Uid)
	gid, err2 := strconv.Atoi(pu.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user postgres: %w", err)
	}
	home := pu.HomeDir
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		home = os.TempDir()
	}
	return &osUser{name: pu.Username, uid: uid, gid: gid, home: home, switchUser: true}, nil
})

// binDir finds the PostgreSQL bin folder: $WALGO_PG_BINDIR, then
// `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin, then the
// folder of an initdb in PATH.
var binDir = sync.OnceValues(func() (string, error) {
	ok := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres", "psql"} {
			if !isExecutable(filepath.Join(dir, b)) {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("WALGO_PG_BINDIR"); dir != "" {
		if ok(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("WALGO_PG_BINDIR=%s does not hold initdb, pg_ctl, postgres and psql", dir)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); ok(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, dir := range dirs {
		if ok(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && ok(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) found via WALGO_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin or PATH")
})

// makeOwnedDir creates a temp folder (0755) in parent ("" for the
// default temp folder) owned by the Postgres user and checks that the
// user can reach it.
func makeOwnedDir(parent, prefix string) (string, error) {
	u, err := pgUser()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if !u.switchUser {
		return dir, nil
	}
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("chown %s to %s: %w", dir, u.name, err)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			os.RemoveAll(dir)
			return "", fmt.Errorf("user %s cannot reach %s: %s has mode %v; set TMPDIR to a folder every user can traverse (e.g. /tmp)",
				u.name, dir, p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return dir, nil
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendLines(path string, lines []string) error {
	u, err := pgUser()
	if err != nil {
		return err
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && statErr != nil && u.switchUser {
		err = os.Chown(path, u.uid, u.gid)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// quoteConf quotes s as a postgresql.conf string value.
func quoteConf(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ShellQuote quotes s as one word of a sh command line (pg_ctl passes -o
// through a shell).
func ShellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func sanitize(name string) string {
	name = unsafeChars.ReplaceAllString(name, "_")
	if len(name) > 40 {
		name = name[:40]
	}
	return name
}

// tail returns the last n lines of a file, or a note why it cannot.
func tail(path string, n int) string { return logSince(path, 0, n) }

// logSince returns the last n lines of what was appended to a file after
// offset, or a note why it cannot.
func logSince(path string, offset int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if offset <= int64(len(b)) {
		b = b[offset:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
