package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestBackupLockHolderGone: a lock whose holder ran on this machine and is
// gone (killed) is taken over at once; one whose holder runs is not.
func TestBackupLockHolderGone(t *testing.T) {
	if thisProcess() == "" {
		t.Fatal("no process identity")
	}
	ctx := context.Background()
	s := newFileStore(t)
	mine, err := AcquireBackupLock(ctx, s, BackupLock{SystemID: "1", Timeline: 1, PID: os.Getpid()}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if l := mine.Lock(); func() bool { g, _ := l.Expired(t0); return g }() {
		t.Fatal("a running holder counts as gone")
	}
	if _, err := AcquireBackupLock(ctx, s, BackupLock{SystemID: "1", Timeline: 1}, t0); !errors.Is(err, ErrLocked) {
		t.Fatalf("lock of a live holder: %v", err)
	}
	// The same pid with another start time is another process.
	l := mine.Lock()
	i := strings.LastIndexByte(l.Process, '/')
	l.Process = l.Process[:i+1] + "1"
	b, _ := json.Marshal(&l)
	put(t, s, l.Key, b)
	next, err := AcquireBackupLock(ctx, s, BackupLock{SystemID: "1", Timeline: 1}, t0)
	if err != nil {
		t.Fatalf("lock of a gone holder: %v", err)
	}
	if next.TookOver == nil {
		t.Fatal("TookOver not set")
	}
	if gone, why := next.TookOver.Expired(t0); !gone || !strings.Contains(why, "gone") {
		t.Fatalf("Expired: %v %q", gone, why)
	}
}
