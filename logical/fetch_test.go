package logical

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
)

// plant stores data as dump name with cd, the way Push does, and returns
// its sentinel.
func plant(t *testing.T, st storage.Store, cd *codec.Codec, name string, data []byte, finish time.Time) *catalog.DumpSentinel {
	t.Helper()
	var stored bytes.Buffer
	w, err := cd.NewWriter(&stored)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	sn := &catalog.DumpSentinel{Format: catalog.DumpFormat, Name: name, Database: "app", Key: catalog.DumpKey(name, cd),
		StartTime: finish.Add(-time.Second), FinishTime: finish, Size: int64(len(data)), SHA256: sum(data),
		StoredSize: int64(stored.Len()), StoredSHA256: sum(stored.Bytes())}
	ctx := context.Background()
	if err := st.Put(ctx, sn.Key, bytes.NewReader(stored.Bytes())); err != nil {
		t.Fatal(err)
	}
	if err := catalog.WriteDumpSentinel(ctx, st, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

func TestFetch(t *testing.T) {
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	rand.Read(data[:1<<20]) // part incompressible, part zeros
	plainCodec := codec.New(nil, nil, nil)
	encrypting := codec.New(codec.LZ4{}, []age.Recipient{id.Recipient()}, nil)
	reading := codec.New(nil, nil, []age.Identity{id})
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	tests := []struct {
		name   string
		write  *codec.Codec
		read   *codec.Codec
		damage func(t *testing.T, st storage.Store, sn *catalog.DumpSentinel)
		fetch  string // name to fetch; default the dump's
		err    error
	}{
		{name: "zstd", write: plainCodec, read: nil},
		{name: "encrypted", write: encrypting, read: reading},
		{name: "latest", write: plainCodec, fetch: "latest"},
		{name: "encrypted without a key", write: encrypting, read: plainCodec, err: codec.ErrNoKey},
		{name: "flipped byte", write: plainCodec, err: codec.ErrCorrupt, damage: flipByte(100)},
		{name: "flipped byte, encrypted", write: encrypting, read: reading, err: codec.ErrCorrupt, damage: flipByte(400)},
		{name: "truncated", write: plainCodec, err: codec.ErrCorrupt, damage: func(t *testing.T, st storage.Store, sn *catalog.DumpSentinel) {
			b := get(t, st, sn.Key)
			put(t, st, sn.Key, b[:len(b)-10])
		}},
		{name: "sentinel disagrees", write: plainCodec, err: codec.ErrCorrupt, damage: func(t *testing.T, st storage.Store, sn *catalog.DumpSentinel) {
			sn.SHA256 = strings.Repeat("0", 64)
			if err := catalog.WriteDumpSentinel(ctx, st, sn); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "missing", write: plainCodec, fetch: "dump_20000101T000000Z_a1", err: storage.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			plant(t, st, tt.write, "dump_20260501T115000Z_a1", []byte("an older dump"), t0.Add(-time.Hour))
			sn := plant(t, st, tt.write, "dump_20260501T120000Z_a1", data, t0)
			if tt.damage != nil {
				tt.damage(t, st, sn)
			}
			name := sn.Name
			if tt.fetch != "" {
				name = tt.fetch
			}
			var buf bytes.Buffer
			_, err = Fetch(ctx, st, tt.read, name, &buf)
			dir := t.TempDir()
			out := filepath.Join(dir, "out.pgdump")
			_, ferr := FetchFile(ctx, st, tt.read, name, out)
			if tt.err == nil {
				if err != nil || ferr != nil {
					t.Fatalf("Fetch: %v; FetchFile: %v", err, ferr)
				}
				got, _ := os.ReadFile(out)
				if !bytes.Equal(buf.Bytes(), data) || !bytes.Equal(got, data) {
					t.Fatalf("fetched %d and %d bytes, want the %d planted", buf.Len(), len(got), len(data))
				}
				if _, err := FetchFile(ctx, st, tt.read, name, out); !errors.Is(err, ErrExists) {
					t.Fatalf("FetchFile over an existing file: %v", err)
				}
				return
			}
			for _, e := range []error{err, ferr} {
				if !errors.Is(e, tt.err) {
					t.Fatalf("got %v, want %v", e, tt.err)
				}
				if tt.err == codec.ErrCorrupt && !strings.Contains(e.Error(), sn.Key) {
					t.Errorf("error does not name the object %s: %v", sn.Key, e)
				}
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Fatalf("a failed FetchFile left %v behind", left)
			}
		})
	}
}

func flipByte(off int) func(t *testing.T, st storage.Store, sn *catalog.DumpSentinel) {
	return func(t *testing.T, st storage.Store, sn *catalog.DumpSentinel) {
		b := get(t, st, sn.Key)
		b[off] ^= 0x40
		put(t, st, sn.Key, b)
	}
}

func get(t *testing.T, st storage.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func put(t *testing.T, st storage.Store, key string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// TestFetchFileStartsOver: a transfer cut off by the storage starts over
// from an empty file and the result is exact; when it never gets through,
// the error says the storage failed (not that the dump is damaged) and no
// file is left.
func TestFetchFileStartsOver(t *testing.T) {
	defer func(w time.Duration) { fetchRetryWait = w }(fetchRetryWait)
	fetchRetryWait = time.Millisecond
	ctx := context.Background()
	data := make([]byte, 1<<20)
	rand.Read(data)
	tests := []struct {
		name    string
		cuts    int
		wantErr error
	}{
		{"cut twice", 2, nil},
		{"cut every time", storage.TransferAttempts, storage.ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			sn := plant(t, base, codec.New(nil, nil, nil), "dump_20260501T120000Z_a1", data, time.Now())
			st := &storagetest.CutStore{Store: base, Cuts: tt.cuts, Match: func(k string) bool { return k == sn.Key }}
			dir := t.TempDir()
			out := filepath.Join(dir, "app.dump")
			_, err = FetchFile(ctx, st, codec.New(nil, nil, nil), sn.Name, out)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || errors.Is(err, codec.ErrCorrupt) {
					t.Fatalf("err = %v, want %v and not corrupt", err, tt.wantErr)
				}
				if left, _ := os.ReadDir(dir); len(left) != 0 {
					t.Errorf("left behind: %v", left)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
				t.Errorf("fetched %d bytes, not the dump", len(got))
			}
			if st.Gets(sn.Key) != tt.cuts+1 {
				t.Errorf("%d transfers, want %d", st.Gets(sn.Key), tt.cuts+1)
			}
		})
	}
}
