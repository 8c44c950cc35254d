package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
)

const segSize = 1 << 20 // smallest legal size keeps the tests fast

// newStore is a new, empty repository in a temp folder.
func newStore(t *testing.T) *file.Store {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.InitRepository(context.Background(), s, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	return s
}

// stored returns the plain content archived for name.
func stored(t *testing.T, s storage.Store, name string) []byte {
	t.Helper()
	objs, _, err := catalog.ListWALCopies(context.Background(), s, name)
	if err != nil || len(objs) != 1 {
		t.Fatalf("find %s: %v, %d objects", name, err, len(objs))
	}
	rc, err := s.Get(context.Background(), objs[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c, _ := codec.ByExt(objs[0].Ext)
	d, err := codec.Decode(c, rc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPushContracts(t *testing.T) {
	ctx := context.Background()
	const name = "000000010000000000000003"
	for _, comp := range []codec.Compression{codec.Zstd{}, codec.LZ4{}, codec.Gzip{}, codec.None{}} {
		t.Run(comp.Name(), func(t *testing.T) {
			s := newStore(t)
			p := New(s, Config{Codec: codec.New(comp, nil, nil), Concurrency: 1}, zap.NewNop())
			dir := waltest.PgWal(t)
			orig := waltest.Segment(t, name, segSize, 1)
			path := waltest.WriteFile(t, dir, name, orig)

			res, err := p.Push(ctx, path)
			if err != nil || res.Skipped {
				t.Fatalf("first push: %+v, %v", res, err)
			}
			if !bytes.Equal(stored(t, s, name), orig) {
				t.Fatal("stored content differs from the segment")
			}
			// Postgres retries after a crash: the same content succeeds.
			if res, err := p.Push(ctx, path); err != nil || !res.Skipped {
				t.Fatalf("identical re-push: %+v, %v", res, err)
			}
			// Different content under the same name fails and overwrites nothing.
			waltest.WriteFile(t, dir, name, waltest.Segment(t, name, segSize, 2))
			if _, err := p.Push(ctx, path); !errors.Is(err, ErrConflict) {
				t.Fatalf("different content: err = %v, want ErrConflict", err)
			}
			if !bytes.Equal(stored(t, s, name), orig) {
				t.Fatal("stored object changed after a conflicting push")
			}
		})
	}
}

func TestPushHistoryNeverOverwritten(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := New(s, Config{Concurrency: 1}, zap.NewNop())
	dir := waltest.PgWal(t)
	path := waltest.WriteFile(t, dir, "00000002.history", []byte("1\t0/3000000\tno recovery target specified\n"))
	if _, err := p.Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	if res, err := p.Push(ctx, path); err != nil || !res.Skipped {
		t.Fatalf("identical history re-push: %+v, %v", res, err)
	}
	waltest.WriteFile(t, dir, "00000002.history", []byte("1\t0/4000000\tother\n"))
	if _, err := p.Push(ctx, path); !errors.Is(err, ErrConflict) {
		t.Fatalf("different history: err = %v", err)
	}
	if got := stored(t, s, "00000002.history"); string(got) != "1\t0/3000000\tno recovery target specified\n" {
		t.Fatalf("history overwritten: %q", got)
	}
}

func TestPushRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := New(s, Config{Concurrency: 1}, zap.NewNop())
	dir := waltest.PgWal(t)
	seg := waltest.Segment(t, "000000010000000000000005", segSize, 1)
	if err := os.Mkdir(filepath.Join(dir, "000000010000000000000009"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc string
		path string
	}{
		{"missing file", filepath.Join(dir, "000000010000000000000004")},
		{"wrong folder", filepath.Join(dir, "nope", "000000010000000000000004")},
		{"directory", filepath.Join(dir, "000000010000000000000009")},
		{"not a WAL name", waltest.WriteFile(t, dir, "postgresql.conf", []byte("x"))},
		{"short file", waltest.WriteFile(t, dir, "000000010000000000000005", seg[:segSize/2])},
		{"odd size", waltest.WriteFile(t, dir, "000000010000000000000006", append(waltest.Segment(t, "000000010000000000000006", segSize, 1), 0))},
		{"renamed segment", waltest.WriteFile(t, dir, "000000010000000000000007", seg)},
		{"zero-filled", waltest.WriteFile(t, dir, "000000010000000000000008", make([]byte, segSize))},
		{"partial that is not WAL", waltest.WriteFile(t, dir, "00000001000000000000000A.partial", []byte("junk"))},
	}
	for _, tt := range tests {
		if _, err := p.Push(ctx, tt.path); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tt.desc, err)
		}
	}
	all, _ := catalog.ListWAL(ctx, s)
	if len(all) != 0 {
		t.Errorf("refused pushes stored %d objects", len(all))
	}
}

func TestLookAhead(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := New(s, Config{Concurrency: 3}, zap.NewNop())
	dir := waltest.PgWal(t)
	names := []string{"000000010000000000000010", "000000010000000000000011", "000000010000000000000012", "000000010000000000000013"}
	data := map[string][]byte{}
	for _, n := range names {
		data[n] = waltest.Segment(t, n, segSize, 3)
		waltest.WriteFile(t, dir, n, data[n])
		waltest.WriteFile(t, filepath.Join(dir, "archive_status"), n+".ready", nil)
	}
	res, err := p.Push(ctx, filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.LookAhead) != 2 || res.LookAhead[0] != names[1] || res.LookAhead[1] != names[2] {
		t.Fatalf("look-ahead pushed %v, want the next two", res.LookAhead)
	}
	for _, n := range names[:3] {
		if !bytes.Equal(stored(t, s, n), data[n]) {
			t.Fatalf("%s not stored correctly", n)
		}
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, "archive_status", n+".done")); err == nil {
			t.Fatalf("walgo wrote Postgres' %s.done", n)
		}
	}
	// Postgres marks the first done, then asks for the second: answered
	// from the marker, which is used up.
	os.Rename(filepath.Join(dir, "archive_status", names[0]+".ready"), filepath.Join(dir, "archive_status", names[0]+".done"))
	res, err = p.Push(ctx, filepath.Join(dir, names[1]))
	if err != nil || !res.Skipped {
		t.Fatalf("second call: %+v, %v", res, err)
	}
	// Its marker stays while Postgres still lists the file as .ready, and
	// goes at the next call once the .ready file is gone.
	marker := filepath.Join(dir, "walgo", "pushed", names[1])
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("marker removed while the file is still .ready: %v", err)
	}
	os.Rename(filepath.Join(dir, "archive_status", names[1]+".ready"), filepath.Join(dir, "archive_status", names[1]+".done"))
	if res, err := p.Push(ctx, filepath.Join(dir, names[2])); err != nil || !res.Skipped {
		t.Fatalf("third call: %+v, %v", res, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("marker left after its .ready file went")
	}
}

// A marker left from another storage must not stand for a push to this one.
func TestMarkerOfAnotherStoreIgnored(t *testing.T) {
	ctx := context.Background()
	dir := waltest.PgWal(t)
	n := "000000010000000000000020"
	path := waltest.WriteFile(t, dir, n, waltest.Segment(t, n, segSize, 4))
	waltest.WriteFile(t, filepath.Join(dir, "archive_status"), n+".ready", nil)
	os.MkdirAll(filepath.Join(dir, "walgo", "pushed"), 0o700)
	waltest.WriteFile(t, filepath.Join(dir, "walgo", "pushed"), n, []byte("file:///somewhere/else\n0123\n"))

	s := newStore(t)
	res, err := New(s, Config{Concurrency: 1}, zap.NewNop()).Push(ctx, path)
	if err != nil || res.Skipped {
		t.Fatalf("push: %+v, %v", res, err)
	}
	stored(t, s, n)
}

// A damaged archived copy of a segment is replaced by the good local file.
func TestDamagedCopyReplaced(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	n := "000000010000000000000030"
	key := catalog.WALKey(n, codec.Zstd{})
	if err := s.Put(ctx, key, bytes.NewReader([]byte("garbage, not zstd"))); err != nil {
		t.Fatal(err)
	}
	dir := waltest.PgWal(t)
	orig := waltest.Segment(t, n, segSize, 5)
	path := waltest.WriteFile(t, dir, n, orig)
	if _, err := New(s, Config{Concurrency: 1}, zap.NewNop()).Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored(t, s, n), orig) {
		t.Fatal("damaged copy not replaced")
	}
}
