package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/proctest"
)

const niceChildEnv = "WALGO_TEST_NICE_CHILD"

// TestLowerPriorityReachesNewThreads lowers the priority of a process
// whose runtime starts and ends threads meanwhile (as wal-prefetch's does
// while it sets up its downloads): afterwards every thread, old or new,
// runs at the nice value asked for. Each try runs in a child process, so
// the test binary itself keeps its priority.
func TestLowerPriorityReachesNewThreads(t *testing.T) {
	if os.Getenv(niceChildEnv) == "1" {
		niceChild()
		return
	}
	for i := 0; i < 10; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLowerPriorityReachesNewThreads$")
		cmd.Env = append(os.Environ(), niceChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("try %d: %v\n%s", i, err, out)
		}
		if !strings.Contains(string(out), "all threads at 10") {
			t.Fatalf("try %d: %s", i, out)
		}
	}
}

// TestStartAtNice: the started process runs at the nice value from its
// start, and the starting process keeps its own.
func TestStartAtNice(t *testing.T) {
	before := taskNices(t, "self")
	cmd := exec.Command("sleep", "5")
	if err := startAtNice(cmd, 10); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for tid, n := range taskNices(t, strconv.Itoa(cmd.Process.Pid)) {
		if n != 10 {
			t.Errorf("the started process's thread %s runs at nice %d, want 10", tid, n)
		}
	}
	for tid, n := range taskNices(t, "self") {
		if b, ok := before[tid]; ok && b != n {
			t.Errorf("the starting process's thread %s went from nice %d to %d", tid, b, n)
		}
	}
}

// taskNices reads the nice value of each thread of process pid.
func taskNices(t *testing.T, pid string) map[string]int {
	t.Helper()
	out, err := proctest.ThreadNices(pid)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// niceChild churns OS threads, lowers its priority in the middle of it,
// churns a while longer and reports threads at another nice value.
func niceChild() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				done := make(chan struct{})
				go func() {
					// A goroutine that ends locked ends its thread, so
					// the runtime keeps starting new ones.
					runtime.LockOSThread()
					time.Sleep(50 * time.Microsecond)
					close(done)
				}()
				<-done
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := lowerPriority(10); err != nil {
		println("lowerPriority:", err.Error())
		os.Exit(1)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	nices, err := proctest.ThreadNices("self")
	if err != nil {
		println(err.Error())
		os.Exit(1)
	}
	var bad []string
	for tid, n := range nices {
		if n != 10 {
			bad = append(bad, tid+"="+strconv.Itoa(n))
		}
	}
	if len(bad) > 0 {
		println("threads at another nice value:", strings.Join(bad, " "), "of", len(nices))
		os.Exit(1)
	}
	println("all threads at 10")
}
