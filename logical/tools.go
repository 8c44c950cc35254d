// Package logical is walgo's logical backups: dump-push, dump-fetch and
// dump-restore (pg_dump's custom format, streamed through the codec into
// storage, with a sentinel written last), and copy (pg_dump piped into
// pg_restore). It runs the PostgreSQL client programs; what a repository
// holds is catalog's business.
package logical

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/walgo/walgo/wal"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

var (
	// ErrNotEmpty: the target database holds user objects, and restoring
	// over them (which drops them) was not confirmed.
	ErrNotEmpty = errors.New("target database is not empty")
	// ErrExists: a dump of that name, or an output file, already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: a request that cannot be carried out as given.
	ErrInvalid = errors.New("invalid request")
)

// toolPath is a client program in binDir, or looked up in PATH when
// binDir has none: a server build may hold the server alone (pg_dump of
// another major refuses a newer server itself, with a clear message).
func toolPath(binDir, name string) string {
	if binDir == "" {
		return name
	}
	p := filepath.Join(binDir, name)
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return name
	}
	return p
}

// toolCommand builds a command for a client program connecting with dsn:
// --dbname gets the DSN without its password, which goes in PGPASSWORD.
func toolCommand(ctx context.Context, binDir, name, dsn string, args ...string) (*exec.Cmd, *tailBuffer, error) {
	arg, env, err := toolConn(dsn)
	if err != nil {
		return nil, nil, err
	}
	if arg != "" {
		args = append(args, "--dbname="+arg)
	}
	cmd := exec.CommandContext(ctx, toolPath(binDir, name), args...)
	cmd.Env = append(os.Environ(), env...)
	stderr := &tailBuffer{max: 16 << 10}
	cmd.Stderr = stderr
	return cmd, stderr, nil
}

// toolVersion is what "NAME --version" prints after its name, e.g.
// "15.8 (Debian 15.8-1.pgdg120+1)".
func toolVersion(ctx context.Context, binDir, name string) (string, error) {
	out, err := exec.CommandContext(ctx, toolPath(binDir, name), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", name, err)
	}
	v := strings.TrimSpace(string(out))
	if _, after, ok := strings.Cut(v, "(PostgreSQL) "); ok {
		v = after
	}
	return v, nil
}

// toolError describes a failed client program with the end of its stderr.
func toolError(name string, err error, stderr *tailBuffer) error {
	msg := stderr.String()
	if msg == "" {
		return fmt.Errorf("%s: %w", name, err)
	}
	return fmt.Errorf("%s: %w: %s", name, err, msg)
}

// logWarnings logs what a client program that succeeded still wrote to
// stderr (pg_restore's warnings, for instance).
func logWarnings(log *zap.Logger, name string, stderr *tailBuffer) {
	if msg := stderr.String(); msg != "" {
		log.Warn(name+" succeeded with messages", zap.String("stderr", msg))
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu   sync.Mutex
	max  int
	buf  []byte
	lost bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
		t.lost = true
	}
	return len(p), nil
}

// String is the kept output, trimmed, on one line per line of output.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(bytes.ToValidUTF8(t.buf, []byte("?"))))
	if t.lost && s != "" {
		s = "..." + s
	}
	return s
}

// server is what walgo learns about a database before using it.
type server struct {
	database      string
	version       int    // server_version_num
	versionString string // server_version
	systemID      string // empty when pg_control_system() is not allowed
	timeline      uint32 // with lsn, where in its history the server is (0: unknown)
	lsn           wal.LSN
}

// connect opens a session with dsn (empty: the PG* environment).
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return conn, nil
}

// describeDSN connects with dsn just to describe the server.
func describeDSN(ctx context.Context, dsn string) (server, error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return server{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return describe(ctx, conn)
}

func describe(ctx context.Context, conn *pgx.Conn) (server, error) {
	var s server
	err := conn.QueryRow(ctx, `select current_database(), current_setting('server_version_num')::int, current_setting('server_version')`).
		Scan(&s.database, &s.version, &s.versionString)
	if err != nil {
		return s, fmt.Errorf("read server version: %w", err)
	}
	// Only to tell two databases apart; not every role may read it.
	if err := conn.QueryRow(ctx, `select system_identifier::text from pg_control_system()`).Scan(&s.systemID); err != nil {
		s.systemID = ""
	}
	// Where in its history the server is, for the dump's lineage: the
	// timeline of the WAL it writes (replays, on a standby) and the LSN.
	var lsn string
	q := `select case when pg_is_in_recovery() then (select timeline_id from pg_control_checkpoint())
			else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end,
		case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end::text`
	if err := conn.QueryRow(ctx, q).Scan(&s.timeline, &lsn); err == nil {
		if s.lsn, err = wal.ParseLSN(lsn); err != nil {
			s.timeline = 0
		}
	} else {
		s.timeline = 0
	}
	return s, nil
}

// userObjects counts the tables, partitioned tables, views, materialized
// views, sequences and foreign tables outside the system schemas, and
// names the first few.
func userObjects(ctx context.Context, conn *pgx.Conn) (int, string, error) {
	var n int
	var first string
	err := conn.QueryRow(ctx, `select count(*), coalesce(string_agg(name, ', ' order by rn) filter (where rn <= 5), '')
		from (select format('%I.%I', n.nspname, c.relname) as name, row_number() over (order by n.nspname, c.relname) as rn
			from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
			and n.nspname not in ('pg_catalog', 'information_schema')
			and n.nspname !~ '^pg_toast' and n.nspname !~ '^pg_temp_') q`).Scan(&n, &first)
	if err != nil {
		return 0, "", fmt.Errorf("look for existing objects: %w", err)
	}
	return n, first, nil
}

// checkTarget refuses a database that holds user objects unless confirm:
// restoring into it drops them. It returns what it learned of the server.
func checkTarget(ctx context.Context, dsn string, confirm bool) (server, error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return server{}, fmt.Errorf("target: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	s, err := describe(ctx, conn)
	if err != nil {
		return s, fmt.Errorf("target: %w", err)
	}
	n, first, err := userObjects(ctx, conn)
	if err != nil {
		return s, fmt.Errorf("target: %w", err)
	}
	if n > 0 && !confirm {
		more := ""
		if n > 5 {
			more = ", ..."
		}
		return s, fmt.Errorf("%w: database %q holds %d tables, views or sequences (%s%s); restoring drops and replaces the objects the dump contains: add --confirm to do that",
			ErrNotEmpty, s.database, n, first, more)
	}
	return s, nil
}
