package main

import (
	"os"
	"strconv"
	"syscall"
)

// backgroundNice is the nice value of the processes walgo starts in the
// background (the prefetch): they work ahead of Postgres, so when the
// cores are busy Postgres' own process (the startup process replaying
// WAL) runs first.
const backgroundNice = 10

// lowerPriority gives every thread of this process the nice value n.
// Linux keeps a nice value per thread, and threads the Go runtime starts
// later inherit it from the thread that starts them.
func lowerPriority(n int) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil {
			return err
		}
	}
	return nil
}
