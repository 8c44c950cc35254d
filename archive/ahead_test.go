package archive

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/internal/lockfile"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/storagetest"
)

// holdClaimEnv makes the test binary a process that takes one claim,
// says so on stdout and waits to be killed (see TestMain).
const holdClaimEnv = "WALGO_TEST_HOLD_CLAIM"

func TestMain(m *testing.M) {
	if spec := os.Getenv(holdClaimEnv); spec != "" {
		dir, name := filepath.Split(spec)
		_, ok, err := lockfile.Claims{Dir: dir}.Try(name)
		if err != nil || !ok {
			fmt.Println("not held", err)
			os.Exit(1)
		}
		fmt.Println("held")
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

func init() { aheadIdle = 200 * time.Millisecond }

// slowCreates delays every create by a random pause, so that the
// archiver's calls and the background pusher meet in every order.
type slowCreates struct {
	storage.Store
	mu  sync.Mutex
	rng *rand.Rand
	max time.Duration
}

func (s *slowCreates) Create(ctx context.Context, key string, r io.Reader, md storage.Metadata) error {
	s.mu.Lock()
	d := time.Duration(s.rng.Int64N(int64(s.max)))
	s.mu.Unlock()
	time.Sleep(d)
	return s.Store.Create(ctx, key, r, md)
}

// readyFiles writes n segments from first on, each with its .ready file,
// and returns their names and contents.
func readyFiles(t *testing.T, dir string, first, n int) ([]string, map[string][]byte) {
	t.Helper()
	var names []string
	data := map[string][]byte{}
	for i := first; i < first+n; i++ {
		name := fmt.Sprintf("0000000100000000000000%02X", i)
		data[name] = waltest.Segment(t, name, segSize, uint64(i))
		waltest.WriteFile(t, dir, name, data[name])
		waltest.WriteFile(t, filepath.Join(dir, "archive_status"), name+".ready", nil)
		names = append(names, name)
	}
	return names, data
}

// archived is what Postgres does once archive_command exits 0.
func archived(t *testing.T, dir, name string) {
	t.Helper()
	st := filepath.Join(dir, "archive_status", name)
	if err := os.Rename(st+".ready", st+".done"); err != nil {
		t.Fatal(err)
	}
}

// TestPushAheadRaces drains a backlog the way Postgres' archiver does (one
// call at a time, each file marked done after it) while the background
// pusher the calls start pushes ahead, with random pauses in the storage.
// Every call succeeds, every file is stored once with its content (one
// create each: nothing is compressed twice), and no marker or claim is
// left. The seed is in the log; WALGO_SEED=N reruns one.
func TestPushAheadRaces(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if s := os.Getenv("WALGO_SEED"); s != "" {
		var n uint64
		fmt.Sscan(s, &n)
		seeds = []uint64{n}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			ctx := context.Background()
			c := &storagetest.Counter{Store: newStore(t)}
			// Each side's creates pause on their own, so either may run
			// ahead of the other: the archiver finds its file marked,
			// claimed (and waits) or free (and pushes it).
			slow := &slowCreates{Store: c, rng: rand.New(rand.NewPCG(seed, 1)), max: time.Duration(1+rng.IntN(30)) * time.Millisecond}
			fore := &slowCreates{Store: c, rng: rand.New(rand.NewPCG(seed, 2)), max: time.Duration(1+rng.IntN(10)) * time.Millisecond}
			dir := waltest.PgWal(t)
			names, data := readyFiles(t, dir, 1, 10+rng.IntN(30))
			hist := "00000002.history"
			data[hist] = []byte("1\t0/3000000\tno recovery target specified\n")
			waltest.WriteFile(t, dir, hist, data[hist])
			waltest.WriteFile(t, filepath.Join(dir, "archive_status"), hist+".ready", nil)
			names = append([]string{hist}, names...) // the archiver's order

			var bg sync.WaitGroup
			var pusher *Pusher
			starts := 0
			cfg := Config{Concurrency: 2 + rng.IntN(3), StartAhead: func(walDir string) error {
				starts++
				bg.Go(func() {
					if err := pusher.PushAhead(ctx, walDir); err != nil {
						t.Errorf("seed %d: push ahead: %v", seed, err)
					}
				})
				return nil
			}}
			pusher = New(slow, cfg, zap.NewNop())
			skipped := 0
			next := 1 + len(names) - 1
			for i := 0; i < len(names); i++ {
				n := names[i]
				res, err := New(fore, cfg, zap.NewNop()).Push(ctx, filepath.Join(dir, n))
				if err != nil {
					t.Fatalf("seed %d: push %s: %v", seed, n, err)
				}
				if res.Skipped {
					skipped++
				}
				archived(t, dir, n)
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
				}
				if rng.IntN(3) == 0 && next < 0xF0 {
					// Live archiving: Postgres fills one more segment,
					// which the archiver may reach before the pusher.
					more, d := readyFiles(t, dir, next, 1)
					names, data[more[0]] = append(names, more[0]), d[more[0]]
					next++
				}
			}
			bg.Wait()
			for _, n := range names {
				if !bytes.Equal(stored(t, c, n), data[n]) {
					t.Fatalf("seed %d: %s stored with other content", seed, n)
				}
			}
			if got := c.Counts()["create"]; got != len(names) {
				t.Errorf("seed %d: %d creates for %d files: a file was compressed and sent twice", seed, got, len(names))
			}
			for _, sub := range []string{"pushing", "pushed"} {
				ents, _ := os.ReadDir(filepath.Join(dir, "walgo", sub))
				// The last call's own marker stays until its .ready is gone
				// at the next call's clean-up.
				if len(ents) > 1 {
					t.Errorf("seed %d: %d files left in pg_wal/walgo/%s", seed, len(ents), sub)
				}
			}
			t.Logf("seed %d: %d files, concurrency %d, creates pause up to %v (pusher) and %v (calls): %d calls found their file pushed ahead, %d pushed it, pusher started %d times",
				seed, len(names), cfg.Concurrency, slow.max, fore.max, skipped, len(names)-skipped, starts)
		})
	}
}

// TestPushAheadMarks: the pusher, run on a backlog, stores every .ready
// file and leaves a marker for each; Postgres' calls then cost one read
// (the repository's id) and no create. A file Postgres has archived
// meanwhile (no .ready) is left alone.
func TestPushAheadMarks(t *testing.T) {
	ctx := context.Background()
	c := &storagetest.Counter{Store: newStore(t)}
	dir := waltest.PgWal(t)
	names, data := readyFiles(t, dir, 0x10, 5)
	archived(t, dir, names[0])
	p := New(c, Config{Concurrency: 3}, zap.NewNop())
	if err := p.PushAhead(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if got := c.Counts()["create"]; got != 4 {
		t.Errorf("pusher made %d creates, want 4 (the .ready files)", got)
	}
	for _, n := range names[1:] {
		if !bytes.Equal(stored(t, c, n), data[n]) {
			t.Fatalf("%s stored with other content", n)
		}
		c.Reset()
		res, err := p.Push(ctx, filepath.Join(dir, n))
		if err != nil || !res.Skipped {
			t.Fatalf("push %s after the pusher: %+v, %v", n, res, err)
		}
		if got := c.Counts(); len(got) != 1 || got["get"] != 1 {
			t.Errorf("push %s after the pusher: requests %v, want one get", n, got)
		}
		archived(t, dir, n)
	}
	// A second pusher while one runs returns at once.
	lock, err := os.OpenFile(filepath.Join(dir, "walgo", aheadLockFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if !aheadRunning(dir) {
		t.Error("aheadRunning does not see the held lock")
	}
	readyFiles(t, dir, 0x20, 1)
	c.Reset()
	if err := p.PushAhead(ctx, dir); err != nil || c.Counts()["create"] != 0 {
		t.Errorf("second pusher: %v, requests %v; want it to return at once", err, c.Counts())
	}
}

// TestPushAheadStopsAtFailure: a storage failure stops the pusher with the
// error and leaves no marker: Postgres' own call pushes the file (and, the
// storage still failing, reports it).
func TestPushAheadStopsAtFailure(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := waltest.PgWal(t)
	names, _ := readyFiles(t, dir, 0x30, 3)
	failing := failingCreates{s}
	err := New(failing, Config{Concurrency: 2}, zap.NewNop()).PushAhead(ctx, dir)
	if !errors.Is(err, errBroken) {
		t.Fatalf("pusher on failing storage: %v, want the storage's error", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "walgo", "pushed")); len(ents) != 0 {
		t.Fatalf("markers left by a failed pusher: %d", len(ents))
	}
	if _, err := New(failing, Config{Concurrency: 1}, zap.NewNop()).Push(ctx, filepath.Join(dir, names[0])); !errors.Is(err, errBroken) {
		t.Fatalf("push after the failed pusher: %v, want the storage's error", err)
	}
	if _, err := New(s, Config{Concurrency: 1}, zap.NewNop()).Push(ctx, filepath.Join(dir, names[0])); err != nil {
		t.Fatalf("push once the storage works: %v", err)
	}
}

var errBroken = errors.New("storage broken")

type failingCreates struct{ storage.Store }

func (failingCreates) Create(context.Context, string, io.Reader, storage.Metadata) error {
	return errBroken
}

// TestPushAfterPusherKilled: a pusher killed (SIGKILL) while it holds a
// file's claim blocks nothing. wal-push waits while the claim is held,
// then, the process dead, takes it, finds no marker and stores the file.
func TestPushAfterPusherKilled(t *testing.T) {
	ctx := context.Background()
	c := &storagetest.Counter{Store: newStore(t)}
	dir := waltest.PgWal(t)
	names, data := readyFiles(t, dir, 0x40, 1)
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), holdClaimEnv+"="+filepath.Join(dir, "walgo", "pushing", names[0]))
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Process.Kill()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "held\n" {
		t.Fatalf("claim holder: %q", line)
	}
	never := func(string) error { t.Error("no backlog, yet the pusher was started"); return nil }
	done := make(chan error, 1)
	go func() {
		_, err := New(c, Config{Concurrency: 2, StartAhead: never}, zap.NewNop()).Push(ctx, filepath.Join(dir, names[0]))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("push returned while another process held the file's claim: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if got := c.Counts()["create"]; got != 0 {
		t.Fatalf("push stored the file while another process held its claim (%d creates)", got)
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	holder.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("push after the holder died: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("push still waits a minute after the claim's holder was killed")
	}
	if !bytes.Equal(stored(t, c, names[0]), data[names[0]]) {
		t.Fatal("file not stored after the holder died")
	}
}
