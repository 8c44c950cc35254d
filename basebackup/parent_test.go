package basebackup

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

const testSys = "7000000000000000001"

// putSentinel stores the sentinel of a backup on timeline tli starting in
// segment seg (finishing 0x200 later), finished min minutes after t0.
func putSentinel(t *testing.T, s storage.Store, tli uint32, seg uint64, min int, parent string) *catalog.Sentinel {
	t.Helper()
	start := wal.SegmentFromNo(tli, seg, wal.DefaultSegmentSize)
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	sn := &catalog.Sentinel{
		Format: catalog.SentinelFormat, Name: catalog.BackupName(start, parent), Timeline: tli,
		StartLSN: start.StartLSN(wal.DefaultSegmentSize) + 0x28, FinishLSN: start.StartLSN(wal.DefaultSegmentSize) + 0x200,
		StartTime: t0.Add(time.Duration(min-1) * time.Minute), FinishTime: t0.Add(time.Duration(min) * time.Minute),
		SystemID: testSys, SegmentSize: wal.DefaultSegmentSize, DeltaParent: parent,
	}
	if err := catalog.WriteSentinel(context.Background(), s, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

func putHistory(t *testing.T, s storage.Store, tli uint32, body string) {
	t.Helper()
	var b bytes.Buffer
	w, _ := codec.Zstd{}.NewWriter(&b)
	w.Write([]byte(body))
	w.Close()
	if err := s.Put(context.Background(), catalog.WALKey(wal.HistoryName(tli), codec.Zstd{}), &b); err != nil {
		t.Fatal(err)
	}
}

// TestChooseParent: a delta's parent is the newest backup of the server's
// own history that finished before it starts; a newer backup of another
// history (the primary a fork came from, after the fork) never is.
func TestChooseParent(t *testing.T) {
	ctx := context.Background()
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	putHistory(t, s, 2, "1\t0/5000100\tno recovery target specified\n") // a fork left 1 in segment 5
	b1 := putSentinel(t, s, 1, 2, 1, "")                                // before the fork
	d1 := putSentinel(t, s, 1, 3, 2, b1.Name)                           // before the fork
	p7 := putSentinel(t, s, 1, 7, 5, "")                                // the primary's, after the fork
	f8 := putSentinel(t, s, 2, 8, 6, d1.Name)                           // the fork's delta on d1
	putSentinel(t, s, 2, 10, 7, p7.Name)                                // a fork delta on the primary's backup: another history
	at := func(tli uint32, seg uint64) startInfo {
		return startInfo{timeline: tli, lsn: wal.SegmentFromNo(tli, seg, wal.DefaultSegmentSize).StartLSN(wal.DefaultSegmentSize) + 0x28}
	}
	tests := []struct {
		name  string
		start startInfo
		steps int
		want  *catalog.Sentinel
	}{
		{"the primary: its newest", at(1, 9), 7, p7},
		{"the primary, before its newest finished", at(1, 6), 7, d1},
		{"the fork: not the primary's newer backup, and not a chain crossing histories", at(2, 12), 7, nil},
		{"the fork, before the bad delta", at(2, 9), 7, f8},
		{"the fork, chain too long", at(2, 9), 2, nil},
		{"the fork, chain as long as allowed", at(2, 9), 3, f8},
		{"full backups only", at(1, 9), 0, nil},
		{"a timeline without a history file: its own backups only", at(3, 20), 7, nil},
		{"before any backup", at(1, 2), 7, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseParent(ctx, s, nil, testSys, tt.start, tt.steps, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && got.Name != tt.want.Name {
				t.Fatalf("parent %v, want %v", got, tt.want)
			}
		})
	}
}
