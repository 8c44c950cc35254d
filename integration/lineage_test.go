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

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/wal"
)

// markerIDs is the marker ids a cluster holds, "1,2,100".
func markerIDs(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.SQL(t, "select coalesce(string_agg(id::text, ',' order by id), '') from marker")
}

// eventually polls cond for at most timeout and reports whether it held.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
	return true
}

// hasMarker reports whether c (maybe still recovering) holds marker id.
func hasMarker(c *pgtest.Cluster, id int) bool {
	out, err := c.Exec(context.Background(), fmt.Sprintf("select count(*) from marker where id = %d", id))
	return err == nil && out == "1"
}

// restoreDir runs backup-fetch into a fresh folder and returns it with the
// result, without starting anything.
func restoreDir(t *testing.T, r repo, args ...string) (string, result) {
	t.Helper()
	dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
	return dir, walgo(t, r.env, append([]string{"backup-fetch", dir}, args...)...)
}

// openRestored opens a restored folder as a cluster (archive_mode off unless
// conf says otherwise) without starting it.
func openRestored(t *testing.T, r repo, dir string, conf ...string) *pgtest.Cluster {
	t.Helper()
	pgtest.Chown(t, dir)
	return pgtest.OpenExisting(t, dir, pgtest.Options{Env: r.env, Conf: append([]string{"archive_mode = off"}, conf...)})
}

type lineageBackup struct {
	Name        string   `json:"name"`
	Timeline    uint32   `json:"timeline"`
	StartLSN    string   `json:"start_lsn"`
	FinishLSN   string   `json:"finish_lsn"`
	DeltaParent string   `json:"delta_parent"`
	Lineages    []string `json:"lineages"`
}

func lineageBackups(t *testing.T, r repo) []lineageBackup {
	t.Helper()
	out := mustWalgo(t, r.env, "backup-list", "--json", "--detail")
	var list []lineageBackup
	if err := json.Unmarshal([]byte(out.stdout), &list); err != nil {
		t.Fatalf("backup-list --json: %v\n%s", err, out.stdout)
	}
	return list
}

// TestLineages: a primary, a fork restored from it and promoted onto
// timeline 2 that archives into the same repository (as the README
// advises), and followers of the primary. Every choice walgo makes must
// stay within the history asked for: followers keep following the
// primary, restores of the primary never replay the fork's WAL, a delta
// on the fork never builds on a backup of the primary taken after the fork,
// wal-verify checks each history, retention keeps each history
// restorable, and where walgo cannot know which history is meant it
// refuses and names them.
func TestLineages(t *testing.T) {
	r := fileRepo(t)
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "1", "-q")
	src.SQL(t, markerSQL)
	mustWalgoAs(t, src, env, "backup-push") // b1: before the fork, in both histories
	src.SQL(t, "insert into marker values (1, 'primary, before the fork')")
	archiveAll(t, src)

	// f1 follows the primary from before the fork.
	f1 := restoreAndStart(t, r, []string{"LATEST", "--standby"}, "hot_standby = on")
	pgtest.WaitFor(t, 3*time.Minute, func() bool { return hasMarker(f1, 1) }, "the follower to replay marker 1")

	// The fork: the latest archived state of the primary, promoted onto
	// timeline 2, archiving into the same repository.
	fork := restoreAndStart(t, r, []string{"LATEST"}, "archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin))
	waitPromoted(t, fork)
	fork.SQL(t, "insert into marker values (100, 'written on the fork')")
	fork.PgBench(t, "-n", "-t", "200", "-c", "1")
	archiveAll(t, fork)
	if _, err := os.Stat(filepath.Join(r.root, "wal_005", "00000002.history.zst")); err != nil {
		t.Fatalf("the fork did not archive its timeline history: %v", err)
	}
	// Give f1 time to see 00000002.history (it polls every 5 s) before the
	// primary archives anything newer.
	time.Sleep(12 * time.Second)

	m2 := mark(t, src, 2) // primary only, after the fork
	archiveAll(t, src)

	t.Run("follower from before the fork", func(t *testing.T) {
		if !eventually(90*time.Second, func() bool { return hasMarker(f1, 2) || hasMarker(f1, 100) }) {
			t.Fatalf("the follower replayed neither the primary's marker 2 nor the fork's 100: %s", markerIDs(t, f1))
		}
		if hasMarker(f1, 100) || !hasMarker(f1, 2) {
			t.Errorf("the follower of the primary switched to the fork's timeline: it holds markers %s, want 1,2", markerIDs(t, f1))
		}
	})

	t.Run("follower created after the fork", func(t *testing.T) {
		dir, res := restoreDir(t, r, "LATEST", "--standby")
		if res.code == 0 {
			f := openRestored(t, r, dir, "hot_standby = on")
			f.Start(t)
			eventually(60*time.Second, func() bool { return hasMarker(f, 2) || hasMarker(f, 100) })
			t.Errorf("a follower restored with no history named, where two are possible, was not refused: it holds markers %s", markerIDs(t, f))
		} else if res.code != 2 || !strings.Contains(res.stderr, "--lineage") || !strings.Contains(res.stderr, "lineage 1") || !strings.Contains(res.stderr, "lineage 2") {
			t.Errorf("want exit 2 naming lineages 1 and 2 and --lineage; exit %d\n%s", res.code, res.stderr)
		}
		dir, res = restoreDir(t, r, "LATEST", "--standby", "--lineage", "1")
		if res.code != 0 {
			t.Fatalf("--lineage 1: exit %d\n%s", res.code, res.stderr)
		}
		f := openRestored(t, r, dir, "hot_standby = on")
		f.Start(t)
		if !eventually(90*time.Second, func() bool { return hasMarker(f, 2) || hasMarker(f, 100) }) || hasMarker(f, 100) {
			t.Errorf("follower restored on lineage 1 holds markers %s, want 1,2", markerIDs(t, f))
		}
	})

	mustWalgoAs(t, src, env, "backup-push") // b3: the primary's, after the fork
	src.SQL(t, "insert into marker values (3, 'primary, after b3')")
	primary := state(t, src)
	archiveAll(t, src)
	list := lineageBackups(t, r)
	if len(list) != 2 {
		t.Fatalf("want 2 backups, got %+v", list)
	}
	b1, b3 := list[0], list[1]

	t.Run("restore the primary's newest backup", func(t *testing.T) {
		for _, args := range [][]string{{b3.Name}, {"LATEST", "--lineage", "1"}} {
			dir, res := restoreDir(t, r, args...)
			if res.code != 0 {
				t.Errorf("backup-fetch %v: exit %d\n%s", args, res.code, res.stderr)
				continue
			}
			c := openRestored(t, r, dir)
			if err := c.TryStart(); err != nil {
				t.Errorf("backup-fetch %v: the restored primary does not start: %v", args, err)
				continue
			}
			waitPromoted(t, c)
			if got := state(t, c); got != primary {
				t.Errorf("backup-fetch %v: restored state differs from the primary's\n got %s\nwant %s", args, got, primary)
			}
		}
		dir, res := restoreDir(t, r, "LATEST")
		if res.code == 0 {
			c := openRestored(t, r, dir)
			err := c.TryStart()
			t.Errorf("LATEST with two histories and none named was not refused (start: %v)", err)
		} else if res.code != 2 || !strings.Contains(res.stderr, "lineage 1") || !strings.Contains(res.stderr, "lineage 2") {
			t.Errorf("LATEST: want exit 2 naming both lineages; exit %d\n%s", res.code, res.stderr)
		}
	})

	t.Run("target time after the fork", func(t *testing.T) {
		dir, res := restoreDir(t, r, "--target-time", m2.time, "--lineage", "1")
		if res.code != 0 {
			// Without --lineage: what today's code does.
			dir, res = restoreDir(t, r, "--target-time", m2.time)
			if res.code != 0 {
				t.Fatalf("--target-time: exit %d\n%s", res.code, res.stderr)
			}
		}
		c := openRestored(t, r, dir)
		if err := c.TryStart(); err != nil {
			t.Fatalf("restored to %s: does not start: %v", m2.time, err)
		}
		if !eventually(3*time.Minute, func() bool {
			out, err := c.Exec(context.Background(), "select pg_is_in_recovery()")
			return err == nil && out == "f"
		}) {
			t.Fatalf("restored to %s: never promoted", m2.time)
		}
		if got := state(t, c); got != m2.checksums {
			t.Errorf("restored to %s on the primary's history: got %s, want %s", m2.time, got, m2.checksums)
		}
		dir, res = restoreDir(t, r, "--target-time", m2.time)
		if res.code == 0 {
			t.Errorf("a target time with two histories and none named was not refused")
		} else if res.code != 2 || !strings.Contains(res.stderr, "lineage 2") {
			t.Errorf("want exit 2 naming lineage 2; exit %d\n%s", res.code, res.stderr)
		}
		_ = dir
	})

	t.Run("wal-verify per history", func(t *testing.T) {
		v, res := walVerify(t, r)
		if res.code != 0 || !v.OK {
			t.Fatalf("wal-verify: exit %d\n%s", res.code, res.stdout)
		}
		// Each backup along each history it is on, following that
		// history's timeline: the primary's b3 along timeline 1 only.
		want := map[string]uint32{b1.Name + " 1": 1, b1.Name + " 2": 2, b3.Name + " 1": 1}
		got := map[string]uint32{}
		for _, b := range v.Backups {
			got[b.Backup+" "+b.Lineage] = b.Follows
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("wal-verify: backup lineage -> followed timeline %v, want %v\n%s", got, want, res.stdout)
		}
		// Hide the primary's segment that holds the fork's switch point:
		// b1 restored along the primary's history needs it, along the
		// fork's it does not, and b3 starts after it.
		hist, err := os.ReadFile(filepath.Join(r.root, "wal_005", "00000002.history.zst"))
		if err != nil {
			t.Fatal(err)
		}
		entries := parseHistory(t, hist)
		if len(entries) != 1 || entries[0].Timeline != 1 {
			t.Fatalf("00000002.history: %+v", entries)
		}
		gone := wal.SegmentAt(1, entries[0].Switch, wal.DefaultSegmentSize)
		start3, _ := wal.ParseLSN(b3.StartLSN)
		if gone.No(wal.DefaultSegmentSize) >= wal.SegmentAt(1, start3, wal.DefaultSegmentSize).No(wal.DefaultSegmentSize) {
			t.Fatalf("the switch segment %s is not before b3's start %s", gone, b3.StartLSN)
		}
		put := hide(t, r, catalog.WALKey(gone.Name(), codec.Zstd{}))
		defer put()
		res = walgo(t, r.env, "wal-verify")
		t.Logf("wal-verify with %s hidden:\n%s", gone, res.stdout)
		if res.code != 5 || !strings.Contains(res.stdout, gone.Name()) {
			t.Errorf("a gap on the primary's history after the fork: exit %d, want 5 naming %s\n%s", res.code, gone, res.stdout)
		}
	})

	t.Run("delta on the fork", func(t *testing.T) {
		fork.PgBench(t, "-n", "-t", "200", "-c", "1")
		fork.SQL(t, "insert into marker values (101, 'fork, before its delta')")
		mustWalgoAs(t, fork, env, "backup-push", "--delta")
		forkState := state(t, fork)
		archiveAll(t, fork)
		list := lineageBackups(t, r)
		d := list[len(list)-1]
		if d.Timeline != 2 {
			t.Fatalf("the fork's backup: %+v", d)
		}
		if d.DeltaParent != b1.Name {
			t.Errorf("the fork's delta builds on %s, want %s (the primary's %s is another history)", d.DeltaParent, b1.Name, b3.Name)
		}
		dir, res := restoreDir(t, r, d.Name)
		if res.code != 0 {
			t.Fatalf("backup-fetch %s: exit %d\n%s", d.Name, res.code, res.stderr)
		}
		c := openRestored(t, r, dir)
		if err := c.TryStart(); err != nil {
			t.Fatalf("the fork's delta does not start: %v", err)
		}
		waitPromoted(t, c)
		if got := state(t, c); got != forkState {
			t.Errorf("the fork's delta restores another state\n got %s\nwant %s", got, forkState)
		}
	})

	t.Run("backup-list shows lineages", func(t *testing.T) {
		want := map[string]string{b1.Name: "1,2", b3.Name: "1"}
		for _, b := range lineageBackups(t, r) {
			got := strings.Join(b.Lineages, ",")
			if w, ok := want[b.Name]; ok && got != w || !ok && got != "2" {
				t.Errorf("%s (timeline %d): lineages %q", b.Name, b.Timeline, got)
			}
		}
		out := mustWalgo(t, r.env, "backup-list")
		if !strings.Contains(out.stdout, "LINEAGE") {
			t.Errorf("backup-list has no LINEAGE column:\n%s", out.stdout)
		}
		t.Logf("backup-list:\n%s", out.stdout)
	})

	t.Run("dumps carry their lineage", func(t *testing.T) {
		mustWalgoAs(t, src, env, "dump-push", "dbname=postgres")
		mustWalgoAs(t, fork, env, "dump-push", "dbname=postgres")
		var dumps []struct {
			Name     string   `json:"name"`
			Timeline uint32   `json:"timeline"`
			Lineages []string `json:"lineages"`
		}
		out := mustWalgo(t, r.env, "dump-list", "--json")
		if err := json.Unmarshal([]byte(out.stdout), &dumps); err != nil || len(dumps) != 2 {
			t.Fatalf("dump-list --json: %v\n%s", err, out.stdout)
		}
		if strings.Join(dumps[0].Lineages, ",") != "1" || strings.Join(dumps[1].Lineages, ",") != "2" {
			t.Errorf("dumps of the primary then the fork: %+v", dumps)
		}
		// LATEST of the primary's lineage is its dump, not the fork's newer one.
		path := filepath.Join(pgtest.OwnedDir(t, "dump"), "primary.dump")
		res := mustWalgo(t, r.env, "dump-fetch", "LATEST", path, "--lineage", "1")
		if !strings.Contains(res.stdout, dumps[0].Name) {
			t.Errorf("dump-fetch LATEST --lineage 1: %s, want %s", res.stdout, dumps[0].Name)
		}
	})

	t.Run("retain per lineage", func(t *testing.T) {
		// The fork takes a newer full backup: a global "retain 1" would
		// keep only it and delete the primary's backups and WAL.
		fork.SQL(t, "insert into marker values (102, 'fork, full backup')")
		mustWalgoAs(t, fork, env, "backup-push")
		archiveAll(t, fork)
		res := walgo(t, r.env, "delete", "retain", "1", "--confirm")
		if res.code != 0 {
			t.Fatalf("delete retain 1: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		t.Logf("delete retain 1:\n%s", res.stdout)
		names := map[string]bool{}
		for _, b := range lineageBackups(t, r) {
			names[b.Name] = true
		}
		if !names[b3.Name] {
			t.Fatalf("retain 1 deleted %s, the primary's newest backup, for the fork's newer one", b3.Name)
		}
		dir, res := restoreDir(t, r, "LATEST", "--lineage", "1")
		if res.code != 0 {
			t.Fatalf("LATEST --lineage 1 after retain 1: exit %d\n%s", res.code, res.stderr)
		}
		c := openRestored(t, r, dir)
		if err := c.TryStart(); err != nil {
			t.Fatalf("the primary's backup after retain 1 does not start: %v", err)
		}
		waitPromoted(t, c)
		if got := state(t, c); got != primary {
			t.Errorf("the primary's history after retain 1\n got %s\nwant %s", got, primary)
		}
	})
}

// parseHistory decodes a zstd history file.
func parseHistory(t *testing.T, stored []byte) []catalog.HistoryEntry {
	t.Helper()
	dec, err := codec.New(nil, nil, nil).Decode("zst", strings.NewReader(string(stored)))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	h, err := catalog.ParseTimelineHistory(dec)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
