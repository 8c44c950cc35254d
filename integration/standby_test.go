package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
)

// TestStandbyBackup: backup-push against a hot standby streaming from a
// primary that archives into the repository. The backup is taken on the
// standby (its data directory, a non-exclusive backup there: the primary's
// log, which records every statement, shows no backup function called),
// waits for the primary to archive its last segment, and restores to the
// primary's data at a later point. Without archive_timeout on an idle
// primary that segment never comes: the backup gives up with a message
// that says what to do, and lists nothing. On 13 (pg_start_backup's
// non-exclusive form on the standby) and 15 (pg_backup_start).
func TestStandbyBackup(t *testing.T) {
	for _, major := range []int{13, 15} {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			standbyBackup(t, major)
		})
	}
}

func standbyBackup(t *testing.T, major int) {
	r := fileRepo(t)
	primary := matrixCluster(t, r, major, []string{"-k"}, "log_statement = 'all'", "archive_timeout = '1s'",
		fmt.Sprintf("log_line_prefix = '%s'", "%m [%p] "))
	primary.PgBench(t, "-i", "-s", "2", "-q")
	primary.SQL(t, markerSQL)

	// The standby: pg_basebackup -R (replication protocol, no backup
	// function), streaming, hot, archiving nothing itself (its primary
	// does).
	dir := filepath.Join(pgtest.OwnedDir(t, "standby"), "data")
	out, err := primary.Command(context.Background(), "pg_basebackup", "-D", dir, "-R", "-X", "stream", "-c", "fast").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	// -R's primary_conninfo names options of pg_basebackup's libpq (15:
	// sslsni) that an older server's walreceiver refuses: a plain one.
	auto, err := os.OpenFile(filepath.Join(dir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(auto, "primary_conninfo = 'host=127.0.0.1 port=%d user=postgres'\n", primary.Port())
	if err := auto.Close(); err != nil {
		t.Fatal(err)
	}
	standby := pgtest.OpenExisting(t, dir, pgtest.Options{Env: r.env, Conf: []string{"hot_standby = on", "log_statement = 'none'", "archive_mode = off"}})
	standby.Start(t)
	if got := standby.SQL(t, "select pg_is_in_recovery()"); got != "t" {
		t.Fatalf("standby not in recovery: %s", got)
	}
	caughtUp := func(t *testing.T) {
		t.Helper()
		lsn := primary.SQL(t, "select pg_current_wal_lsn()")
		pgtest.WaitFor(t, 2*time.Minute, func() bool {
			out, err := standby.Exec(context.Background(), "select pg_last_wal_replay_lsn() >= '"+lsn+"'")
			return err == nil && out == "t"
		}, "the standby to replay "+lsn)
	}
	primary.PgBench(t, "-n", "-t", "200", "-c", "2")
	primary.SQL(t, "checkpoint")
	caughtUp(t)
	logStart := fileSize(t, primary.LogFile())

	env := append([]string{"WALGO_DISK_RATE_LIMIT=0", "PGDATA=" + standby.DataDir()}, r.env...)
	res := mustWalgoAs(t, standby, env, "backup-push")
	if !strings.Contains(res.stderr, "backing up a standby") {
		t.Errorf("backup-push did not say it backs up a standby:\n%s", res.stderr)
	}
	names := listBackups(t, r)
	if len(names) != 1 {
		t.Fatalf("backups: %v", names)
	}
	sn, err := catalog.ReadSentinel(context.Background(), r.openStore(t), names[0])
	if err != nil {
		t.Fatal(err)
	}
	if !sn.FromStandby || sn.DataDir != standby.DataDir() || !strings.Contains(sn.BackupLabel, "BACKUP FROM: standby") {
		t.Errorf("sentinel: from standby %v, data directory %s (standby's %s), backup_label:\n%s",
			sn.FromStandby, sn.DataDir, standby.DataDir(), sn.BackupLabel)
	}
	// The primary ran no backup function while the standby's backup ran
	// (and it logs statements: the one after the backup is there).
	primary.SQL(t, "select 'after the standby backup'")
	log := logSince(t, primary.LogFile(), logStart)
	if !strings.Contains(log, "statement: select 'after the standby backup'") {
		t.Fatalf("the primary does not log statements:\n%s", log)
	}
	for _, fn := range []string{"pg_backup_start", "pg_start_backup", "pg_backup_stop", "pg_stop_backup"} {
		if strings.Contains(log, fn) {
			t.Errorf("the primary saw %s:\n%s", fn, log)
		}
	}

	// The backup restores to the primary's data at a later point.
	primary.PgBench(t, "-n", "-t", "100", "-c", "2")
	m := quickMark(t, primary, 1)
	archiveAll(t, primary)
	c := restoreAndStart(t, r, []string{names[0], "--target-xid", m.xid})
	waitPromoted(t, c)
	if got := state(t, c); got != m.checksums {
		t.Fatalf("restored standby backup differs from the primary\n got %s\nwant %s", got, m.checksums)
	}
	matrixAmcheck(t, c)

	// An idle primary without archive_timeout never archives the segment
	// the standby's backup ends in.
	primary.SQL(t, "alter system set archive_timeout = 0; select pg_reload_conf()")
	archiveAll(t, primary)
	primary.SQL(t, "insert into marker values (2, 'before the second backup'); checkpoint")
	caughtUp(t)
	res = walgoAs(t, standby, append([]string{"WALGO_STOP_BACKUP_TIMEOUT=3s"}, env...), "backup-push")
	if res.code == 0 {
		t.Fatalf("backup-push of a standby whose last segment is never archived exited 0:\n%s", res.stderr)
	}
	for _, want := range []string{"timed out waiting for WAL archiving", "standby", "archive_timeout", "pg_switch_wal()"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("the timeout message lacks %q:\n%s", want, res.stderr)
		}
	}
	if got := listBackups(t, r); len(got) != 1 {
		t.Errorf("a backup that timed out is listed: %v", got)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func logSince(t *testing.T, path string, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[offset:])
}
