package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/storage"
)

// storeKeys lists every object in the repository, sorted.
func storeKeys(t *testing.T, s storage.Store) []string {
	t.Helper()
	var keys []string
	if err := s.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// deletePlan is the part of `delete --json` the tests read.
type deletePlan struct {
	DryRun  bool `json:"dry_run"`
	Backups []struct {
		Name   string   `json:"name"`
		Delete bool     `json:"delete"`
		Reason string   `json:"reason"`
		Keys   []string `json:"keys"`
	} `json:"backups"`
	Unfinished []struct {
		Name   string   `json:"name"`
		Delete bool     `json:"delete"`
		Keys   []string `json:"keys"`
	} `json:"unfinished"`
	WAL []struct {
		Delete bool     `json:"delete"`
		Keys   []string `json:"keys"`
	} `json:"wal"`
	Deleted *struct {
		Objects int `json:"objects"`
	} `json:"deleted"`
}

func runDeleteJSON(t *testing.T, r repo, args ...string) deletePlan {
	t.Helper()
	out := mustWalgo(t, r.env, append(append([]string{"delete"}, args...), "--json")...)
	var p deletePlan
	if err := json.Unmarshal([]byte(out.stdout), &p); err != nil {
		t.Fatalf("delete %v --json: %v\n%s", args, err, out.stdout)
	}
	return p
}

// deletedKeys is every key a plan deletes, sorted.
// pushHistory takes one backup of src per kind ("full" or "delta"), each
// followed by a marker (mark(t, src, i+1)), txs pgbench transactions and
// an archived WAL switch; it returns the markers' moments.
func pushHistory(t *testing.T, src *pgtest.Cluster, env, kinds []string,
	mark func(*testing.T, *pgtest.Cluster, int) moment, txs int) []moment {
	t.Helper()
	moments := make([]moment, len(kinds))
	for i, kind := range kinds {
		args := []string{"backup-push"}
		if kind == "delta" {
			args = append(args, "--delta")
		}
		mustWalgoAs(t, src, env, args...)
		moments[i] = mark(t, src, i+1)
		src.PgBench(t, "-n", "-t", fmt.Sprint(txs), "-c", "2")
		archiveAll(t, src)
	}
	return moments
}

// checkDryRun fails the test unless plan is a dry run that would delete
// exactly the keys of want.
func checkDryRun(t *testing.T, plan deletePlan, want []string) {
	t.Helper()
	if !plan.DryRun {
		t.Error("no --confirm, but dry_run is false")
	}
	if got := plan.deletedKeys(); !slices.Equal(got, want) {
		t.Errorf("dry run would delete:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func (p deletePlan) deletedKeys() []string {
	var keys []string
	for _, b := range p.Backups {
		if b.Delete {
			keys = append(keys, b.Keys...)
		}
	}
	for _, u := range p.Unfinished {
		if u.Delete {
			keys = append(keys, u.Keys...)
		}
	}
	for _, w := range p.WAL {
		if w.Delete {
			keys = append(keys, w.Keys...)
		}
	}
	sort.Strings(keys)
	return keys
}

// walPosition is the log and segment part of an archived WAL file's
// name (segments, .backup and .partial files); ok is false for others.
func walPosition(key string) (tli, pos string, ok bool) {
	o, ok := catalog.ParseWALKey(key)
	if !ok || len(o.Name) < 24 || strings.HasSuffix(o.Name, ".history") {
		return "", "", false
	}
	return o.Name[:8], o.Name[8:24], true
}

// TestRetentionRealHistory: four full backups and two deltas with load and
// WAL between them. delete retain 2 first only prints what it would delete
// (exactly the three oldest backups, whose chains no kept backup needs, and
// the WAL before the oldest kept backup's start), and deletes nothing; with
// --confirm it deletes exactly that, and every kept backup still restores
// to a moment after it, and the oldest to the end of the archive. A
// permanent old backup then survives delete retain 1.
func TestRetentionRealHistory(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "1", "-q")
	src.SQL(t, markerSQL)
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	st := r.openStore(t)

	// F1, F2, D2 (on F2), F3, D3 (on F3), F4; after each, a marker and load.
	kinds := []string{"full", "full", "delta", "full", "delta", "full"}
	moments := pushHistory(t, src, env, kinds, mark, 200)
	final := state(t, src)
	archiveAll(t, src)
	src.Stop(t) // nothing more is archived: listings stay comparable

	var list []struct {
		Name        string `json:"name"`
		DeltaParent string `json:"delta_parent"`
		Permanent   bool   `json:"permanent"`
	}
	out := mustWalgo(t, r.env, "backup-list", "--json", "--detail")
	if err := json.Unmarshal([]byte(out.stdout), &list); err != nil || len(list) != 6 {
		t.Fatalf("backup-list: %v\n%s", err, out.stdout)
	}
	f1, f2, d2, f3, d3, f4 := list[0].Name, list[1].Name, list[2].Name, list[3].Name, list[4].Name, list[5].Name
	if list[2].DeltaParent != f2 || list[4].DeltaParent != f3 || list[0].DeltaParent != "" || list[5].DeltaParent != "" {
		t.Fatalf("unexpected backups: %+v", list)
	}
	// F3 is the oldest backup retain 2 keeps (as D3's parent): the WAL
	// before the segment holding its start goes.
	f3Start := strings.TrimPrefix(f3, "base_")[:24]

	before := storeKeys(t, st)
	var wantDeleted []string
	for _, k := range before {
		for _, b := range []string{f1, f2, d2} {
			if k == catalog.SentinelKey(b) || strings.HasPrefix(k, catalog.BackupFolder(b)) {
				wantDeleted = append(wantDeleted, k)
			}
		}
		if tli, pos, ok := walPosition(k); ok && tli == f3Start[:8] && pos < f3Start[8:] {
			wantDeleted = append(wantDeleted, k)
		}
	}
	sort.Strings(wantDeleted)
	if len(wantDeleted) < 10 {
		t.Fatalf("too little to delete for a meaningful test: %v", wantDeleted)
	}

	// The dry run: the plan is exact, and nothing changes.
	plan := runDeleteJSON(t, r, "retain", "2")
	checkDryRun(t, plan, wantDeleted)
	for _, b := range plan.Backups {
		want := b.Name == f1 || b.Name == f2 || b.Name == d2
		if b.Delete != want {
			t.Errorf("%s: delete=%v (%s), want %v", b.Name, b.Delete, b.Reason, want)
		}
		if b.Name == f3 && !strings.Contains(b.Reason, d3) {
			t.Errorf("%s is kept for %q; want as the parent of %s", f3, b.Reason, d3)
		}
	}
	text := mustWalgo(t, r.env, "delete", "retain", "2")
	for _, s := range []string{"DRY RUN", catalog.SentinelKey(f1), f3Start[:8], "would delete 3 backup(s)"} {
		if !strings.Contains(text.stdout, s) {
			t.Errorf("dry run output lacks %q:\n%s", s, text.stdout)
		}
	}
	if after := storeKeys(t, st); !slices.Equal(before, after) {
		t.Fatalf("a dry run changed the repository: %d objects before, %d after", len(before), len(after))
	}

	// --confirm deletes exactly the plan.
	done := runDeleteJSON(t, r, "retain", "2", "--confirm")
	if done.DryRun || done.Deleted == nil || done.Deleted.Objects != len(wantDeleted) {
		t.Errorf("confirmed delete: dry_run %v, deleted %+v; want %d objects", done.DryRun, done.Deleted, len(wantDeleted))
	}
	after := storeKeys(t, st)
	var wantLeft []string
	for _, k := range before {
		if _, gone := slices.BinarySearch(wantDeleted, k); !gone {
			wantLeft = append(wantLeft, k)
		}
	}
	if !slices.Equal(after, wantLeft) {
		t.Fatalf("after delete retain 2 --confirm the repository holds:\n%s\nwant:\n%s", strings.Join(after, "\n"), strings.Join(wantLeft, "\n"))
	}
	if got := listBackups(t, r); !slices.Equal(got, []string{f3, d3, f4}) {
		t.Fatalf("backups left: %v, want %v", got, []string{f3, d3, f4})
	}
	// Retention left every kept backup's WAL whole.
	if res := walgo(t, r.env, "wal-verify"); res.code != 0 {
		t.Fatalf("wal-verify after retention: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	firstKept := ""
	for _, k := range after {
		if tli, pos, ok := walPosition(k); ok && tli == f3Start[:8] && (firstKept == "" || pos < firstKept) {
			firstKept = pos
		}
	}
	if firstKept != f3Start[8:] {
		t.Errorf("the oldest WAL left is at %s, want F3's start segment %s", firstKept, f3Start)
	}

	// Every kept backup restores by name to the moment marked after it.
	for _, tc := range []struct {
		name string
		m    moment
	}{{f3, moments[3]}, {d3, moments[4]}, {f4, moments[5]}} {
		t.Run("restore "+tc.name, func(t *testing.T) {
			c := restoreAndStart(t, r, []string{tc.name, "--target-time", tc.m.time})
			waitPromoted(t, c)
			if got := state(t, c); got != tc.m.checksums {
				t.Fatalf("restored %s: state differs\n got %s\nwant %s", tc.name, got, tc.m.checksums)
			}
		})
	}

	// A permanent old backup survives retain 1, with the WAL after it.
	mustWalgo(t, r.env, "backup-mark", f3)
	plan = runDeleteJSON(t, r, "retain", "1", "--confirm")
	if got := listBackups(t, r); !slices.Equal(got, []string{f3, f4}) {
		t.Fatalf("after marking %s permanent, retain 1 left %v; want %v", f3, got, []string{f3, f4})
	}
	for _, b := range plan.Backups {
		if b.Name == f3 && (b.Delete || b.Reason != "permanent") {
			t.Errorf("%s: delete=%v reason %q", f3, b.Delete, b.Reason)
		}
	}
	for _, w := range plan.WAL {
		if w.Delete {
			t.Errorf("retain 1 deleted WAL a permanent backup needs: %v", w.Keys)
		}
	}
	t.Run("restore the permanent backup to the end", func(t *testing.T) {
		c := restoreAndStart(t, r, []string{f3})
		waitPromoted(t, c)
		if got := state(t, c); got != final {
			t.Fatalf("restored %s to the end of the archive: state differs\n got %s\nwant %s", f3, got, final)
		}
	})
}

// TestDeleteGarbageAfterKilledBackup: a backup-push killed after it
// stored some partitions leaves objects without a sentinel. delete garbage
// leaves them alone while they may belong to a running backup, and with
// --min-age 0 --confirm removes every one of them, and nothing of the
// finished backup.
func TestDeleteGarbageAfterKilledBackup(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	mustWalgoAs(t, src, env, "backup-push")
	good := listBackups(t, r)
	if len(good) != 1 {
		t.Fatalf("backups: %v", good)
	}
	st := r.openStore(t)
	goodKeys := []string{catalog.SentinelKey(good[0])}
	for _, k := range storeKeys(t, st) {
		if strings.HasPrefix(k, catalog.BackupFolder(good[0])) {
			goodKeys = append(goodKeys, k)
		}
	}
	src.PgBench(t, "-n", "-t", "200", "-c", "2")

	// Small partitions, read slowly: some are stored when the kill comes.
	cmd := src.Command(context.Background(), walgoBin, "backup-push")
	cmd.Env = append(cmd.Env, append([]string{"WALGO_DISK_RATE_LIMIT=2MB", "WALGO_PART_SIZE=1MB"}, r.env...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var killed string
	pgtest.WaitFor(t, time.Minute, func() bool {
		ents, _ := os.ReadDir(filepath.Join(r.root, "basebackups_005"))
		for _, e := range ents {
			if !e.IsDir() || e.Name() == good[0] {
				continue
			}
			parts, _ := filepath.Glob(filepath.Join(r.root, "basebackups_005", e.Name(), "part_*"))
			if len(parts) >= 2 {
				killed = e.Name()
				return true
			}
		}
		return false
	}, "backup-push to store two partitions")
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	src.Stop(t) // nothing more is archived: listings stay comparable
	if got := listBackups(t, r); !slices.Equal(got, good) {
		t.Fatalf("after the kill, backups %v; want %v", got, good)
	}

	// Young leftovers may be a running backup: left alone by default.
	plan := runDeleteJSON(t, r, "garbage", "--confirm")
	if len(plan.Unfinished) != 1 || plan.Unfinished[0].Name != killed || plan.Unfinished[0].Delete {
		t.Errorf("delete garbage with the default --min-age: unfinished %+v; want %s left alone", plan.Unfinished, killed)
	}
	for _, k := range plan.deletedKeys() {
		if strings.HasPrefix(k, catalog.BackupPrefix) {
			t.Errorf("delete garbage deleted %s", k)
		}
	}

	before := storeKeys(t, st)
	plan = runDeleteJSON(t, r, "garbage", "--min-age", "0", "--confirm")
	if len(plan.Unfinished) != 1 || !plan.Unfinished[0].Delete || len(plan.Unfinished[0].Keys) < 2 {
		t.Fatalf("delete garbage --min-age 0: unfinished %+v", plan.Unfinished)
	}
	after := storeKeys(t, st)
	for _, k := range after {
		if strings.HasPrefix(k, catalog.BackupFolder(killed)) {
			t.Errorf("an object of the killed backup is left: %s", k)
		}
	}
	for _, k := range goodKeys {
		if _, found := slices.BinarySearch(after, k); !found {
			t.Errorf("the finished backup lost %s", k)
		}
	}
	for _, k := range plan.deletedKeys() {
		if strings.HasPrefix(k, catalog.BackupPrefix) && !strings.HasPrefix(k, catalog.BackupFolder(killed)) {
			t.Errorf("delete garbage deleted %s", k)
		}
	}
	if len(before)-len(after) != len(plan.deletedKeys()) {
		t.Errorf("%d objects before, %d after, but the plan deleted %d", len(before), len(after), len(plan.deletedKeys()))
	}
	// The file backend's temp files of the interrupted upload are not
	// objects: no Store call sees them.
	if tmps, _ := filepath.Glob(filepath.Join(r.root, "basebackups_005", killed, ".walgo-tmp-*")); len(tmps) > 0 {
		t.Logf("file backend temp files left by the killed upload (not objects): %v", tmps)
	}
}
