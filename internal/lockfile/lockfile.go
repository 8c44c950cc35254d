// Package lockfile tells whether a process holds an flock on a file: the
// background processes walgo starts (the prefetch, the pusher) each hold
// one for their whole life, and the kernel drops it when they die.
package lockfile

import (
	"os"
	"syscall"
)

// Held reports whether some process holds an flock on path. A missing file
// is not held. The probe takes a shared lock, so two probes at once do not
// see each other.
func Held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
