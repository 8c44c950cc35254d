package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
)

// markerSQL creates the table the tests mark moments in.
const markerSQL = `create table if not exists marker(id int primary key, note text)`

// moment is a committed state of the source the tests restore to.
type moment struct {
	checksums string
	lsn       string // right after the marker's commit
	xid       string // the marker's transaction
	time      string // after the commit, before anything later
}

// mark commits marker id and records the moment right after it.
func mark(t *testing.T, c *pgtest.Cluster, id int) moment {
	t.Helper()
	xid := c.SQL(t, fmt.Sprintf("begin; insert into marker values (%d, 'marker %d'); select txid_current(); commit;", id, id))
	m := moment{xid: strings.TrimSpace(xid)}
	m.lsn = c.SQL(t, "select pg_current_wal_lsn()")
	m.checksums = c.SQL(t, tableChecksums) + "|" + c.SQL(t, "select string_agg(id::text, ',' order by id) from marker")
	time.Sleep(1100 * time.Millisecond) // commit timestamps are compared with the target
	m.time = c.SQL(t, "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	time.Sleep(1100 * time.Millisecond)
	return m
}

func state(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.SQL(t, tableChecksums) + "|" + c.SQL(t, "select string_agg(id::text, ',' order by id) from marker")
}

// archiveAll switches WAL and waits until the source archived it.
func archiveAll(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	last := c.SQL(t, "select pg_walfile_name(pg_switch_wal())")
	pgtest.WaitFor(t, 3*time.Minute, func() bool {
		return c.SQL(t, "select coalesce(last_archived_wal, '') >= '"+last+"' from pg_stat_archiver") == "t"
	}, "segment "+last+" archived")
}

// restoreAndStart runs backup-fetch into a fresh folder, then starts
// Postgres there; wait says what the restored cluster must reach.
func restoreAndStart(t *testing.T, r repo, args []string, conf ...string) *pgtest.Cluster {
	t.Helper()
	dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
	mustWalgo(t, r.env, append([]string{"backup-fetch", dir}, args...)...)
	pgtest.Chown(t, dir)
	c := pgtest.OpenExisting(t, dir, pgtest.Options{Env: r.env, Conf: append([]string{"archive_mode = off"}, conf...)})
	c.Start(t)
	return c
}

func waitPromoted(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	pgtest.WaitFor(t, 5*time.Minute, func() bool {
		out, err := c.Exec(context.Background(), "select pg_is_in_recovery()")
		return err == nil && out == "f"
	}, "recovery to reach its target and promote")
}

// TestPITR: a backup taken under load, then point-in-time restores by
// time, LSN and xid land exactly on the first marker; a restore of LATEST
// replays to the end of the archive and passes pg_amcheck and pg_checksums.
func TestPITR(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			src := archivingCluster(t, r)
			src.PgBench(t, "-i", "-s", "5", "-q")
			src.SQL(t, markerSQL)

			// backup-push while pgbench runs: 75 MiB at 10 MB/s keeps the
			// backup running for seconds of load.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			load := src.Command(ctx, "pgbench", "-n", "-T", "600", "-c", "2")
			if err := load.Start(); err != nil {
				t.Fatal(err)
			}
			res := mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=10MB"}, r.env...), "backup-push")
			cancel()
			load.Wait()
			if !strings.Contains(res.stderr, "backup finished") {
				t.Fatalf("backup-push said: %s", res.stderr)
			}

			first := mark(t, src, 1)
			src.PgBench(t, "-n", "-T", "3", "-c", "2")
			mark(t, src, 2)
			final := state(t, src)
			archiveAll(t, src)

			var list []struct {
				Name string `json:"name"`
			}
			out := mustWalgo(t, r.env, "backup-list", "--json")
			if err := json.Unmarshal([]byte(out.stdout), &list); err != nil || len(list) != 1 {
				t.Fatalf("backup-list --json: %v\n%s", err, out.stdout)
			}

			for _, tc := range []struct{ name, flag, value string }{
				{"time", "--target-time", first.time},
				{"lsn", "--target-lsn", first.lsn},
				{"xid", "--target-xid", first.xid},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c := restoreAndStart(t, r, []string{tc.flag, tc.value})
					waitPromoted(t, c)
					if got := state(t, c); got != first.checksums {
						t.Fatalf("restored to %s %s: state differs\n got %s\nwant %s", tc.flag, tc.value, got, first.checksums)
					}
				})
			}

			t.Run("latest", func(t *testing.T) {
				c := restoreAndStart(t, r, []string{"LATEST"})
				waitPromoted(t, c)
				if got := state(t, c); got != final {
					t.Fatalf("LATEST: state differs from the source's final state\n got %s\nwant %s", got, final)
				}
				amcheck := c.Command(context.Background(), "pg_amcheck", "--all", "--install-missing", "-h", "127.0.0.1", "-p", fmt.Sprint(c.Port()), "-U", "postgres")
				if out, err := amcheck.CombinedOutput(); err != nil {
					t.Fatalf("pg_amcheck: %v\n%s", err, out)
				}
				c.Stop(t)
				check := c.Command(context.Background(), "pg_checksums", "--check", "-D", c.DataDir())
				if out, err := check.CombinedOutput(); err != nil {
					t.Fatalf("pg_checksums: %v\n%s", err, out)
				}
			})
		})
	}
}

// TestFollower: a --standby restore keeps replaying what the leader archives.
func TestFollower(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	src.SQL(t, markerSQL)
	mustWalgoAs(t, src, r.env, "backup-push")
	archiveAll(t, src)

	f := restoreAndStart(t, r, []string{"LATEST", "--standby"}, "hot_standby = on")
	followerReplays(t, src, f)
}

// followerReplays checks that f, restored with --standby from src's
// archive, stays in recovery and replays a row src writes and archives.
func followerReplays(t *testing.T, src, f *pgtest.Cluster) {
	t.Helper()
	if got := f.SQL(t, "select pg_is_in_recovery()"); got != "t" {
		t.Fatalf("follower is not in recovery: %s", got)
	}
	src.SQL(t, "insert into marker values (42, 'after the follower started')")
	archiveAll(t, src)
	pgtest.WaitFor(t, 3*time.Minute, func() bool {
		out, err := f.Exec(context.Background(), "select count(*) from marker where id = 42")
		return err == nil && out == "1"
	}, "the follower to replay the leader's new row")
}

// TestForkTimelines: a promoted fork archives timeline 2 into the same
// repository; restoring the latest state of lineage 2 follows the .history
// file there, and LATEST with no lineage named is refused.
func TestForkTimelines(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	src.SQL(t, markerSQL)
	mustWalgoAs(t, src, r.env, "backup-push")
	m := mark(t, src, 1)
	mark(t, src, 2)
	archiveAll(t, src)

	// The fork: restored to marker 1, promoted, archiving again.
	fork := restoreAndStart(t, r, []string{"--target-lsn", m.lsn}, "archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin))
	waitPromoted(t, fork)
	if tli := fork.SQL(t, "select timeline_id from pg_control_checkpoint()"); tli != "2" {
		t.Logf("fork's checkpoint timeline is %s (promotion checkpoint may lag)", tli)
	}
	fork.SQL(t, "insert into marker values (100, 'written on the fork')")
	forkState := state(t, fork)
	archiveAll(t, fork)
	if _, err := os.Stat(filepath.Join(r.root, "wal_005", "00000002.history.zst")); err != nil {
		t.Fatalf("the fork's timeline history was not archived: %v", err)
	}

	if res := walgo(t, r.env, "backup-fetch", filepath.Join(pgtest.OwnedDir(t, "refused"), "data"), "LATEST"); res.code != 2 || !strings.Contains(res.stderr, "lineage 2") {
		t.Errorf("LATEST with a fork in the repository and no lineage named: exit %d, want 2 naming lineage 2\n%s", res.code, res.stderr)
	}
	c := restoreAndStart(t, r, []string{"LATEST", "--lineage", "2"})
	waitPromoted(t, c)
	if got := state(t, c); got != forkState {
		t.Fatalf("latest state of timeline 2 differs\n got %s\nwant %s", got, forkState)
	}
}

// TestDeltaChain: full, changes, delta, changes, delta; the last delta
// restores to the source's state and stores much less than the full.
func TestDeltaChain(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "10", "-q")
	src.SQL(t, markerSQL)
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	mustWalgoAs(t, src, env, "backup-push")
	sizes := []int64{}
	for i := range 2 {
		src.PgBench(t, "-n", "-t", "300", "-c", "2")
		src.SQL(t, fmt.Sprintf("insert into marker values (%d, 'before delta')", i+1))
		mustWalgoAs(t, src, env, "backup-push", "--delta")
	}
	final := state(t, src)
	archiveAll(t, src)

	list := backupDetails(t, r, 3)
	if list[1].DeltaParent != list[0].Name || list[2].DeltaParent != list[1].Name {
		t.Fatalf("delta chain: %+v", list)
	}
	for _, b := range list {
		sizes = append(sizes, b.CompressedSize)
	}
	t.Logf("stored sizes: full %d, delta1 %d (%.1f%%), delta2 %d (%.1f%%)", sizes[0],
		sizes[1], 100*float64(sizes[1])/float64(sizes[0]), sizes[2], 100*float64(sizes[2])/float64(sizes[0]))
	if sizes[1]*3 > sizes[0] || sizes[2]*3 > sizes[0] {
		t.Errorf("deltas store too much: %v", sizes)
	}

	c := restoreAndStart(t, r, []string{list[2].Name})
	waitPromoted(t, c)
	if got := state(t, c); got != final {
		t.Fatalf("restored delta differs\n got %s\nwant %s", got, final)
	}
}
