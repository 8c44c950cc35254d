package restore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
	"github.com/walgo/walgo/wal"
)

const segSize = 1 << 20

// archiveSegs stores count segments from first with compression c and
// returns their plain bytes by name.
func archiveSegs(t *testing.T, s storage.Store, first string, count int, c codec.Compression) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	seg, _ := wal.ParseSegment(first)
	for range count {
		data := waltest.Segment(t, seg.Name(), segSize, 9)
		putEncoded(t, s, catalog.WALKey(seg.Name(), c), c, data)
		out[seg.Name()] = data
		seg = seg.Next(segSize)
	}
	return out
}

func putEncoded(t *testing.T, s storage.Store, key string, c codec.Compression, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := c.NewWriter(&buf)
	w.Write(data)
	w.Close()
	if err := s.Put(context.Background(), key, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func setup(t *testing.T, prefetch int) (*file.Store, *Fetcher, string) {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := NewFetcher(s, FetchConfig{Prefetch: prefetch, Concurrency: 2}, zap.NewNop())
	return s, f, waltest.PgWal(t)
}

func TestFetch(t *testing.T) {
	ctx := context.Background()
	for _, c := range []codec.Compression{codec.Zstd{}, codec.LZ4{}, codec.Gzip{}, codec.None{}} {
		s, f, dir := setup(t, 0)
		segs := archiveSegs(t, s, "000000010000000000000001", 1, c)
		dest := filepath.Join(dir, "RECOVERYXLOG")
		if err := f.Fetch(ctx, "000000010000000000000001", dest); err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		got, _ := os.ReadFile(dest)
		if !bytes.Equal(got, segs["000000010000000000000001"]) {
			t.Fatalf("%s: fetched content differs", c.Name())
		}
	}
}

func TestFetchFailures(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 0)
	data := waltest.Segment(t, "000000010000000000000002", segSize, 1)
	enc := putEncoded(t, s, catalog.WALKey("000000010000000000000002", codec.Zstd{}), codec.Zstd{}, data)
	flipped := bytes.Clone(enc)
	flipped[len(flipped)/2] ^= 1
	s.Put(ctx, catalog.WALKey("000000010000000000000003", codec.Zstd{}), bytes.NewReader(flipped))
	s.Put(ctx, catalog.WALKey("000000010000000000000004", codec.Zstd{}), bytes.NewReader(enc[:len(enc)/2]))
	// Right bytes under the wrong name: the header gives it away.
	s.Put(ctx, catalog.WALKey("000000010000000000000005", codec.Zstd{}), bytes.NewReader(enc))
	// Truncated plain segment in a "none" object: the size gives it away.
	s.Put(ctx, catalog.WALKey("000000010000000000000006", codec.None{}), bytes.NewReader(waltest.Segment(t, "000000010000000000000006", segSize, 1)[:1000]))

	dest := filepath.Join(dir, "RECOVERYXLOG")
	tests := []struct {
		name string
		want error
	}{
		{"000000010000000000000009", storage.ErrNotFound},
		{"00000009.history", storage.ErrNotFound},
		{"000000010000000000000003", codec.ErrCorrupt},
		{"000000010000000000000004", codec.ErrCorrupt},
		{"000000010000000000000005", codec.ErrCorrupt},
		{"000000010000000000000006", codec.ErrCorrupt},
		{"RECOVERYXLOG", ErrInvalid},
	}
	for _, tt := range tests {
		err := f.Fetch(ctx, tt.name, dest)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		if _, serr := os.Stat(dest); serr == nil {
			t.Errorf("%s: a failed fetch left %s", tt.name, dest)
		}
	}
	if err := f.Fetch(ctx, "000000010000000000000002", filepath.Join(dir, "nope", "RECOVERYXLOG")); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing destination folder: err = %v", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "archive_status" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestPrefetch(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 4)
	segs := archiveSegs(t, s, "0000000100000000000003FE", 3, codec.Zstd{})
	// Only 3 segments exist: 3FE, 3FF and 400. Prefetch after 3FE
	// gets the two that follow and stops at the end of the archive.
	if err := f.Prefetch(ctx, "0000000100000000000003FE", dir, segSize); err != nil {
		t.Fatal(err)
	}
	pdir := PrefetchDir(dir)
	for _, n := range []string{"0000000100000000000003FF", "000000010000000000000400"} {
		if _, err := os.Stat(filepath.Join(pdir, n+SidecarExt)); err != nil {
			t.Fatalf("%s not prefetched: %v", n, err)
		}
		// Prove the prefetched copy is used: the archive no longer has it.
		s.Delete(ctx, catalog.WALKey(n, codec.Zstd{}))
		dest := filepath.Join(dir, "RECOVERYXLOG")
		if err := f.Fetch(ctx, n, dest); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		got, _ := os.ReadFile(dest)
		if !bytes.Equal(got, segs[n]) {
			t.Fatalf("%s: prefetched content differs", n)
		}
		// Asked again (as Postgres asks for the segment it ended recovery
		// in): served again from the copy, which stays while it is the
		// position.
		os.Remove(dest)
		if err := f.Fetch(ctx, n, dest); err != nil {
			t.Fatalf("%s asked again: %v", n, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[n]) {
			t.Fatalf("%s asked again: content differs", n)
		}
	}
}

func TestDamagedPrefetchIgnored(t *testing.T) {
	ctx := context.Background()
	for _, damage := range []string{"flip", "truncate", "no-checksum"} {
		s, f, dir := setup(t, 2)
		segs := archiveSegs(t, s, "000000010000000000000010", 2, codec.Zstd{})
		if err := f.Prefetch(ctx, "000000010000000000000010", dir, segSize); err != nil {
			t.Fatal(err)
		}
		n := "000000010000000000000011"
		p := filepath.Join(PrefetchDir(dir), n)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		switch damage {
		case "flip":
			b[len(b)/2] ^= 0x10
			os.WriteFile(p, b, 0o600)
		case "truncate":
			os.WriteFile(p, b[:len(b)/3], 0o600)
		case "no-checksum":
			os.WriteFile(p, bytes.Repeat([]byte{1}, len(b)), 0o600)
			os.Remove(p + SidecarExt)
		}
		dest := filepath.Join(dir, "RECOVERYXLOG")
		if err := f.Fetch(ctx, n, dest); err != nil {
			t.Fatalf("%s: %v", damage, err)
		}
		got, _ := os.ReadFile(dest)
		if !bytes.Equal(got, segs[n]) {
			t.Fatalf("%s: damaged prefetched copy was used", damage)
		}
	}
}

func TestPrefetchCleansStale(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 2)
	archiveSegs(t, s, "000000010000000000000020", 4, codec.Zstd{})
	pdir := PrefetchDir(dir)
	os.MkdirAll(pdir, 0o700)
	for _, n := range []string{"000000010000000000000001", "000000010000000000000001.sha256", "000000010000000000000001" + SidecarExt, ".walgo-fetch-000000010000000000000005-123", "000000020000000000000021"} {
		os.WriteFile(filepath.Join(pdir, n), []byte("old"), 0o600)
	}
	if err := f.Prefetch(ctx, "000000010000000000000020", dir, segSize); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(pdir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{claimsDir, lockFile, "000000010000000000000021", "000000010000000000000021" + SidecarExt, "000000010000000000000022", "000000010000000000000022" + SidecarExt}
	if left, _ := os.ReadDir(filepath.Join(pdir, claimsDir)); len(left) != 0 {
		t.Errorf("claims left after the downloads: %v", left)
	}
	if len(names) != len(want) {
		t.Fatalf("prefetch folder holds %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("prefetch folder holds %v, want %v", names, want)
		}
	}
}

func TestInStandby(t *testing.T) {
	data := t.TempDir()
	walDir := filepath.Join(data, "pg_wal")
	os.Mkdir(walDir, 0o700)
	dest := filepath.Join(walDir, "RECOVERYXLOG")
	if InStandby(dest) {
		t.Fatal("standby without standby.signal")
	}
	os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600)
	if !InStandby(dest) {
		t.Fatal("standby.signal not seen")
	}
}

func TestFetchStartsOverAfterCutTransfer(t *testing.T) {
	defer func(w time.Duration) { transferRetryWait = w }(transferRetryWait)
	transferRetryWait = time.Millisecond
	ctx := context.Background()
	s, _, dir := setup(t, 0)
	segs := archiveSegs(t, s, "000000010000000000000040", 1, codec.Zstd{})
	dest := filepath.Join(dir, "RECOVERYXLOG")
	f := NewFetcher(&storagetest.CutStore{Store: s, Cuts: 2}, FetchConfig{}, zap.NewNop())
	if err := f.Fetch(ctx, "000000010000000000000040", dest); err != nil {
		t.Fatalf("two cut transfers, then a whole one: %v", err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs["000000010000000000000040"]) {
		t.Fatal("content differs")
	}
	os.Remove(dest)
	f = NewFetcher(&storagetest.CutStore{Store: s, Cuts: storage.TransferAttempts}, FetchConfig{}, zap.NewNop())
	if err := f.Fetch(ctx, "000000010000000000000040", dest); !errors.Is(err, storage.ErrUnreachable) {
		t.Fatalf("every transfer cut: err = %v, want ErrUnreachable", err)
	}
}

// TestPrefetchedFromAnotherRepository: a copy prefetched from one
// repository is never handed out by a Fetcher of another, and a prefetch
// for the other replaces it.
func TestPrefetchedFromAnotherRepository(t *testing.T) {
	ctx := context.Background()
	a, fa, dir := setup(t, 2)
	b, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fb := NewFetcher(b, FetchConfig{Prefetch: 2, Concurrency: 2}, zap.NewNop())
	const first, next = "000000010000000000000050", "000000010000000000000051"
	archiveSegs(t, a, first, 3, codec.Zstd{})
	var fromB []byte
	for i, n := range []string{first, next, "000000010000000000000052"} {
		data := waltest.Segment(t, n, segSize, 100+uint64(i))
		putEncoded(t, b, catalog.WALKey(n, codec.Zstd{}), codec.Zstd{}, data)
		if n == next {
			fromB = data
		}
	}
	if err := fa.Prefetch(ctx, first, dir, segSize); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "RECOVERYXLOG")
	if err := fb.Fetch(ctx, next, dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, fromB) {
		t.Fatal("a segment prefetched from repository A was handed out for repository B")
	}
	// The same for a second id on the same location.
	if err := fa.Prefetch(ctx, first, dir, segSize); err != nil {
		t.Fatal(err)
	}
	fa2 := NewFetcher(a, FetchConfig{Prefetch: 2, Repository: "re-created"}, zap.NewNop())
	if err := fa2.Prefetch(ctx, first, dir, segSize); err != nil {
		t.Fatal(err)
	}
	if _, tag, _ := readSidecar(filepath.Join(PrefetchDir(dir), next)); tag != fa2.tag || tag == fa.tag {
		t.Fatalf("prefetch for another repository id kept the old copy (tag %q)", tag)
	}
}

// TestFetchSweepsKilledTemps: the temp files of fetches killed before
// their rename are removed by the next fetch into the folder; a fresh
// one, one a running fetch holds, and files not walgo's stay.
func TestFetchSweepsKilledTemps(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 0)
	archiveSegs(t, s, "000000010000000000000060", 1, codec.Zstd{})
	old := time.Now().Add(-2 * staleTemp)
	plant := func(name string, age time.Time) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, age, age)
		return p
	}
	killed := plant(fetchTempPrefix+"000000010000000000000005-1234", old)
	fresh := plant(fetchTempPrefix+"000000010000000000000006-1234", time.Now())
	held := plant(fetchTempPrefix+"000000010000000000000007-1234", old)
	other := plant(".walgo-other-000000010000000000000008", old)
	lk, err := os.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := f.Fetch(ctx, "000000010000000000000060", filepath.Join(dir, "RECOVERYXLOG")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(killed); err == nil {
		t.Error("the temp file of a killed fetch was left")
	}
	for _, p := range []string{fresh, held, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", filepath.Base(p), err)
		}
	}
	// Even a not-found answer sweeps: it is the end of recovery.
	lk.Close()
	if err := f.Fetch(ctx, "000000010000000000000061", filepath.Join(dir, "RECOVERYXLOG")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := os.Stat(held); err == nil {
		t.Error("a temp file no longer locked was left")
	}
}

// TestSweepAfterRecovery: the prefetch folder goes once the cluster is out
// of recovery, and only then, and not while a prefetch runs in it.
func TestSweepAfterRecovery(t *testing.T) {
	data := t.TempDir()
	walDir := filepath.Join(data, "pg_wal")
	pdir := PrefetchDir(walDir)
	os.MkdirAll(pdir, 0o700)
	os.WriteFile(filepath.Join(pdir, "000000010000000000000002"), []byte("x"), 0o600)
	exists := func() bool { _, err := os.Stat(pdir); return err == nil }
	for _, sig := range []string{"recovery.signal", "standby.signal"} {
		os.WriteFile(filepath.Join(data, sig), nil, 0o600)
		SweepAfterRecovery(walDir, zap.NewNop())
		if !exists() {
			t.Fatalf("prefetch folder removed with %s present", sig)
		}
		os.Remove(filepath.Join(data, sig))
	}
	lk, err := os.OpenFile(filepath.Join(pdir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Flock(int(lk.Fd()), syscall.LOCK_EX)
	SweepAfterRecovery(walDir, zap.NewNop())
	if !exists() {
		t.Fatal("prefetch folder removed while a prefetch holds it")
	}
	lk.Close()
	SweepAfterRecovery(walDir, zap.NewNop())
	if exists() {
		t.Fatal("prefetch folder left after promotion")
	}
	if _, err := os.Stat(filepath.Join(walDir, "walgo")); err != nil {
		t.Fatal("pg_wal/walgo itself (wal-push's markers) removed")
	}
}
