// Package integration runs walgo end to end: the walgo binary built from
// this tree, real PostgreSQL clusters (internal/pgtest) and a real S3
// server (internal/s3test), started by the tests themselves.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/s3test"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/s3"
)

// walgoBin is the binary under test, in a folder the Postgres user can read.
var walgoBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "walgo-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	walgoBin = filepath.Join(dir, "walgo")
	build := exec.Command("go", "build", "-o", walgoBin, "../cmd/walgo")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build walgo:", err)
		return 1
	}
	return m.Run()
}

// repo is one walgo repository and the settings that reach it.
type repo struct {
	kind string
	url  string
	env  []string // WALGO_* and AWS_* settings
	root string   // file backend: the folder
	s3   *s3test.Server
	cfg  s3.Config
}

// fileRepo is a new file:// repository the Postgres user can write, made
// by `walgo init` run as that user (objects are 0600, folders 0700: the
// user that archives must own them).
func fileRepo(t *testing.T) repo {
	r := fileStorage(t)
	r.init(t)
	return r
}

// fileStorage is fileRepo's folder, with no repository in it yet.
func fileStorage(t *testing.T) repo {
	dir := pgtest.OwnedDir(t, "repo")
	url := "file://" + dir
	return repo{kind: "file", url: url, env: []string{"WALGO_STORAGE=" + url}, root: dir}
}

// s3Repo is a new s3:// repository in a fresh bucket of a real S3 server,
// made by `walgo init`.
func s3Repo(t *testing.T) repo {
	r := s3Storage(t)
	r.init(t)
	return r
}

// init runs `walgo init` for r, as the Postgres user, and fails the test
// unless it exits 0.
func (r repo) init(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := pgtest.AsUser(ctx, r.env, walgoBin, "init")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("walgo init %s: %v\n%s", r.url, err, out)
	}
}

// s3Storage is s3Repo's bucket and prefix, with no repository in it yet.
func s3Storage(t *testing.T) repo {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	url := "s3://" + bucket + "/cluster-a"
	return repo{kind: "s3", url: url, s3: srv, cfg: srv.Config(bucket, "cluster-a"), env: []string{
		"WALGO_STORAGE=" + url,
		"WALGO_S3_ENDPOINT=" + srv.Endpoint,
		"WALGO_S3_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"AWS_REGION=" + srv.Region,
		// Keep failure tests short; the defaults are for production.
		"WALGO_STORAGE_RETRIES=3",
	}}
}

var repoKinds = []struct {
	name string
	make func(*testing.T) repo
}{
	{"file", fileRepo},
	{"s3", s3Repo},
}

// result of one walgo run.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// walgo runs the binary as the current user with exactly env (plus PATH and
// HOME), so the developer's own WALGO_* settings never leak in.
func walgo(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, walgoBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run walgo %v: %v", args, err)
	}
	return r
}

// mustWalgo runs walgo and fails the test unless it exits 0.
func mustWalgo(t *testing.T, env []string, args ...string) result {
	t.Helper()
	r := walgo(t, env, args...)
	if r.code != 0 {
		t.Fatalf("walgo %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// s3Store opens the repository's bucket and prefix with the library.
func (r repo) s3Store(t *testing.T) storage.Store {
	t.Helper()
	st, err := s3.New(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
