package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
	"github.com/walgo/walgo/wal"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// bk describes a test backup: its start segment (timeline and number),
// finish minute after t0, delta parent and permanence.
type bk struct {
	tli    uint32
	seg    uint64
	finish int
	parent string
	perm   bool
}

func (b bk) name() string {
	return BackupName(wal.SegmentFromNo(b.tli, b.seg, wal.DefaultSegmentSize), b.parent)
}

func (b bk) sentinel() *Sentinel {
	s := wal.SegmentFromNo(b.tli, b.seg, wal.DefaultSegmentSize)
	return &Sentinel{
		Format:      SentinelFormat,
		Name:        b.name(),
		Timeline:    b.tli,
		StartLSN:    s.StartLSN(wal.DefaultSegmentSize) + 0x28,
		StartTime:   t0.Add(time.Duration(b.finish)*time.Minute - 30*time.Second),
		FinishTime:  t0.Add(time.Duration(b.finish) * time.Minute),
		SegmentSize: wal.DefaultSegmentSize,
		DeltaParent: b.parent,
		Permanent:   b.perm,
		SystemID:    "7000000000000000001",
	}
}

func seg(tli uint32, no uint64) string {
	return wal.SegmentFromNo(tli, no, wal.DefaultSegmentSize).Name()
}

// segs lists segments from..to (inclusive) of a timeline as WAL objects.
func segs(tli uint32, from, to uint64) []WALObject {
	var out []WALObject
	for n := from; n <= to; n++ {
		out = append(out, walObj(seg(tli, n)))
	}
	return out
}

func walObj(name string) WALObject {
	return WALObject{Name: name, Kind: wal.Classify(name), Key: WALPrefix + name + ".zst", Ext: "zst", Size: 100}
}

// inventory builds an inventory with each backup's sentinel and one part.
func inventory(backups []bk, w []WALObject, hist map[uint32][]HistoryEntry) *Inventory {
	inv := &Inventory{WAL: w, Histories: hist, HistoryErrors: map[uint32]string{}}
	if inv.Histories == nil {
		inv.Histories = map[uint32][]HistoryEntry{}
	}
	for _, b := range backups {
		sn := b.sentinel()
		inv.Backups = append(inv.Backups, sn)
		inv.BackupObjects = append(inv.BackupObjects,
			storage.ObjectInfo{Key: SentinelKey(sn.Name), Size: 10, ModTime: sn.FinishTime},
			storage.ObjectInfo{Key: BackupFolder(sn.Name) + "part_001.tar.zst", Size: 1000, ModTime: sn.FinishTime})
	}
	sort.Slice(inv.BackupObjects, func(i, j int) bool { return inv.BackupObjects[i].Key < inv.BackupObjects[j].Key })
	return inv
}

func deletedBackups(p *Plan) []string {
	var out []string
	for _, v := range p.Backups {
		if v.Delete {
			out = append(out, v.Name)
		}
	}
	sort.Strings(out)
	return out
}

func names(bs ...bk) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.name())
	}
	sort.Strings(out)
	return out
}

func TestPlanDeleteBackups(t *testing.T) {
	f1 := bk{tli: 1, seg: 2, finish: 10}
	d1 := bk{tli: 1, seg: 4, finish: 20, parent: f1.name()}
	f2 := bk{tli: 1, seg: 6, finish: 30}
	d2 := bk{tli: 1, seg: 8, finish: 40, parent: f2.name()}
	d3 := bk{tli: 1, seg: 10, finish: 50, parent: d2.name()}
	f3 := bk{tli: 1, seg: 12, finish: 60}
	chain := []bk{f1, d1, f2, d2, d3}

	// After pg_upgrade (or any reset), names start low again: the newest
	// backups have the smallest names.
	old1 := bk{tli: 1, seg: 0x500, finish: 10}
	old2 := bk{tli: 1, seg: 0x600, finish: 20}
	new1 := bk{tli: 1, seg: 0x3, finish: 30}
	new2 := bk{tli: 1, seg: 0x5, finish: 40}

	permOld := f1
	permOld.perm = true
	permDelta := d1
	permDelta.perm = true

	tests := []struct {
		name    string
		backups []bk
		req     DeleteRequest
		deleted []string
		err     error
	}{
		{"retain 2 of fulls", []bk{f1, f2, f3}, DeleteRequest{Mode: DeleteRetain, N: 2}, names(f1), nil},
		{"retain 1 keeps the chain of the newest delta", chain, DeleteRequest{Mode: DeleteRetain, N: 1}, names(f1, d1), nil},
		{"retain 2 counts deltas", chain, DeleteRequest{Mode: DeleteRetain, N: 2}, names(f1, d1), nil},
		{"retain 4 keeps d1's parent", chain, DeleteRequest{Mode: DeleteRetain, N: 4}, nil, nil},
		{"retain FULL 1 keeps deltas of the newest full", chain, DeleteRequest{Mode: DeleteRetainFull, N: 1}, names(f1, d1), nil},
		{"retain FULL 1 with a newer full", append(chain, f3), DeleteRequest{Mode: DeleteRetainFull, N: 1}, names(f1, d1, f2, d2, d3), nil},
		{"retain FULL 2", append(chain, f3), DeleteRequest{Mode: DeleteRetainFull, N: 2}, names(f1, d1), nil},
		{"fewer than N is fine", []bk{f1, f2}, DeleteRequest{Mode: DeleteRetain, N: 10}, nil, nil},
		{"fewer than N fulls is fine", chain, DeleteRequest{Mode: DeleteRetainFull, N: 5}, nil, nil},
		{"retain 0 is refused", chain, DeleteRequest{Mode: DeleteRetain, N: 0}, nil, ErrBadRequest},
		{"empty repository", nil, DeleteRequest{Mode: DeleteRetain, N: 1}, nil, nil},
		{"ages come from finish times, not names", []bk{old1, old2, new1, new2}, DeleteRequest{Mode: DeleteRetain, N: 2}, names(old1, old2), nil},
		{"retain FULL after a name reset", []bk{old1, old2, new1, new2}, DeleteRequest{Mode: DeleteRetainFull, N: 1}, names(old1, old2, new1), nil},
		{"permanent full survives", []bk{permOld, f2, f3}, DeleteRequest{Mode: DeleteRetain, N: 1}, names(f2), nil},
		{"permanent delta keeps its parent", []bk{f1, permDelta, f2, f3}, DeleteRequest{Mode: DeleteRetain, N: 1}, names(f2), nil},
		{"before a name keeps it and its chain", chain, DeleteRequest{Mode: DeleteBefore, BeforeName: d3.name()}, names(f1, d1), nil},
		{"before a full", append(chain, f3), DeleteRequest{Mode: DeleteBefore, BeforeName: f3.name()}, names(f1, d1, f2, d2, d3), nil},
		{"before a time", chain, DeleteRequest{Mode: DeleteBefore, Before: t0.Add(35 * time.Minute)}, names(f1, d1), nil},
		{"before a time inside a chain keeps the parents", chain, DeleteRequest{Mode: DeleteBefore, Before: t0.Add(45 * time.Minute)}, names(f1, d1), nil},
		{"before an unknown name", chain, DeleteRequest{Mode: DeleteBefore, BeforeName: "base_000000010000000000000099"}, nil, storage.ErrNotFound},
		{"before that would delete every backup", chain, DeleteRequest{Mode: DeleteBefore, Before: t0.Add(time.Hour)}, nil, ErrBadRequest},
		{"before keeps permanents", []bk{permOld, f2, f3}, DeleteRequest{Mode: DeleteBefore, Before: t0.Add(61 * time.Minute)}, names(f2, f3), nil},
		{"everything", chain, DeleteRequest{Mode: DeleteEverything}, names(chain...), nil},
		{"everything keeps permanents without force", []bk{f1, permDelta, f2}, DeleteRequest{Mode: DeleteEverything}, names(f2), nil},
		{"everything --force", []bk{f1, permDelta, f2}, DeleteRequest{Mode: DeleteEverything, Force: true}, names(f1, permDelta, f2), nil},
		{"garbage keeps every backup", chain, DeleteRequest{Mode: DeleteGarbage}, nil, nil},
		// Recovery window: every backup finished inside it, the newest
		// one finished before it starts, and their chains.
		{"window keeps the newest before it and its chain", append(chain, f3),
			DeleteRequest{Mode: DeleteWindow, Now: t0.Add(65 * time.Minute), Window: 20 * time.Minute}, names(f1, d1), nil},
		{"window starting right after a delta", append(chain, f3),
			DeleteRequest{Mode: DeleteWindow, Now: t0.Add(65 * time.Minute), Window: 10 * time.Minute}, names(f1, d1), nil},
		{"a backup finished at the window's start is inside it", append(chain, f3),
			DeleteRequest{Mode: DeleteWindow, Now: t0.Add(65 * time.Minute), Window: 35 * time.Minute}, nil, nil},
		{"window just after a full", []bk{f1, f2, f3},
			DeleteRequest{Mode: DeleteWindow, Now: t0.Add(65 * time.Minute), Window: 34 * time.Minute}, names(f1), nil},
		{"window older than every backup", append(chain, f3),
			DeleteRequest{Mode: DeleteWindow, Now: t0.Add(65 * time.Minute), Window: 24 * time.Hour}, nil, nil},
		{"window with no backup inside keeps the newest", append(chain, f3),
			DeleteRequest{Mode: DeleteWindow, Now: t0.Add(10 * 24 * time.Hour), Window: 7 * 24 * time.Hour}, names(chain...), nil},
		{"window keeps permanents", []bk{permOld, f2, f3},
			DeleteRequest{Mode: DeleteWindow, Now: t0.Add(65 * time.Minute), Window: 4 * time.Minute}, names(f2), nil},
		{"window of 0 is refused", chain, DeleteRequest{Mode: DeleteWindow, Now: t0}, nil, ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Sentinels come in any order: the plan sorts by finish time.
			bs := slices.Clone(tt.backups)
			slices.Reverse(bs)
			p, err := PlanDelete(inventory(bs, nil, nil), tt.req)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := deletedBackups(p); !slices.Equal(got, tt.deleted) {
				t.Errorf("deleted %v\nwant    %v", got, tt.deleted)
			}
			checkChains(t, p)
			for _, v := range p.Backups {
				if v.Reason == "" {
					t.Errorf("%s: no reason", v.Name)
				}
				if v.Delete && (len(v.Keys) != 2 || v.Keys[0] != SentinelKey(v.Name) || v.Bytes != 1010) {
					t.Errorf("%s: keys %v bytes %d; want the sentinel first, then the part", v.Name, v.Keys, v.Bytes)
				}
			}
		})
	}
}

// checkChains asserts the invariant: no kept backup needs a deleted one.
func checkChains(t *testing.T, p *Plan) {
	t.Helper()
	del := map[string]bool{}
	for _, v := range p.Backups {
		del[v.Name] = v.Delete
	}
	for _, v := range p.Backups {
		if !v.Delete && v.DeltaParent != "" && del[v.DeltaParent] {
			t.Errorf("kept %s needs deleted %s", v.Name, v.DeltaParent)
		}
		if v.Permanent && v.Delete && !p.force {
			t.Errorf("permanent %s deleted", v.Name)
		}
	}
}

// walDecision summarises a plan's WAL as "name:keep|delete" per object.
func walDecision(p *Plan) map[string]bool {
	out := map[string]bool{}
	for _, r := range p.WAL {
		// Ranges hold consecutive objects; the test WAL has one per name.
		for _, k := range r.Keys {
			o, _ := ParseWALKey(k)
			out[o.Name] = true
		}
	}
	return out
}

func TestPlanDeleteWAL(t *testing.T) {
	// Timeline 1: segments 1..20; backups at 4 and 10.
	b4 := bk{tli: 1, seg: 4, finish: 10}
	b10 := bk{tli: 1, seg: 10, finish: 20}
	tl1 := append(segs(1, 1, 20),
		walObj(seg(1, 4)+".00000028.backup"),
		walObj(seg(1, 10)+".00000028.backup"))
	// Timeline 2 forked from 1 at segment 7; timeline 3 from 2 at 15.
	hist2 := []HistoryEntry{{Timeline: 1, Switch: wal.LSN(7*wal.DefaultSegmentSize + 0x100)}}
	hist3 := append(slices.Clone(hist2), HistoryEntry{Timeline: 2, Switch: wal.LSN(15*wal.DefaultSegmentSize + 0x100)})
	tl2 := append([]WALObject{walObj("00000002.history"), walObj(seg(1, 7) + ".partial")}, segs(2, 7, 18)...)
	tl3 := append([]WALObject{walObj("00000003.history")}, segs(3, 15, 16)...)
	b2 := bk{tli: 2, seg: 9, finish: 30}

	type want struct{ deleted, kept []string }
	names := func(objs ...[]WALObject) []string {
		var out []string
		for _, os := range objs {
			for _, o := range os {
				out = append(out, o.Name)
			}
		}
		return out
	}
	tests := []struct {
		name    string
		backups []bk
		wal     []WALObject
		hist    map[uint32][]HistoryEntry
		req     DeleteRequest
		want    want
	}{
		{
			name:    "one timeline: WAL before the oldest kept start goes",
			backups: []bk{b4, b10}, wal: tl1, req: DeleteRequest{Mode: DeleteRetain, N: 1},
			want: want{
				deleted: append(names(segs(1, 1, 9)), seg(1, 4)+".00000028.backup"),
				kept:    append(names(segs(1, 10, 20)), seg(1, 10)+".00000028.backup"),
			},
		},
		{
			name:    "garbage keeps WAL from the oldest backup on",
			backups: []bk{b4, b10}, wal: tl1, req: DeleteRequest{Mode: DeleteGarbage},
			want: want{deleted: names(segs(1, 1, 3)), kept: names(segs(1, 4, 20))},
		},
		{
			name: "no backup: WAL left alone",
			wal:  tl1, req: DeleteRequest{Mode: DeleteGarbage},
			want: want{kept: names(tl1)},
		},
		{
			name:    "a child timeline forked after the start is kept, its ancestor's old WAL goes",
			backups: []bk{b4}, wal: slices.Concat(tl1, tl2, tl3),
			hist: map[uint32][]HistoryEntry{2: hist2, 3: hist3}, req: DeleteRequest{Mode: DeleteGarbage},
			want: want{deleted: names(segs(1, 1, 3)), kept: names(segs(1, 4, 20), tl2, tl3)},
		},
		{
			name:    "retain counts per lineage: the forks keep their newest backup and WAL",
			backups: []bk{b4, b10}, wal: slices.Concat(tl1, tl2, tl3),
			hist: map[uint32][]HistoryEntry{2: hist2, 3: hist3}, req: DeleteRequest{Mode: DeleteRetain, N: 1},
			want: want{
				// b10 is lineage 1's newest, b4 that of lineages 2 and 3: it
				// keeps timeline 1 up to where they leave it.
				deleted: names(segs(1, 1, 3), segs(1, 8, 9)),
				kept: slices.Concat(names(segs(1, 4, 7), segs(1, 10, 20), tl2, tl3),
					[]string{seg(1, 4) + ".00000028.backup", seg(1, 7) + ".partial"}),
			},
		},
		{
			name:    "retain in one lineage: a backup after the fork does not reach the child",
			backups: []bk{b4, b10}, wal: slices.Concat(tl1, tl2, tl3),
			hist: map[uint32][]HistoryEntry{2: hist2, 3: hist3}, req: DeleteRequest{Mode: DeleteRetain, N: 1, Lineage: "1"},
			want: want{
				deleted: slices.Concat(names(segs(1, 1, 9), segs(2, 7, 18), segs(3, 15, 16)), []string{seg(1, 4) + ".00000028.backup", seg(1, 7) + ".partial"}),
				kept:    []string{"00000002.history", "00000003.history", seg(1, 10)},
			},
		},
		{
			name:    "retain per lineage: the primary keeps its newest backup when a fork has a newer one",
			backups: []bk{b4, b2}, wal: slices.Concat(tl1, tl2, tl3),
			hist: map[uint32][]HistoryEntry{2: hist2, 3: hist3}, req: DeleteRequest{Mode: DeleteRetain, N: 1},
			want: want{
				deleted: slices.Concat(names(segs(1, 1, 3), segs(2, 7, 8))),
				kept:    slices.Concat(names(segs(1, 4, 20), segs(2, 9, 18), tl3), []string{"00000002.history"}),
			},
		},
		{
			name:    "retain in the fork's lineage: a backup on timeline 2 needs none of timeline 1",
			backups: []bk{b4, b2}, wal: slices.Concat(tl1, tl2, tl3),
			hist: map[uint32][]HistoryEntry{2: hist2, 3: hist3}, req: DeleteRequest{Mode: DeleteRetain, N: 1, Lineage: "2"},
			want: want{
				deleted: slices.Concat(names(segs(1, 1, 20), segs(2, 7, 8))),
				kept:    slices.Concat(names(segs(2, 9, 18), tl3), []string{"00000002.history"}),
			},
		},
		{
			name:    "a timeline without history is kept from the start on",
			backups: []bk{b4, b10}, wal: slices.Concat(tl1, segs(3, 2, 16)),
			req:  DeleteRequest{Mode: DeleteRetain, N: 1},
			want: want{deleted: slices.Concat(names(segs(1, 1, 9), segs(3, 2, 9))), kept: names(segs(1, 10, 20), segs(3, 10, 16))},
		},
		{
			name:    "everything",
			backups: []bk{b4, b10}, wal: slices.Concat(tl1, tl2), hist: map[uint32][]HistoryEntry{2: hist2},
			req:  DeleteRequest{Mode: DeleteEverything},
			want: want{deleted: names(tl1, tl2)},
		},
		{
			name:    "everything but a permanent backup keeps the history",
			backups: []bk{b4, {tli: 1, seg: 10, finish: 20, perm: true}}, wal: slices.Concat(tl1, tl2), hist: map[uint32][]HistoryEntry{2: hist2},
			req: DeleteRequest{Mode: DeleteEverything},
			want: want{
				deleted: slices.Concat(names(segs(1, 1, 9), segs(2, 7, 18)), []string{seg(1, 4) + ".00000028.backup", seg(1, 7) + ".partial"}),
				kept:    []string{"00000002.history", seg(1, 10), seg(1, 20)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanDelete(inventory(tt.backups, tt.wal, tt.hist), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			del := walDecision(p)
			for _, n := range tt.want.deleted {
				if !del[n] {
					t.Errorf("%s kept, want deleted", n)
				}
			}
			for _, n := range tt.want.kept {
				if del[n] {
					t.Errorf("%s deleted, want kept", n)
				}
			}
			if tt.want.kept == nil && len(del) != len(tt.wal) {
				t.Errorf("deleted %d of %d WAL files, want all", len(del), len(tt.wal))
			}
			files := 0
			for _, r := range p.WAL {
				files += r.Files
				if r.Reason == "" || r.First > r.Last {
					t.Errorf("bad range %+v", r)
				}
			}
			if files != len(tt.wal) || p.Totals.DeleteWALFiles+p.Totals.KeepWALFiles != len(tt.wal) || p.Totals.DeleteWALFiles != len(del) {
				t.Errorf("ranges cover %d files, totals %+v; want %d", files, p.Totals, len(tt.wal))
			}
		})
	}
}

func TestPlanDeleteRanges(t *testing.T) {
	b := bk{tli: 1, seg: 5, finish: 10}
	p, err := PlanDelete(inventory([]bk{b}, segs(1, 1, 9), nil), DeleteRequest{Mode: DeleteGarbage})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.WAL) != 2 {
		t.Fatalf("ranges: %+v", p.WAL)
	}
	d, k := p.WAL[0], p.WAL[1]
	if !d.Delete || d.First != seg(1, 1) || d.Last != seg(1, 4) || d.Files != 4 || d.Bytes != 400 || len(d.Keys) != 4 {
		t.Errorf("deleted range %+v", d)
	}
	if k.Delete || k.First != seg(1, 5) || k.Last != seg(1, 9) || k.Files != 5 || len(k.Keys) != 0 {
		t.Errorf("kept range %+v", k)
	}
}

func TestPlanDeleteUnfinished(t *testing.T) {
	done := bk{tli: 1, seg: 10, finish: 10}
	dead := BackupName(wal.SegmentFromNo(1, 4, wal.DefaultSegmentSize), "")
	running := BackupName(wal.SegmentFromNo(1, 6, wal.DefaultSegmentSize), "")
	mk := func() *Inventory {
		inv := inventory([]bk{done}, segs(1, 1, 12), nil)
		inv.BackupObjects = append(inv.BackupObjects,
			storage.ObjectInfo{Key: BackupFolder(dead) + "part_001.tar.zst", Size: 7, ModTime: t0.Add(-48 * time.Hour)},
			storage.ObjectInfo{Key: BackupFolder(dead) + "part_002.tar.zst", Size: 7, ModTime: t0.Add(-47 * time.Hour)},
			storage.ObjectInfo{Key: BackupFolder(running) + "part_001.tar.zst", Size: 5, ModTime: t0.Add(-time.Minute)},
			storage.ObjectInfo{Key: BackupPrefix + "README", Size: 1},
		)
		inv.OtherWAL = []storage.ObjectInfo{{Key: WALPrefix + "notes.txt"}}
		return inv
	}
	p, err := PlanDelete(mk(), DeleteRequest{Mode: DeleteGarbage, Now: t0, MinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Unfinished{}
	for _, u := range p.Unfinished {
		byName[u.Name] = u
	}
	if u := byName[dead]; !u.Delete || len(u.Keys) != 2 || u.Bytes != 14 {
		t.Errorf("dead unfinished backup: %+v", u)
	}
	if u := byName[running]; u.Delete || !strings.Contains(u.Reason, "running") {
		t.Errorf("running backup: %+v", u)
	}
	// The running backup (start segment 6) protects WAL from 6 on.
	del := walDecision(p)
	for n := uint64(1); n <= 12; n++ {
		if want := n < 6; del[seg(1, n)] != want {
			t.Errorf("%s deleted=%v, want %v", seg(1, n), del[seg(1, n)], want)
		}
	}
	if !slices.Equal(p.Unrecognized, []string{BackupPrefix + "README", WALPrefix + "notes.txt"}) {
		t.Errorf("unrecognized: %v", p.Unrecognized)
	}
	if len(deletedBackups(p)) != 0 {
		t.Errorf("garbage deleted finished backups: %v", deletedBackups(p))
	}

	// With no min age, both go; retain leaves both alone.
	p, _ = PlanDelete(mk(), DeleteRequest{Mode: DeleteGarbage, Now: t0})
	if p.Totals.DeleteUnfinished != 2 {
		t.Errorf("min age 0: %+v", p.Unfinished)
	}
	p, _ = PlanDelete(mk(), DeleteRequest{Mode: DeleteRetain, N: 1, Now: t0, MinAge: time.Hour})
	if p.Totals.DeleteUnfinished != 0 {
		t.Errorf("retain deleted unfinished backups: %+v", p.Unfinished)
	}
	p, _ = PlanDelete(mk(), DeleteRequest{Mode: DeleteEverything, Now: t0, MinAge: time.Hour})
	if p.Totals.DeleteUnfinished != 2 || p.Totals.KeepWALFiles != 0 {
		t.Errorf("everything: %+v", p.Totals)
	}
}

// recorder is a Store that logs deletes, in order.
type recorder struct {
	storage.Store
	mu      sync.Mutex
	deleted []string
	before  func(key string) // called before each delete
}

func (r *recorder) Delete(ctx context.Context, key string) error {
	if r.before != nil {
		r.before(key)
	}
	r.mu.Lock()
	r.deleted = append(r.deleted, key)
	r.mu.Unlock()
	return r.Store.Delete(ctx, key)
}

// seed writes an inventory's objects (real sentinels) into a store.
func seed(t *testing.T, s storage.Store, inv *Inventory) {
	t.Helper()
	ctx := context.Background()
	for _, b := range inv.Backups {
		if err := WriteSentinel(ctx, s, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, oi := range inv.BackupObjects {
		if !strings.HasSuffix(oi.Key, sentinelSuffix) {
			s.Put(ctx, oi.Key, bytes.NewReader(make([]byte, oi.Size)))
		}
	}
	for _, o := range inv.WAL {
		data := make([]byte, o.Size)
		if o.Kind == wal.KindHistory {
			var buf bytes.Buffer
			// A fork that left timeline 1 before any backup started: it
			// shares none of them, so it keeps none.
			fmt.Fprintf(&buf, "1\t0/1000100\tno recovery target specified\n")
			data = zstd(t, buf.Bytes())
		}
		s.Put(ctx, o.Key, bytes.NewReader(data))
	}
}

func zstd(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := codec.Zstd{}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func listAll(t *testing.T, s storage.Store) []string {
	t.Helper()
	var out []string
	if err := s.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		out = append(out, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	f1 := bk{tli: 1, seg: 2, finish: 10}
	d1 := bk{tli: 1, seg: 4, finish: 20, parent: f1.name()}
	d2 := bk{tli: 1, seg: 6, finish: 30, parent: d1.name()}
	f2 := bk{tli: 1, seg: 8, finish: 40}
	w := append(segs(1, 1, 12), walObj("00000002.history"))
	fs, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	seed(t, fs, inventory([]bk{f1, d1, d2, f2}, w, nil))
	dead := BackupName(wal.SegmentFromNo(1, 3, wal.DefaultSegmentSize), "")
	fs.Put(ctx, BackupFolder(dead)+"part_001.tar.zst", strings.NewReader("x"))

	inv, err := ReadInventory(ctx, fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Backups) != 4 || len(inv.WAL) != 13 || inv.Histories[2] == nil {
		t.Fatalf("inventory: %d backups, %d WAL, histories %v %v", len(inv.Backups), len(inv.WAL), inv.Histories, inv.HistoryErrors)
	}
	p, err := PlanDelete(inv, DeleteRequest{Mode: DeleteGarbage, Now: time.Now(), MinAge: 0})
	if err != nil {
		t.Fatal(err)
	}
	// garbage first: the dead folder and segment 1 go.
	rec := &recorder{Store: fs}
	res, err := Apply(ctx, rec, p, ApplyOptions{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unfinished != 1 || res.WALFiles != 1 || res.Backups != 0 || res.Objects != 2 {
		t.Errorf("garbage result %+v, deleted %v", res, rec.deleted)
	}

	inv, _ = ReadInventory(ctx, fs, nil)
	p, err = PlanDelete(inv, DeleteRequest{Mode: DeleteRetain, N: 1})
	if err != nil {
		t.Fatal(err)
	}
	before := listAll(t, fs)
	if got := listAll(t, fs); !slices.Equal(before, got) {
		t.Fatal("planning changed the store")
	}
	rec = &recorder{Store: fs}
	res, err = Apply(ctx, rec, p, ApplyOptions{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Sentinels first, deltas before parents; then parts; then WAL.
	wantHead := []string{SentinelKey(d2.name()), SentinelKey(d1.name()), SentinelKey(f1.name())}
	if !slices.Equal(rec.deleted[:3], wantHead) {
		t.Errorf("first deletes %v, want %v", rec.deleted[:3], wantHead)
	}
	lastPart := 0
	firstWAL := len(rec.deleted)
	for i, k := range rec.deleted {
		if strings.HasPrefix(k, BackupPrefix) {
			lastPart = i
		} else if i < firstWAL {
			firstWAL = i
		}
	}
	if lastPart > firstWAL {
		t.Errorf("WAL deleted before backup objects: %v", rec.deleted)
	}
	if res.Backups != 3 || res.Objects != 6+6 || res.WALFiles != 6 {
		t.Errorf("retain result %+v", res)
	}
	got := listAll(t, fs)
	want := []string{BackupFolder(f2.name()) + "part_001.tar.zst", SentinelKey(f2.name())}
	for _, o := range append(segs(1, 8, 12), walObj("00000002.history")) {
		want = append(want, o.Key)
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("left:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Applying again is harmless.
	if _, err := Apply(ctx, fs, p, ApplyOptions{}); err != nil {
		t.Errorf("second apply: %v", err)
	}
}

func TestApplyRechecks(t *testing.T) {
	ctx := context.Background()
	f1 := bk{tli: 1, seg: 2, finish: 10}
	f2 := bk{tli: 1, seg: 8, finish: 40}
	setup := func(t *testing.T) (storage.Store, *Plan) {
		return retainOnePlan(t, []bk{f1, f2}, segs(1, 1, 10))
	}
	t.Run("marked permanent since the plan", func(t *testing.T) {
		fs, p := setup(t)
		sn := f1.sentinel()
		sn.Permanent = true
		WriteSentinel(ctx, fs, sn)
		before := listAll(t, fs)
		if _, err := Apply(ctx, fs, p, ApplyOptions{}); !errors.Is(err, ErrChanged) {
			t.Fatalf("err = %v, want ErrChanged", err)
		}
		if !slices.Equal(before, listAll(t, fs)) {
			t.Error("something was deleted")
		}
	})
	t.Run("a new delta on a deleted backup", func(t *testing.T) {
		fs, p := setup(t)
		WriteSentinel(ctx, fs, bk{tli: 1, seg: 9, finish: 50, parent: f1.name()}.sentinel())
		if _, err := Apply(ctx, fs, p, ApplyOptions{}); !errors.Is(err, ErrChanged) {
			t.Fatalf("err = %v, want ErrChanged", err)
		}
	})
	t.Run("an unfinished backup that finished meanwhile", func(t *testing.T) {
		fs, err := file.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		seed(t, fs, inventory([]bk{f2}, nil, nil))
		late := bk{tli: 1, seg: 9, finish: 50}
		fs.Put(ctx, BackupFolder(late.name())+"part_001.tar.zst", strings.NewReader("x"))
		inv, _ := ReadInventory(ctx, fs, nil)
		p, err := PlanDelete(inv, DeleteRequest{Mode: DeleteGarbage, Now: time.Now()})
		if err != nil || p.Totals.DeleteUnfinished != 1 {
			t.Fatalf("plan: %v %+v", err, p.Unfinished)
		}
		WriteSentinel(ctx, fs, late.sentinel())
		res, err := Apply(ctx, fs, p, ApplyOptions{})
		if err != nil || !slices.Equal(res.Skipped, []string{late.name()}) {
			t.Fatalf("apply: %v %+v", err, res)
		}
		if _, err := fs.Stat(ctx, BackupFolder(late.name())+"part_001.tar.zst"); err != nil {
			t.Errorf("the finished backup lost its part: %v", err)
		}
	})
	t.Run("a failing delete stops before WAL", func(t *testing.T) {
		fs, p := setup(t)
		boom := errors.New("boom")
		rec := &recorder{Store: failing{fs, BackupFolder(f1.name()), boom}}
		if _, err := Apply(ctx, rec, p, ApplyOptions{}); !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
		for _, k := range rec.deleted {
			if strings.HasPrefix(k, WALPrefix) {
				t.Errorf("WAL deleted after a failure: %s", k)
			}
		}
		if _, err := fs.Stat(ctx, SentinelKey(f1.name())); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("the sentinel should go first: %v", err)
		}
	})
}

// failing fails deletes of keys under prefix.
type failing struct {
	storage.Store
	prefix string
	err    error
}

func (f failing) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, f.prefix) {
		return f.err
	}
	return f.Store.Delete(ctx, key)
}

// TestLeftovers: what interrupted writes left is listed by ReadInventory,
// deleted by garbage (once older than MinAge) and everything, left alone
// by retain and before, and removed by Apply; objects stay.
func TestLeftovers(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	fs, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Put(ctx, WALKey(seg(1, 1), codec.Zstd{}), bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	temps := map[string]time.Duration{ // temp file below the root: age
		"wal_005/.walgo-tmp-0011223344556677-" + seg(1, 2) + ".zst":           48 * time.Hour,
		"basebackups_005/base_x/.walgo-tmp-8899aabbccddeeff-part_001.tar.zst": time.Minute,
	}
	for p, age := range temps {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	s := storage.WithRetry(fs, storage.RetryOptions{}, nil)
	inv, err := ReadInventory(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Leftovers) != 2 {
		t.Fatalf("inventory leftovers: %+v", inv.Leftovers)
	}
	tests := []struct {
		req  DeleteRequest
		want int // leftovers deleted
	}{
		{DeleteRequest{Mode: DeleteGarbage, MinAge: time.Hour}, 1},
		{DeleteRequest{Mode: DeleteGarbage}, 2},
		{DeleteRequest{Mode: DeleteRetain, N: 1, MinAge: time.Hour}, 0},
		{DeleteRequest{Mode: DeleteBefore, Before: now, MinAge: time.Hour}, 0},
		{DeleteRequest{Mode: DeleteEverything, MinAge: time.Hour}, 2},
	}
	for _, tt := range tests {
		tt.req.Now = now
		p, err := PlanDelete(inv, tt.req)
		if err != nil {
			t.Fatal(err)
		}
		if p.Totals.DeleteLeftovers != tt.want || len(p.Leftovers) != 2 {
			t.Errorf("%s (min age %s): deletes %d leftovers, want %d: %+v", tt.req.Mode, tt.req.MinAge, p.Totals.DeleteLeftovers, tt.want, p.Leftovers)
		}
	}

	p, err := PlanDelete(inv, DeleteRequest{Mode: DeleteGarbage, MinAge: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Apply(ctx, s, p, ApplyOptions{})
	if err != nil || res.Leftovers != 1 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	var left []string
	storage.LeftoversOf(ctx, s, "", func(l storage.Leftover) error {
		left = append(left, l.Key)
		return nil
	})
	if !slices.Equal(left, []string{"basebackups_005/base_x/part_001.tar.zst"}) {
		t.Errorf("leftovers after garbage: %v, want only the young one", left)
	}
	if got := listAll(t, s); !slices.Equal(got, []string{WALKey(seg(1, 1), codec.Zstd{})}) {
		t.Errorf("objects after garbage: %v", got)
	}
}

// TestPlanDeleteLineages: a primary on timeline 1 and a fork on 2 that
// left it at segment 7. Each lineage counts on its own; --lineage confines
// a delete to one.
func TestPlanDeleteLineages(t *testing.T) {
	p1 := bk{tli: 1, seg: 2, finish: 10}  // both lineages
	p2 := bk{tli: 1, seg: 10, finish: 40} // the primary's, after the fork
	f1 := bk{tli: 2, seg: 9, finish: 30}
	f2 := bk{tli: 2, seg: 12, finish: 50}
	fd := bk{tli: 2, seg: 14, finish: 60, parent: f2.name()}
	all := []bk{p1, p2, f1, f2, fd}
	hist := map[uint32][]HistoryEntry{2: {{Timeline: 1, Switch: wal.LSN(7*wal.DefaultSegmentSize + 0x100)}}}
	w := slices.Concat(segs(1, 1, 20), []WALObject{walObj("00000002.history")}, segs(2, 7, 16))
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	tests := []struct {
		name    string
		req     DeleteRequest
		deleted []string
		reason  map[string]string // kept backup -> part of its reason
		err     error
	}{
		{"retain 1 keeps the newest of each", DeleteRequest{Mode: DeleteRetain, N: 1}, names(p1, f1),
			map[string]string{p2.name(): "newest backups of lineage 1", fd.name(): "newest backups of lineage 2", f2.name(): "parent of kept delta"}, nil},
		{"retain FULL 1 per lineage", DeleteRequest{Mode: DeleteRetainFull, N: 1}, names(p1, f1),
			map[string]string{p2.name(): "full backups of lineage 1", f2.name(): "full backups of lineage 2", fd.name(): "delta of kept full"}, nil},
		{"retain 1 of lineage 1 only", DeleteRequest{Mode: DeleteRetain, N: 1, Lineage: "1"}, names(p1),
			map[string]string{f1.name(): "not on lineage 1", p2.name(): "newest backups of lineage 1"}, nil},
		{"before keeps the newest of a lineage that would lose all", DeleteRequest{Mode: DeleteBefore, Before: at(45)}, names(p1, f1),
			map[string]string{p2.name(): "before keeps one of every lineage", f2.name(): "finished at or after"}, nil},
		{"before in one lineage", DeleteRequest{Mode: DeleteBefore, Before: at(35), Lineage: "1"}, names(p1),
			map[string]string{f1.name(): "not on lineage 1"}, nil},
		{"before emptying a lineage it is confined to", DeleteRequest{Mode: DeleteBefore, Before: at(45), Lineage: "1"}, nil, nil, ErrBadRequest},
		{"window: the newest before it of each lineage", DeleteRequest{Mode: DeleteWindow, Now: at(100), Window: 55 * time.Minute}, names(p1),
			map[string]string{p2.name(): "before the recovery window starts", f1.name(): "before the recovery window starts", f2.name(): "inside the recovery window"}, nil},
		{"everything is not confined", DeleteRequest{Mode: DeleteEverything, Lineage: "1"}, nil, nil, ErrBadRequest},
		{"an unknown lineage", DeleteRequest{Mode: DeleteRetain, N: 1, Lineage: "9"}, nil, nil, ErrLineage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanDelete(inventory(all, w, hist), tt.req)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("want %v, got %v", tt.err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := deletedBackups(p); !slices.Equal(got, tt.deleted) {
				t.Errorf("deleted %v, want %v", got, tt.deleted)
			}
			for _, v := range p.Backups {
				if want, ok := tt.reason[v.Name]; ok && (v.Delete || !strings.Contains(v.Reason, want)) {
					t.Errorf("%s: delete %v, reason %q; want kept with %q", v.Name, v.Delete, v.Reason, want)
				}
			}
			// No lineage loses the WAL its kept backups need.
			del := walDecision(p)
			for _, v := range p.Backups {
				if v.Delete {
					continue
				}
				start := wal.SegmentAt(v.Timeline, v.StartLSN, wal.DefaultSegmentSize).No(wal.DefaultSegmentSize)
				for n := start; n <= 16; n++ {
					if name := seg(v.Timeline, n); del[name] {
						t.Errorf("%s deleted, but kept backup %s needs it", name, v.Name)
					}
				}
			}
		})
	}
}

// refusing is a storage whose server refuses batch deletes.
type refusing struct{ storage.Store }

func (r refusing) Unwrap() storage.Store { return r.Store }

// retainOnePlan is a file store seeded with backups and WAL, and the plan
// of delete retain 1 there.
func retainOnePlan(t *testing.T, backups []bk, w []WALObject) (storage.Store, *Plan) {
	t.Helper()
	fs, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	seed(t, fs, inventory(backups, w, nil))
	inv, err := ReadInventory(context.Background(), fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanDelete(inv, DeleteRequest{Mode: DeleteRetain, N: 1})
	if err != nil {
		t.Fatal(err)
	}
	return fs, p
}

func (r refusing) DeleteBatch(context.Context, []string) error {
	return fmt.Errorf("delete batch: %w: NotImplemented", storage.ErrUnsupported)
}

// TestApplyBatches: a delete removes up to storage.MaxBatchDelete objects
// per request where the storage allows it, one at a time where it refuses,
// with the same result.
func TestApplyBatches(t *testing.T) {
	ctx := context.Background()
	f1 := bk{tli: 1, seg: 2, finish: 10}
	f2 := bk{tli: 1, seg: 1050, finish: 40}
	w := segs(1, 1, 1100)
	for _, tc := range []struct {
		name    string
		wrap    func(storage.Store) storage.Store
		batches int
		singles int
	}{
		// 1 sentinel alone; 1 backup object; 1049 WAL files in 2 batches.
		{"batches", func(s storage.Store) storage.Store { return s }, 3, 1},
		{"refused", func(s storage.Store) storage.Store { return refusing{s} }, 1, 1 + 1 + 1049},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, p := retainOnePlan(t, []bk{f1, f2}, w)
			c := &storagetest.Counter{Store: tc.wrap(fs)}
			res, err := Apply(ctx, c, p, ApplyOptions{Concurrency: 4})
			if err != nil {
				t.Fatal(err)
			}
			if res.Backups != 1 || res.WALFiles != 1049 || res.Objects != 1051 {
				t.Errorf("result %+v", res)
			}
			n := c.Counts()
			if n["delete batch"] != tc.batches || n["delete"] != tc.singles {
				t.Errorf("requests %v, want %d batch deletes and %d single ones", n, tc.batches, tc.singles)
			}
			if left := listAll(t, fs); len(left) != 2+51 {
				t.Errorf("%d objects left, want 53", len(left))
			}
		})
	}
}
