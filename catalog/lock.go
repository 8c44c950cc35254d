package catalog

// Backup-push locks. One backup-push runs at a time per cluster history
// (system identifier and timeline) and repository: it holds a lock object,
// created only if absent, that names its host, pid and start time. The same
// object is the backup's in-progress record: once pg_backup_start returned
// it also holds the backup's name and start LSN, so that retention keeps
// the WAL the running backup will need and delete garbage leaves its
// partitions alone. The holder refreshes it every LockRefreshInterval; a
// lock not refreshed for LockStaleAfter is stale: the next backup-push takes
// it over, retention stops honouring it, and a holder that could not
// refresh it for that long gives up (WAL it needs may be gone).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// LockPrefix is the folder of backup-push locks.
const LockPrefix = "locks_005/"

// Lock timing: the holder refreshes its lock every LockRefreshInterval; a
// lock not refreshed for LockStaleAfter is stale. The margin allows for
// slow storage and clocks that differ between hosts by a few minutes.
const (
	LockRefreshInterval = time.Minute
	LockStaleAfter      = 10 * time.Minute
)

// LockFormat is the lock format this walgo writes and reads.
const LockFormat = 1

const lockFilePrefix = "backup-push_"

var (
	// ErrLocked: another backup-push of the same cluster history holds the
	// lock and refreshed it recently.
	ErrLocked = errors.New("another backup-push is running")
	// ErrLockLost: the lock this backup-push held was taken over, removed,
	// or could not be refreshed in time; the backup is abandoned.
	ErrLockLost = errors.New("backup lock lost")
	// ErrNameTaken: an object already exists under a key backup-push is
	// creating (another writer got there first); nothing was overwritten.
	ErrNameTaken = errors.New("backup name already taken")
)

// BackupLockKey is the key of the lock of one cluster history.
func BackupLockKey(systemID string, tli uint32) string {
	return fmt.Sprintf("%s%s%s_%08X.json", LockPrefix, lockFilePrefix, systemID, tli)
}

// BackupLock is a lock object: who holds it, and what its backup needs.
type BackupLock struct {
	Format   int    `json:"format"`
	Token    string `json:"token"` // random, tells the holder its own lock
	SystemID string `json:"system_identifier"`
	Timeline uint32 `json:"timeline"`
	Host     string `json:"host"`
	PID      int    `json:"pid"`
	// Process tells the holder's process apart from a later one with the
	// same pid (Linux: boot id, pid namespace, start time).
	Process      string    `json:"process,omitempty"`
	DataDir      string    `json:"data_directory,omitempty"`
	Started      time.Time `json:"started"`
	Refreshed    time.Time `json:"refreshed"`
	WalgoVersion string    `json:"walgo_version,omitempty"`
	// Backup and StartLSN are set once the backup started; until then the
	// backup may need any WAL of its timeline.
	Backup      string  `json:"backup,omitempty"`
	DeltaParent string  `json:"delta_parent,omitempty"`
	StartLSN    wal.LSN `json:"start_lsn,omitempty"`
	SegmentSize int64   `json:"wal_segment_size,omitempty"`

	// Key is where the lock is stored (not stored itself).
	Key string `json:"-"`
}

// Stale reports whether the lock was last refreshed more than
// LockStaleAfter before now.
func (l *BackupLock) Stale(now time.Time) bool { return now.Sub(l.Refreshed) > LockStaleAfter }

// Expired reports whether the lock no longer stands for a running
// backup-push, and why: it is stale, or its holder ran on this machine and
// is gone (killed, crashed), which needs no waiting.
func (l *BackupLock) Expired(now time.Time) (bool, string) {
	if l.Stale(now) {
		return true, fmt.Sprintf("not refreshed since %s (more than %s)", l.Refreshed.UTC().Format(time.RFC3339), LockStaleAfter)
	}
	if processGone(l.PID, l.Process) {
		return true, fmt.Sprintf("its holder, pid %d on this machine, is gone", l.PID)
	}
	return false, ""
}

// Describe names the holder for messages.
func (l *BackupLock) Describe() string {
	s := fmt.Sprintf("host %s pid %d, started %s, last refreshed %s", l.Host, l.PID,
		l.Started.UTC().Format(time.RFC3339), l.Refreshed.UTC().Format(time.RFC3339))
	if l.Backup != "" {
		s += ", backup " + l.Backup + " from " + l.StartLSN.String()
	}
	return s
}

func validSystemID(id string) bool {
	if id == "" || len(id) > 20 {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// DecodeBackupLock parses a stored lock.
func DecodeBackupLock(b []byte) (*BackupLock, error) {
	var l BackupLock
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%w: backup lock: %v", codec.ErrCorrupt, err)
	}
	if l.Format != LockFormat {
		return nil, fmt.Errorf("%w: backup lock format %d (this walgo reads %d)", ErrFormat, l.Format, LockFormat)
	}
	if !validSystemID(l.SystemID) || l.Token == "" {
		return nil, fmt.Errorf("%w: backup lock without system id or token", codec.ErrCorrupt)
	}
	if l.Backup != "" && !ValidBackupName(l.Backup) || l.DeltaParent != "" && !ValidBackupName(l.DeltaParent) {
		return nil, fmt.Errorf("%w: backup lock: invalid backup name %q", codec.ErrCorrupt, l.Backup)
	}
	return &l, nil
}

// ReadBackupLock reads the lock under key; ErrNotFound if there is none.
func ReadBackupLock(ctx context.Context, s storage.Store, key string) (*BackupLock, error) {
	b, err := readSmall(ctx, s, key, 1<<20)
	if err != nil {
		return nil, err
	}
	l, err := DecodeBackupLock(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	l.Key = key
	return l, nil
}

// LockRecord is one object under LockPrefix as ListBackupLocks read it:
// a lock, or why it could not be read.
type LockRecord struct {
	Key     string
	ModTime time.Time
	Lock    *BackupLock // nil if unreadable
	Err     string      // why it is unreadable
}

// ListBackupLocks reads every lock in the repository, in key order. A lock
// that cannot be decoded is returned with Err set, not as an error: it
// must not stop a delete, which then judges it by its ModTime.
func ListBackupLocks(ctx context.Context, s storage.Store) ([]LockRecord, error) {
	var out []LockRecord
	err := s.List(ctx, LockPrefix, func(oi storage.ObjectInfo) error {
		out = append(out, LockRecord{Key: oi.Key, ModTime: oi.ModTime})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	kept := out[:0]
	for _, r := range out {
		l, err := ReadBackupLock(ctx, s, r.Key)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			continue // released meanwhile
		case errors.Is(err, codec.ErrCorrupt), errors.Is(err, ErrFormat):
			r.Err = err.Error()
		case err != nil:
			return nil, fmt.Errorf("read lock %s: %w", r.Key, err)
		default:
			r.Lock = l
		}
		kept = append(kept, r)
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].Key < kept[j].Key })
	return kept, nil
}

// HeldLock is a lock this process holds.
type HeldLock struct {
	s   storage.Store
	key string

	mu     sync.Mutex
	l      BackupLock
	lastOK time.Time // the last successful write
	// TookOver is the stale lock this one replaced, if any.
	TookOver *BackupLock
}

// AcquireBackupLock creates the lock of l's cluster history (l.SystemID,
// l.Timeline) with l's host, pid and data directory, and returns it held.
// If another backup-push holds it and refreshed it within LockStaleAfter of
// now it fails with ErrLocked, saying who holds it; a stale lock is taken
// over (HeldLock.TookOver), as is one whose holder ran on this machine and
// is gone.
func AcquireBackupLock(ctx context.Context, s storage.Store, l BackupLock, now time.Time) (*HeldLock, error) {
	if !validSystemID(l.SystemID) {
		return nil, fmt.Errorf("backup lock: invalid system identifier %q", l.SystemID)
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	l.Format, l.Token, l.Started, l.Refreshed = LockFormat, hex.EncodeToString(tok[:]), now.UTC(), now.UTC()
	if l.Process == "" && l.PID == os.Getpid() {
		l.Process = thisProcess()
	}
	l.Key = BackupLockKey(l.SystemID, l.Timeline)
	h := &HeldLock{s: s, key: l.Key, l: l}
	body, err := json.MarshalIndent(&l, "", "  ")
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		err := createObject(ctx, s, l.Key, body)
		if err == nil {
			h.lastOK = now
			return h, nil
		}
		if !errors.Is(err, errExists) {
			return nil, fmt.Errorf("create lock %s: %w", l.Key, err)
		}
		cur, err := ReadBackupLock(ctx, s, l.Key)
		if errors.Is(err, storage.ErrNotFound) {
			if attempt < 3 {
				continue // released meanwhile
			}
			return nil, fmt.Errorf("create lock %s: it keeps appearing and vanishing", l.Key)
		}
		if errors.Is(err, codec.ErrCorrupt) || errors.Is(err, ErrFormat) {
			return nil, fmt.Errorf("%w: the lock %s cannot be read (%v); if no backup-push of this cluster is running, delete it", ErrLocked, l.Key, err)
		}
		if err != nil {
			return nil, fmt.Errorf("read lock %s: %w", l.Key, err)
		}
		if cur.Token == l.Token { // an earlier attempt of ours went through
			h.lastOK = now
			return h, nil
		}
		if gone, _ := cur.Expired(now); !gone {
			return nil, fmt.Errorf("%w: another backup-push of this cluster (system id %s, timeline %d) holds the lock %s: %s; "+
				"a lock not refreshed for %s is taken over; if that backup-push is gone and you cannot wait, delete %s",
				ErrLocked, l.SystemID, l.Timeline, l.Key, cur.Describe(), LockStaleAfter, l.Key)
		}
		if attempt >= 3 {
			return nil, fmt.Errorf("%w: could not take over the stale lock %s: others are trying too", ErrLocked, l.Key)
		}
		// Take the stale lock over: remove it (the create above decides
		// among several takers) and try again.
		h.TookOver = cur
		if err := s.Delete(ctx, l.Key); err != nil {
			return nil, fmt.Errorf("remove stale lock %s: %w", l.Key, err)
		}
	}
}

// Lock returns a copy of the lock as last written.
func (h *HeldLock) Lock() BackupLock {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.l
}

// LastRefreshed is when the lock was last written successfully.
func (h *HeldLock) LastRefreshed() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastOK
}

// Update applies fn (nil: nothing) to the lock, stamps it refreshed at now
// and writes it, after checking that it is still this process's: if it was
// removed or another backup-push took it over, it fails with ErrLockLost
// and writes nothing.
func (h *HeldLock) Update(ctx context.Context, now time.Time, fn func(*BackupLock)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.checkOwn(ctx); err != nil {
		return err
	}
	l := h.l
	if fn != nil {
		fn(&l)
	}
	l.Refreshed = now.UTC()
	body, err := json.MarshalIndent(&l, "", "  ")
	if err != nil {
		return err
	}
	if err := h.s.Put(ctx, h.key, bytes.NewReader(body)); err != nil {
		return fmt.Errorf("refresh lock %s: %w", h.key, err)
	}
	h.l, h.lastOK = l, now
	return nil
}

// Release removes the lock if it is still this process's.
func (h *HeldLock) Release(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.checkOwn(ctx); err != nil {
		if errors.Is(err, ErrLockLost) {
			return nil // not ours any more: nothing to remove
		}
		return err
	}
	if err := h.s.Delete(ctx, h.key); err != nil {
		return fmt.Errorf("release lock %s: %w", h.key, err)
	}
	return nil
}

func (h *HeldLock) checkOwn(ctx context.Context) error {
	cur, err := ReadBackupLock(ctx, h.s, h.key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%w: %s was removed", ErrLockLost, h.key)
	case errors.Is(err, codec.ErrCorrupt), errors.Is(err, ErrFormat):
		return fmt.Errorf("%w: %s: %v", ErrLockLost, h.key, err)
	case err != nil:
		return fmt.Errorf("read lock %s: %w", h.key, err)
	case cur.Token != h.l.Token:
		return fmt.Errorf("%w: %s was taken over by %s", ErrLockLost, h.key, cur.Describe())
	}
	return nil
}

// FreeBackupName returns the name for a backup with this start segment and
// parent that no other backup has: no sentinel, no folder, no lock of a
// running backup-push uses it. Without a lock held it may race another
// backup-push; the name is claimed only by the objects written under it.
func FreeBackupName(ctx context.Context, s storage.Store, start wal.Segment, parent string) (string, error) {
	id, err := ParseBackupName(BackupName(start, parent))
	if err != nil {
		return "", err
	}
	base := id.Name()
	taken := map[uint32]bool{} // seq 1 is the unsuffixed name
	note := func(n string) {
		if got, err := ParseBackupName(n); err == nil && got.Start == id.Start && sameParent(got.Parent, id.Parent) {
			taken[max(got.Seq, 1)] = true
		}
	}
	err = s.List(ctx, BackupPrefix+base, func(oi storage.ObjectInfo) error {
		rest := strings.TrimPrefix(oi.Key, BackupPrefix)
		if n, ok := strings.CutSuffix(rest, sentinelSuffix); ok && !strings.Contains(n, "/") {
			note(n)
		} else if n, _, ok := strings.Cut(rest, "/"); ok {
			note(n)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("list backups: %w", err)
	}
	locks, err := ListBackupLocks(ctx, s)
	if err != nil {
		return "", err
	}
	for _, r := range locks {
		if r.Lock != nil && r.Lock.Backup != "" {
			note(r.Lock.Backup)
		}
	}
	// One past the highest taken, so later backups sort later.
	id.Seq = 0
	for seq := range taken {
		id.Seq = max(id.Seq, seq+1)
	}
	return id.Name(), nil
}

func sameParent(a, b *wal.Segment) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// errExists: createObject found an object under its key.
var errExists = errors.New("object already exists")

// createObject writes body under key only if no object is there, else
// fails with errExists: the store's create-only write (If-None-Match on
// S3, link(2) on files) decides between concurrent writers.
func createObject(ctx context.Context, s storage.Store, key string, body []byte) error {
	err := s.Create(ctx, key, bytes.NewReader(body), nil)
	if errors.Is(err, storage.ErrExists) {
		return fmt.Errorf("%w: %w", errExists, err)
	}
	return err
}
