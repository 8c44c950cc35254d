package lockfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Claims settles which process works on a named thing now (a WAL file the
// background pusher or wal-push stores, a segment the prefetch
// downloads): Dir/NAME, held with an exclusive flock by the process
// working on NAME. A claim is live only while its lock is held, so one a
// killed process left is free; the holder removes the file as it lets go.
type Claims struct{ Dir string }

// Path is the claim file of name.
func (c Claims) Path(name string) string { return filepath.Join(c.Dir, name) }

// Try takes the claim of name if no one holds it. ok is false when another
// process (or another call in this one) does.
func (c Claims) Try(name string) (f *os.File, ok bool, err error) {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, false, err
	}
	for {
		f, err := os.OpenFile(c.Path(name), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, false, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, false, nil
			}
			return nil, false, err
		}
		if c.same(f, name) {
			return f, true, nil
		}
		f.Close()
	}
}

// Wait takes the claim of name, waiting while another process holds it,
// up to max; ok is false if it gave up waiting (err is ctx's error when
// ctx ended the wait). The wait is a blocking flock, so the claim is taken
// the moment its holder lets go.
func (c Claims) Wait(ctx context.Context, name string, max time.Duration) (f *os.File, ok bool, err error) {
	if f, ok, err := c.Try(name); err != nil || ok {
		return f, ok, err
	}
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		f, err := os.OpenFile(c.Path(name), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, false, err
		}
		// The blocked flock owns f once given up on: it closes f when
		// it returns, and with f the lock it may have got.
		var mu sync.Mutex
		abandoned := false
		locked := make(chan error, 1)
		go func() {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			mu.Lock()
			defer mu.Unlock()
			if abandoned {
				f.Close()
				return
			}
			locked <- err
		}()
		var stop error
		select {
		case err := <-locked:
			if err != nil {
				f.Close()
				return nil, false, err
			}
			if c.same(f, name) {
				return f, true, nil
			}
			f.Close() // locked a removed file: wait on the new one
			continue
		case <-timer.C:
		case <-ctx.Done():
			stop = ctx.Err()
		}
		mu.Lock()
		abandoned = true
		select {
		case <-locked: // got it just now: let it go
			f.Close()
		default:
		}
		mu.Unlock()
		return nil, false, stop
	}
}

// same reports whether f, locked, is the file at the claim's path: the
// holder before removes the file as it lets go, and a lock taken on a
// removed file claims nothing.
func (c Claims) same(f *os.File, name string) bool {
	var held, now syscall.Stat_t
	return syscall.Fstat(int(f.Fd()), &held) == nil && syscall.Stat(c.Path(name), &now) == nil &&
		held.Dev == now.Dev && held.Ino == now.Ino
}

// Release lets go of a claim Try or Wait took; a nil f is nothing to let
// go of.
func (c Claims) Release(name string, f *os.File) {
	if f == nil {
		return
	}
	os.Remove(c.Path(name))
	f.Close()
}
