package integration

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/lockfile"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
)

const smallSeg = 1 << 20 // a legal wal_segment_size; keeps synthetic files small

// openStore opens the repository with the library, to plant or inspect
// objects behind walgo's back. On a file repository what it writes is
// handed to the Postgres user, as if that user had written it: objects are
// 0600, and walgo running as that user must read them.
func (r repo) openStore(t *testing.T) storage.Store {
	t.Helper()
	if r.kind == "file" {
		s, err := file.New(r.root)
		if err != nil {
			t.Fatal(err)
		}
		return &pgOwned{Store: s, t: t, root: r.root}
	}
	return r.s3Store(t)
}

// pgOwned gives everything written through it to the Postgres user.
type pgOwned struct {
	storage.Store
	t    *testing.T
	root string
}

func (p *pgOwned) Unwrap() storage.Store { return p.Store }

func (p *pgOwned) Put(ctx context.Context, key string, r io.Reader) error {
	err := p.Store.Put(ctx, key, r)
	pgtest.Chown(p.t, p.root)
	return err
}

func (p *pgOwned) Create(ctx context.Context, key string, r io.Reader, meta storage.Metadata) error {
	err := p.Store.Create(ctx, key, r, meta)
	pgtest.Chown(p.t, p.root)
	return err
}

func readObject(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPushContracts: the archive_command contract, per backend.
func TestPushContracts(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			st := r.openStore(t)
			dir := waltest.PgWal(t)
			const name = "000000010000000000000003"
			orig := waltest.Segment(t, name, smallSeg, 1)
			path := waltest.WriteFile(t, dir, name, orig)
			key := catalog.WALKey(name, codec.Zstd{})

			mustWalgo(t, r.env, "wal-push", path)
			stored := readObject(t, st, key)

			// Postgres retries a push whose exit it never saw.
			mustWalgo(t, r.env, "wal-push", path)

			waltest.WriteFile(t, dir, name, waltest.Segment(t, name, smallSeg, 2))
			res := walgo(t, r.env, "wal-push", path)
			if res.code != 3 || !strings.Contains(res.stderr, "differs") {
				t.Fatalf("different content: exit %d, stderr %q; want 3 and a clear message", res.code, res.stderr)
			}
			if !bytes.Equal(readObject(t, st, key), stored) {
				t.Fatal("the stored object changed after a conflicting push")
			}

			hist := waltest.WriteFile(t, dir, "00000002.history", []byte("1\t0/3000000\tno recovery target specified\n"))
			mustWalgo(t, r.env, "wal-push", hist)
			waltest.WriteFile(t, dir, "00000002.history", []byte("1\t0/5000000\tbefore 2026-11-24\n"))
			if res := walgo(t, r.env, "wal-push", hist); res.code != 3 {
				t.Fatalf("different .history: exit %d, stderr %q; want 3", res.code, res.stderr)
			}

			// Refused input: clear message, exit 2, nothing stored.
			os.Mkdir(filepath.Join(dir, "000000010000000000000009"), 0o700)
			bad := []struct{ desc, path, msg string }{
				{"missing file", filepath.Join(dir, "000000010000000000000004"), "no such file"},
				{"wrong folder", "/nonexistent/pg_wal/000000010000000000000004", "no such file"},
				{"directory", filepath.Join(dir, "000000010000000000000009"), "not a regular file"},
				{"short file", waltest.WriteFile(t, dir, "000000010000000000000005", orig[:smallSeg/4]), "segment size"},
				{"not a WAL name", waltest.WriteFile(t, dir, "notes.txt", []byte("x")), "not a WAL file name"},
			}
			for _, b := range bad {
				res := walgo(t, r.env, "wal-push", b.path)
				if res.code != 2 || !strings.Contains(res.stderr, b.msg) {
					t.Errorf("%s: exit %d, stderr %q; want 2 and %q", b.desc, res.code, res.stderr, b.msg)
				}
			}
			all, _ := catalog.ListWAL(context.Background(), st)
			if len(all) != 2 {
				t.Errorf("repository holds %d WAL objects, want the segment and the history file", len(all))
			}
		})
	}
}

// TestFetchContracts: the restore_command contract, per backend.
func TestFetchContracts(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			st := r.openStore(t)
			ctx := context.Background()
			dir := waltest.PgWal(t)
			const good = "000000010000000000000010"
			path := waltest.WriteFile(t, dir, good, waltest.Segment(t, good, smallSeg, 1))
			mustWalgo(t, r.env, "wal-push", path)
			enc := readObject(t, st, catalog.WALKey(good, codec.Zstd{}))
			flipped := bytes.Clone(enc)
			flipped[len(flipped)/2] ^= 0x01
			plant := func(name string, b []byte) {
				if err := st.Put(ctx, catalog.WALKey(name, codec.Zstd{}), bytes.NewReader(b)); err != nil {
					t.Fatal(err)
				}
			}
			plant("000000010000000000000011", flipped)
			plant("000000010000000000000012", enc[:len(enc)/2])

			data := filepath.Join(t.TempDir(), "data")
			os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
			dest := filepath.Join(data, "pg_wal", "RECOVERYXLOG")
			env := append([]string{"WALGO_PREFETCH=0"}, r.env...)

			mustWalgo(t, env, "wal-fetch", good, dest)
			if got, _ := os.ReadFile(dest); !bytes.Equal(got, waltest.Segment(t, good, smallSeg, 1)) {
				t.Fatal("fetched segment differs")
			}
			os.Remove(dest)

			res := walgo(t, env, "wal-fetch", "000000010000000000000013", dest)
			if res.code != 1 || res.stderr != "" {
				t.Errorf("missing segment: exit %d, stderr %q; want 1 and silence", res.code, res.stderr)
			}
			t.Logf("missing segment answered in %v (process start included)", res.took)
			if res := walgo(t, env, "wal-fetch", "00000005.history", dest); res.code != 1 {
				t.Errorf("missing history: exit %d, stderr %q", res.code, res.stderr)
			}

			failures := []struct{ desc, name, msg string }{
				{"flipped byte", "000000010000000000000011", "corrupt"},
				{"truncated", "000000010000000000000012", "corrupt"},
			}
			for _, f := range failures {
				res := walgo(t, env, "wal-fetch", f.name, dest)
				if res.code <= 125 || !strings.Contains(res.stderr, f.msg) || !strings.Contains(res.stderr, f.name) {
					t.Errorf("%s: exit %d, stderr %q; want > 125 naming the object", f.desc, res.code, res.stderr)
				}
				if _, err := os.Stat(dest); err == nil {
					t.Errorf("%s: left a file at the destination", f.desc)
				}
			}
			// A standby must keep running and retry: exit 1.
			os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600)
			for _, f := range failures {
				if res := walgo(t, env, "wal-fetch", f.name, dest); res.code != 1 {
					t.Errorf("%s in standby mode: exit %d, want 1", f.desc, res.code)
				}
			}
			if res := walgo(t, env, "wal-fetch", good, dest); res.code != 0 {
				t.Errorf("good segment in standby mode: exit %d", res.code)
			}
		})
	}
}

// TestFetchUnreachableStorage: a dead storage endpoint is not "not found".
func TestFetchUnreachableStorage(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
	dest := filepath.Join(data, "pg_wal", "RECOVERYXLOG")
	env := []string{
		"WALGO_STORAGE=s3://walgo-test/nowhere",
		"WALGO_S3_ENDPOINT=http://127.0.0.1:9", // discard port: nothing listens
		"WALGO_S3_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "AWS_REGION=us-east-1",
		"WALGO_STORAGE_RETRIES=2", "WALGO_STORAGE_TIMEOUT=2s", "WALGO_PREFETCH=0",
	}
	res := walgo(t, env, "wal-fetch", "000000010000000000000001", dest)
	if res.code <= 125 || !strings.Contains(res.stderr, "unreachable") {
		t.Errorf("unreachable storage: exit %d, stderr %q; want > 125 and a clear message", res.code, res.stderr)
	}
	os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600)
	if res := walgo(t, env, "wal-fetch", "000000010000000000000001", dest); res.code != 1 {
		t.Errorf("unreachable storage in standby mode: exit %d, want 1", res.code)
	}
	// wal-push fails (non-zero, so Postgres keeps the file and retries) within the bounded retries.
	dir := waltest.PgWal(t)
	path := waltest.WriteFile(t, dir, "000000010000000000000001", waltest.Segment(t, "000000010000000000000001", smallSeg, 1))
	if res := walgo(t, env, "wal-push", path); res.code != 4 || !strings.Contains(res.stderr, "unreachable") {
		t.Errorf("wal-push to unreachable storage: exit %d, stderr %q; want 4", res.code, res.stderr)
	}
}

// TestPushKilledMidUpload: kill -9 during an upload leaves no object under
// the final name, and the rerun stores the whole file.
func TestPushKilledMidUpload(t *testing.T) {
	r := fileRepo(t)
	dir := waltest.PgWal(t)
	const name = "000000010000000000000020"
	// Stored uncompressed at 64 KiB/s, the upload takes about 16 s.
	seg := waltest.Segment(t, name, smallSeg, 7)
	path := waltest.WriteFile(t, dir, name, seg)

	cmd := exec.Command(walgoBin, "wal-push", path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "WALGO_NETWORK_RATE_LIMIT=64KiB", "WALGO_COMPRESSION=none"}, r.env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	walDir := filepath.Join(r.root, "wal_005")
	pgtest.WaitFor(t, time.Minute, func() bool {
		ents, _ := os.ReadDir(walDir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".walgo-tmp-") && fi.Size() > 0 {
				return true
			}
		}
		return false
	}, "the upload to start writing")
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	st := r.openStore(t)
	objs, _, err := catalog.ListWALCopies(context.Background(), st, name)
	if err != nil || len(objs) != 0 {
		t.Fatalf("after kill -9: %d objects under the final name (%v)", len(objs), err)
	}
	mustWalgo(t, r.env, "wal-push", path)
	fetched := filepath.Join(t.TempDir(), "seg")
	mustWalgo(t, append([]string{"WALGO_PREFETCH=0"}, r.env...), "wal-fetch", name, fetched)
	if got, _ := os.ReadFile(fetched); !bytes.Equal(got, seg) {
		t.Fatal("rerun after kill -9 did not store the whole segment")
	}
}

// TestPrefetchThroughCLI: wal-fetch starts the background prefetch; its
// files are used; a damaged one is ignored and fetched again.
func TestPrefetchThroughCLI(t *testing.T) {
	r := fileRepo(t)
	st := r.openStore(t)
	dir := waltest.PgWal(t)
	names := []string{"000000010000000000000030", "000000010000000000000031", "000000010000000000000032", "000000010000000000000033"}
	segs := map[string][]byte{}
	for _, n := range names {
		segs[n] = waltest.Segment(t, n, smallSeg, 11)
		mustWalgo(t, r.env, "wal-push", waltest.WriteFile(t, dir, n, segs[n]))
	}
	data := filepath.Join(t.TempDir(), "data")
	walDir := filepath.Join(data, "pg_wal")
	os.MkdirAll(walDir, 0o700)
	dest := filepath.Join(walDir, "RECOVERYXLOG")
	env := append([]string{"WALGO_PREFETCH=3"}, r.env...)
	pdir := filepath.Join(walDir, "walgo", "prefetch")

	mustWalgo(t, env, "wal-fetch", names[0], dest)
	for _, n := range names[1:] {
		pgtest.WaitFor(t, time.Minute, func() bool {
			_, err := os.Stat(filepath.Join(pdir, n+restore.SidecarExt))
			return err == nil
		}, n+" prefetched")
	}
	// Remove the archive's copy: only the prefetched file can serve it.
	st.Delete(context.Background(), catalog.WALKey(names[1], codec.Zstd{}))
	res := mustWalgo(t, env, "wal-fetch", names[1], dest)
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[names[1]]) || !strings.Contains(res.stderr, `"prefetched": true`) {
		t.Fatalf("prefetched %s not used (stderr %s)", names[1], res.stderr)
	}
	// Damage the next prefetched file: it is ignored and fetched again.
	waitNoPrefetcher(t, pdir)
	p := filepath.Join(pdir, names[2])
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xFF
	os.WriteFile(p, b, 0o600)
	res = mustWalgo(t, append([]string{"WALGO_PREFETCH=0"}, r.env...), "wal-fetch", names[2], dest)
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[names[2]]) {
		t.Fatal("damaged prefetched file was used")
	}
	if !strings.Contains(res.stderr, "damaged prefetched") {
		t.Errorf("no warning about the damaged prefetched file: %s", res.stderr)
	}
	waitNoPrefetcher(t, pdir)
}

// waitNoPrefetcher waits until no background prefetch holds the folder's lock.
func waitNoPrefetcher(t *testing.T, pdir string) {
	t.Helper()
	pgtest.WaitFor(t, time.Minute, func() bool { return !lockfile.Held(filepath.Join(pdir, ".lock")) },
		"the background prefetch to finish")
}
