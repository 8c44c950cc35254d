package lockfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	if Held(path) {
		t.Fatal("a missing file is held")
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if Held(path) {
		t.Fatal("an unlocked file is held")
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if !Held(path) {
		t.Fatal("a locked file is not held")
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if Held(path) {
		t.Fatal("a file let go of is still held")
	}
}
