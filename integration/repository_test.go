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
	"sync"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/faultproxy"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
)

// TestNoRepository: nothing but init creates a repository, and a storage
// without one (a folder that does not exist, as an unmounted volume; an
// empty folder; an S3 prefix nobody initialised) is refused by every
// command, wal-fetch above 125 (never "not in the archive").
func TestNoRepository(t *testing.T) {
	missing := fileStorage(t)
	missing.root = filepath.Join(missing.root, "mnt", "backup")
	missing.url = "file://" + missing.root
	missing.env = []string{"WALGO_STORAGE=" + missing.url}
	kinds := []struct {
		name string
		r    repo
	}{
		{"missing folder", missing},
		{"empty folder", fileStorage(t)},
		{"s3 prefix", s3Storage(t)},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			r := k.r
			env := append([]string{"WALGO_PREFETCH=0"}, r.env...)
			dir := waltest.PgWal(t)
			const name = "000000010000000000000001"
			path := waltest.WriteFile(t, dir, name, waltest.Segment(t, name, smallSeg, 1))
			dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
			for _, tc := range []struct {
				args []string
				code int
			}{
				{[]string{"wal-push", path}, 2},
				{[]string{"wal-fetch", name, dest}, 130},
				{[]string{"wal-list"}, 2},
				{[]string{"backup-list"}, 2},
				{[]string{"delete", "garbage"}, 2},
				{[]string{"dump-list"}, 2},
			} {
				res := walgo(t, env, tc.args...)
				if res.code != tc.code || !strings.Contains(res.stderr, "no walgo repository") || !strings.Contains(res.stderr, "walgo init") {
					t.Errorf("%s: exit %d, stderr %q; want %d naming the missing repository and walgo init", tc.args[0], res.code, res.stderr, tc.code)
				}
			}
			if r.kind == "file" {
				if _, err := os.Stat(filepath.Join(r.root, "wal_005")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("something created wal_005 in %s: %v", r.root, err)
				}
			} else {
				n := 0
				r.s3Store(t).List(context.Background(), "", func(storage.ObjectInfo) error { n++; return nil })
				if n != 0 {
					t.Errorf("%d objects written to the prefix", n)
				}
			}
			// init creates it (the folder too), once.
			res := walgo(t, r.env, "init")
			if res.code != 0 || !strings.Contains(res.stdout, "created repository") {
				t.Fatalf("init: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			}
			if k.name == "missing folder" {
				fi, err := os.Stat(r.root)
				if err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("init made %v (%v), want a 0700 folder", fi.Mode(), err)
				}
			}
			if res := walgo(t, r.env, "init"); res.code != 3 || !strings.Contains(res.stderr, "exists already") {
				t.Errorf("second init: exit %d, stderr %q; want 3", res.code, res.stderr)
			}
			mustWalgo(t, env, "wal-push", path)
			mustWalgo(t, env, "wal-fetch", name, dest)
			if res := walgo(t, env, "wal-fetch", "000000010000000000000002", dest); res.code != 1 {
				t.Errorf("missing segment of an existing repository: exit %d, want 1", res.code)
			}
		})
	}
}

// TestRepositoryRecordsCapabilities: init records what the storage does;
// versitygw and the file backend honour create-only writes and keep
// metadata.
func TestRepositoryRecordsCapabilities(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			got, err := catalog.ReadRepository(context.Background(), r.openStore(t))
			if err != nil {
				t.Fatal(err)
			}
			if !got.Storage.CreateOnly || !got.Storage.Metadata || len(got.ID) != 32 {
				t.Errorf("repository = %+v, want an id, create-only writes and metadata", got)
			}
		})
	}
}

// TestWALPushRace: two forks promoted at the same moment both choose
// timeline 100 and push 00000064.history with different content, as two
// concurrent wal-push processes. Exactly one wins, the other exits 3, and
// the stored file is the winner's: 50 races per backend.
func TestWALPushRace(t *testing.T) {
	const races = 50
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			st := r.openStore(t)
			env := append([]string{"WALGO_UPLOAD_CONCURRENCY=1"}, r.env...)
			forks := [2]string{waltest.PgWal(t), waltest.PgWal(t)}
			codes := map[string]int{} // "lower/higher exit code" -> races
			defer func() { t.Logf("%d races, by exit codes: %v", races, codes) }()
			for round := range races {
				// A fresh name each round, as if each were timeline 100.
				name := fmt.Sprintf("%08X.history", 100+round)
				content := [2][]byte{
					[]byte("1\t0/3000000\tbefore 2026-05-01 10:00:00+00 (fork a)\n"),
					[]byte("1\t0/3000000\tbefore 2026-05-01 10:00:01+00 (fork b)\n"),
				}
				var paths [2]string
				for i := range 2 {
					paths[i] = waltest.WriteFile(t, forks[i], name, content[i])
				}
				var res [2]result
				var wg sync.WaitGroup
				for i := range 2 {
					wg.Go(func() { res[i] = walgo(t, env, "wal-push", paths[i]) })
				}
				wg.Wait()
				codes[fmt.Sprintf("%d/%d", min(res[0].code, res[1].code), max(res[0].code, res[1].code))]++
				winner := -1
				for i := range 2 {
					if res[i].code == 0 && winner < 0 {
						winner = i
					}
				}
				if winner < 0 || res[1-winner].code != 3 {
					t.Errorf("%s: exits %d and %d, want 0 and 3\n%s\n%s", name, res[0].code, res[1].code, res[0].stderr, res[1].stderr)
					continue
				}
				if got := fetchPlain(t, st, name); !bytes.Equal(got, content[winner]) {
					t.Errorf("%s: stored %q, the winner pushed %q", name, got, content[winner])
				}
			}
		})
	}
}

// fetchPlain reads back the zstd copy of a WAL file.
func fetchPlain(t *testing.T, st storage.Store, name string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), catalog.WALKey(name, codec.Zstd{}))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	d, err := codec.Decode(codec.Zstd{}, rc)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(d); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestRepushWithOnlyPublicKey: the database host holds only the age
// recipient (it cannot read the archive). A retried push of a stored
// segment is confirmed from the stored sha256 (exit 0, not "object is
// encrypted and no age identity" forever), and different content is still
// refused.
func TestRepushWithOnlyPublicKey(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			_, recipient, _ := ageKey(t)
			env := append([]string{"WALGO_AGE_RECIPIENTS=" + recipient, "WALGO_UPLOAD_CONCURRENCY=1"}, r.env...)
			dir := waltest.PgWal(t)
			const name = "000000010000000000000004"
			path := waltest.WriteFile(t, dir, name, waltest.Segment(t, name, smallSeg, 1))
			mustWalgo(t, env, "wal-push", path)
			res := walgo(t, env, "wal-push", path)
			if res.code != 0 {
				t.Fatalf("re-push with only the public key: exit %d\n%s", res.code, res.stderr)
			}
			waltest.WriteFile(t, dir, name, waltest.Segment(t, name, smallSeg, 2))
			if res := walgo(t, env, "wal-push", path); res.code != 3 {
				t.Errorf("different content: exit %d, want 3\n%s", res.code, res.stderr)
			}
		})
	}
}

// TestOutageLogLines: while the S3 server answers every request with 500,
// one wal-push with a backlog waiting logs one warning per retried attempt
// and the final error, not a line per codec extension per attempt; and it
// starts no background pusher (which would fail too, and log its own
// lines for every file): that starts only after a push succeeded.
func TestOutageLogLines(t *testing.T) {
	r := s3Repo(t)
	proxy, err := faultproxy.Start(faultproxy.Config{Target: r.s3.Endpoint, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	const files, attempts = 4, 3
	env := withEnv(r.env, "WALGO_S3_ENDPOINT="+proxy.URL, "WALGO_UPLOAD_CONCURRENCY="+fmt.Sprint(files),
		"WALGO_STORAGE_RETRIES="+fmt.Sprint(attempts), "WALGO_LOG_LEVEL=info")
	dir := waltest.PgWal(t)
	names := make([]string, files+1)
	for i := range names {
		names[i] = fmt.Sprintf("0000000100000000000000%02X", i+1)
		waltest.WriteFile(t, dir, names[i], waltest.Segment(t, names[i], smallSeg, 1))
	}
	mustWalgo(t, withEnv(env, "WALGO_UPLOAD_CONCURRENCY=1"), "wal-push", filepath.Join(dir, names[0]))
	for _, n := range names[1:] {
		waltest.WriteFile(t, filepath.Join(dir, "archive_status"), n+".ready", nil)
	}
	if err := proxy.SetRates(faultproxy.Rates{InternalError: 1}); err != nil {
		t.Fatal(err)
	}
	res := walgo(t, env, "wal-push", filepath.Join(dir, names[1]))
	if res.code != 4 {
		t.Fatalf("wal-push during an outage: exit %d, want 4\n%s", res.code, res.stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	want := (attempts - 1) + 1
	if len(lines) != want {
		t.Errorf("%d log lines for %d attempts, want %d:\n%s", len(lines), attempts, want, res.stderr)
	}
	for _, n := range names[2:] {
		if strings.Contains(res.stderr, n) {
			t.Errorf("%s, waiting behind the failed file, was pushed during the outage:\n%s", n, res.stderr)
		}
	}
}

// TestForeignOwnerIsPermanent: an object the archiving user cannot read
// (written by root: objects are 0600) fails at once, saying what to do,
// instead of being retried as an outage.
func TestForeignOwnerIsPermanent(t *testing.T) {
	r := fileRepo(t)
	const name = "000000010000000000000001"
	s, err := file.New(r.root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), catalog.WALKey(name, codec.Zstd{}), strings.NewReader("root's")); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(pgtest.OwnedDir(t, "dest"), "RECOVERYXLOG")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := pgtest.AsUser(ctx, append([]string{"WALGO_PREFETCH=0"}, r.env...), walgoBin, "wal-fetch", name, dest)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 132 || !strings.Contains(string(out), "run walgo as the user that owns them") || strings.Contains(string(out), "retrying") {
		t.Errorf("wal-fetch of an object owned by root: %v\n%s\nwant exit 132 at once, saying who must run walgo", err, out)
	}
}
