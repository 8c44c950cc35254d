// Package proctest reads what tests need to know about running processes
// from /proc: each thread's nice value.
package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ThreadNices returns the nice value of each thread of process pid ("self"
// for the caller), by thread id. A thread that ends while it is read is
// left out.
func ThreadNices(pid string) (map[string]int, error) {
	stats, err := filepath.Glob(filepath.Join("/proc", pid, "task", "*", "stat"))
	if err != nil || len(stats) == 0 {
		return nil, fmt.Errorf("no threads of process %s: %v", pid, err)
	}
	out := map[string]int{}
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue // the thread ended
		}
		// Fields after the command's closing parenthesis; nice is the 19th
		// field of the whole line (proc(5)).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) <= 16 {
			return nil, fmt.Errorf("%s: %d fields after the command", st, len(f))
		}
		n, err := strconv.Atoi(f[16])
		if err != nil {
			return nil, fmt.Errorf("%s: nice: %v", st, err)
		}
		out[filepath.Base(filepath.Dir(st))] = n
	}
	return out, nil
}

// Matching returns the ids of the processes whose command line holds every
// one of args.
func Matching(args ...string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := strings.Split(string(b), "\x00")
		if !slices.ContainsFunc(args, func(a string) bool { return !slices.Contains(cmd, a) }) {
			out = append(out, filepath.Base(filepath.Dir(p)))
		}
	}
	return out
}
