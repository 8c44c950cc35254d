package catalog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

func TestParseTimelineHistory(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []HistoryEntry
		bad  bool
	}{
		{"empty", "", nil, false},
		{"one", "1\t0/3000158\tno recovery target specified\n",
			[]HistoryEntry{{1, 0x3000158, "no recovery target specified"}}, false},
		{"several, comments and blanks", "# comment\n\n1\t0/3000158\tno recovery target specified\n  2\t1/A0000000\tat restore point \"x\"\twith a tab\n",
			[]HistoryEntry{{1, 0x3000158, "no recovery target specified"}, {2, 0x1A0000000, "at restore point \"x\"\twith a tab"}}, false},
		{"no reason", "1\t0/3000158\n", []HistoryEntry{{1, 0x3000158, ""}}, false},
		{"crlf", "1\t0/3000158\treason\r\n", []HistoryEntry{{1, 0x3000158, "reason"}}, false},
		{"one field", "1\n", nil, true},
		{"bad timeline", "x\t0/3000158\treason\n", nil, true},
		{"timeline zero", "0\t0/3000158\treason\n", nil, true},
		{"bad lsn", "1\t3000158\treason\n", nil, true},
		{"timelines not increasing", "2\t0/3000158\ta\n2\t0/4000000\tb\n", nil, true},
		{"switch points decreasing", "1\t0/5000000\ta\n2\t0/4000000\tb\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTimelineHistory(strings.NewReader(tt.in))
			if tt.bad {
				if !errors.Is(err, codec.ErrCorrupt) {
					t.Fatalf("got %v, %v; want ErrCorrupt", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// seg16 is the segment size the continuity tests use.
const seg16 = 16 << 20

// archive builds a listing: segments "tli:from-to" (hex segment numbers
// on log 0), and plain names (history, partial files).
type archive struct{ objs []WALObject }

func (a *archive) segs(tli uint32, from, to uint64, except ...uint64) *archive {
	for n := from; n <= to; n++ {
		if slices.Contains(except, n) {
			continue
		}
		name := wal.SegmentFromNo(tli, n, seg16).Name()
		a.objs = append(a.objs, WALObject{Name: name, Kind: wal.KindSegment, Key: WALPrefix + name + ".zst", Ext: "zst", Size: 100})
	}
	return a
}

func (a *archive) files(names ...string) *archive {
	for _, n := range names {
		a.objs = append(a.objs, WALObject{Name: n, Kind: wal.Classify(n), Key: WALPrefix + n + ".zst", Ext: "zst", Size: 10})
	}
	return a
}

func backupAt(tli uint32, start, finish wal.LSN) *Sentinel {
	return &Sentinel{Name: "base_" + wal.SegmentAt(tli, start, seg16).Name(), Timeline: tli, StartLSN: start, FinishLSN: finish, SegmentSize: seg16}
}

func TestCheckContinuity(t *testing.T) {
	h := func(lines ...HistoryEntry) []HistoryEntry { return lines }
	tests := []struct {
		name    string
		wal     *archive
		hist    map[uint32][]HistoryEntry
		bad     map[uint32]string
		backup  *Sentinel
		ok      bool
		restore bool
		follows uint32
		upTo    string // PITRUpToSegment
		path    []PathStep
		gap     string // first gap's first segment
		missing []uint32
		problem string // in the backup's problems
		note    string
		// lineages are the lineages the backup is checked along (default:
		// follows alone); the other fields describe the one of follows.
		lineages []string
	}{
		{
			name: "healthy", wal: new(archive).segs(1, 1, 10).files("000000010000000000000002.00000028.backup"),
			backup: backupAt(1, 0x2000028, 0x3000100), ok: true, restore: true, follows: 1,
			upTo: "00000001000000000000000A",
			path: []PathStep{{1, "000000010000000000000002", "00000001000000000000000A", 9}},
		},
		{
			name: "gap after the finish", wal: new(archive).segs(1, 1, 10, 6),
			backup: backupAt(1, 0x2000028, 0x3000100), restore: true, follows: 1,
			upTo: "000000010000000000000005", gap: "000000010000000000000006",
			problem: "point-in-time recovery stops at 0/6000000 (end of 000000010000000000000005)",
		},
		{
			name: "gap before the finish", wal: new(archive).segs(1, 1, 10, 3),
			backup: backupAt(1, 0x2000028, 0x3000100), follows: 1,
			gap: "000000010000000000000003", problem: "not restorable",
		},
		{
			name: "start segment missing", wal: new(archive).segs(1, 3, 10),
			backup: backupAt(1, 0x2000028, 0x2000100), follows: 1,
			gap: "000000010000000000000002", problem: "not restorable",
		},
		{
			name: "archive ends before the finish", wal: new(archive).segs(1, 1, 2),
			backup: backupAt(1, 0x2000028, 0x4000100), follows: 1,
			gap: "000000010000000000000003", problem: "000000010000000000000003..000000010000000000000004 missing",
		},
		{
			name: "finish on a segment boundary", wal: new(archive).segs(1, 1, 2),
			backup: backupAt(1, 0x2000028, 0x3000000), ok: true, restore: true, follows: 1,
			upTo: "000000010000000000000002",
		},
		{
			name:   "switch followed, old timeline kept running",
			wal:    new(archive).segs(1, 1, 4).files("000000010000000000000005.partial", "00000002.history").segs(1, 5, 12).segs(2, 5, 8),
			hist:   map[uint32][]HistoryEntry{2: h(HistoryEntry{1, 0x5000A00, "fork"})},
			backup: backupAt(1, 0x2000028, 0x3000100), ok: true, restore: true, follows: 2,
			upTo: "000000020000000000000008", lineages: []string{"1", "2"},
			path: []PathStep{{1, "000000010000000000000002", "000000010000000000000004", 3}, {2, "000000020000000000000005", "000000020000000000000008", 4}},
		},
		{
			name:   "old timeline kept running, checked on its own",
			wal:    new(archive).segs(1, 1, 12, 7).files("00000002.history").segs(2, 5, 8),
			hist:   map[uint32][]HistoryEntry{2: h(HistoryEntry{1, 0x5000A00, "fork"})},
			backup: backupAt(1, 0x2000028, 0x3000100), restore: true, follows: 1, lineages: []string{"1", "2"},
			upTo: "000000010000000000000006", gap: "000000010000000000000007",
			problem: "base_000000010000000000000002 on lineage 1: gap on timeline 1: 000000010000000000000007 missing",
		},
		{
			name:   "a fork left while the backup ran",
			wal:    new(archive).segs(1, 1, 12).files("00000002.history").segs(2, 5, 8),
			hist:   map[uint32][]HistoryEntry{2: h(HistoryEntry{1, 0x5000A00, "fork"})},
			backup: backupAt(1, 0x4000028, 0x6000100), ok: true, restore: true, follows: 1, lineages: []string{"1"},
			upTo: "00000001000000000000000C", note: "left timeline 1 at 0/5000A00, while this backup ran",
		},
		{
			name:   "switch segment missing on the new timeline",
			wal:    new(archive).segs(1, 1, 4).files("000000010000000000000005.partial", "00000002.history").segs(2, 6, 8),
			hist:   map[uint32][]HistoryEntry{2: h(HistoryEntry{1, 0x5000A00, "fork"})},
			backup: backupAt(1, 0x2000028, 0x3000100), restore: true, follows: 2,
			upTo: "000000010000000000000004", gap: "000000020000000000000005",
			problem: "gap on timeline 2: 000000020000000000000005 missing",
		},
		{
			name:   "history missing",
			wal:    new(archive).segs(1, 1, 4).segs(2, 5, 8),
			backup: backupAt(1, 0x2000028, 0x3000100), restore: true, follows: 1,
			upTo: "000000010000000000000004", missing: []uint32{2}, problem: "00000002.history",
		},
		{
			name:   "history unreadable",
			wal:    new(archive).segs(1, 1, 4).files("00000002.history").segs(2, 5, 8),
			bad:    map[uint32]string{2: "corrupt"},
			backup: backupAt(1, 0x2000028, 0x3000100), restore: true, follows: 1,
			upTo: "000000010000000000000004", missing: []uint32{2}, problem: "00000002.history",
		},
		{
			name:   "fork before the backup started",
			wal:    new(archive).segs(1, 1, 12).files("00000002.history").segs(2, 5, 8),
			hist:   map[uint32][]HistoryEntry{2: h(HistoryEntry{1, 0x5000A00, "fork"})},
			backup: backupAt(1, 0x7000028, 0x7000100), ok: true, restore: true, follows: 1,
			upTo: "00000001000000000000000C", lineages: []string{"1"},
		},
		{
			name:   "switch inside the start segment",
			wal:    new(archive).segs(1, 1, 4).files("00000002.history").segs(2, 5, 8),
			hist:   map[uint32][]HistoryEntry{2: h(HistoryEntry{1, 0x5000A00, "fork"})},
			backup: backupAt(1, 0x5000028, 0x5000100), ok: true, restore: true, follows: 2,
			upTo: "000000020000000000000008",
			path: []PathStep{{2, "000000020000000000000005", "000000020000000000000008", 4}},
		},
		{
			name: "two switches",
			wal: new(archive).segs(1, 1, 3).segs(2, 4, 5).segs(3, 6, 9).segs(2, 6, 7).
				files("00000002.history", "00000003.history"),
			hist: map[uint32][]HistoryEntry{
				2: h(HistoryEntry{1, 0x4000100, ""}),
				3: h(HistoryEntry{1, 0x4000100, ""}, HistoryEntry{2, 0x6000200, ""}),
			},
			backup: backupAt(1, 0x2000028, 0x2000100), ok: true, restore: true, follows: 3,
			upTo: "000000030000000000000009", lineages: []string{"2", "3"}, // 2 went on after 3 left it; 1 did not
			path: []PathStep{
				{1, "000000010000000000000002", "000000010000000000000003", 2},
				{2, "000000020000000000000004", "000000020000000000000005", 2},
				{3, "000000030000000000000006", "000000030000000000000009", 4},
			},
		},
		{
			name: "gap on an intermediate timeline",
			wal: new(archive).segs(1, 1, 3).segs(2, 5, 5).segs(3, 6, 9).
				files("00000002.history", "00000003.history"),
			hist: map[uint32][]HistoryEntry{
				2: h(HistoryEntry{1, 0x4000100, ""}),
				3: h(HistoryEntry{1, 0x4000100, ""}, HistoryEntry{2, 0x6000200, ""}),
			},
			backup: backupAt(1, 0x2000028, 0x2000100), restore: true, follows: 3,
			upTo: "000000010000000000000003", gap: "000000020000000000000004",
		},
		{
			name: "ancestor's history missing",
			wal:  new(archive).segs(1, 1, 3).segs(3, 4, 9).files("00000003.history"),
			hist: map[uint32][]HistoryEntry{
				3: h(HistoryEntry{1, 0x4000100, ""}, HistoryEntry{2, 0x4000200, ""}),
			},
			backup: backupAt(1, 0x2000028, 0x2000100), restore: true, follows: 3,
			upTo: "000000030000000000000009", missing: []uint32{2}, problem: "00000002.history",
		},
		{
			name:   "backup on timeline 2",
			wal:    new(archive).segs(1, 1, 4).files("00000002.history").segs(2, 5, 8),
			hist:   map[uint32][]HistoryEntry{2: h(HistoryEntry{1, 0x5000A00, "fork"})},
			backup: backupAt(2, 0x6000028, 0x6000100), ok: true, restore: true, follows: 2,
			upTo: "000000020000000000000008",
		},
		{
			name: "no WAL at all", wal: new(archive),
			backup: backupAt(1, 0x2000028, 0x2000100), follows: 1,
			gap: "000000010000000000000002", problem: "not restorable",
		},
		{
			name:    "wrong segment size",
			wal:     new(archive).segs(1, 1, 4),
			backup:  &Sentinel{Name: "base_000000010000000000000002", Timeline: 1, StartLSN: 0x2000028, FinishLSN: 0x2000100, SegmentSize: 64 << 20},
			problem: "wal_segment_size",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := CheckContinuity(tt.wal.objs, tt.hist, tt.bad, []*Sentinel{tt.backup}, seg16)
			want := tt.lineages
			if want == nil {
				want = []string{fmt.Sprint(max(tt.follows, 1))}
			}
			var got []string
			var b BackupWAL
			for _, e := range rep.Backups {
				got = append(got, e.Lineage)
				if e.Follows == tt.follows || tt.follows == 0 {
					b = e
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("checked along lineages %v, want %v: %+v", got, want, rep.Backups)
			}
			if rep.OK != tt.ok || b.OK != tt.ok || b.Restorable != tt.restore || b.Follows != tt.follows || b.PITRUpToSegment != tt.upTo {
				t.Errorf("report ok %v, backup %+v", rep.OK, b)
			}
			if tt.path != nil && !slices.Equal(b.Path, tt.path) {
				t.Errorf("path %+v, want %+v", b.Path, tt.path)
			}
			gap := ""
			if b.FirstGap != nil {
				gap = b.FirstGap.First
			}
			if gap != tt.gap {
				t.Errorf("first gap %q, want %q", gap, tt.gap)
			}
			if !slices.Equal(b.MissingHistory, tt.missing) {
				t.Errorf("missing history %v, want %v", b.MissingHistory, tt.missing)
			}
			if tt.problem != "" && !strings.Contains(strings.Join(rep.Problems, "\n"), tt.problem) {
				t.Errorf("problems %q lack %q", rep.Problems, tt.problem)
			}
			if tt.ok && len(rep.Problems) > 0 {
				t.Errorf("problems in an OK report: %q", rep.Problems)
			}
			if tt.note != "" && !strings.Contains(strings.Join(b.Notes, "\n"), tt.note) {
				t.Errorf("notes %q lack %q", b.Notes, tt.note)
			}
			if b.Restorable && b.PITRUpTo == 0 {
				t.Errorf("restorable without an LSN: %+v", b)
			}
		})
	}
}

func TestCheckContinuityTimelines(t *testing.T) {
	a := new(archive).segs(1, 1, 4, 3).segs(2, 5, 6).files("000000010000000000000005.partial")
	rep := CheckContinuity(a.objs, nil, nil, nil, seg16)
	if rep.OK || len(rep.Timelines) != 2 {
		t.Fatalf("report %+v", rep)
	}
	if tl := rep.Timelines[0]; tl.ID != 1 || len(tl.Gaps) != 1 || tl.Gaps[0].First != "000000010000000000000003" || tl.HistoryMissing {
		t.Errorf("timeline 1: %+v", tl)
	}
	if tl := rep.Timelines[1]; tl.ID != 2 || !tl.HistoryMissing || tl.Count != 2 {
		t.Errorf("timeline 2: %+v", tl)
	}
	// A gap no backup needs does not fail the check by itself.
	rep = CheckContinuity(new(archive).segs(1, 1, 9, 3).objs, nil, nil, []*Sentinel{backupAt(1, 0x5000028, 0x5000100)}, seg16)
	if !rep.OK {
		t.Errorf("a gap before the only backup failed the check: %q", rep.Problems)
	}
}

func TestVerifyWAL(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cd := codec.New(codec.Zstd{}, nil, nil)
	put := func(name string, data []byte) {
		t.Helper()
		var buf bytes.Buffer
		w, err := cd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
		if err := st.Put(ctx, WALKey(name, cd), &buf); err != nil {
			t.Fatal(err)
		}
	}
	for n := uint64(1); n <= 4; n++ {
		name := wal.SegmentFromNo(1, n, seg16).Name()
		put(name, waltest.Segment(t, name, seg16, 1)[:8192])
	}
	for n := uint64(4); n <= 6; n++ {
		name := wal.SegmentFromNo(2, n, seg16).Name()
		put(name, waltest.Segment(t, name, seg16, 1)[:8192])
	}
	put("00000002.history", []byte("1\t0/4000100\tno recovery target specified\n"))
	// An unreadable history of timeline 3, stored raw under a zstd name.
	if err := st.Put(ctx, WALKey("00000003.history", cd), strings.NewReader("not zstd")); err != nil {
		t.Fatal(err)
	}

	h, err := ReadTimelineHistory(ctx, st, cd, 2)
	if err != nil || len(h) != 1 || h[0].Switch != 0x4000100 {
		t.Fatalf("ReadTimelineHistory: %+v, %v", h, err)
	}
	if _, err := ReadTimelineHistory(ctx, st, cd, 4); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("missing history: %v", err)
	}
	if _, err := ReadTimelineHistory(ctx, st, cd, 3); !errors.Is(err, codec.ErrCorrupt) {
		t.Errorf("corrupt history: %v", err)
	}

	b := backupAt(1, 0x2000028, 0x2000100)
	rep, err := VerifyWAL(ctx, st, cd, []*Sentinel{b}, seg16)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || len(rep.Backups) != 2 || rep.Backups[1].Follows != 2 || rep.Backups[1].PITRUpToSegment != "000000020000000000000006" ||
		rep.Backups[0].Follows != 1 || rep.Backups[0].PITRUpToSegment != "000000010000000000000004" {
		t.Fatalf("report: %+v", rep)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), "00000003.history unreadable") {
		t.Errorf("problems: %q", rep.Problems)
	}
	if _, err := VerifyWAL(ctx, st, cd, nil, 1000); err == nil {
		t.Error("an invalid segment size was accepted")
	}
}

// wal-verify reads headers, not only names (issue 10 item 10): a segment
// holding the next segment's content, another cluster's segment, one
// whose header names a newer timeline, and one that does not decode are
// each reported, and count as missing for the backups that need them.
func TestVerifyWALHeaders(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cd := codec.New(codec.Zstd{}, nil, nil)
	put := func(name string, data []byte) {
		t.Helper()
		var buf bytes.Buffer
		w, _ := cd.NewWriter(&buf)
		w.Write(data)
		w.Close()
		if err := st.Put(ctx, WALKey(name, cd), &buf); err != nil {
			t.Fatal(err)
		}
	}
	seg := func(no uint64) string { return wal.SegmentFromNo(1, no, seg16).Name() }
	for n := uint64(2); n <= 9; n++ {
		put(seg(n), waltest.Segment(t, seg(n), seg16, 1)[:8192])
	}
	put(seg(4), waltest.Segment(t, seg(5), seg16, 1)[:8192]) // the next segment's content
	other := waltest.Segment(t, seg(6), seg16, 1)[:8192]
	binary.LittleEndian.PutUint64(other[24:], 42) // another cluster's
	put(seg(6), other)
	newer := waltest.Segment(t, seg(7), seg16, 1)[:8192]
	binary.LittleEndian.PutUint32(newer[4:], 2) // says timeline 2
	put(seg(7), newer)
	if err := st.Put(ctx, WALKey(seg(8), cd), strings.NewReader("not zstd")); err != nil {
		t.Fatal(err)
	}
	b := backupAt(1, 0x2000028, 0x2000100)
	b.SystemID = "7300000000000000001" // waltest's
	rep, err := VerifyWAL(ctx, st, cd, []*Sentinel{b}, seg16)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{}
	for _, s := range rep.Headers.Bad {
		bad[s.Name] = s.Problem
	}
	for name, want := range map[string]string{
		seg(4): "holds segment " + seg(5),
		seg(6): "database system 42",
		seg(7): "timeline 2",
		seg(8): "corrupt",
	} {
		if !strings.Contains(bad[name], want) {
			t.Errorf("%s: problem %q, want it to say %q", name, bad[name], want)
		}
	}
	if len(bad) != 4 || rep.Headers.Checked != 8 || rep.OK {
		t.Errorf("bad %v, checked %d, ok %v", bad, rep.Headers.Checked, rep.OK)
	}
	if g := rep.Backups[0].FirstGap; g == nil || g.First != seg(4) || rep.Backups[0].PITRUpToSegment != seg(3) {
		t.Errorf("the wrong segment must break point-in-time recovery there: %+v", rep.Backups[0])
	}
	// Without backups, the system id most segments carry is the cluster's.
	rep, err = VerifyWAL(ctx, st, cd, nil, seg16)
	if err != nil || rep.Headers.SystemID != "7300000000000000001" || !strings.Contains(bad[seg(6)], "42") {
		t.Errorf("no backups: %+v, %v", rep.Headers, err)
	}
}
