package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/storage"
)

// ageBackup moves a backup's start and finish times back by age in its
// sentinel (the only place retention reads ages from), as if it were taken
// that long ago.
func ageBackup(t *testing.T, r repo, st storage.Store, name string, age time.Duration) {
	t.Helper()
	sn, err := catalog.ReadSentinel(context.Background(), st, name)
	if err != nil {
		t.Fatal(err)
	}
	sn.StartTime, sn.FinishTime = sn.StartTime.Add(-age), sn.FinishTime.Add(-age)
	b, err := json.Marshal(sn)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(context.Background(), catalog.SentinelKey(name), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, r.root)
}

// TestDeleteWindow: a repository of ten days' backups (real backups and
// WAL of one cluster, their sentinels' times moved back to 10, 8, 6, 3 and
// 1 days ago): F1, F2, D2 on F2, F3, D3 on F3. delete window 7d is a dry
// run that lists exactly F1 and the WAL before F2's start (F2 finished
// before the window but is the newest that did: a recovery to the
// window's first moments starts from it) and changes nothing; with
// --confirm it deletes exactly that, and a moment between F2 and D2 (7
// days ago, inside the window) restores from F2. delete window 2d then
// keeps F3 (the newest before the window) and D3 only, the WAL before F3
// goes, and the archive still verifies from F3 on.
func TestDeleteWindow(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "1", "-q")
	src.SQL(t, markerSQL)
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	st := r.openStore(t)

	kinds := []string{"full", "full", "delta", "full", "delta"}
	ages := []time.Duration{10, 8, 6, 3, 1}
	moments := pushHistory(t, src, env, kinds, quickMark, 100)
	src.Stop(t) // nothing more is archived: listings stay comparable
	list := backupDetails(t, r, len(kinds))
	names := make([]string, len(list))
	for i, b := range list {
		names[i] = b.Name
		ageBackup(t, r, st, b.Name, ages[i]*24*time.Hour)
	}
	f1, f2, d2, f3, d3 := names[0], names[1], names[2], names[3], names[4]
	if list[2].DeltaParent != f2 || list[4].DeltaParent != f3 {
		t.Fatalf("unexpected backups: %+v", list)
	}

	// What window 7d deletes: F1 and the WAL before the segment F2 starts in.
	before := storeKeys(t, st)
	wantDeleted := func(keys []string, gone []string, keepFrom string) []string {
		var out []string
		start := strings.TrimPrefix(keepFrom, "base_")[:24]
		for _, k := range keys {
			for _, b := range gone {
				if k == catalog.SentinelKey(b) || strings.HasPrefix(k, catalog.BackupFolder(b)) {
					out = append(out, k)
				}
			}
			if tli, pos, ok := walPosition(k); ok && tli == start[:8] && pos < start[8:] {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	}
	want := wantDeleted(before, []string{f1}, f2)
	if len(want) < 4 {
		t.Fatalf("too little to delete for a meaningful test: %v", want)
	}
	plan := runDeleteJSON(t, r, "window", "7d")
	checkDryRun(t, plan, want)
	for _, b := range plan.Backups {
		if b.Name == f2 && (b.Delete || !strings.Contains(b.Reason, "newest backup that finished before the recovery window")) {
			t.Errorf("%s: delete=%v (%s); want kept as the newest before the window", f2, b.Delete, b.Reason)
		}
	}
	if after := storeKeys(t, st); !slices.Equal(before, after) {
		t.Fatalf("a dry run changed the repository: %d objects before, %d after", len(before), len(after))
	}
	done := runDeleteJSON(t, r, "window", "7d", "--confirm")
	if done.DryRun || done.Deleted == nil || done.Deleted.Objects != len(want) {
		t.Errorf("confirmed delete: dry_run %v, deleted %+v; want %d objects", done.DryRun, done.Deleted, len(want))
	}
	if got := listBackups(t, r); !slices.Equal(got, names[1:]) {
		t.Fatalf("after delete window 7d --confirm: %v, want %v", got, names[1:])
	}

	// A moment inside the window, before D2, restores from F2.
	c := restoreAndStart(t, r, []string{f2, "--target-xid", moments[1].xid})
	waitPromoted(t, c)
	if got := state(t, c); got != moments[1].checksums {
		t.Fatalf("restore inside the window differs\n got %s\nwant %s", got, moments[1].checksums)
	}
	c.Stop(t)

	// A 2-day window: D3 inside, F3 the newest before it.
	before = storeKeys(t, st)
	want = wantDeleted(before, []string{f2, d2}, f3)
	done = runDeleteJSON(t, r, "window", "2d", "--confirm")
	if got := done.deletedKeys(); !slices.Equal(got, want) {
		t.Errorf("delete window 2d deleted:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := listBackups(t, r); !slices.Equal(got, []string{f3, d3}) {
		t.Fatalf("after delete window 2d --confirm: %v, want %v", got, []string{f3, d3})
	}
	if v, res := walVerify(t, r); res.code != 0 || !v.OK {
		t.Fatalf("wal-verify after delete window 2d: exit %d %+v\n%s", res.code, v, res.stderr)
	}
}
