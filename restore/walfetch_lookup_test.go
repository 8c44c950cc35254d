package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/foreigntest"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/storagetest"
	"github.com/walgo/walgo/wal"
)

// counting counts the calls a Fetcher makes, by operation.
type counting struct {
	storage.Store
	mu sync.Mutex
	n  map[string]int
}

func (c *counting) add(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[op]++
}

func (c *counting) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := maps.Clone(c.n)
	c.n = nil
	return out
}

func (c *counting) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.add("get")
	return c.Store.Get(ctx, key)
}

func (c *counting) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	c.add("stat")
	return c.Store.Stat(ctx, key)
}

func (c *counting) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	c.add("list")
	return c.Store.List(ctx, prefix, fn)
}

// Objects WAL-G and WAL-E store, in their framing, are fetched like walgo's.
func TestFetchForeignCodecs(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 0)
	seg, _ := wal.ParseSegment("000000010000000000000030")
	for _, ext := range foreigntest.Exts {
		name := seg.Name()
		data := waltest.Segment(t, name, segSize, 3)
		if err := s.Put(ctx, catalog.WALKey(name, extOnly(ext)), bytes.NewReader(foreigntest.Encode(t, ext, data))); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(dir, "RECOVERYXLOG")
		if err := f.Fetch(ctx, name, dest); err != nil {
			t.Fatalf("%q: %v", ext, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, data) {
			t.Fatalf("%q: content differs", ext)
		}
		seg = seg.Next(segSize)
	}
	// A timeline history WAL-G stored with brotli.
	hist := []byte("1\t0/3000000\tno recovery target specified\n")
	s.Put(ctx, catalog.WALKey("00000002.history", extOnly("br")), bytes.NewReader(foreigntest.Encode(t, "br", hist)))
	dest := filepath.Join(dir, "RECOVERYHISTORY")
	if err := f.Fetch(ctx, "00000002.history", dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, hist) {
		t.Fatalf("history content differs: %q", got)
	}
}

type extOnly string

func (e extOnly) Ext() string { return string(e) }

// A WAL file stored only with an extension walgo cannot read is not "not in
// the archive": that would end recovery early. It fails, naming the object.
func TestFetchUnknownExtension(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 0)
	name := "000000010000000000000007"
	data := waltest.Segment(t, name, segSize, 1)
	s.Put(ctx, catalog.WALPrefix+name+".xz", bytes.NewReader(data))
	// Neighbours sharing the prefix are other files, not unknown copies.
	s.Put(ctx, catalog.WALPrefix+name+".partial.xz", bytes.NewReader(data))
	s.Put(ctx, catalog.WALPrefix+"000000010000000000000008.xz", bytes.NewReader(data))
	dest := filepath.Join(dir, "RECOVERYXLOG")
	err := f.Fetch(ctx, name, dest)
	if !errors.Is(err, codec.ErrUnknown) || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("err = %v, want codec.ErrUnknown and not ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), catalog.WALPrefix+name+".xz") || strings.Contains(err.Error(), "partial") {
		t.Errorf("error names %q, want exactly the unreadable copy", err)
	}
	// Beside a readable copy, the unknown one is ignored.
	putEncoded(t, s, catalog.WALKey(name, codec.LZ4{}), codec.LZ4{}, data)
	if err := f.Fetch(ctx, name, dest); err != nil {
		t.Fatal(err)
	}
	// The .partial file's own lookup is not disturbed by the segment's.
	if err := f.Fetch(ctx, "000000010000000000000009", dest); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("missing segment: %v", err)
	}
}

// Requests per wal-fetch (issue 11): a segment stored with the configured
// codec costs one GET; a missing one a GET and one LIST; no HEADs. A
// history file is listed first: Postgres asks for the next timeline's at
// the end of every recovery and at each poll of a standby, and it is
// missing almost every time, so a miss costs one LIST and a hit two.
func TestFetchRequestCount(t *testing.T) {
	ctx := context.Background()
	s, _, dir := setup(t, 0)
	cs := &counting{Store: s}
	f := NewFetcher(cs, FetchConfig{Codec: codec.New(codec.Zstd{}, nil, nil)}, zap.NewNop())
	archiveSegs(t, s, "000000010000000000000001", 1, codec.Zstd{})
	archiveSegs(t, s, "000000010000000000000002", 1, codec.LZ4{})
	putEncoded(t, s, catalog.WALKey("00000002.history", codec.Zstd{}), codec.Zstd{}, []byte("1\t0/3000000\tno recovery target specified\n"))
	dest := filepath.Join(dir, "RECOVERYXLOG")
	cases := []struct {
		name string
		want map[string]int
		err  error
	}{
		{"000000010000000000000001", map[string]int{"get": 1}, nil},
		{"000000010000000000000002", map[string]int{"get": 2, "list": 1}, nil}, // another codec
		{"000000010000000000000003", map[string]int{"get": 1, "list": 1}, storage.ErrNotFound},
		{"00000002.history", map[string]int{"get": 1, "list": 1}, nil},
		{"00000003.history", map[string]int{"list": 1}, storage.ErrNotFound},
	}
	for _, c := range cases {
		err := f.Fetch(ctx, c.name, dest)
		if (c.err == nil && err != nil) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := cs.counts(); !maps.Equal(got, c.want) {
			t.Errorf("%s: requests %v, want %v", c.name, got, c.want)
		}
	}
}

// vanishing shows a key in listings but answers not found when it is read.
type vanishing struct {
	storage.Store
	key   string
	after int // Gets of key that succeed before it is "deleted"
	gets  int
}

func (v *vanishing) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if key == v.key {
		v.gets++
		if v.gets > v.after {
			return nil, storage.ErrNotFound
		}
	}
	return v.Store.Get(ctx, key)
}

// Found, then gone (issue 10 item 6): a copy the listing showed and whose
// read then says not found is a storage failure, never "not in the archive".
func TestFetchFoundThenGone(t *testing.T) {
	ctx := context.Background()
	s, _, dir := setup(t, 0)
	name := "000000010000000000000005"
	archiveSegs(t, s, name, 1, codec.LZ4{})
	dest := filepath.Join(dir, "RECOVERYXLOG")
	f := NewFetcher(&vanishing{Store: s, key: catalog.WALKey(name, codec.LZ4{})}, FetchConfig{}, zap.NewNop())
	err := f.Fetch(ctx, name, dest)
	if !errors.Is(err, catalog.ErrVanished) || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("listed, then gone: err = %v, want ErrVanished and not ErrNotFound", err)
	}
	// Read once (the transfer cut off), then gone when started over.
	defer func(w time.Duration) { transferRetryWait = w }(transferRetryWait)
	transferRetryWait = time.Millisecond
	cut := &storagetest.CutStore{Store: s, Cuts: 1}
	f = NewFetcher(&vanishing{Store: cut, key: catalog.WALKey(name, codec.LZ4{}), after: 1}, FetchConfig{}, zap.NewNop())
	err = f.Fetch(ctx, name, dest)
	if !errors.Is(err, catalog.ErrVanished) || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("read, then gone: err = %v, want ErrVanished and not ErrNotFound", err)
	}
}

// controlWithID is a real pg_control with system identifier id.
func controlWithID(t *testing.T, id uint64) []byte {
	t.Helper()
	b := waltest.PgControl(t, id)
	if got, err := pgdata.ControlSystemID(b); err != nil || got != id {
		t.Fatalf("fixture: %d, %v", got, err)
	}
	return b
}

// A segment of another cluster stored under the right name (issue 10 item
// 10) is refused: Postgres would end redo on it and promote early.
func TestFetchOtherSystem(t *testing.T) {
	ctx := context.Background()
	s, _, _ := setup(t, 2)
	data := t.TempDir()
	walDir := filepath.Join(data, "pg_wal")
	os.MkdirAll(filepath.Join(data, "global"), 0o700)
	os.MkdirAll(walDir, 0o700)
	name := "000000010000000000000011"
	segs := archiveSegs(t, s, name, 3, codec.Zstd{}) // waltest's system id
	hdr, _ := wal.ParseHeader(segs[name])
	dest := filepath.Join(walDir, "RECOVERYXLOG")

	os.WriteFile(filepath.Join(data, pgdata.ControlFile), controlWithID(t, hdr.SystemID+1), 0o600)
	f := NewFetcher(s, FetchConfig{Prefetch: 2, Concurrency: 2}, zap.NewNop())
	err := f.Fetch(ctx, name, dest)
	if !errors.Is(err, wal.ErrBadHeader) || !strings.Contains(err.Error(), "database system") {
		t.Fatalf("another cluster's segment: err = %v, want a system identifier mismatch", err)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("the other cluster's segment was handed to Postgres")
	}
	// Prefetched copies are checked the same way.
	if err := f.Prefetch(ctx, name, walDir, segSize); err == nil {
		t.Fatal("prefetch took another cluster's segments")
	}

	os.WriteFile(filepath.Join(data, pgdata.ControlFile), controlWithID(t, hdr.SystemID), 0o600)
	f = NewFetcher(s, FetchConfig{Prefetch: 2, Concurrency: 2}, zap.NewNop())
	if err := f.Fetch(ctx, name, dest); err != nil {
		t.Fatalf("same cluster: %v", err)
	}
	if err := f.Prefetch(ctx, name, walDir, segSize); err != nil {
		t.Fatal(err)
	}
	next := "000000010000000000000012"
	if err := f.Fetch(ctx, next, dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[next]) {
		t.Fatal("content differs")
	}
}
