package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// lockAt is a lock record of a backup-push on timeline tli that started
// in segment seg (seg 0: not started yet), last refreshed at refreshed.
func lockAt(tli uint32, seg uint64, parent string, refreshed time.Time) LockRecord {
	l := &BackupLock{Format: LockFormat, Token: fmt.Sprintf("tok-%d-%d", tli, seg), SystemID: "7000000000000000001", Timeline: tli,
		Host: "db1", PID: 99, Started: refreshed.Add(-time.Minute), Refreshed: refreshed, DeltaParent: parent}
	if seg > 0 {
		s := wal.SegmentFromNo(tli, seg, wal.DefaultSegmentSize)
		l.Backup = BackupName(s, parent)
		l.StartLSN = s.StartLSN(wal.DefaultSegmentSize) + 0x28
	}
	l.Key = BackupLockKey(l.SystemID, tli)
	return LockRecord{Key: l.Key, ModTime: refreshed, Lock: l}
}

func wantDeleted(t *testing.T, p *Plan, tli uint32, from, to uint64, deleted func(n uint64) bool) {
	t.Helper()
	del := walDecision(p)
	for n := from; n <= to; n++ {
		if want := deleted(n); del[seg(tli, n)] != want {
			t.Errorf("%s deleted=%v, want %v", seg(tli, n), del[seg(tli, n)], want)
		}
	}
}

// TestPlanDeleteRunningBackup: a running backup-push's lock keeps the WAL
// from its start and its partitions, whatever the mode; a stale lock keeps
// nothing and delete garbage removes it.
func TestPlanDeleteRunningBackup(t *testing.T) {
	done := bk{tli: 1, seg: 10, finish: 10}
	fresh := t0.Add(-time.Minute)
	running := lockAt(1, 4, "", fresh)
	mk := func(locks ...LockRecord) *Inventory {
		inv := inventory([]bk{done}, segs(1, 1, 12), nil)
		inv.Locks = locks
		// Its first partition is stored (long ago: min age does not save it).
		inv.BackupObjects = append(inv.BackupObjects, storage.ObjectInfo{Key: BackupFolder(BackupName(wal.SegmentFromNo(1, 4, wal.DefaultSegmentSize), "")) + "part_001.tar.zst", Size: 5, ModTime: t0.Add(-48 * time.Hour)})
		return inv
	}
	plan := func(inv *Inventory, req DeleteRequest) *Plan {
		t.Helper()
		req.Now = t0
		p, err := PlanDelete(inv, req)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Without the lock, the folder looks dead and WAL before 10 goes.
	p := plan(mk(), DeleteRequest{Mode: DeleteRetain, N: 1})
	wantDeleted(t, p, 1, 1, 12, func(n uint64) bool { return n < 10 })
	p = plan(mk(), DeleteRequest{Mode: DeleteGarbage})
	if p.Totals.DeleteUnfinished != 1 {
		t.Fatalf("garbage without a lock: %+v", p.Unfinished)
	}

	// With it: WAL from its start segment (4) on stays, in every mode.
	for _, mode := range []DeleteMode{DeleteRetain, DeleteGarbage, DeleteEverything} {
		p = plan(mk(running), DeleteRequest{Mode: mode, N: 1})
		wantDeleted(t, p, 1, 1, 12, func(n uint64) bool { return n < 4 })
		if len(p.Unfinished) != 1 || p.Unfinished[0].Delete || !strings.Contains(p.Unfinished[0].Reason, "running backup-push") {
			t.Errorf("%s: running backup's folder %+v", mode, p.Unfinished)
		}
		if len(p.Locks) != 1 || p.Locks[0].Delete || p.Locks[0].Stale {
			t.Errorf("%s: lock verdict %+v", mode, p.Locks)
		}
	}

	// Not started yet: its whole timeline's WAL stays.
	p = plan(mk(lockAt(1, 0, "", fresh)), DeleteRequest{Mode: DeleteRetain, N: 1})
	wantDeleted(t, p, 1, 1, 12, func(uint64) bool { return false })

	// Stale: ignored, and delete garbage removes the lock.
	stale := lockAt(1, 4, "", t0.Add(-LockStaleAfter-time.Second))
	p = plan(mk(stale), DeleteRequest{Mode: DeleteRetain, N: 1})
	wantDeleted(t, p, 1, 1, 12, func(n uint64) bool { return n < 10 })
	if len(p.Locks) != 1 || !p.Locks[0].Stale || p.Locks[0].Delete {
		t.Errorf("retain: stale lock %+v", p.Locks)
	}
	p = plan(mk(stale), DeleteRequest{Mode: DeleteGarbage})
	if len(p.Locks) != 1 || !p.Locks[0].Delete || p.Totals.DeleteLocks != 1 || p.Totals.DeleteUnfinished != 1 {
		t.Errorf("garbage: stale lock %+v, totals %+v", p.Locks, p.Totals)
	}

	// An unreadable lock, recently written, keeps all WAL.
	p = plan(mk(LockRecord{Key: LockPrefix + "backup-push_1_00000001.json", ModTime: fresh, Err: "corrupt"}), DeleteRequest{Mode: DeleteRetain, N: 1})
	wantDeleted(t, p, 1, 1, 12, func(uint64) bool { return false })
}

// TestPlanDeleteRunningDeltaParent: the parent a running delta reads is
// kept.
func TestPlanDeleteRunningDeltaParent(t *testing.T) {
	parent := bk{tli: 1, seg: 2, finish: 5}
	newest := bk{tli: 1, seg: 8, finish: 10}
	inv := inventory([]bk{parent, newest}, segs(1, 1, 12), nil)
	inv.Locks = []LockRecord{lockAt(1, 11, parent.name(), t0)}
	p, err := PlanDelete(inv, DeleteRequest{Mode: DeleteRetain, N: 1, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if got := deletedBackups(p); len(got) != 0 {
		t.Fatalf("deleted %v, the parent of a running delta among them", got)
	}
}

// TestPlanDeleteRunningBackupAcrossTimelines: the case with a fork.
// A backup of timeline 1 is running; a fork's backup on timeline 2 is the
// newest finished one. retain 1 keeps the fork's backup, and without the
// running backup's lock it would delete all of timeline 1's WAL.
func TestPlanDeleteRunningBackupAcrossTimelines(t *testing.T) {
	b2 := bk{tli: 2, seg: 9, finish: 10}
	w := append(segs(1, 1, 12), segs(2, 8, 12)...)
	w = append(w, walObj("00000002.history"))
	hist := map[uint32][]HistoryEntry{2: {{Timeline: 1, Switch: wal.LSN(8*wal.DefaultSegmentSize + 0x100)}}}
	for _, withLock := range []bool{false, true} {
		inv := inventory([]bk{b2}, w, hist)
		if withLock {
			inv.Locks = []LockRecord{lockAt(1, 5, "", t0)}
		}
		p, err := PlanDelete(inv, DeleteRequest{Mode: DeleteRetain, N: 1, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		wantDeleted(t, p, 1, 1, 12, func(n uint64) bool { return !withLock || n < 5 })
		wantDeleted(t, p, 2, 8, 12, func(n uint64) bool { return n < 9 && !withLock }) // it may follow timeline 2 too
	}
}

// TestApplyHonoursLocksTakenAfterThePlan: a backup-push that starts
// between plan and Apply keeps its WAL and partitions, and one that builds
// on a backup the plan deletes stops the delete before anything goes.
func TestApplyHonoursLocksTakenAfterThePlan(t *testing.T) {
	ctx := context.Background()
	old := bk{tli: 1, seg: 2, finish: 5}
	newest := bk{tli: 1, seg: 10, finish: 10}
	s := newFileStore(t)
	seed(t, s, inventory([]bk{old, newest}, segs(1, 1, 12), nil))
	folder := BackupFolder(BackupName(wal.SegmentFromNo(1, 6, wal.DefaultSegmentSize), ""))
	put(t, s, folder+"part_001.tar.zst", []byte("x"))

	inv, err := ReadInventory(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanDelete(inv, DeleteRequest{Mode: DeleteGarbage, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if p.Totals.DeleteUnfinished != 1 {
		t.Fatalf("plan: %+v", p.Unfinished)
	}
	p2, err := PlanDelete(inv, DeleteRequest{Mode: DeleteRetain, N: 1, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}

	// A delta of the old backup starts now: retain must not go on.
	writeLock := func(r LockRecord) {
		b, _ := json.Marshal(r.Lock)
		put(t, s, r.Key, b)
	}
	writeLock(lockAt(1, 11, old.name(), time.Now()))
	if _, err := Apply(ctx, s, p2, ApplyOptions{}); err == nil || !strings.Contains(err.Error(), old.name()) {
		t.Fatalf("Apply with a running delta of a deleted backup: %v", err)
	}
	if _, err := ReadSentinel(ctx, s, old.name()); err != nil {
		t.Fatalf("the refused Apply deleted %s: %v", old.name(), err)
	}

	// A full backup starting in segment 6 (whose folder the plan deletes).
	writeLock(lockAt(1, 6, "", time.Now()))
	res, err := Apply(ctx, s, p, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unfinished != 0 || len(res.Skipped) != 1 {
		t.Errorf("result %+v", res)
	}
	if _, err := s.Stat(ctx, folder+"part_001.tar.zst"); err != nil {
		t.Errorf("the running backup's partition: %v", err)
	}
}
