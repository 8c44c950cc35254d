package catalog

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
	"github.com/walgo/walgo/wal"
)

func TestParseWALKey(t *testing.T) {
	tests := []struct {
		key  string
		name string
		ext  string
		ok   bool
	}{
		{"wal_005/000000010000000000000001.zst", "000000010000000000000001", "zst", true},
		{"wal_005/000000010000000000000001.lz4", "000000010000000000000001", "lz4", true},
		{"wal_005/00000002.history.gz", "00000002.history", "gz", true},
		{"wal_005/000000010000000000000002.00000028.backup.none", "000000010000000000000002.00000028.backup", "none", true},
		{"wal_005/000000010000000000000003.partial.zst", "000000010000000000000003.partial", "zst", true},
		{"wal_005/000000010000000000000001", "000000010000000000000001", "", true}, // WAL-G's "none"
		{"wal_005/000000010000000000000001.br", "000000010000000000000001", "br", true},
		{"wal_005/000000010000000000000001.lzma", "000000010000000000000001", "lzma", true},
		{"wal_005/00000002.history.lzo", "00000002.history", "lzo", true},
		{"wal_005/000000010000000000000003.partial.br", "000000010000000000000003.partial", "br", true},
		{"wal_005/000000010000000000000001.xz", "", "", false},
		{"wal_005/000000010000000000000001.zst.xz", "", "", false},
		{"wal_005/sub/000000010000000000000001.zst", "", "", false},
		{"basebackups_005/000000010000000000000001.zst", "", "", false},
		{"wal_005/junk.zst", "", "", false},
	}
	for _, tt := range tests {
		o, ok := ParseWALKey(tt.key)
		if ok != tt.ok || o.Name != tt.name || o.Ext != tt.ext {
			t.Errorf("ParseWALKey(%q) = %+v, %v", tt.key, o, ok)
		}
		if ok {
			c, _ := codec.ByExt(o.Ext)
			if got := WALKey(o.Name, c); got != tt.key {
				t.Errorf("WALKey round trip: %s != %s", got, tt.key)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	const seg = 16 << 20
	var objs []WALObject
	add := func(names ...string) {
		for _, n := range names {
			objs = append(objs, WALObject{Name: n, Kind: wal.Classify(n), Size: 10})
		}
	}
	// Timeline 1: 0xFD..0x101 across a log boundary, with 0xFF and 0x100 missing.
	add("0000000100000000000000FD", "0000000100000000000000FE", "000000010000000100000001",
		"000000010000000100000002", "000000010000000100000002", // stored twice
		"00000002.history", "000000020000000100000002", "000000020000000100000003",
		"000000010000000100000003.partial")
	tls := Summarize(objs, seg)
	if len(tls) != 2 {
		t.Fatalf("want 2 timelines, got %+v", tls)
	}
	t1, t2 := tls[0], tls[1]
	if t1.ID != 1 || t1.Count != 4 || t1.First != "0000000100000000000000FD" || t1.Last != "000000010000000100000002" || t1.Partials != 1 {
		t.Errorf("timeline 1: %+v", t1)
	}
	if len(t1.Gaps) != 1 || t1.Gaps[0] != (Gap{First: "0000000100000000000000FF", Last: "000000010000000100000000", Count: 2}) {
		t.Errorf("timeline 1 gaps: %+v", t1.Gaps)
	}
	if t2.ID != 2 || t2.Count != 2 || !t2.History || len(t2.Gaps) != 0 {
		t.Errorf("timeline 2: %+v", t2)
	}
}

func TestFindAndListWAL(t *testing.T) {
	ctx := context.Background()
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string) {
		if err := s.Put(ctx, key, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	put(WALKey("000000010000000000000001", codec.LZ4{}))
	put(WALKey("000000010000000000000001", codec.Zstd{}))
	put(WALKey("0000000100000000000000010", codec.Zstd{})) // not a WAL name: ignored
	put(WALKey("000000010000000000000002", codec.Zstd{}))
	put("basebackups_005/x/part_001.tar.zst")

	got, _, err := ListWALCopies(ctx, s, "000000010000000000000001")
	if err != nil || len(got) != 2 || got[0].Ext != "zst" || got[1].Ext != "lz4" {
		t.Errorf("ListWALCopies: %+v, %v", got, err)
	}
	if got, _, _ := ListWALCopies(ctx, s, "000000010000000000000009"); len(got) != 0 {
		t.Errorf("ListWALCopies of a missing file: %+v", got)
	}
	all, err := ListWAL(ctx, s)
	if err != nil || len(all) != 3 {
		t.Errorf("ListWAL: %+v, %v", all, err)
	}
}

// TestOpenWALRequests: OpenWAL asks for the configured codec's key first
// (a found file: 1 request, a missing one: 2); OpenWALListed lists first
// (a missing file: 1, a found one: 2); both find a copy of another codec.
func TestOpenWALRequests(t *testing.T) {
	ctx := context.Background()
	fs, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &storagetest.Counter{Store: fs}
	stored := "000000010000000000000001"
	lz := "000000010000000000000002" // stored as lz4 only
	for _, n := range []string{WALKey(stored, codec.Zstd{}), WALKey(lz, codec.LZ4{})} {
		if err := fs.Put(ctx, n, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	open := map[string]func(name string) (*OpenedWAL, error){
		"OpenWAL":       func(name string) (*OpenedWAL, error) { return OpenWAL(ctx, s, name, codec.Zstd{}) },
		"OpenWALListed": func(name string) (*OpenedWAL, error) { return OpenWALListed(ctx, s, name) },
	}
	for _, tc := range []struct {
		fn, name string
		key      string // "" = not found
		want     map[string]int
	}{
		{"OpenWAL", stored, WALKey(stored, codec.Zstd{}), map[string]int{"get": 1}},
		{"OpenWAL", lz, WALKey(lz, codec.LZ4{}), map[string]int{"get": 2, "list": 1}},
		{"OpenWAL", "000000010000000000000009", "", map[string]int{"get": 1, "list": 1}},
		{"OpenWALListed", stored, WALKey(stored, codec.Zstd{}), map[string]int{"get": 1, "list": 1}},
		{"OpenWALListed", lz, WALKey(lz, codec.LZ4{}), map[string]int{"get": 1, "list": 1}},
		{"OpenWALListed", "000000010000000000000009", "", map[string]int{"list": 1}},
	} {
		s.Reset()
		o, err := open[tc.fn](tc.name)
		switch {
		case tc.key == "" && !errors.Is(err, storage.ErrNotFound):
			t.Errorf("%s(%s): err %v, want not found", tc.fn, tc.name, err)
		case tc.key != "" && err != nil:
			t.Errorf("%s(%s): %v", tc.fn, tc.name, err)
		case tc.key != "" && o.Key != tc.key:
			t.Errorf("%s(%s) opened %s, want %s", tc.fn, tc.name, o.Key, tc.key)
		}
		if o != nil {
			o.Body.Close()
		}
		if got := s.Counts(); !maps.Equal(got, tc.want) {
			t.Errorf("%s(%s): requests %v, want %v", tc.fn, tc.name, got, tc.want)
		}
	}
}
