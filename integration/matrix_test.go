package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
)

// TestMatrix runs the end-to-end core against every PostgreSQL major of
// the version matrix (pgtest.MatrixMajors: scripts/versions, or
// WALGO_TEST_PG_MAJORS=13,17 for a few): WAL archived under pgbench with
// no gap, a full backup taken under load and two deltas, point-in-time
// restores by time, name, LSN and xid that land exactly on their marker,
// a follower, a fork on timeline 2 restored through the delta chain, the
// end of the primary's history through the longer chain, and restore-test.
// On 13 and 14 this is the pg_start_backup/pg_stop_backup API, from 15 on
// pg_backup_start/pg_backup_stop: each exists only on its side of 15, so a
// backup on each major shows walgo called the right one. PostgreSQL 18's
// cluster is made without -k: its initdb turns data checksums on by
// default, and the deltas must be taken as deltas. From 17 on,
// summarize_wal is on.
func TestMatrix(t *testing.T) {
	for _, major := range pgtest.MatrixMajors(t) {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			matrixCore(t, major)
			t.Logf("PostgreSQL %d: core took %s", major, time.Since(start).Round(time.Second))
		})
	}
}

// matrixCluster starts a cluster of the given major (0: the default
// installation's) that archives through walgo into r.
func matrixCluster(t *testing.T, r repo, major int, initdb []string, conf ...string) *pgtest.Cluster {
	t.Helper()
	c := pgtest.New(t, pgtest.Options{
		Major:      major,
		InitdbArgs: initdb,
		Env:        r.env,
		Conf: append([]string{
			"archive_mode = on",
			fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin),
		}, conf...),
	})
	c.Start(t)
	return c
}

func matrixCore(t *testing.T, major int) {
	r := fileRepo(t)
	initdb := []string{"-k"}
	if major >= 18 {
		initdb = nil // checksums are initdb's default
	}
	var conf []string
	if major >= 17 {
		// WAL summaries on (walgo leaves them alone): a restored
		// cluster's summarizer must find its pg_wal/summaries.
		conf = append(conf, "summarize_wal = on")
	}
	src := matrixCluster(t, r, major, initdb, conf...)
	if got := src.SQL(t, "select current_setting('server_version_num')::int / 10000"); got != fmt.Sprint(major) {
		t.Fatalf("server is PostgreSQL %s, want %d", got, major)
	}
	if got := src.SQL(t, "show data_checksums"); got != "on" {
		t.Fatalf("data_checksums = %s, want on", got)
	}
	src.PgBench(t, "-i", "-s", "1", "-q")
	src.SQL(t, markerSQL)
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)

	// The full backup, taken while pgbench writes.
	ctx, cancel := context.WithCancel(context.Background())
	load := src.Command(ctx, "pgbench", "-n", "-T", "60", "-c", "2")
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	res := walgoAs(t, src, env, "backup-push")
	cancel()
	load.Wait()
	if res.code != 0 || !strings.Contains(res.stderr, "backup finished") {
		t.Fatalf("backup-push: exit %d\n%s", res.code, res.stderr)
	}

	// Marker 1 is the time and name target, marker 2 the LSN and xid one.
	m1 := mark(t, src, 1)
	src.SQL(t, "select pg_create_restore_point('matrix 1')")
	src.PgBench(t, "-n", "-t", "150", "-c", "2")
	mustWalgoAs(t, src, env, "backup-push", "--delta")
	src.PgBench(t, "-n", "-t", "150", "-c", "2")
	m2 := quickMark(t, src, 2)
	mustWalgoAs(t, src, env, "backup-push", "--delta")
	src.PgBench(t, "-n", "-t", "150", "-c", "2")
	quickMark(t, src, 3)
	final := state(t, src)
	archiveAll(t, src)
	if failed := src.SQL(t, "select failed_count from pg_stat_archiver"); failed != "0" {
		t.Errorf("pg_stat_archiver.failed_count = %s, want 0", failed)
	}

	list := backupDetails(t, r, 3)
	full, delta1, delta2 := list[0], list[1], list[2]
	if full.DeltaParent != "" || delta1.DeltaParent != full.Name || delta2.DeltaParent != delta1.Name {
		t.Fatalf("want a full backup and a chain of two deltas: %+v", list)
	}
	for _, b := range list[1:] {
		if b.DeltaRefused != "" || b.CompressedSize*2 > full.CompressedSize {
			t.Errorf("delta %s: refused %q, %d stored bytes of the full's %d", b.Name, b.DeltaRefused, b.CompressedSize, full.CompressedSize)
		}
	}
	// Every segment from the first backup's start on is archived, with no gap.
	if v, res := walVerify(t, r); res.code != 0 || !v.OK || len(v.Backups) != 3 {
		t.Fatalf("wal-verify: exit %d %+v\n%s", res.code, v, res.stderr)
	}

	check := func(t *testing.T, c *pgtest.Cluster, want string) {
		t.Helper()
		if got := state(t, c); got != want {
			t.Fatalf("restored state differs\n got %s\nwant %s", got, want)
		}
	}
	// Restores of timeline 1 first, two at a time: the follower and the
	// fork below write to it and add timeline 2.
	t.Run("restores", func(t *testing.T) {
		for _, tc := range []struct {
			name, backup, flag, value string
			want                      moment
		}{
			{"time", "", "--target-time", m1.time, m1},
			// The backup named: walgo's own choice for a name target is
			// helper targets' (a name is found in the archived WAL).
			{"name", full.Name, "--target-name", "matrix 1", m1},
			{"lsn", "", "--target-lsn", m2.lsn, m2},
			{"xid", "", "--target-xid", m2.xid, m2},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				args := []string{tc.flag, tc.value}
				if tc.backup != "" {
					args = append([]string{tc.backup}, args...)
				}
				c := restoreAndStart(t, r, args)
				waitPromoted(t, c)
				check(t, c, tc.want.checksums)
			})
		}
		// The end of timeline 1 through the longest chain, checked by
		// Postgres.
		t.Run("latest", func(t *testing.T) {
			t.Parallel()
			c := restoreAndStart(t, r, []string{delta2.Name, "--lineage", "1"})
			waitPromoted(t, c)
			check(t, c, final)
			matrixAmcheck(t, c)
			if major >= 17 {
				// Fails if the restore lacks pg_wal/summaries.
				c.SQL(t, "select count(*) from pg_available_wal_summaries()")
			}
		})
		t.Run("restore-test", func(t *testing.T) {
			t.Parallel()
			res := walgoAs(t, src, env, "restore-test", delta2.Name, "--pg-bindir", src.ServerBinDir(), "--work-dir", pgtest.OwnedDir(t, "drill"))
			if res.code != 0 || !strings.Contains(res.stdout, "restore-test "+delta2.Name+": OK") {
				t.Fatalf("restore-test: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
			}
		})
	})

	t.Run("follower and fork", func(t *testing.T) {
		t.Run("follower", func(t *testing.T) {
			t.Parallel()
			// Lineage 1 pinned: the fork beside it archives timeline 2.
			f := restoreAndStart(t, r, []string{delta2.Name, "--standby", "--lineage", "1"}, "hot_standby = on")
			followerReplays(t, src, f)
		})
		// A fork at marker 2, promoted to timeline 2 and archiving into
		// the same repository; its end restores through the first delta.
		t.Run("fork", func(t *testing.T) {
			t.Parallel()
			fork := restoreAndStart(t, r, []string{"--target-lsn", m2.lsn}, "archive_mode = on",
				fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin))
			waitPromoted(t, fork)
			check(t, fork, m2.checksums)
			fork.SQL(t, "insert into marker values (100, 'written on the fork')")
			forkState := state(t, fork)
			archiveAll(t, fork)
			c := restoreAndStart(t, r, []string{delta1.Name, "--lineage", "2"})
			waitPromoted(t, c)
			check(t, c, forkState)
			if tli := c.SQL(t, "select timeline_id from pg_control_checkpoint()"); tli == "1" {
				t.Errorf("the fork's restore is on timeline %s", tli)
			}
		})
	})
}

// quickMark is mark for LSN and xid targets only: no waits for a time.
func quickMark(t *testing.T, c *pgtest.Cluster, id int) moment {
	t.Helper()
	xid := c.SQL(t, fmt.Sprintf("begin; insert into marker values (%d, 'marker %d'); select txid_current(); commit;", id, id))
	return moment{xid: strings.TrimSpace(xid), lsn: c.SQL(t, "select pg_current_wal_lsn()"), checksums: state(t, c)}
}

// matrixAmcheck checks every index against its table with amcheck:
// pg_amcheck --heapallindexed (heap and indexes) where the server has
// verify_heapam (14 and later), bt_index_check(heapallindexed) on every
// B-tree index of every database on 13, whose amcheck has no heap check.
func matrixAmcheck(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	if c.Major() >= 14 {
		amcheck(t, c)
		return
	}
	dbs := strings.Fields(c.SQL(t, "select datname from pg_database where datallowconn"))
	for _, db := range dbs {
		cmd := c.Command(context.Background(), "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-c",
			`create extension if not exists amcheck; select count(bt_index_check(i.indexrelid, true)) from pg_index i
			 join pg_class c on c.oid = i.indexrelid join pg_am a on a.oid = c.relam
			 where a.amname = 'btree' and i.indisvalid and c.relpersistence <> 't'`)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bt_index_check in %s: %v\n%s", db, err, out)
		}
	}
}
