package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
)

// lockedBuffer collects a running process's output for reading while it
// runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentProc is a `walgo schedule` running in the background as the
// Postgres user.
type agentProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	err            error
	metricsURL     string
}

// startAgent starts walgo schedule with args; it is killed at the end of
// the test if still running.
func startAgent(t *testing.T, c *pgtest.Cluster, env []string, args ...string) *agentProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	a := &agentProc{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{}), metricsURL: "http://" + addr + "/metrics"}
	a.cmd = c.Command(context.Background(), walgoBin, append(append([]string{"schedule"}, args...), "--metrics-addr", addr)...)
	a.cmd.Env = append(a.cmd.Env, env...)
	a.cmd.Stdout, a.cmd.Stderr = a.stdout, a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	})
	return a
}

// stop sends SIGTERM to the agent (only to it) and returns its exit code.
func (a *agentProc) stop(t *testing.T) int {
	t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("walgo schedule still running 60 s after SIGTERM\nstderr:\n%s", lastLines(a.stderr.String(), 20))
	}
	var ee *exec.ExitError
	switch {
	case a.err == nil:
		return 0
	case errors.As(a.err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(a.err)
	return -1
}

// metrics scrapes the agent: each sample line's value by its name with
// labels; nil when it does not answer.
func (a *agentProc) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(a.metricsURL)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q in:\n%s", line, body)
		}
		out[line[:i]] = v
	}
	return out
}

// atSoon is a --backup-at a few seconds from now, in UTC, to the second.
// waitRun waits for the agent's first run to finish its drill and returns
// the metrics then.
func (a *agentProc) waitRun(t *testing.T) map[string]float64 {
	t.Helper()
	var m map[string]float64
	pgtest.WaitFor(t, 3*time.Minute, func() bool {
		select {
		case <-a.done:
			t.Fatalf("walgo schedule exited: %v\nstderr:\n%s", a.err, a.stderr.String())
		default:
		}
		m = a.metrics(t)
		_, ok := m["walgo_last_drill_success"]
		return ok
	}, "the scheduled backup and its drill")
	return m
}

func atSoon(d time.Duration) (string, time.Time) {
	at := time.Now().UTC().Add(d).Truncate(time.Second)
	return at.Format("15:04:05") + " UTC", at
}

// TestScheduleAgent: walgo schedule set to a time a few seconds ahead takes
// a backup then, applies retention (the older backup is gone), runs a
// restore drill of the new backup, and reports all of it, with Postgres'
// archiver status, at /metrics; SIGTERM then stops it with exit 0 and
// nothing unfinished in the repository. A second agent, stopped while its
// (slow) backup runs, exits 0 too and lists no new backup.
func TestScheduleAgent(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "1", "-q")
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	mustWalgoAs(t, src, env, "backup-push")
	old := listBackups(t, r)
	if len(old) != 1 {
		t.Fatalf("backups before the agent: %v", old)
	}
	st := r.openStore(t)
	work := pgtest.OwnedDir(t, "drill-work")
	tmp := pgtest.OwnedDir(t, "drill-tmp")

	spec, at := atSoon(5 * time.Second)
	a := startAgent(t, src, append([]string{"TMPDIR=" + tmp}, env...),
		"--backup-at", spec, "--retain", "1", "--drill", "--work-dir", work)
	var m map[string]float64
	pgtest.WaitFor(t, 30*time.Second, func() bool { m = a.metrics(t); return m != nil }, "the agent's /metrics")
	if got := m["walgo_next_backup_timestamp_seconds"]; got != float64(at.Unix()) {
		t.Errorf("walgo_next_backup_timestamp_seconds %v, want %d (%s)", got, at.Unix(), spec)
	}
	if _, ok := m["walgo_last_backup_success"]; time.Now().Before(at) && (ok || m[`walgo_backups_total{result="success"}`] != 0) {
		t.Errorf("a backup is reported before its time: %v", m)
	}

	m = a.waitRun(t) // the drill is the run's last step
	now := listBackups(t, r)
	if len(now) != 1 || now[0] == old[0] {
		t.Fatalf("backups after the run: %v; want one new backup, %s deleted by --retain 1", now, old[0])
	}
	want := map[string]float64{
		"walgo_last_backup_success":             1,
		`walgo_backups_total{result="success"}`: 1,
		`walgo_backups_total{result="failure"}`: 0,
		"walgo_last_retention_success":          1,
		"walgo_last_drill_success":              1,
		"walgo_archiver_up":                     1,
		"walgo_next_backup_timestamp_seconds":   float64(at.Add(24 * time.Hour).Unix()),
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	for _, k := range []string{"walgo_last_backup_size_bytes", "walgo_last_backup_uncompressed_size_bytes",
		"walgo_pg_archiver_archived_total", "walgo_last_backup_timestamp_seconds", "walgo_pg_archiver_last_archived_time_seconds"} {
		if m[k] <= 0 {
			t.Errorf("%s = %v, want > 0", k, m[k])
		}
	}
	if ts := m["walgo_last_backup_timestamp_seconds"]; ts < float64(at.Unix()) {
		t.Errorf("walgo_last_backup_timestamp_seconds %v is before the scheduled time %d", ts, at.Unix())
	}
	if !strings.Contains(a.stdout.String(), old[0]) || !strings.Contains(a.stdout.String(), "restore-test "+now[0]+": OK") {
		t.Errorf("stdout lacks the retention plan deleting %s or the drill report of %s:\n%s", old[0], now[0], a.stdout.String())
	}

	if code := a.stop(t); code != 0 {
		t.Fatalf("walgo schedule exited %d after SIGTERM, want 0\nstderr:\n%s", code, a.stderr.String())
	}
	stderr := a.stderr.String()
	for _, s := range []string{"run started", "run finished", "schedule stopped"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("the log lacks %q:\n%s", s, stderr)
		}
	}
	if left := unfinishedObjects(t, st); len(left) != 0 {
		t.Errorf("unfinished objects in the repository: %v", left)
	}
	if listed := checkListedBackups(t, st); len(listed) != 1 || listed[0].Name != now[0] {
		t.Errorf("listed backups after the stop: %v", now)
	}
	for _, d := range []string{work, tmp} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("the drill left %s in %s", ents[0].Name(), d)
		}
	}
	t.Logf("scheduled run: backup %s, %v bytes stored, backup took %.1fs; retention deleted %s; drill passed; %v WAL archived",
		now[0], m["walgo_last_backup_size_bytes"], m["walgo_last_backup_duration_seconds"], old[0], m["walgo_pg_archiver_archived_total"])

	t.Run("SIGTERM during a backup", func(t *testing.T) {
		// ~25 MB read at 2 MB/s: the backup is still running when stopped.
		slow := append([]string{"WALGO_DISK_RATE_LIMIT=2MB"}, r.env...)
		spec, _ := atSoon(3 * time.Second)
		b := startAgent(t, src, slow, "--backup-at", spec, "--retain", "1")
		pgtest.WaitFor(t, 60*time.Second, func() bool { return strings.Contains(b.stderr.String(), "backup started") }, "the scheduled backup to start")
		time.Sleep(500 * time.Millisecond) // let it upload something
		if code := b.stop(t); code != 0 {
			t.Fatalf("exit %d after SIGTERM during a backup, want 0\nstderr:\n%s", code, b.stderr.String())
		}
		if strings.Contains(b.stderr.String(), "backup finished") {
			t.Fatalf("the backup finished before the stop; the test needs a slower one:\n%s", b.stderr.String())
		}
		if !strings.Contains(b.stderr.String(), "run abandoned") {
			t.Errorf("the log does not say the run was abandoned:\n%s", b.stderr.String())
		}
		listed := checkListedBackups(t, st)
		var names []string
		for _, sn := range listed {
			names = append(names, sn.Name)
		}
		if !slices.Equal(names, now) {
			t.Fatalf("listed backups after an abandoned backup: %v, want %v", names, now)
		}
		// The cluster still backs up after the abandoned backup.
		mustWalgoAs(t, src, env, "backup-push")
		if n := len(checkListedBackups(t, st)); n != 2 {
			t.Fatalf("%d backups listed after a backup-push following the abandoned one, want 2", n)
		}
	})
}
