package catalog

import (
	"fmt"
	"os"
	"strings"
)

// thisProcess identifies the running process across hosts and reboots:
// boot id, pid namespace and start time (in clock ticks since boot). Two
// processes with the same pid on one machine differ in one of them.
func thisProcess() string {
	st, err := procStart("self")
	if err != nil {
		return ""
	}
	boot, ns := machine()
	if boot == "" || ns == "" {
		return ""
	}
	return boot + "/" + ns + "/" + st
}

func machine() (boot, ns string) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", ""
	}
	n, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return "", ""
	}
	return strings.TrimSpace(string(b)), n
}

// procStart is field 22 of /proc/PID/stat, the process's start time.
func procStart(pid string) (string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return "", fmt.Errorf("/proc/%s/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%s/stat: too short", pid)
	}
	return f[19], nil
}

// processGone reports whether the process a lock names (pid, and the
// identity thisProcess gave it) surely no longer runs: it ran on this
// machine, in this pid namespace, since the last boot, and no process with
// its pid and start time exists. Anything it cannot tell is not gone.
func processGone(pid int, id string) bool {
	// None of the three parts holds a "/" (the namespace reads "pid:[4026531836]").
	boot, rest, ok := strings.Cut(id, "/")
	if !ok {
		return false
	}
	ns, start, ok := strings.Cut(rest, "/")
	if !ok || pid <= 0 {
		return false
	}
	myBoot, myNS := machine()
	if boot != myBoot || ns != myNS {
		return false
	}
	st, err := procStart(fmt.Sprint(pid))
	if os.IsNotExist(err) {
		return true
	}
	return err == nil && st != start
}
