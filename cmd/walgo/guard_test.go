package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

var (
	testBinOnce sync.Once
	testBinPath string
	testBinErr  error
)

// testBinary builds walgo once, with the walgotest tag that lets
// WALGO_TEST_PANIC make it panic. WALGO_TEST_GUARD_BIN runs the tests on
// another binary instead (an older walgo, to see them fail).
func testBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("WALGO_TEST_GUARD_BIN"); p != "" {
		return p
	}
	testBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "walgo-guard-")
		if err != nil {
			testBinErr = err
			return
		}
		testBinPath = filepath.Join(dir, "walgo")
		out, err := exec.Command("go", "build", "-tags", "walgotest", "-o", testBinPath, ".").CombinedOutput()
		if err != nil {
			testBinErr = errors.New(string(out))
		}
	})
	if testBinErr != nil {
		t.Fatalf("build walgo: %v", testBinErr)
	}
	return testBinPath
}

// outcome of one run of the binary.
type outcome struct {
	code           int
	signal         syscall.Signal // the signal that killed it, if one did
	stdout, stderr string
}

// hangingS3 is an endpoint that accepts connections and never answers:
// a storage call to it lasts until the client gives up. accepted gets a
// value for each connection.
func hangingS3(t *testing.T) (endpoint string, accepted chan struct{}) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = make(chan struct{}, 100)
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + l.Addr().String(), accepted
}

// TestGuardExitPaths runs the real binary over every way a restore hook
// can fail, as Postgres runs it (in the data directory, DEST under
// pg_wal), and checks the exit status Postgres acts on: above 125 (or a
// death by SIGABRT) outside standby mode, 1 in standby mode, 1 only for a
// file the archive does not hold, and nothing ever on stdout.
func TestGuardExitPaths(t *testing.T) {
	bin := testBinary(t)
	root := t.TempDir()
	repoDir := filepath.Join(root, "repo")
	st, err := file.Init(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.InitRepository(context.Background(), st, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	const segSize = 1 << 20
	const good, corrupt, missing = "000000010000000000000002", "000000010000000000000003", "000000010000000000000009"
	ctx := context.Background()
	var enc bytes.Buffer
	w, _ := codec.New(codec.Zstd{}, nil, nil).NewWriter(&enc)
	w.Write(waltest.Segment(t, good, segSize, 1))
	w.Close()
	if err := st.Put(ctx, catalog.WALKey(good, codec.Zstd{}), &enc); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, catalog.WALKey(corrupt, codec.Zstd{}), strings.NewReader("not zstd at all")); err != nil {
		t.Fatal(err)
	}
	repo := "WALGO_STORAGE=file://" + repoDir
	conf := func(name, text string) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodConf := conf("good.conf", "WALGO_STORAGE=file://"+repoDir+"\nWALGO_PREFETCH=0\n")
	badLine := conf("badline.conf", "WALGO_STORAGE=file://"+repoDir+"\nthis is not a setting\n")
	typoKey := conf("typo.conf", "WALGO_STORAGE=file://"+repoDir+"\nWALGO_COMPRESION=lz4\n")
	badValue := conf("badvalue.conf", "WALGO_STORAGE=file://"+repoDir+"\nWALGO_DOWNLOAD_CONCURRENCY=many\n")
	hang, accepted := hangingS3(t)
	hangEnv := []string{"WALGO_STORAGE=s3://bucket/x", "WALGO_S3_ENDPOINT=" + hang, "WALGO_S3_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "WALGO_STORAGE_TIMEOUT=5m", "WALGO_STORAGE_RETRIES=1"}
	settings := func(flags map[string]string) string {
		b, _ := json.Marshal(detachedSettings{Flags: flags})
		return string(b)
	}
	fetch := func(args ...string) []string { return append(args, "wal-fetch", good, "pg_wal/RECOVERYXLOG") }

	const (
		ok        = 0
		notFound  = 1
		usage     = 130
		storage   = 132
		corrupted = 133
		other     = 134
	)
	type row struct {
		name    string
		args    []string
		env     []string
		stdin   string
		signals []syscall.Signal // sent once the run is waiting on storage
		want    int              // outside standby mode
		abort   bool             // want a death by SIGABRT outside standby mode
		standby int              // in standby mode
		stderr  string           // stderr must hold this
	}
	rows := []row{
		{name: "fetched", args: fetch(), env: []string{repo, "WALGO_PREFETCH=0"}, want: ok, standby: ok},
		{name: "fetched, config file", args: fetch("--config", goodConf), want: ok, standby: ok},
		{name: "fetched, flags after the arguments", args: append(fetch(), "--storage", "file://"+repoDir, "--prefetch=0"), want: ok, standby: ok},
		{name: "not in the archive", args: []string{"wal-fetch", missing, "pg_wal/RECOVERYXLOG"}, env: []string{repo}, want: notFound, standby: notFound},
		{name: "history not in the archive", args: []string{"wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY"}, env: []string{repo}, want: notFound, standby: notFound},
		{name: "unknown variable warns", args: []string{"wal-fetch", missing, "pg_wal/RECOVERYXLOG"}, env: []string{repo, "WALGO_AGE_RECIPIENT=age1x"}, want: notFound, standby: notFound, stderr: "did you mean WALGO_AGE_RECIPIENTS?"},

		{name: "missing config file", args: fetch("--config", filepath.Join(root, "missing.conf")), env: []string{repo}, want: usage, standby: notFound, stderr: "missing.conf"},
		{name: "missing WALGO_CONFIG file", args: fetch(), env: []string{repo, "WALGO_CONFIG=" + filepath.Join(root, "missing.conf")}, want: usage, standby: notFound},
		{name: "config file is a folder", args: fetch("--config", root), env: []string{repo}, want: usage, standby: notFound},
		{name: "malformed config line", args: fetch("--config", badLine), want: usage, standby: notFound, stderr: "line 2"},
		{name: "unknown config key", args: fetch("--config", typoKey), want: usage, standby: notFound, stderr: "did you mean WALGO_COMPRESSION?"},
		{name: "bad value in config file", args: fetch("--config", badValue), want: usage, standby: notFound, stderr: "WALGO_DOWNLOAD_CONCURRENCY"},
		{name: "WALGO_PREFETCH=abc", args: fetch(), env: []string{repo, "WALGO_PREFETCH=abc"}, want: usage, standby: notFound, stderr: "WALGO_PREFETCH"},
		{name: "bad duration", args: fetch(), env: []string{repo, "WALGO_STORAGE_TIMEOUT=soon"}, want: usage, standby: notFound},
		{name: "bad boolean", args: fetch(), env: []string{repo, "WALGO_S3_PATH_STYLE=maybe"}, want: usage, standby: notFound},
		{name: "unknown global flag", args: fetch("--bogus"), env: []string{repo}, want: usage, standby: notFound, stderr: "bogus"},
		{name: "unknown flag after the command", args: []string{"wal-fetch", "--bogus", good, "pg_wal/RECOVERYXLOG"}, env: []string{repo}, want: usage, standby: notFound},
		{name: "unknown flag after the arguments", args: append(fetch(), "--bogus"), env: []string{repo}, want: usage, standby: notFound},
		{name: "flag without its value", args: append(fetch(), "--storage"), env: []string{repo}, want: usage, standby: notFound},
		{name: "misspelt command", args: []string{"wal-fecth", good, "pg_wal/RECOVERYXLOG"}, env: []string{repo}, want: usage, standby: notFound, stderr: "did you mean wal-fetch?"},
		{name: "help instead of a fetch", args: []string{"wal-fetch", "--help"}, env: []string{repo}, want: usage, standby: notFound, stderr: "did not run"},
		{name: "help with the arguments", args: []string{"wal-fetch", "--help", good, "pg_wal/RECOVERYXLOG"}, env: []string{repo}, want: usage, standby: notFound},
		{name: "version instead of a fetch", args: append([]string{"--version"}, fetch()...), env: []string{repo}, want: usage, standby: notFound},
		{name: "help after the arguments is no flag", args: append(fetch(), "--help"), env: []string{repo, "WALGO_PREFETCH=0"}, want: ok, standby: ok},
		{name: "one argument", args: []string{"wal-fetch", good}, env: []string{repo}, want: usage, standby: notFound},
		{name: "three arguments", args: append(fetch(), "extra"), env: []string{repo}, want: usage, standby: notFound},
		{name: "bad log level", args: fetch(), env: []string{repo, "WALGO_LOG_LEVEL=loud"}, want: usage, standby: notFound},
		{name: "bad compression", args: fetch(), env: []string{repo, "WALGO_COMPRESSION=xz"}, want: usage, standby: notFound},
		{name: "bad recipient", args: fetch(), env: []string{repo, "WALGO_AGE_RECIPIENTS=age1nope"}, want: usage, standby: notFound},
		{name: "missing identity file", args: fetch(), env: []string{repo, "WALGO_AGE_IDENTITY_FILE=" + filepath.Join(root, "missing.key")}, want: usage, standby: notFound},
		{name: "no storage", args: fetch(), want: usage, standby: notFound, stderr: "no storage"},
		{name: "bad storage URL", args: fetch(), env: []string{"WALGO_STORAGE=ftp://x/y"}, want: usage, standby: notFound},
		{name: "not a WAL name", args: []string{"wal-fetch", "postgresql.conf", "pg_wal/RECOVERYXLOG"}, env: []string{repo}, want: usage, standby: notFound},
		{name: "destination folder missing", args: []string{"wal-fetch", good, "nowhere/RECOVERYXLOG"}, env: []string{repo}, want: usage, standby: notFound},
		{name: "corrupt object", args: []string{"wal-fetch", corrupt, "pg_wal/RECOVERYXLOG"}, env: []string{repo}, want: corrupted, standby: notFound, stderr: corrupt},
		{name: "storage unreachable", args: fetch(), env: []string{"WALGO_STORAGE=s3://bucket/x", "WALGO_S3_ENDPOINT=http://127.0.0.1:9", "WALGO_S3_PATH_STYLE=true", "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "WALGO_STORAGE_RETRIES=1", "WALGO_STORAGE_TIMEOUT=2s"}, want: storage, standby: notFound},
		{name: "panic before parsing", args: fetch(), env: []string{repo, "WALGO_TEST_PANIC=argv"}, want: other, standby: notFound, stderr: "panic"},
		{name: "panic in the command", args: fetch(), env: []string{repo, "WALGO_TEST_PANIC=wal-fetch"}, want: other, standby: notFound, stderr: "panic"},
		{name: "panic in a goroutine", args: fetch(), env: []string{repo, "WALGO_TEST_PANIC=wal-fetch-goroutine"}, abort: true, standby: 2},

		{name: "prefetch: no settings on stdin", args: []string{"wal-prefetch", good, "pg_wal"}, env: []string{repo}, want: usage, standby: notFound, stderr: "stdin"},
		{name: "prefetch: bad settings", args: []string{"wal-prefetch", good, "pg_wal"}, stdin: "{", want: usage, standby: notFound},
		{name: "prefetch: unknown setting", args: []string{"wal-prefetch", good, "pg_wal"}, stdin: settings(map[string]string{"nonsense": "1"}), want: usage, standby: notFound},
		{name: "prefetch: bad setting value", args: []string{"wal-prefetch", good, "pg_wal"}, stdin: settings(map[string]string{"prefetch": "abc"}), want: usage, standby: notFound},
		{name: "prefetch: unknown flag", args: []string{"wal-prefetch", "--bogus", good, "pg_wal"}, want: usage, standby: notFound},
		{name: "prefetch: bad environment", args: []string{"wal-prefetch", good, "pg_wal"}, env: []string{"WALGO_PREFETCH=abc"}, stdin: settings(map[string]string{"storage": "file://" + repoDir}), want: usage, standby: notFound},
		{name: "prefetch: no storage", args: []string{"wal-prefetch", good, "pg_wal"}, stdin: settings(map[string]string{}), want: usage, standby: notFound},
		{name: "prefetch: done", args: []string{"wal-prefetch", "--segment-size", "1048576", "000000010000000000000005", "pg_wal"}, stdin: settings(map[string]string{"storage": "file://" + repoDir, "prefetch": "2"}), want: ok, standby: ok},
		{name: "prefetch: panic", args: []string{"wal-prefetch", good, "pg_wal"}, env: []string{"WALGO_TEST_PANIC=wal-prefetch"}, stdin: settings(map[string]string{"storage": "file://" + repoDir}), want: other, standby: notFound},
	}
	for _, sigs := range testSignals {
		rows = append(rows, row{name: "wal-fetch gets " + signalNames(sigs), args: fetch(), env: hangEnv, signals: sigs, want: other, standby: notFound, stderr: "stopped by signal"})
	}
	rows = append(rows, row{name: "prefetch gets SIGTERM", args: []string{"wal-prefetch", good, "pg_wal"}, signals: []syscall.Signal{syscall.SIGTERM},
		stdin: settings(map[string]string{"storage": "s3://bucket/x", "s3-endpoint": hang, "s3-path-style": "true", "storage-timeout": "5m", "storage-retries": "1"}),
		env:   []string{"AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y"}, want: other, standby: notFound, stderr: "stopped by signal"})

	for _, standby := range []bool{false, true} {
		for _, r := range rows {
			name := r.name
			if standby {
				name = "standby/" + name
			}
			t.Run(name, func(t *testing.T) {
				data := filepath.Join(t.TempDir(), "data")
				if err := os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700); err != nil {
					t.Fatal(err)
				}
				if standby {
					os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600)
				}
				for len(accepted) > 0 {
					<-accepted
				}
				o := runIn(t, bin, data, r.env, r.stdin, r.args, func() {
					select {
					case <-accepted:
					case <-time.After(time.Minute):
						t.Error("the run never reached the storage")
					}
					time.Sleep(100 * time.Millisecond)
				}, r.signals...)
				want := r.want
				if standby {
					want = r.standby
				}
				switch {
				case r.abort && !standby:
					if o.signal != syscall.SIGABRT {
						t.Errorf("exit %d (signal %v), want a death by SIGABRT; stderr:\n%s", o.code, o.signal, o.stderr)
					}
				case o.signal != 0 || o.code != want:
					t.Errorf("exit %d (signal %v), want %d; stderr:\n%s", o.code, o.signal, want, o.stderr)
				}
				if o.stdout != "" {
					t.Errorf("stdout is not empty:\n%s", o.stdout)
				}
				if r.stderr != "" && !strings.Contains(o.stderr, r.stderr) {
					t.Errorf("stderr does not say %q:\n%s", r.stderr, o.stderr)
				}
				if want == notFound && !standby && r.stderr == "" && o.stderr != "" {
					t.Errorf("not found must be quiet; stderr:\n%s", o.stderr)
				}
			})
		}
	}
}

// testSignals are what the hooks are sent while they wait on storage: each
// signal that would end a Go program, and those that are ignored (SIGPIPE
// among them: the log pipe may be gone) before a SIGTERM.
var testSignals = [][]syscall.Signal{
	{syscall.SIGTERM}, {syscall.SIGINT}, {syscall.SIGHUP}, {syscall.SIGQUIT}, {syscall.SIGSTKFLT},
	{syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGTERM},
}

func signalNames(sigs []syscall.Signal) string {
	var names []string
	for _, s := range sigs {
		names = append(names, s.String())
	}
	return strings.Join(names, ", then ")
}

// runIn runs bin with args in dir, with exactly env (plus PATH and HOME)
// and stdin; once ready returns it sends sigs, if any, a moment apart.
func runIn(t *testing.T, bin, dir string, env []string, stdin string, args []string, ready func(), sigs ...syscall.Signal) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// A background prefetch it started may hold the pipes open.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if len(sigs) > 0 {
		ready()
		for i, sig := range sigs {
			if i > 0 {
				time.Sleep(200 * time.Millisecond)
			}
			cmd.Process.Signal(sig)
		}
	}
	err := cmd.Wait()
	o := outcome{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.Is(err, exec.ErrWaitDelay):
	case errors.As(err, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			o.signal = ws.Signal()
		}
		o.code = ws.ExitStatus()
	default:
		t.Fatal(err)
	}
	return o
}

// TestWalPushSignals: wal-push never dies of a signal it can catch (the
// archiver would go down with it); it fails with a plain status, which
// Postgres retries.
func TestWalPushSignals(t *testing.T) {
	bin := testBinary(t)
	hang, accepted := hangingS3(t)
	env := []string{"WALGO_STORAGE=s3://bucket/x", "WALGO_S3_ENDPOINT=" + hang, "WALGO_S3_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "WALGO_STORAGE_TIMEOUT=5m", "WALGO_STORAGE_RETRIES=1"}
	const name = "000000010000000000000004"
	for _, sigs := range testSignals {
		t.Run(signalNames(sigs), func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			walDir := filepath.Join(data, "pg_wal")
			os.MkdirAll(filepath.Join(walDir, "archive_status"), 0o700)
			waltest.WriteFile(t, walDir, name, waltest.Segment(t, name, 1<<20, 1))
			for len(accepted) > 0 {
				<-accepted
			}
			o := runIn(t, bin, data, env, "", []string{"wal-push", "pg_wal/" + name}, func() {
				select {
				case <-accepted:
				case <-time.After(time.Minute):
					t.Error("wal-push never reached the storage")
				}
				time.Sleep(100 * time.Millisecond)
			}, sigs...)
			if o.signal != 0 || o.code == 0 || o.code > 125 {
				t.Errorf("exit %d (signal %v), want a plain failure; stderr:\n%s", o.code, o.signal, o.stderr)
			}
			if o.stdout != "" {
				t.Errorf("stdout is not empty:\n%s", o.stdout)
			}
			if !strings.Contains(o.stderr, "stopped by signal") {
				t.Errorf("stderr does not say it was stopped by a signal:\n%s", o.stderr)
			}
		})
	}
}

// TestEarlyFailuresOfOtherCommands: a bad flag or variable is bad usage
// (2) for every command, with no help text on stdout.
func TestEarlyFailuresOfOtherCommands(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	repo := "WALGO_STORAGE=file://" + dir
	for _, r := range []struct {
		name  string
		args  []string
		env   []string
		stdin string
	}{
		{"bad variable", []string{"backup-list"}, []string{repo, "WALGO_PREFETCH=abc"}, ""},
		{"unknown flag", []string{"backup-list", "--bogus"}, []string{repo}, ""},
		{"unknown global flag", []string{"--bogus", "backup-list"}, []string{repo}, ""},
		{"unknown command", []string{"bakup-list"}, []string{repo}, ""},
		{"missing config file", []string{"--config", filepath.Join(dir, "nope"), "backup-list"}, []string{repo}, ""},
		{"wal-push: bad variable", []string{"wal-push", "pg_wal/000000010000000000000001"}, []string{repo, "WALGO_UPLOAD_CONCURRENCY=x"}, ""},
		// The background pusher takes its settings from wal-push only.
		{"wal-push-ahead: no settings on stdin", []string{"wal-push-ahead", "pg_wal"}, []string{repo}, ""},
		{"wal-push-ahead: unknown setting", []string{"wal-push-ahead", "pg_wal"}, nil, `{"flags":{"storage":"file://` + dir + `","nonsense":"1"}}`},
		{"wal-push-ahead: no WALDIR", []string{"wal-push-ahead"}, nil, `{"flags":{"storage":"file://` + dir + `"}}`},
	} {
		t.Run(r.name, func(t *testing.T) {
			o := runIn(t, bin, dir, r.env, r.stdin, r.args, nil)
			if o.code != exitUsage || o.stdout != "" {
				t.Errorf("exit %d, stdout %q; want 2 and nothing; stderr:\n%s", o.code, o.stdout, o.stderr)
			}
		})
	}
}

// TestFullRepository: a repository whose disk is full is reported as full
// (exit 4, "storage full"), at once, not as an unreachable storage after
// retries. The repository is a 256 KiB tmpfs.
func TestFullRepository(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	os.Mkdir(repoDir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "walgo-test-full", repoDir).CombinedOutput(); err != nil {
		msg := "mount a small tmpfs (needs root): " + err.Error() + ": " + string(out)
		if os.Getenv("WALGO_TEST_NO_SKIP") == "1" || os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { exec.Command("umount", repoDir).Run() })
	if o := runIn(t, bin, dir, []string{"WALGO_STORAGE=file://" + repoDir}, "", []string{"init"}, nil); o.code != 0 {
		t.Fatalf("init: exit %d\n%s", o.code, o.stderr)
	}
	data := filepath.Join(dir, "data")
	walDir := filepath.Join(data, "pg_wal")
	os.MkdirAll(filepath.Join(walDir, "archive_status"), 0o700)
	const name = "000000010000000000000004"
	// Random content does not compress: 1 MiB cannot fit in 256 KiB.
	seg := waltest.Segment(t, name, 1<<20, 1)
	for i := wal.HeaderSize; i < len(seg); i++ {
		seg[i] = byte(i*7919 ^ i>>3*31)
	}
	waltest.WriteFile(t, walDir, name, seg)
	env := []string{"WALGO_STORAGE=file://" + repoDir, "WALGO_COMPRESSION=none"}
	o := runIn(t, bin, data, env, "", []string{"wal-push", "pg_wal/" + name}, nil)
	if o.code != exitStorage || !strings.Contains(o.stderr, "storage full") || strings.Contains(o.stderr, "unreachable") || strings.Contains(o.stderr, "retrying") {
		t.Errorf("wal-push into a full repository: exit %d; want 4 and \"storage full\" without retries; stderr:\n%s", o.code, o.stderr)
	}
}

// TestFlagsAfterArguments: on every command a flag after the arguments is
// parsed (here a value that cannot be one, so the run must fail naming
// it), as it is before them.
func TestFlagsAfterArguments(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	var paths [][]string
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(append([]string(nil), prefix...), c.Name)
			if len(c.Subcommands) > 0 {
				walk(p, c.Subcommands)
				continue
			}
			paths = append(paths, p)
		}
	}
	walk(nil, newApp(&guard{}).Commands)
	if len(paths) < 15 {
		t.Fatalf("only %d commands found", len(paths))
	}
	for _, p := range paths {
		t.Run(strings.Join(p, " "), func(t *testing.T) {
			args := append(append(p, "ARG"), "--download-concurrency=many")
			o := runIn(t, bin, dir, nil, "", args, nil)
			want := exitUsage
			if hookCommands[p[0]] == restoreHook {
				want = walFetchOffset + exitUsage
			}
			if o.code != want || !strings.Contains(o.stderr, "download-concurrency") {
				t.Errorf("walgo %s: exit %d, want %d naming the flag; stderr:\n%s", strings.Join(args, " "), o.code, want, o.stderr)
			}
		})
	}
}
