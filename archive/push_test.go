package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
)

// TestPushRequests counts what each kind of push asks of the storage.
func TestPushRequests(t *testing.T) {
	ctx := context.Background()
	c := &storagetest.Counter{Store: newStore(t)}
	p := New(c, Config{Concurrency: 1}, zap.NewNop())
	dir := waltest.PgWal(t)
	seg := func(i int) string {
		n := fmt.Sprintf("0000000100000000000000%02X", i)
		return waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 1))
	}
	steps := []struct {
		name string
		path string
		want map[string]int
	}{
		// The first push from this pg_wal reads the repository once.
		{"first push", seg(1), map[string]int{"get": 1, "create": 1}},
		{"new segment", seg(2), map[string]int{"create": 1}},
		{"another new segment", seg(3), map[string]int{"create": 1}},
		// A retry: the create finds the object, one Stat confirms it.
		{"identical re-push", filepath.Join(dir, "000000010000000000000002"), map[string]int{"create": 1, "stat": 1}},
	}
	for _, st := range steps {
		c.Reset()
		if _, err := p.Push(ctx, st.path); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := c.Counts(); !maps.Equal(got, st.want) {
			t.Errorf("%s: requests %v, want %v", st.name, got, st.want)
		}
	}
	// A look-ahead hit reads the repository's id, and nothing else.
	pa := New(c, Config{Concurrency: 3}, zap.NewNop())
	for i := 0x10; i <= 0x12; i++ {
		seg(i)
		waltest.WriteFile(t, filepath.Join(dir, "archive_status"), fmt.Sprintf("0000000100000000000000%02X.ready", i), nil)
	}
	c.Reset()
	if _, err := pa.Push(ctx, filepath.Join(dir, "000000010000000000000010")); err != nil {
		t.Fatal(err)
	}
	if got := c.Counts(); !maps.Equal(got, map[string]int{"create": 3}) {
		t.Errorf("push with 2 look-ahead files: requests %v, want 3 creates", got)
	}
	c.Reset()
	if res, err := pa.Push(ctx, filepath.Join(dir, "000000010000000000000011")); err != nil || !res.Skipped {
		t.Fatalf("look-ahead hit: %+v, %v", res, err)
	}
	if got := c.Counts(); !maps.Equal(got, map[string]int{"get": 1}) {
		t.Errorf("look-ahead hit: requests %v, want one get (the repository's id)", got)
	}
}

// TestRepushWithOnlyPublicKey: a host that holds only the age recipient
// (it cannot read the archive, as it should not) confirms a retried push
// by the stored sha256, and still sees a conflict.
func TestRepushWithOnlyPublicKey(t *testing.T) {
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	c := &storagetest.Counter{Store: s}
	p := New(c, Config{Codec: codec.New(codec.Zstd{}, []age.Recipient{id.Recipient()}, nil), Concurrency: 1}, zap.NewNop())
	dir := waltest.PgWal(t)
	const n = "000000010000000000000007"
	path := waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 1))
	if _, err := p.Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	c.Reset()
	if res, err := p.Push(ctx, path); err != nil || !res.Skipped {
		t.Fatalf("re-push without identity: %+v, %v; want it confirmed", res, err)
	}
	if got := c.Counts(); got["get"] != 0 {
		t.Errorf("re-push read the object back: %v", got)
	}
	waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 2))
	if _, err := p.Push(ctx, path); !errors.Is(err, ErrConflict) {
		t.Errorf("different content without identity: got %v, want ErrConflict", err)
	}
}

// TestRepushObjectWithoutMetadata: objects stored before the sha256 was
// kept (an older walgo, WAL-G) are compared by reading them back.
func TestRepushObjectWithoutMetadata(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const n = "000000010000000000000008"
	orig := waltest.Segment(t, n, segSize, 1)
	var buf bytes.Buffer
	w, _ := codec.Zstd{}.NewWriter(&buf)
	w.Write(orig)
	w.Close()
	if err := s.Put(ctx, catalog.WALKey(n, codec.Zstd{}), &buf); err != nil {
		t.Fatal(err)
	}
	dir := waltest.PgWal(t)
	path := waltest.WriteFile(t, dir, n, orig)
	p := New(s, Config{Concurrency: 1}, zap.NewNop())
	if res, err := p.Push(ctx, path); err != nil || !res.Skipped {
		t.Fatalf("identical re-push: %+v, %v", res, err)
	}
	waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 2))
	if _, err := p.Push(ctx, path); !errors.Is(err, ErrConflict) {
		t.Errorf("different content: got %v, want ErrConflict", err)
	}
}

// TestPushRefusesMissingRepository: a storage that holds no repository
// gets nothing.
func TestPushRefusesMissingRepository(t *testing.T) {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := waltest.PgWal(t)
	const n = "000000010000000000000009"
	path := waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 1))
	if _, err := New(s, Config{Concurrency: 1}, zap.NewNop()).Push(context.Background(), path); !errors.Is(err, catalog.ErrNoRepository) {
		t.Fatalf("push: got %v, want ErrNoRepository", err)
	}
	if err := s.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		t.Errorf("stored %s", oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestMarkerOfEarlierRepository: the repository is emptied and created
// again under the same URL while look-ahead markers wait in pg_wal: the
// marked files are pushed again rather than reported archived.
func TestMarkerOfEarlierRepository(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.InitRepository(ctx, s, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	p := New(s, Config{Concurrency: 2}, zap.NewNop())
	dir := waltest.PgWal(t)
	names := []string{"000000010000000000000040", "000000010000000000000041"}
	for _, n := range names {
		waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 1))
		waltest.WriteFile(t, filepath.Join(dir, "archive_status"), n+".ready", nil)
	}
	if res, err := p.Push(ctx, filepath.Join(dir, names[0])); err != nil || len(res.LookAhead) != 1 {
		t.Fatalf("push: %+v, %v", res, err)
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(root, e.Name()))
	}
	if _, err := catalog.InitRepository(ctx, s, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := p.Push(ctx, filepath.Join(dir, names[1]))
	if err != nil || res.Skipped {
		t.Fatalf("push after the repository was created again: %+v, %v; want it stored", res, err)
	}
	if got := stored(t, s, names[1]); len(got) != segSize {
		t.Errorf("stored %d bytes", len(got))
	}
}

// overwriting is a server that ignores If-None-Match: Create overwrites.
type overwriting struct{ storage.Store }

func (o overwriting) Create(ctx context.Context, key string, r io.Reader, _ storage.Metadata) error {
	return o.Store.Put(ctx, key, r)
}

// TestPushOnServerIgnoringCondition: on a server found at init to ignore
// create-only writes, a conflicting push is still refused (checked first)
// and a retry still confirmed, by reading the copy back: such a server
// (this one) keeps no metadata either.
func TestPushOnServerIgnoringCondition(t *testing.T) {
	ctx := context.Background()
	fs, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := overwriting{fs}
	r, err := catalog.InitRepository(ctx, s, "test", time.Now())
	if err != nil || r.Storage.CreateOnly {
		t.Fatalf("init: %+v, %v; want CreateOnly false", r, err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	p := New(s, Config{Concurrency: 1}, zap.New(core))
	dir := waltest.PgWal(t)
	const n = "00000064.history"
	path := waltest.WriteFile(t, dir, n, []byte("1\t0/3000000\tfork a\n"))
	if _, err := p.Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	if res, err := p.Push(ctx, path); err != nil || !res.Skipped {
		t.Fatalf("re-push: %+v, %v", res, err)
	}
	waltest.WriteFile(t, dir, n, []byte("1\t0/4000000\tfork b\n"))
	if _, err := p.Push(ctx, path); !errors.Is(err, ErrConflict) {
		t.Errorf("conflicting push: got %v, want ErrConflict", err)
	}
	if got := stored(t, fs, n); string(got) != "1\t0/3000000\tfork a\n" {
		t.Errorf("history is now %q", got)
	}
	if logs.FilterMessageSnippet("ignores conditional writes").Len() == 0 {
		t.Errorf("no warning that the server ignores conditional writes")
	}
}

// TestConcurrentPushesOneWins: two forks promoted at once push different
// history files under one name: exactly one wins, the other conflicts, and
// the stored file is the winner's. Raced 50 times.
func TestConcurrentPushesOneWins(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for round := range 50 {
		name := fmt.Sprintf("%08X.history", 100+round)
		content := [2][]byte{[]byte("1\t0/3000000\tfork a\n"), []byte("1\t0/3000000\tfork b\n")}
		var paths [2]string
		for i := range 2 {
			paths[i] = waltest.WriteFile(t, waltest.PgWal(t), name, content[i])
		}
		var errs [2]error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 2 {
			wg.Go(func() {
				<-start
				_, errs[i] = New(s, Config{Concurrency: 1}, zap.NewNop()).Push(ctx, paths[i])
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("%s: both pushes succeeded", name)
			case !errors.Is(err, ErrConflict):
				t.Fatalf("%s: push %d: %v, want ErrConflict", name, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: neither push succeeded: %v", name, errs)
		}
		if got := stored(t, s, name); !bytes.Equal(got, content[winner]) {
			t.Fatalf("%s: stored %q, winner pushed %q", name, got, content[winner])
		}
	}
}

// TestHistoryUnderAnotherCodec: a history file stored with another codec
// is compared with, never stored again beside it.
func TestHistoryUnderAnotherCodec(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := waltest.PgWal(t)
	const n = "00000003.history"
	path := waltest.WriteFile(t, dir, n, []byte("1\t0/3000000\tx\n"))
	if _, err := New(s, Config{Codec: codec.New(codec.LZ4{}, nil, nil), Concurrency: 1}, zap.NewNop()).Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	p := New(s, Config{Codec: codec.New(codec.Zstd{}, nil, nil), Concurrency: 1}, zap.NewNop())
	if res, err := p.Push(ctx, path); err != nil || !res.Skipped {
		t.Fatalf("same history with zstd: %+v, %v; want it found under lz4", res, err)
	}
	waltest.WriteFile(t, dir, n, []byte("1\t0/4000000\ty\n"))
	if _, err := p.Push(ctx, path); !errors.Is(err, ErrConflict) {
		t.Errorf("other history with zstd: got %v, want ErrConflict", err)
	}
	copies, _, err := catalog.ListWALCopies(ctx, s, n)
	if err != nil || len(copies) != 1 {
		t.Errorf("copies = %v, %v; want the lz4 one only", copies, err)
	}
}

// TestOutageLogsOneLinePerAttempt: while the storage is down, a push with
// look-ahead logs one warning per file per attempt (and one for each
// look-ahead file given up), not one per possible codec.
func TestOutageLogsOneLinePerAttempt(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := waltest.PgWal(t)
	names := []string{"000000010000000000000050", "000000010000000000000051", "000000010000000000000052"}
	for _, n := range names {
		waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 1))
		waltest.WriteFile(t, filepath.Join(dir, "archive_status"), n+".ready", nil)
	}
	// Read the repository while it is up, as an earlier push did.
	if _, err := New(s, Config{Concurrency: 1}, zap.NewNop()).Push(ctx, filepath.Join(dir, names[0])); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "archive_status", names[0]+".ready"))
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	const attempts = 4
	down := storage.WithRetry(outage{s}, storage.RetryOptions{Attempts: attempts, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, log)
	if _, err := New(down, Config{Concurrency: 4}, log).Push(ctx, filepath.Join(dir, names[1])); !errors.Is(err, storage.ErrUnreachable) {
		t.Fatalf("push during an outage: %v", err)
	}
	files := len(names) - 1
	if got, want := logs.Len(), files*(attempts-1)+(files-1); got != want {
		for _, e := range logs.All() {
			t.Log(e.Message, e.ContextMap()["key"])
		}
		t.Errorf("%d log lines for %d files and %d attempts, want %d", got, files, attempts, want)
	}
}

// outage fails every write as an unreachable server does.
type outage struct{ storage.Store }

func (o outage) Create(context.Context, string, io.Reader, storage.Metadata) error {
	return errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
}

func (o outage) Put(context.Context, string, io.Reader) error {
	return errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
}
