package basebackup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/wal"
)

var (
	// ErrArchivingOff: the cluster does not archive WAL, so a backup of it
	// could never be restored.
	ErrArchivingOff = errors.New("WAL archiving is off")
	// ErrStopTimeout: the backup's last WAL segment did not reach the
	// repository in time: archive_command is failing or points elsewhere.
	ErrStopTimeout = errors.New("timed out waiting for WAL archiving")
	// ErrUnsupported: a Postgres version walgo does not back up (the
	// same error as pgdata.ErrUnsupportedVersion).
	ErrUnsupported = pgdata.ErrUnsupportedVersion
)

// server is the Postgres session a backup holds open from start to stop.
type server struct {
	conn        *pgx.Conn
	version     int
	systemID    string
	dataDir     string
	segSize     int64
	archiveMode string
	lsns        lsnSettings
	// standby: the server is in recovery (a hot standby). Its backup is
	// non-exclusive on the standby itself; the WAL it needs is archived by
	// the primary.
	standby bool
}

func connect(ctx context.Context, dsn string) (*server, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	s := &server{conn: conn}
	err = conn.QueryRow(ctx, `select current_setting('server_version_num')::int,
		(select system_identifier::text from pg_control_system()),
		current_setting('data_directory'),
		(select setting::bigint from pg_settings where name = 'wal_segment_size'),
		current_setting('archive_mode'),
		current_setting('data_checksums') = 'on', current_setting('wal_log_hints') = 'on',
		pg_postmaster_start_time(), pg_is_in_recovery()`).Scan(&s.version, &s.systemID, &s.dataDir, &s.segSize, &s.archiveMode,
		&s.lsns.checksums, &s.lsns.walLogHints, &s.lsns.started, &s.standby)
	if err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("read server settings: %w", err)
	}
	if err := pgdata.CheckVersion(s.version); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("backup-push: %w", err)
	}
	return s, nil
}

func (s *server) close() { s.conn.Close(context.Background()) }

// checkArchiving refuses a cluster whose WAL is not archived. A standby's
// own settings say nothing about that (with archive_mode = on it archives
// nothing, its primary does): its backup waits for the WAL to reach the
// repository instead.
func (s *server) checkArchiving(ctx context.Context) error {
	if s.standby {
		return nil
	}
	if s.archiveMode == "off" {
		return fmt.Errorf("%w: archive_mode = off; a base backup needs the WAL written during and after it: set archive_mode = on and archive_command = 'walgo wal-push %%p'", ErrArchivingOff)
	}
	var cmd, lib string
	q := `select current_setting('archive_command'), coalesce(current_setting('archive_library', true), '')`
	if err := s.conn.QueryRow(ctx, q).Scan(&cmd, &lib); err != nil {
		return fmt.Errorf("read archive_command: %w", err)
	}
	if (cmd == "" || cmd == "(disabled)") && lib == "" {
		return fmt.Errorf("%w: archive_command is empty; set archive_command = 'walgo wal-push %%p'", ErrArchivingOff)
	}
	return nil
}

// checkpointTimeline is the timeline of the cluster's last checkpoint (on a
// standby, restartpoint): the one a backup starting there starts on.
func (s *server) checkpointTimeline(ctx context.Context) (uint32, error) {
	var tli uint32
	if err := s.conn.QueryRow(ctx, `select timeline_id from pg_control_checkpoint()`).Scan(&tli); err != nil {
		return 0, fmt.Errorf("read timeline: %w", err)
	}
	return tli, nil
}

// timeline is the timeline a backup started now will be on: a primary's
// insert timeline (its last checkpoint may predate a promotion), a
// standby's last restartpoint's.
func (s *server) timeline(ctx context.Context) (uint32, error) {
	var seg string
	q := `select case when pg_is_in_recovery() then '' else pg_walfile_name(pg_current_wal_insert_lsn()) end`
	if err := s.conn.QueryRow(ctx, q).Scan(&seg); err != nil {
		return 0, fmt.Errorf("read timeline: %w", err)
	}
	if seg == "" {
		return s.checkpointTimeline(ctx)
	}
	sg, err := wal.ParseSegment(seg)
	if err != nil {
		return 0, fmt.Errorf("read timeline: %w", err)
	}
	return sg.Timeline, nil
}

type startInfo struct {
	lsn      wal.LSN
	timeline uint32
	time     time.Time
}

// start begins a non-exclusive backup in this session.
func (s *server) start(ctx context.Context, label string, fast bool) (startInfo, error) {
	q := `select pg_backup_start($1, $2)::text`
	if s.version < 150000 {
		q = `select pg_start_backup($1, $2, false)::text`
	}
	var lsn string
	if err := s.conn.QueryRow(ctx, q, label, fast).Scan(&lsn); err != nil {
		return startInfo{}, fmt.Errorf("start backup: %w", err)
	}
	st := startInfo{time: time.Now().UTC()}
	var err error
	if st.lsn, err = wal.ParseLSN(lsn); err != nil {
		return startInfo{}, fmt.Errorf("start backup: %w", err)
	}
	if st.timeline, err = s.checkpointTimeline(ctx); err != nil {
		return startInfo{}, err
	}
	return st, nil
}

type stopInfo struct {
	lsn     wal.LSN
	label   string
	spcmap  string
	nextXID uint64
	time    time.Time
}

// stop ends the backup without waiting for archiving: Postgres polls the
// archiver only once a second, so Push waits instead by watching for the
// last segment in the repository itself, which it has to check anyway.
func (s *server) stop(ctx context.Context) (stopInfo, error) {
	q := `select lsn::text, labelfile, coalesce(spcmapfile, '') from pg_backup_stop(false)`
	if s.version < 150000 {
		q = `select lsn::text, labelfile, coalesce(spcmapfile, '') from pg_stop_backup(false, false)`
	}
	var st stopInfo
	var lsn string
	if err := s.conn.QueryRow(ctx, q).Scan(&lsn, &st.label, &st.spcmap); err != nil {
		return stopInfo{}, fmt.Errorf("stop backup: %w", err)
	}
	st.time = time.Now().UTC()
	var err error
	if st.lsn, err = wal.ParseLSN(lsn); err != nil {
		return stopInfo{}, fmt.Errorf("stop backup: %w", err)
	}
	if err := s.conn.QueryRow(ctx, `select txid_snapshot_xmax(txid_current_snapshot())::text::bigint`).Scan(&st.nextXID); err != nil {
		return stopInfo{}, fmt.Errorf("read next xid: %w", err)
	}
	return st, nil
}

type tablespace struct {
	oid      uint32
	name     string
	location string
}

func (s *server) tablespaces(ctx context.Context) ([]tablespace, error) {
	rows, err := s.conn.Query(ctx, `select oid::int8, spcname::text, pg_tablespace_location(oid) from pg_tablespace where pg_tablespace_location(oid) <> ''`)
	if err != nil {
		return nil, fmt.Errorf("list tablespaces: %w", err)
	}
	defer rows.Close()
	var out []tablespace
	for rows.Next() {
		var oid int64
		var t tablespace
		if err := rows.Scan(&oid, &t.name, &t.location); err != nil {
			return nil, err
		}
		t.oid = uint32(oid)
		out = append(out, t)
	}
	return out, rows.Err()
}
