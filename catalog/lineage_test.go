package catalog

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

// lb is a test backup with explicit LSNs (in units of 16 MiB segments
// plus an offset) and finish minute after t0.
type lb struct {
	tli           uint32
	start, finish wal.LSN
	min           int
	parent        string
	sys           string
}

const mb16 = wal.LSN(wal.DefaultSegmentSize)

func (b lb) sentinel() *Sentinel {
	s := wal.SegmentAt(b.tli, b.start, wal.DefaultSegmentSize)
	sys := b.sys
	if sys == "" {
		sys = "7000000000000000001"
	}
	return &Sentinel{
		Format: SentinelFormat, Name: BackupName(s, b.parent), Timeline: b.tli,
		StartLSN: b.start, FinishLSN: b.finish,
		StartTime: t0.Add(time.Duration(b.min)*time.Minute - time.Minute), FinishTime: t0.Add(time.Duration(b.min) * time.Minute),
		SegmentSize: wal.DefaultSegmentSize, SystemID: sys, DeltaParent: b.parent,
	}
}

// The histories the tests use: timeline 2 left 1 at 5*16MiB+0x100 (a fork),
// 3 left 2 at 9*16MiB (a fork of the fork), 4 left 1 at 12*16MiB.
var (
	x2    = 5*mb16 + 0x100
	x3    = 9 * mb16
	x4    = 12 * mb16
	hists = map[uint32][]HistoryEntry{
		2: {{Timeline: 1, Switch: x2}},
		3: {{Timeline: 1, Switch: x2}, {Timeline: 2, Switch: x3}},
		4: {{Timeline: 1, Switch: x4}},
	}
)

func lineageOf(tli uint32) Lineage {
	return Lineage{SystemID: "7000000000000000001", Timeline: tli, Parents: hists[tli]}
}

func TestLineageHolds(t *testing.T) {
	tests := []struct {
		lineage uint32
		tli     uint32
		lsn     wal.LSN
		want    bool
	}{
		{1, 1, 100 * mb16, true},
		{1, 2, x2 + 1, false},
		{2, 1, x2 - 1, true},
		{2, 1, x2, true}, // the switch point ends the parent's shared WAL
		{2, 1, x2 + 1, false},
		{2, 2, x2 + 1, true},
		{3, 1, x2, true},
		{3, 2, x3, true},
		{3, 2, x3 + 1, false},
		{3, 4, x4 + 1, false},
		{4, 1, x4, true},
		{4, 1, x4 + 1, false},
		{4, 2, x2 + 1, false},
	}
	for _, tt := range tests {
		if got := lineageOf(tt.lineage).Holds(tt.tli, tt.lsn); got != tt.want {
			t.Errorf("lineage %d holds %d/%s: %v, want %v", tt.lineage, tt.tli, tt.lsn, got, tt.want)
		}
	}
	// A backup belongs to a lineage when the lineage runs through its
	// finish, not just its start.
	b := lb{tli: 1, start: x2 - 0x80, finish: x2 + 0x80}.sentinel()
	if lineageOf(2).HoldsBackup(b) || !lineageOf(1).HoldsBackup(b) {
		t.Errorf("a backup the fork left in the middle of belongs to lineage 1 only")
	}
	other := lb{tli: 1, start: mb16, finish: mb16 + 1, sys: "7999"}.sentinel()
	if lineageOf(1).HoldsBackup(other) {
		t.Errorf("a backup of another cluster belongs to no lineage of this one")
	}
}

func TestDiverge(t *testing.T) {
	tests := []struct {
		a, b uint32
		want wal.LSN
	}{
		{1, 1, math.MaxUint64},
		{1, 2, x2},
		{2, 1, x2},
		{2, 3, x3},
		{1, 3, x2},
		{3, 4, x2},
		{1, 4, x4},
		{2, 4, x2},
	}
	for _, tt := range tests {
		if got := Diverge(lineageOf(tt.a), lineageOf(tt.b)); got != tt.want {
			t.Errorf("Diverge(%d, %d) = %s, want %s", tt.a, tt.b, got, tt.want)
		}
	}
	if got := Diverge(Lineage{Timeline: 1}, Lineage{Timeline: 5}); got != 0 {
		t.Errorf("unrelated roots part at 0, got %s", got)
	}
}

func TestCheckParent(t *testing.T) {
	b1 := lb{tli: 1, start: 2 * mb16, finish: 2*mb16 + 0x200, min: 1}.sentinel()       // before every fork
	b1late := lb{tli: 1, start: 7 * mb16, finish: 7*mb16 + 0x200, min: 5}.sentinel()   // the primary's, after 2 left
	b1mid := lb{tli: 1, start: x2 - 0x80, finish: x2 + 0x80, min: 2}.sentinel()        // 2 left while it ran
	b2 := lb{tli: 2, start: 6 * mb16, finish: 6*mb16 + 0x200, min: 6}.sentinel()       // the fork's
	b2late := lb{tli: 2, start: 10 * mb16, finish: 10*mb16 + 0x200, min: 8}.sentinel() // the fork's, after 3 left
	other := lb{tli: 1, start: 2 * mb16, finish: 2*mb16 + 0x200, min: 1, sys: "7999"}.sentinel()
	tests := []struct {
		name          string
		lineage       Lineage
		child, parent lb
		parentSn      *Sentinel
		wantErr       string
	}{
		{"same timeline", lineageOf(1), lb{tli: 1, start: 9 * mb16, finish: 9*mb16 + 1}, lb{}, b1late, ""},
		{"ancestor before the switch", lineageOf(2), lb{tli: 2, start: 8 * mb16}, lb{}, b1, ""},
		{"ancestor after the switch: other branch", lineageOf(2), lb{tli: 2, start: 8 * mb16}, lb{}, b1late, "after timeline 2's history left timeline 1"},
		{"switch inside the parent", lineageOf(2), lb{tli: 2, start: 8 * mb16}, lb{}, b1mid, "another history"},
		{"grandparent timeline", lineageOf(3), lb{tli: 3, start: 11 * mb16}, lb{}, b1, ""},
		{"parent timeline before its switch", lineageOf(3), lb{tli: 3, start: 11 * mb16}, lb{}, b2, ""},
		{"parent timeline after its switch", lineageOf(3), lb{tli: 3, start: 11 * mb16}, lb{}, b2late, "another history"},
		{"sibling timeline", lineageOf(4), lb{tli: 4, start: 13 * mb16}, lb{}, b2, "not in the history of timeline 4"},
		{"finished after the child started", lineageOf(1), lb{tli: 1, start: 7*mb16 + 0x100}, lb{}, b1late, "after"},
		{"another cluster", lineageOf(1), lb{tli: 1, start: 9 * mb16}, lb{}, other, "another cluster"},
		{"history unknown, same timeline", Lineage{Timeline: 5, HistoryUnknown: true}, lb{tli: 5, start: 20 * mb16}, lb{tli: 5, start: 15 * mb16, finish: 15*mb16 + 1}, nil, ""},
		{"history unknown, older timeline", Lineage{Timeline: 5, HistoryUnknown: true}, lb{tli: 5, start: 20 * mb16}, lb{}, b1, "00000005.history"},
		{"child not on the lineage", lineageOf(2), lb{tli: 1, start: 9 * mb16}, lb{}, b1, "not on lineage 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.parentSn
			if p == nil {
				p = tt.parent.sentinel()
			}
			l := tt.lineage
			if l.SystemID == "" {
				l.SystemID = "7000000000000000001"
			}
			err := l.CheckParent(tt.child.sentinel(), p)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("want ok, got %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("want an error with %q, got %v", tt.wantErr, err)
			}
		})
	}
}

// forkRepo is a primary on timeline 1 with a fork on 2 and the fork's own
// fork on 3; 4 left 1 later (a second fork of the primary).
func forkRepo() (*LineageIndex, map[string]*Sentinel) {
	bs := map[string]*Sentinel{
		"b1":  lb{tli: 1, start: 2 * mb16, finish: 2*mb16 + 0x200, min: 1}.sentinel(),
		"b1b": lb{tli: 1, start: 7 * mb16, finish: 7*mb16 + 0x200, min: 5}.sentinel(),
		"b2":  lb{tli: 2, start: 6 * mb16, finish: 6*mb16 + 0x200, min: 6}.sentinel(),
		"b3":  lb{tli: 3, start: 10 * mb16, finish: 10*mb16 + 0x200, min: 9}.sentinel(),
		"b1c": lb{tli: 1, start: 14 * mb16, finish: 14*mb16 + 0x200, min: 10}.sentinel(),
	}
	var list []*Sentinel
	for _, b := range bs {
		list = append(list, b)
	}
	objs := append(append(segs(1, 2, 15), segs(2, 5, 11)...), segs(3, 9, 11)...)
	for _, n := range []string{"00000002.history", "00000003.history", "00000004.history"} {
		objs = append(objs, walObj(n))
	}
	return NewLineageIndex(list, objs, Histories{Parents: hists}), bs
}

func TestLineageIndex(t *testing.T) {
	x, bs := forkRepo()
	if got := x.Names(x.All()); !slices.Equal(got, []string{"1", "2", "3", "4"}) {
		t.Fatalf("lineages %v", got)
	}
	nameSet := func(ss []*Sentinel) []string {
		var out []string
		for _, s := range ss {
			for k, v := range bs {
				if v == s {
					out = append(out, k)
				}
			}
		}
		return out
	}
	for _, tt := range []struct {
		backup string
		want   []string
	}{
		{"b1", []string{"1", "2", "3", "4"}},
		{"b1b", []string{"1", "4"}},
		{"b1c", []string{"1"}},
		{"b2", []string{"2", "3"}},
		{"b3", []string{"3"}},
	} {
		if got := x.Names(x.Of(bs[tt.backup])); !slices.Equal(got, tt.want) {
			t.Errorf("lineages of %s: %v, want %v", tt.backup, got, tt.want)
		}
	}
	for _, tt := range []struct {
		lineage uint32
		want    []string
	}{
		{1, []string{"b1", "b1b", "b1c"}},
		{2, []string{"b1", "b2"}},
		{3, []string{"b1", "b2", "b3"}},
		{4, []string{"b1", "b1b"}},
	} {
		if got := nameSet(x.BackupsOf(x.Lineage("7000000000000000001", tt.lineage))); !slices.Equal(got, tt.want) {
			t.Errorf("backups of lineage %d: %v, want %v", tt.lineage, got, tt.want)
		}
	}

	// Delta parents: the newest backup of the server's lineage that
	// finished before the new backup starts.
	for _, tt := range []struct {
		lineage uint32
		start   wal.LSN
		want    string
	}{
		{1, 20 * mb16, "b1c"},
		{1, 10 * mb16, "b1b"},
		{2, 20 * mb16, "b2"}, // not b1b or b1c, newer but on the primary's own history
		{3, 20 * mb16, "b3"},
		{4, 20 * mb16, "b1b"},
		{1, 2 * mb16, ""},
		{5, 20 * mb16, ""}, // a timeline without a history file: only its own backups
	} {
		got := x.ParentOf(x.Lineage("7000000000000000001", tt.lineage), tt.start)
		name := ""
		if got != nil {
			name = nameSet([]*Sentinel{got})[0]
		}
		if name != tt.want {
			t.Errorf("parent on lineage %d at %s: %q, want %q", tt.lineage, tt.start, name, tt.want)
		}
	}

	// Where the candidates agree.
	all := x.Of(bs["b1"])
	if l, ok := x.CommonAt(all, x2-1); !ok || l.Timeline != 1 {
		t.Errorf("every lineage of b1 replays timeline 1 before %s: %v %v", x2, l, ok)
	}
	if _, ok := x.CommonAt(all, x2+1); ok {
		t.Errorf("the lineages of b1 part at %s", x2)
	}
	if l, ok := x.CommonAt(x.Of(bs["b2"]), x3-1); !ok || l.Timeline != 2 {
		t.Errorf("lineages 2 and 3 replay timeline 2 before %s: %v %v", x3, l, ok)
	}

	// Names.
	if l, err := x.Find("2"); err != nil || l.Timeline != 2 || len(l.Parents) != 1 {
		t.Errorf("Find 2: %+v %v", l, err)
	}
	if l, err := x.Find("7000000000000000001:3"); err != nil || l.Timeline != 3 {
		t.Errorf("Find with system id: %+v %v", l, err)
	}
	for _, bad := range []string{"9", "x", "0", "", "7999:1"} {
		if _, err := x.Find(bad); !errors.Is(err, ErrLineage) || !strings.Contains(err.Error(), "1, 2, 3, 4") {
			t.Errorf("Find %q: %v", bad, err)
		}
	}
	err := x.Ambiguous("restore LATEST", x.Of(bs["b1b"]))
	for _, want := range []string{"--lineage", "lineage 1: timeline 1;", "lineage 4: timeline 4, from timeline 1 at 0/C000000", "newest " + bs["b1c"].Name} {
		if !errors.Is(err, ErrLineage) || !strings.Contains(err.Error(), want) {
			t.Errorf("Ambiguous: want %q in\n%v", want, err)
		}
	}
}

func TestLineageIndexSystemIDs(t *testing.T) {
	a := lb{tli: 1, start: 2 * mb16, finish: 2*mb16 + 1, min: 1, sys: "71"}.sentinel()
	b := lb{tli: 1, start: 0x500 * mb16, finish: 0x500*mb16 + 1, min: 2, sys: "72"}.sentinel()
	x := NewLineageIndex([]*Sentinel{a, b}, segs(1, 2, 3), Histories{})
	if got := x.Names(x.All()); !slices.Equal(got, []string{"71:1", "72:1"}) {
		t.Fatalf("lineages %v", got)
	}
	if _, err := x.Find("1"); !errors.Is(err, ErrLineage) || !strings.Contains(err.Error(), "71:1 or 72:1") {
		t.Errorf("Find 1: %v", err)
	}
	if l, err := x.Find("72:1"); err != nil || !slices.Equal(x.BackupsOf(l), []*Sentinel{b}) {
		t.Errorf("Find 72:1: %+v %v", l, err)
	}
}

func TestReadHistories(t *testing.T) {
	ctx := context.Background()
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(name, body string) {
		var b strings.Builder
		w, _ := codec.Zstd{}.NewWriter(&b)
		w.Write([]byte(body))
		w.Close()
		if err := s.Put(ctx, WALKey(name, codec.Zstd{}), strings.NewReader(b.String())); err != nil {
			t.Fatal(err)
		}
	}
	put("00000002.history", "1\t0/5000100\tno recovery target specified\n")
	put("00000003.history", "garbage\n")
	objs, err := ListWAL(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHistories(ctx, s, nil, objs)
	if err != nil {
		t.Fatal(err)
	}
	if p := h.Parents[2]; len(p) != 1 || p[0].Switch != x2 {
		t.Errorf("00000002.history: %+v", p)
	}
	if err := h.Bad[3]; !errors.Is(err, codec.ErrCorrupt) {
		t.Errorf("00000003.history: %v", err)
	}
	x := NewLineageIndex(nil, objs, h)
	if l, err := x.Find("3"); err != nil || !l.HistoryUnknown {
		t.Errorf("a timeline with an unreadable history: %+v %v", l, err)
	}
}

func TestLineageOfDump(t *testing.T) {
	x, _ := forkRepo()
	for _, tt := range []struct {
		d    DumpSentinel
		want []string
	}{
		{DumpSentinel{SystemID: "7000000000000000001", Timeline: 1, LSN: 3 * mb16}, []string{"1", "2", "3", "4"}},
		{DumpSentinel{SystemID: "7000000000000000001", Timeline: 1, LSN: 8 * mb16}, []string{"1", "4"}},
		{DumpSentinel{Timeline: 2, LSN: 10 * mb16}, []string{"2"}},
		{DumpSentinel{SystemID: "7000000000000000001", Timeline: 2, LSN: 8 * mb16}, []string{"2", "3"}},
		{DumpSentinel{SystemID: "7999", Timeline: 1, LSN: 3 * mb16}, nil},
		{DumpSentinel{SystemID: "7000000000000000001"}, nil}, // an old dump: its place is not known
	} {
		if got := x.Names(x.OfDump(&tt.d)); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
			t.Errorf("dump at %d/%s of %q: lineages %v, want %v", tt.d.Timeline, tt.d.LSN, tt.d.SystemID, got, tt.want)
		}
	}
}
