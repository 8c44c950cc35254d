package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// backgroundNice is the nice value of the processes walgo starts in the
// background (the prefetch): they work ahead of Postgres, so when the
// cores are busy Postgres' own process (the startup process replaying
// WAL) runs first.
const backgroundNice = 10

// lowerPriority gives every thread of this process a nice value of at
// least n (a thread already nicer keeps its value: raising priority again
// takes a privilege walgo does not have).
// Linux keeps a nice value per thread, and a new thread inherits the
// value of the thread that starts it. The runtime starts and ends threads
// while this runs, so it passes over /proc/self/task until a pass finds
// every thread at n: after that, every thread is started by one at n.
func lowerPriority(n int) error {
	const maxPasses = 100
	for pass := 0; pass < maxPasses; pass++ {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			lowered, err := lowerThread(tid, n)
			if err != nil && !errors.Is(err, syscall.ESRCH) { // ESRCH: ended since the listing
				return err
			}
			changed = changed || lowered
		}
		if !changed {
			return nil
		}
	}
	return fmt.Errorf("threads still started at another priority after %d passes", maxPasses)
}

// startAtNice starts cmd with every thread of the new process at a nice
// value of at least n from its first instruction. The fork happens on a
// thread of its own that takes the value first (the child inherits it)
// and then ends with its goroutine, as this process may not raise its
// priority back; startAtNice returns once that thread is gone.
func startAtNice(cmd *exec.Cmd, n int) error {
	type started struct {
		tid int
		err error
	}
	res := make(chan started, 1)
	var run func()
	run = func() {
		// Never unlocked (but on the main thread, which the runtime
		// keeps): the thread ends with this goroutine.
		runtime.LockOSThread()
		tid := syscall.Gettid()
		if tid == syscall.Getpid() {
			// Holding the main thread, so the next goroutine gets
			// another one.
			done := make(chan struct{})
			go func() { run(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		if _, err := lowerThread(tid, n); err != nil {
			res <- started{tid, fmt.Errorf("lower the starting thread's priority: %w", err)}
			return
		}
		res <- started{tid, cmd.Start()}
	}
	go run()
	r := <-res
	// The thread ends right after its goroutine; a second at most.
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(r.tid)); errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	return r.err
}

// lowerThread gives thread tid the nice value n unless it is already n or
// nicer, and reports whether it changed it.
func lowerThread(tid, n int) (bool, error) {
	// getpriority(2) answers 20 - nice, to stay positive.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	if err != nil || 20-prio >= n {
		return false, err
	}
	return true, syscall.Setpriority(syscall.PRIO_PROCESS, tid, n)
}
