package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

func TestParseBackupName(t *testing.T) {
	s3 := wal.Segment{Timeline: 1, Seg: 3}
	s2 := wal.Segment{Timeline: 1, Seg: 2}
	for _, tc := range []struct {
		name string
		want *BackupID
	}{
		{"base_000000010000000000000003", &BackupID{Start: s3}},
		{"base_000000010000000000000003_D_000000010000000000000002", &BackupID{Start: s3, Parent: &s2}},
		{"base_000000010000000000000003_00000002", &BackupID{Start: s3, Seq: 2}},
		{"base_000000010000000000000003_D_000000010000000000000002_0000000A", &BackupID{Start: s3, Parent: &s2, Seq: 10}},
		{"base_000000010000000000000003_00000001", nil}, // the first has no suffix
		{"base_000000010000000000000003_00000000", nil},
		{"base_000000010000000000000003_0000000a", nil}, // lower case
		{"base_000000010000000000000003_2", nil},
		{"base_000000010000000000000003_", nil},
		{"base_000000010000000000000003_D_", nil},
		{"base_000000010000000000000003_D_000000010000000000000002_", nil},
		{"base_000000010000000000000003_00000002_D_000000010000000000000002", nil},
		{"base_00000001000000000000000", nil},
		{"base_000000010000000000000003/x", nil},
		{"base_../../etc/passwd", nil},
		{"000000010000000000000003", nil},
		{"", nil},
	} {
		id, err := ParseBackupName(tc.name)
		if tc.want == nil {
			if err == nil || !errors.Is(err, wal.ErrBadName) {
				t.Errorf("ParseBackupName(%q) = %+v, %v; want ErrBadName", tc.name, id, err)
			}
			if ValidBackupName(tc.name) {
				t.Errorf("ValidBackupName(%q) = true", tc.name)
			}
			continue
		}
		if err != nil || id.Start != tc.want.Start || id.Seq != tc.want.Seq || !sameParent(id.Parent, tc.want.Parent) {
			t.Errorf("ParseBackupName(%q) = %+v, %v; want %+v", tc.name, id, err, tc.want)
			continue
		}
		if id.Name() != tc.name {
			t.Errorf("ParseBackupName(%q).Name() = %q", tc.name, id.Name())
		}
	}
	// A delta names its parent by the parent's start segment, whatever
	// suffix the parent has.
	if got := BackupName(s3, "base_000000010000000000000002_00000005"); got != "base_000000010000000000000003_D_000000010000000000000002" {
		t.Errorf("BackupName of a delta of a suffixed parent: %s", got)
	}
}

// FuzzParseBackupName: what ParseBackupName accepts spells back to itself.
func FuzzParseBackupName(f *testing.F) {
	for _, s := range []string{"base_000000010000000000000003", "base_000000010000000000000003_D_000000010000000000000002_0000000A",
		"base_000000010000000000000003_00000001", "base_", "base_000000010000000000000003_D_x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseBackupName(s)
		if err != nil {
			return
		}
		if id.Name() != s {
			t.Fatalf("ParseBackupName(%q).Name() = %q", s, id.Name())
		}
		if strings.ContainsAny(s, "/.\\") {
			t.Fatalf("accepted %q, unsafe in a key", s)
		}
	})
}

func newFileStore(t *testing.T) storage.Store {
	t.Helper()
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s storage.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

func TestFreeBackupName(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t)
	start := wal.Segment{Timeline: 1, Seg: 7}
	base := BackupName(start, "")
	next := func(parent string) string {
		t.Helper()
		n, err := FreeBackupName(ctx, s, start, parent)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := next(""); got != base {
		t.Fatalf("empty repository: %s", got)
	}
	// A finished backup, then an unfinished folder, then a running one's lock.
	put(t, s, SentinelKey(base), []byte("{}"))
	if got := next(""); got != base+"_00000002" {
		t.Fatalf("after a sentinel: %s", got)
	}
	put(t, s, BackupFolder(base+"_00000002")+"part_001.tar.zst", []byte("x"))
	if got := next(""); got != base+"_00000003" {
		t.Fatalf("after a folder: %s", got)
	}
	lk := BackupLock{Format: LockFormat, Token: "t", SystemID: "42", Timeline: 1, Backup: base + "_00000003"}
	b, _ := json.Marshal(lk)
	put(t, s, BackupLockKey("42", 1), b)
	if got := next(""); got != base+"_00000004" {
		t.Fatalf("after a lock: %s", got)
	}
	// One past the highest, even when a lower one was deleted.
	if err := s.Delete(ctx, SentinelKey(base)); err != nil {
		t.Fatal(err)
	}
	if got := next(""); got != base+"_00000004" {
		t.Fatalf("after deleting the first: %s", got)
	}
	// A delta of another parent, or another start, is another name.
	parent := BackupName(wal.Segment{Timeline: 1, Seg: 2}, "")
	if got, want := next(parent), BackupName(start, parent); got != want {
		t.Fatalf("delta: %s, want %s", got, want)
	}
	for _, n := range []string{base, base + "_00000002", base + "_00000004", BackupName(start, parent)} {
		if !ValidBackupName(n) {
			t.Errorf("%s is not a valid name", n)
		}
	}
}

func TestCreateSentinelNeverOverwrites(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t)
	sn := &Sentinel{Format: SentinelFormat, Name: "base_000000010000000000000003", SystemID: "1", Hostname: "first", Timeline: 1, StartLSN: 0x3000028, SegmentSize: 16 << 20}
	if err := CreateSentinel(ctx, s, sn); err != nil {
		t.Fatal(err)
	}
	if err := CreateSentinel(ctx, s, sn); err != nil {
		t.Fatalf("the same sentinel again (a retried write): %v", err)
	}
	other := *sn
	other.Hostname = "second"
	if err := CreateSentinel(ctx, s, &other); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second CreateSentinel: %v, want ErrNameTaken", err)
	}
	got, err := ReadSentinel(ctx, s, sn.Name)
	if err != nil || got.Hostname != "first" {
		t.Fatalf("stored sentinel: %+v, %v", got, err)
	}
}

func TestBackupLock(t *testing.T) {
	ctx := context.Background()
	s := newFileStore(t)
	now := t0
	info := BackupLock{SystemID: "7300000000000000001", Timeline: 2, Host: "db1", PID: 4242, DataDir: "/data"}
	a, err := AcquireBackupLock(ctx, s, info, now)
	if err != nil {
		t.Fatal(err)
	}
	if a.TookOver != nil {
		t.Fatalf("took over %+v from an empty repository", a.TookOver)
	}
	key := BackupLockKey(info.SystemID, 2)
	if a.Lock().Key != key || !strings.HasPrefix(key, LockPrefix) {
		t.Fatalf("lock key %s", a.Lock().Key)
	}

	// A second backup-push is refused, with who holds the lock.
	_, err = AcquireBackupLock(ctx, s, BackupLock{SystemID: info.SystemID, Timeline: 2, Host: "db2", PID: 1}, now.Add(time.Minute))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second acquire: %v, want ErrLocked", err)
	}
	for _, want := range []string{"db1", "4242", key, now.Format(time.RFC3339), LockStaleAfter.String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not say %q: %v", want, err)
		}
	}
	// Another timeline or cluster has its own lock.
	c, err := AcquireBackupLock(ctx, s, BackupLock{SystemID: info.SystemID, Timeline: 3}, now)
	if err != nil {
		t.Fatalf("other timeline: %v", err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// The holder records its backup and refreshes.
	start := wal.LSN(0x5000028)
	if err := a.Update(ctx, now.Add(2*time.Minute), func(l *BackupLock) { l.Backup, l.StartLSN = "base_000000020000000000000005", start }); err != nil {
		t.Fatal(err)
	}
	stored, err := ReadBackupLock(ctx, s, key)
	if err != nil || stored.Backup != "base_000000020000000000000005" || stored.StartLSN != start || !stored.Refreshed.Equal(now.Add(2*time.Minute)) {
		t.Fatalf("stored lock %+v, %v", stored, err)
	}

	// Not refreshed for LockStaleAfter: taken over, and the old holder
	// finds out at its next refresh and writes nothing.
	late := now.Add(2*time.Minute + LockStaleAfter + time.Second)
	b, err := AcquireBackupLock(ctx, s, BackupLock{SystemID: info.SystemID, Timeline: 2, Host: "db2", PID: 7}, late)
	if err != nil {
		t.Fatalf("take over a stale lock: %v", err)
	}
	if b.TookOver == nil || b.TookOver.Host != "db1" {
		t.Fatalf("TookOver %+v", b.TookOver)
	}
	if err := a.Update(ctx, late, nil); !errors.Is(err, ErrLockLost) {
		t.Fatalf("old holder's refresh: %v, want ErrLockLost", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("old holder's release: %v", err)
	}
	if cur, err := ReadBackupLock(ctx, s, key); err != nil || cur.Host != "db2" {
		t.Fatalf("the old holder touched the new lock: %+v, %v", cur, err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("released lock still there: %v", err)
	}
	if err := b.Update(ctx, late, nil); !errors.Is(err, ErrLockLost) {
		t.Fatalf("refresh after release: %v, want ErrLockLost", err)
	}

	// An unreadable lock is refused with a way out, never overwritten.
	put(t, s, key, []byte("not json"))
	if _, err := AcquireBackupLock(ctx, s, info, late); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("unreadable lock: %v", err)
	}
}

// TestCheckSentinelKeyNames: a sentinel under a suffixed name is checked
// like any other; one under a delta's name that names no parent (or
// another) is damaged.
func TestCheckSentinelKeyNames(t *testing.T) {
	mk := func(name, parent string) *Sentinel {
		return &Sentinel{Format: SentinelFormat, Name: name, Timeline: 1, StartLSN: 0x3000028, SegmentSize: 16 << 20, SystemID: "1", DeltaParent: parent}
	}
	base := "base_000000010000000000000003"
	delta := base + "_D_000000010000000000000002"
	for _, tc := range []struct {
		name, parent string
		ok           bool
	}{
		{base + "_00000002", "", true},
		{delta, "base_000000010000000000000002", true},
		{delta + "_00000003", "base_000000010000000000000002_00000004", true},
		{delta, "", false},
		{delta, "base_000000010000000000000001", false},
		{base, "base_000000010000000000000002", false},
	} {
		if err := CheckSentinelKey(tc.name, mk(tc.name, tc.parent)); (err == nil) != tc.ok {
			t.Errorf("%s with parent %q: %v", tc.name, tc.parent, err)
		}
	}
}
