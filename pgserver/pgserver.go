// Package pgserver starts a private, throwaway PostgreSQL server on an
// existing data directory, typically one freshly restored from a backup:
// for restore drills and for dumping a copy instead of the production
// database.
//
// The server is cut off from everything the copy's own configuration might
// reach: it listens on a free loopback port and a unix socket in a new 0700
// folder only, authenticates with its own pg_hba.conf (trust, local only),
// never archives (a restored copy must never push WAL into the production
// repository), never connects to a primary, writes no external pid file and
// logs into its private folder.
package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/walgo/walgo/pgdata"
)

// ErrRoot is returned when asked to run Postgres as root, which it refuses.
var ErrRoot = errors.New("refusing to start Postgres as root: run walgo as the database's OS user, e.g. postgres")

// ErrNoServer is returned when no Postgres server binaries matching the
// data directory's version can be found.
var ErrNoServer = errors.New("no matching Postgres server binaries")

// DefaultStartTimeout bounds Start when Options.StartTimeout is 0: replay
// of a long WAL stretch up to consistency takes a while.
const DefaultStartTimeout = 5 * time.Minute

// stopTimeout is how long Stop waits for a fast shutdown before it sends
// an immediate shutdown, and then for that before it kills.
const stopTimeout = time.Minute

// Options say which data directory to start and how.
type Options struct {
	// DataDir is the data directory; it must belong to the current user.
	DataDir string
	// BinDir holds the server binaries (postgres, pg_amcheck, ...); ""
	// finds them for the version in DataDir/PG_VERSION (see FindBinDir).
	BinDir string
	// User is the role to connect as; "" means the current OS user's name.
	User string
	// Settings are extra "name=value" server settings (postgres -c). They
	// come after the isolating ones and so may override them.
	Settings []string
	// StartTimeout bounds how long Start waits for the server to accept
	// connections; 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// Log receives what the server does; nil logs nothing.
	Log *zap.Logger
}

// Server is one running private Postgres server.
type Server struct {
	opts    Options
	version string // major version, as PG_VERSION says it
	binDir  string
	dir     string // private folder: socket, log, hba file
	port    int
	user    string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the postmaster has exited
	waitErr error         // its exit status, set before exited is closed
	log     *zap.Logger
}

// CheckUser returns ErrRoot when running as root, so callers can refuse
// before doing expensive work (such as downloading a backup).
func CheckUser() error {
	if os.Geteuid() == 0 {
		return ErrRoot
	}
	return nil
}

// Start starts Postgres on opts.DataDir and waits until it accepts
// connections: after crash recovery, or for a restored backup once replay
// reached consistency. Errors carry the tail of the server log. On error
// nothing is left running and the private folder is removed.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := CheckUser(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.DataDir == "" {
		return nil, errors.New("start postgres: no data directory given")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	opts.DataDir = dataDir
	version, err := DataDirVersion(dataDir)
	if err != nil {
		return nil, err
	}
	binDir, err := FindBinDir(version, opts.BinDir)
	if err != nil {
		return nil, err
	}
	roleName := opts.User
	if roleName == "" {
		if roleName, err = currentUser(); err != nil {
			return nil, err
		}
	}
	if err := ensureConfFile(dataDir); err != nil {
		return nil, err
	}
	dir, err := makePrivateDir()
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, binDir: binDir, dir: dir, user: roleName, log: opts.Log, version: version}
	if err := s.writeAuthFiles(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	// A port picked free may be taken before the server binds it: retry.
	for attempt := 1; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			break
		}
		var logStart int64
		logStart, err = s.launch(version)
		if err != nil {
			break
		}
		err = s.waitReady(ctx)
		if err == nil {
			s.log.Info("private postgres started", zap.String("data_dir", dataDir), zap.Int("port", s.port),
				zap.String("socket_dir", dir), zap.String("bin_dir", binDir))
			return s, nil
		}
		if s.running() || attempt >= 3 || !strings.Contains(s.logSince(logStart), "could not bind") {
			break
		}
	}
	err = fmt.Errorf("start postgres on %s: %w%s", dataDir, err, s.logNote())
	s.Stop(context.WithoutCancel(ctx))
	return nil, err
}

// DSN is a libpq keyword connection string for the server, over its unix
// socket: host=<socket folder> port=<port> user=<user> dbname=postgres.
func (s *Server) DSN() string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable",
		dsnQuote(s.dir), s.port, dsnQuote(s.user))
}

// Port is the server's TCP port on 127.0.0.1 (and its socket's number).
func (s *Server) Port() int { return s.port }

// SocketDir is the private folder that holds the server's unix socket.
func (s *Server) SocketDir() string { return s.dir }

// User is the role the DSN connects as.
func (s *Server) User() string { return s.user }

// BinDir is the folder of the server binaries, for client tools of the
// same version (pg_dump, pg_amcheck).
func (s *Server) BinDir() string { return s.binDir }

// Version is the server's major version as PG_VERSION holds it ("15").
func (s *Server) Version() string { return s.version }

// LogFile is the server's log file, inside the private folder (removed by
// Stop).
func (s *Server) LogFile() string { return filepath.Join(s.dir, "postgres.log") }

// WaitPromoted waits until the server has left recovery (its recovery
// target was reached and it promoted). It fails at once, with the server
// log's tail, if the server exits, as it does when recovery cannot reach
// its target.
func (s *Server) WaitPromoted(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	delay := 50 * time.Millisecond
	for {
		if !s.running() {
			return fmt.Errorf("wait for promotion: postgres exited (%v)%s", s.waitErr, s.logNote())
		}
		if conn == nil {
			c, err := s.connect(ctx)
			if err == nil {
				conn = c
			} else if !retryable(err) {
				return fmt.Errorf("wait for promotion: %w%s", err, s.logNote())
			}
		}
		if conn != nil {
			var inRecovery bool
			err := conn.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery)
			switch {
			case err == nil && !inRecovery:
				return nil
			case err != nil:
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for promotion: %w%s", ctx.Err(), s.logNote())
		case <-s.exited:
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// Stop shuts the server down (fast: active sessions are cut off) and waits
// for it to exit, then removes the private folder. If it does not stop in
// time (ctx, or a minute at most) it is shut down in immediate mode, then
// killed. The data directory is left as it is.
func (s *Server) Stop(ctx context.Context) error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		err = s.stopProcess(ctx)
	}
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = fmt.Errorf("stop postgres: %w", rerr)
	}
	return err
}

func (s *Server) stopProcess(ctx context.Context) error {
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-s.exited:
			return true
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
	if !s.running() {
		return nil
	}
	// SIGINT is fast shutdown, SIGQUIT immediate shutdown.
	s.cmd.Process.Signal(syscall.SIGINT)
	if wait(stopTimeout) {
		s.log.Info("private postgres stopped", zap.Int("port", s.port))
		return nil
	}
	s.log.Warn("private postgres did not stop in time: immediate shutdown", zap.Int("port", s.port))
	s.cmd.Process.Signal(syscall.SIGQUIT)
	if wait(10 * time.Second) {
		return nil
	}
	s.cmd.Process.Kill()
	<-s.exited
	return fmt.Errorf("stop postgres on %s: killed after it did not shut down", s.opts.DataDir)
}

// launch starts the postmaster and returns the log size before it did.
func (s *Server) launch(version string) (int64, error) {
	logFile, err := os.OpenFile(s.LogFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("server log: %w", err)
	}
	defer logFile.Close()
	var start int64
	if fi, err := logFile.Stat(); err == nil {
		start = fi.Size()
	}
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), serverArgs(s.opts.DataDir, s.dir, s.port, version, s.opts.Settings)...)
	cmd.Dir = s.opts.DataDir
	cmd.Env = os.Environ() // the restore_command it runs needs walgo's settings
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a terminal's Ctrl-C reaches walgo, which
		// shuts the server down itself.
		Setpgid: true,
		// If walgo dies, the server shuts down (fast) instead of lingering.
		Pdeathsig: syscall.SIGINT,
	}
	if err := cmd.Start(); err != nil {
		return start, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return start, nil
}

// waitReady waits until a connection succeeds, the server exits, ctx ends
// or the start timeout passes.
func (s *Server) waitReady(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, s.opts.StartTimeout)
	defer cancel()
	delay := 20 * time.Millisecond
	for {
		conn, err := s.connect(ctx)
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		if !retryable(err) {
			return err
		}
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited (%v)", s.waitErr)
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("interrupted: %w", parent.Err())
			}
			return fmt.Errorf("not accepting connections after %s: %w", s.opts.StartTimeout, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

func (s *Server) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, s.DSN())
}

// retryable reports whether a connection error means "not yet": the
// socket is not there yet, or the server is starting up or recovering
// (SQLSTATE 57P03, cannot_connect_now).
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P03"
	}
	return true
}

func (s *Server) running() bool {
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// logNote is the server log's tail for an error message.
func (s *Server) logNote() string {
	t := strings.TrimSpace(tailLines(s.LogFile(), 0, 30))
	if t == "" {
		return ""
	}
	return "\nserver log (" + s.LogFile() + "), last lines:\n" + t
}

func (s *Server) logSince(offset int64) string { return tailLines(s.LogFile(), offset, 50) }

// serverArgs is the postgres command line. The isolating settings come
// before the caller's, which may override them.
func serverArgs(dataDir, privDir string, port int, version string, extra []string) []string {
	args := []string{"-D", dataDir}
	set := func(k, v string) { args = append(args, "-c", k+"="+v) }
	set("listen_addresses", "127.0.0.1")
	set("port", strconv.Itoa(port))
	set("unix_socket_directories", privDir)
	set("unix_socket_permissions", "0700")
	set("hba_file", filepath.Join(privDir, "pg_hba.conf"))
	set("ident_file", filepath.Join(privDir, "pg_ident.conf"))
	// Never push WAL into the production repository, never follow a
	// primary, never write where the production server keeps its files.
	major, _ := strconv.ParseFloat(version, 64)
	set("archive_mode", "off")
	if major >= 12 { // before 12 they lived in recovery.conf, not the server's settings
		set("primary_conninfo", "")
		set("primary_slot_name", "")
	}
	// Not "": Postgres would try to write a file of that name.
	set("external_pid_file", filepath.Join(privDir, "postmaster.pid"))
	set("ssl", "off")
	set("logging_collector", "off")
	set("log_destination", "stderr")
	if major < 15 {
		set("stats_temp_directory", filepath.Join(privDir, "pg_stat_tmp"))
	}
	for _, kv := range extra {
		args = append(args, "-c", kv)
	}
	return args
}

// writeAuthFiles writes the private pg_hba.conf (trust, local only: the
// copy's own rules could lock us out), an empty pg_ident.conf and the
// statistics folder of servers before 15.
func (s *Server) writeAuthFiles() error {
	hba := "# written by walgo: a private server, reachable only by its own OS user and loopback\n" +
		"local all all trust\n" +
		"host all all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(s.dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "pg_ident.conf"), nil, 0o600); err != nil {
		return fmt.Errorf("write pg_ident.conf: %w", err)
	}
	if err := os.Mkdir(filepath.Join(s.dir, "pg_stat_tmp"), 0o700); err != nil {
		return fmt.Errorf("private postgres folder: %w", err)
	}
	return nil
}

// ensureConfFile writes an empty postgresql.conf into a data directory
// that has none, as when the source kept its configuration elsewhere
// (/etc/postgresql on Debian): postgres refuses to start without one.
func ensureConfFile(dataDir string) error {
	p := filepath.Join(dataDir, "postgresql.conf")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	_, err = f.WriteString("# written by walgo: the backed-up cluster kept its configuration outside its data directory\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// makePrivateDir makes the 0700 folder for the socket, log and hba file.
// It lives in the system temp folder: a unix socket path must stay short.
func makePrivateDir() (string, error) {
	dir, err := os.MkdirTemp("", "walgo-pgserver-")
	if err != nil {
		return "", fmt.Errorf("private postgres folder: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("private postgres folder: %w", err)
	}
	return dir, nil
}

func currentUser() (string, error) {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, nil
	}
	if n := os.Getenv("USER"); n != "" {
		return n, nil
	}
	return "", errors.New("start postgres: cannot tell the current OS user's name: give the role to connect as")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DataDirVersion returns the major version a data directory's PG_VERSION
// names ("15", or "9.6" for old ones).
func DataDirVersion(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, pgdata.VersionFile))
	if err != nil {
		return "", fmt.Errorf("%s is not a Postgres data directory: %w", dataDir, err)
	}
	v := strings.TrimSpace(string(b))
	if _, err := strconv.ParseFloat(v, 64); err != nil || v == "" {
		return "", fmt.Errorf("%s: PG_VERSION holds %q, not a version", dataDir, v)
	}
	return v, nil
}

// Where FindBinDir looks; tests point these elsewhere.
var (
	packagedRoot = "/usr/lib/postgresql"
	pgConfig     = "pg_config"
)

// FindBinDir returns the folder of the server binaries for a major version
// (as PG_VERSION spells it). An explicit folder is only checked; otherwise
// it tries /usr/lib/postgresql/<version>/bin (Debian, Ubuntu), then
// `pg_config --bindir`, then the folder of a postgres in PATH. The binary
// found must report that major version: a server of another version cannot
// read the data directory.
func FindBinDir(version, explicit string) (string, error) {
	if explicit != "" {
		if err := checkBinDir(explicit, version); err != nil {
			return "", fmt.Errorf("server binaries for Postgres %s: %w", version, err)
		}
		return explicit, nil
	}
	var tried []string
	candidates := []string{filepath.Join(packagedRoot, version, "bin")}
	if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		// A symlink in PATH (/usr/local/bin/postgres) stands for the real
		// folder, which also holds the client tools of that version.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, dir := range candidates {
		err := checkBinDir(dir, version)
		if err == nil {
			return dir, nil
		}
		tried = append(tried, err.Error())
	}
	return "", fmt.Errorf("%w for Postgres %s (install its server package, or give the folder with --pg-bindir): %s",
		ErrNoServer, version, strings.Join(tried, "; "))
}

// checkBinDir checks that dir holds a postgres binary of major version.
func checkBinDir(dir, version string) error {
	bin := filepath.Join(dir, "postgres")
	fi, err := os.Stat(bin)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: %s is not an executable", ErrNoServer, bin)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return fmt.Errorf("%w: %s --version: %v", ErrNoServer, bin, err)
	}
	got := versionOf(string(out))
	if got != version {
		return fmt.Errorf("%w: %s is Postgres %s, the data directory is %s", ErrNoServer, bin, orUnknown(got), version)
	}
	return nil
}

// versionOf reads the major version from `postgres --version` output:
// "postgres (PostgreSQL) 15.8 (Debian 15.8-1)" gives "15",
// "postgres (PostgreSQL) 9.6.24" gives "9.6", "16devel" gives "16".
func versionOf(out string) string {
	f := strings.Fields(out)
	for i, w := range f {
		if w == "(PostgreSQL)" && i+1 < len(f) {
			v := f[i+1]
			end := strings.IndexFunc(v, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
			if end >= 0 {
				v = v[:end]
			}
			parts := strings.Split(v, ".")
			if parts[0] == "" {
				return ""
			}
			if n, err := strconv.Atoi(parts[0]); err == nil && n < 10 && len(parts) > 1 {
				return parts[0] + "." + parts[1]
			}
			return parts[0]
		}
	}
	return ""
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown version)"
	}
	return s
}

// dsnQuote quotes a value for a libpq keyword DSN when it needs it.
func dsnQuote(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// tailLines returns the last n lines of what a file holds after offset,
// reading at most its last 64 KiB.
func tailLines(path string, offset int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxRead = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > maxRead {
		offset = fi.Size() - maxRead
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, maxRead))
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
