package restore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

const targetSegSize = 1 << 20

// targetRepo is a repository with two backups and the WAL after them:
//
//	seg 2: backup 1 starts (restore point "early" before it is consistent), commit 100
//	seg 3: restore point "old", commit 101
//	seg 4: backup 2 starts, commit 102
//	seg 5: restore points "new" and "twice", commit 103, a record into seg 6
//	seg 6: "twice" again, restore point "straddle" crossing into seg 7
//	seg 7: commit 104 at 10:50, the last
type targetRepo struct {
	s      storage.Store
	b1, b2 *catalog.Sentinel
	w      *waltest.Writer
	at     func(hhmm string) time.Time
}

func newTargetRepo(t *testing.T) *targetRepo {
	t.Helper()
	at := func(hhmm string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04", "2026-11-24 "+hhmm)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	s := newStore(t)
	r := &targetRepo{s: s, at: at}
	r.b1 = putBackup(t, s, spec{no: 2, segSize: targetSegSize, finish: at("09:00"), ents: []ent{{path: "PG_VERSION", body: []byte("16\n")}}})
	r.b2 = putBackup(t, s, spec{no: 4, segSize: targetSegSize, finish: at("10:00"), ents: []ent{{path: "PG_VERSION", body: []byte("16\n")}}})
	w := waltest.NewWriter(targetSegSize, 8192, wal.SegmentFromNo(1, 2, targetSegSize))
	fill := func(until wal.LSN) {
		for w.Pos() < until {
			w.Add(10, 0, 1, make([]byte, 60))
		}
	}
	if rp := w.RestorePoint("early", at("08:59")); rp.LSN >= r.b1.FinishLSN {
		t.Fatalf("early at %s", rp.LSN)
	}
	fill(r.b1.FinishLSN)
	w.Commit(100, at("09:00").Add(30*time.Second))
	w.Switch()
	w.RestorePoint("old", at("09:30"))
	w.Commit(101, at("09:31"))
	w.Switch()
	fill(r.b2.FinishLSN)
	w.Commit(102, at("10:00").Add(30*time.Second))
	w.Switch()
	w.RestorePoint("new", at("10:30"))
	w.RestorePoint("twice", at("10:31"))
	w.Commit(103, at("10:32"))
	w.Add(10, 0, 1, make([]byte, targetSegSize*3/4)) // into segment 6
	w.RestorePoint("twice", at("10:40"))
	seg7 := wal.SegmentFromNo(1, 7, targetSegSize).StartLSN(targetSegSize)
	fill(seg7 - 200)
	w.Add(10, 0, 1, make([]byte, int(seg7-w.Pos())-48-wal.RecordHeaderSize-2)) // ends 48 bytes before segment 7
	if rp := w.RestorePoint("straddle", at("10:45")); rp.LSN >= seg7 || rp.LSN+wal.LSN(rp.TotalLen) <= seg7 {
		t.Fatalf("straddle at %s..%s does not cross %s", rp.LSN, rp.End, seg7)
	}
	w.Commit(104, at("10:50"))
	archiveWAL(t, s, w)
	r.w = w
	return r
}

func (r *targetRepo) fetch(t *testing.T, name string, tg Target) (*BackupFetchResult, string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	o := opts(dir)
	o.Name, o.Target = name, tg
	res, err := BackupFetch(context.Background(), r.s, o)
	return res, dir, err
}

// TestTargetsFromTheArchive: name and xid targets choose the backup that
// finished before their record; names and xids not in the archive, a name
// used twice where recovery would see both, and times and LSNs past the
// end of the archive are refused before anything is restored, saying how
// far the archive reaches.
func TestTargetsFromTheArchive(t *testing.T) {
	r := newTargetRepo(t)
	xid := func(v uint64) *uint64 { return &v }
	tm := func(hhmm string) *time.Time { v := r.at(hhmm); return &v }
	lastRecord := r.w.Records[len(r.w.Records)-1].LSN
	lsn := func(l wal.LSN) *wal.LSN { return &l }
	for _, tc := range []struct {
		name   string
		backup string // asked for
		target Target
		want   string // backup restored; "" when refused
		errs   []string
	}{
		{name: "old restore point", target: Target{Name: "old"}, want: r.b1.Name},
		{name: "new restore point", target: Target{Name: "new"}, want: r.b2.Name},
		{name: "restore point crossing segments", target: Target{Name: "straddle"}, want: r.b2.Name},
		{name: "restore point named with its backup", backup: r.b1.Name, target: Target{Name: "new"}, want: r.b1.Name},
		{name: "restore point before LATEST", backup: Latest, target: Target{Name: "old"},
			errs: []string{"not in the archived WAL after the start of backup " + r.b2.Name}},
		{name: "restore point after LATEST", backup: Latest, target: Target{Name: "new"}, want: r.b2.Name},
		{name: "restore point before the backup named", backup: r.b2.Name, target: Target{Name: "old"},
			errs: []string{"not in the archived WAL after the start of backup " + r.b2.Name}},
		{name: "restore point not in the archive", target: Target{Name: "nope"},
			errs: []string{`restore point "nope" is not in the archived WAL`, "segments read"}},
		{name: "restore point used twice", target: Target{Name: "twice"},
			errs: []string{"occurs more than once", "--target-lsn"}},
		{name: "restore point before every backup is consistent", target: Target{Name: "early"},
			errs: []string{"before any backup finished"}},
		{name: "xid after the first backup", target: Target{XID: xid(101)}, want: r.b1.Name},
		{name: "xid after the second backup", target: Target{XID: xid(103)}, want: r.b2.Name},
		{name: "xid not in the archive", target: Target{XID: xid(999)}, errs: []string{"xid 999 is not in the archived WAL"}},
		{name: "time before the last commit", target: Target{Time: tm("10:49")}, want: r.b2.Name},
		{name: "time at the last commit", target: Target{Time: tm("10:50")},
			errs: []string{"not before the last commit", "the archive reaches LSN", "last commit or abort at 2026-11-24T10:50:00Z"}},
		{name: "time past the archive", target: Target{Time: tm("23:00")}, errs: []string{"the archive reaches LSN " + r.w.Records[len(r.w.Records)-1].End.String()}},
		{name: "lsn of the last record", target: Target{LSN: lsn(lastRecord)}, want: r.b2.Name},
		{name: "lsn past the archive", target: Target{LSN: lsn(lastRecord + 8)},
			errs: []string{"past the end of the archive", "its last record starts at " + lastRecord.String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, dir, err := r.fetch(t, tc.backup, tc.target)
			if tc.want != "" {
				if err != nil {
					t.Fatal(err)
				}
				if res.Backup != tc.want {
					t.Fatalf("restored %s, want %s", res.Backup, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrTargetUnreachable) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want ErrTargetUnreachable", err)
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q: %v", want, err)
				}
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused restore touched %s: %v", dir, err)
			}
		})
	}

	// A gap after the second backup's start: its WAL cannot reach "new".
	if err := r.s.Delete(context.Background(), catalog.WALKey(wal.SegmentFromNo(1, 4, targetSegSize).Name(), codec.Zstd{})); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.fetch(t, "", Target{Name: "new"}); !errors.Is(err, ErrTargetUnreachable) || !strings.Contains(err.Error(), "000000010000000000000004") {
		t.Errorf("restore point after a gap: %v", err)
	}
}

// TestTargetSearchCost: a restore point is searched from the end of the
// archive backwards, one backup's stretch of WAL at a time: a recent one
// reads only the WAL after the newest backup's start.
func TestTargetSearchCost(t *testing.T) {
	r := newTargetRepo(t)
	ctx := context.Background()
	x, err := catalog.ReadLineageIndex(ctx, r.s, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := x.Lineage(r.b1.SystemID, 1)
	for _, tc := range []struct {
		name string
		want *catalog.Sentinel
		segs int64
	}{
		{"new", r.b2, 4}, // segments 4..7
		{"old", r.b1, 7}, // 4..7, then 2..4
	} {
		have, err := archivedSegments(ctx, r.s)
		if err != nil {
			t.Fatal(err)
		}
		a := newWALArchive(r.s, nil, have, l, targetSegSize, 2)
		f, b, err := a.locate(ctx, []*catalog.Sentinel{r.b1, r.b2}, restorePointMatcher(tc.name), tc.name, true)
		if err != nil || b.Name != tc.want.Name {
			t.Fatalf("%s: %+v %v %v", tc.name, f, b, err)
		}
		if got := a.segments.Load(); got != tc.segs {
			t.Errorf("%s: %d segments read, want %d", tc.name, got, tc.segs)
		}
	}
}

// TestTargetSearchLineages: a fork (timeline 2, from timeline 1 in
// segment 4) and the primary going on with timeline 1 share a repository.
// A restore point is searched along each history: the fork's own is found
// on timeline 2's segments, the primary's later one on timeline 1's, and
// one made before they parted is the same target on both.
func TestTargetSearchLineages(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	at := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	b := putBackup(t, s, spec{no: 2, segSize: targetSegSize, finish: at, ents: []ent{{path: "PG_VERSION", body: []byte("16\n")}}})
	shared := func() *waltest.Writer {
		w := waltest.NewWriter(targetSegSize, 8192, wal.SegmentFromNo(1, 2, targetSegSize))
		for w.Pos() < b.FinishLSN {
			w.Add(10, 0, 1, make([]byte, 60))
		}
		w.Switch()
		w.RestorePoint("before_fork", at.Add(time.Minute))
		w.Switch()
		for range 10 {
			w.Add(10, 0, 1, make([]byte, 60))
		}
		return w
	}
	store := func(w *waltest.Writer, tliFrom uint64, tli uint32) {
		segs, data := w.Segments()
		for i, sg := range segs {
			if sg.No(targetSegSize) >= tliFrom {
				sg.Timeline = tli
			} else {
				sg.Timeline = 1
			}
			put(t, s, catalog.WALKey(sg.Name(), codec.Zstd{}), encode(t, codec.Zstd{}, data[i]))
		}
	}
	// The primary: timeline 1 on.
	primary := shared()
	primary.Switch()
	primary.RestorePoint("primary_later", at.Add(2*time.Minute))
	primary.Commit(7, at.Add(3*time.Minute))
	store(primary, 99, 1)
	// The fork: switches to timeline 2 in segment 4.
	fork := shared()
	switchAt := fork.Pos()
	fork.Timeline = 2
	fork.Switch()
	fork.RestorePoint("fork_own", at.Add(2*time.Minute))
	fork.Commit(8, at.Add(3*time.Minute))
	store(fork, 4, 2)
	put(t, s, catalog.WALKey(wal.HistoryName(2), codec.Zstd{}), encode(t, codec.Zstd{}, []byte("1\t"+switchAt.String()+"\tno recovery target specified\n")))

	x, err := catalog.ReadLineageIndex(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tli  uint32 // the lineage it is found on; 0: refused
	}{
		{"fork_own", 2},
		{"primary_later", 1},
		{"before_fork", 1}, // the same record on both: one target
		{"nowhere", 0},
	} {
		o := opts(t.TempDir())
		o.Target = Target{Name: tc.name}
		search := &targetSearch{store: s, opts: &o, x: x}
		name, l, err := search.place(ctx, "", nil)
		if tc.tli == 0 {
			if !errors.Is(err, ErrTargetUnreachable) {
				t.Errorf("%s: %v, want ErrTargetUnreachable", tc.name, err)
			}
			continue
		}
		if err != nil || name != b.Name || l == nil || (l.Timeline != tc.tli && tc.name != "before_fork") {
			t.Errorf("%s: backup %q lineage %+v, %v; want %s on timeline %d", tc.name, name, l, err, b.Name, tc.tli)
		}
	}
}
