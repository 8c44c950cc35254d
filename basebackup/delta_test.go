package basebackup

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

// relPage is a sane relation page stamped with lsn, its tuple space filled
// with fill.
func relPage(lsn wal.LSN, fill byte) []byte {
	p := make([]byte, pgdata.PageSize)
	le := binary.LittleEndian
	le.PutUint32(p[0:], uint32(lsn>>32))
	le.PutUint32(p[4:], uint32(lsn))
	le.PutUint16(p[12:], 28)              // pd_lower
	le.PutUint16(p[14:], 8000)            // pd_upper
	le.PutUint16(p[16:], pgdata.PageSize) // pd_special
	le.PutUint16(p[18:], pgdata.PageSize|4)
	for i := 8000; i < pgdata.PageSize; i++ {
		p[i] = fill
	}
	return p
}

func pages(ps ...[]byte) []byte { return slices.Concat(ps...) }

func old(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, relPage(0x4000000+wal.LSN(i), byte(i+1)))
	}
	return out
}

// with replaces page i of ps.
func with(ps [][]byte, i int, p []byte) [][]byte {
	ps = slices.Clone(ps)
	ps[i] = p
	return ps
}

// TestDeltaDecisions: what a delta stores of each kind of file, given the
// parent's manifest. A file is stored whole (""), as its changed pages, or
// not at all ("unchanged", taken from the parent).
func TestDeltaDecisions(t *testing.T) {
	const from = wal.LSN(0x5000000)
	insane := relPage(0x4000000, 9)
	binary.LittleEndian.PutUint16(insane[10:], 0x0100) // a pd_flags bit Postgres never sets: torn or damaged
	p := pgdata.PageSize
	tests := []struct {
		name       string
		path       string
		pages      [][]byte // the file now
		parentSize int      // parent's size in pages; -1: the parent has no such file
		want       string
		wantPages  []uint32
	}{
		{"main fork unchanged", "base/5/16384", old(4), 4, "unchanged", nil},
		{"main fork, one page changed", "base/5/16385", with(old(8), 2, relPage(0x6000000, 1)), 8, "pages", []uint32{2}},
		{"main fork, a page at the parent's start LSN", "base/5/16386", with(old(8), 5, relPage(from, 1)), 8, "pages", []uint32{5}},
		{"main fork grew", "base/5/16387", append(old(4), old(2)...), 4, "pages", []uint32{4, 5}},
		{"main fork truncated", "base/5/16388", old(4), 8, "pages", nil},
		{"shared catalog main fork", "global/1262", old(2), 2, "unchanged", nil},
		{"segment 1 of a main fork", "base/5/16384.1", old(2), 2, "unchanged", nil},
		{"main fork in a tablespace", "pg_tblspc/16400/PG_15_202209061/5/16401", with(old(4), 0, relPage(0x7000000, 1)), 4, "pages", []uint32{0}},
		// Clearing a visibility map bit does not change the map page's LSN,
		// and the free space map is not WAL-logged: those forks are whole.
		{"visibility map whose LSNs look unchanged", "base/5/16384_vm", old(1), 1, "", nil},
		{"visibility map segment", "base/5/16384_vm.1", old(1), 1, "", nil},
		{"free space map", "base/5/16384_fsm", old(3), 3, "", nil},
		{"init fork", "base/5/16389_init", old(1), 1, "", nil},
		// Truncated and extended again: the parent holds an older page there.
		{"all-zero page inside the parent's size", "base/5/16390", with(old(8), 3, make([]byte, p)), 8, "pages", []uint32{3}},
		{"all-zero pages only (more than half changed: whole)", "base/5/16391", [][]byte{make([]byte, p), make([]byte, p)}, 2, "", nil},
		{"page without an LSN", "base/5/16392", with(old(4), 1, relPage(0, 7)), 4, "pages", []uint32{1}},
		{"page whose header is not sane", "base/5/16393", with(old(4), 1, insane), 4, "pages", []uint32{1}},
		// Not relation files: always whole, whatever they hold.
		{"pg_xact", "pg_xact/0000", old(1), 1, "", nil},
		{"pg_multixact offsets", "pg_multixact/offsets/0000", old(1), 1, "", nil},
		{"pg_multixact members", "pg_multixact/members/0000", old(1), 1, "", nil},
		{"pg_control", "global/pg_control", old(1), 1, "", nil},
		{"shared relation map", "global/pg_filenode.map", old(1), 1, "", nil},
		{"database relation map", "base/5/pg_filenode.map", old(1), 1, "", nil},
		{"not in the parent", "base/5/16394", old(2), -1, "", nil},
		{"size not a whole number of pages", "base/5/16395", [][]byte{relPage(0x4000000, 1)[:100]}, 1, "", nil},
		// Database 6 was dropped and created again since the parent (its
		// PG_VERSION is newer): its files may hold other relations' pages
		// with old LSNs (CREATE DATABASE ... STRATEGY FILE_COPY).
		{"database created again", "base/6/16384", old(4), 4, "", nil},
		{"database created again, tablespace", "pg_tblspc/16400/PG_15_202209061/6/16402", old(4), 4, "", nil},
	}

	dir := t.TempDir()
	write := func(path string, data []byte, mtime time.Time) {
		t.Helper()
		full := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	parent := []catalog.ManifestFile{
		{Path: "base/5/PG_VERSION", Size: 3, Mode: 0o600, ModTime: created},
		{Path: "base/6/PG_VERSION", Size: 3, Mode: 0o600, ModTime: created},
	}
	write("base/5/PG_VERSION", []byte("15\n"), created)
	write("base/6/PG_VERSION", []byte("15\n"), created.Add(time.Hour))
	for _, tt := range tests {
		data := pages(tt.pages...)
		write(tt.path, data, created.Add(2*time.Hour))
		if tt.parentSize >= 0 {
			parent = append(parent, catalog.ManifestFile{Path: tt.path, Size: int64(tt.parentSize * p), Mode: 0o600, SHA256: "parent-sum", ModTime: created})
		}
	}

	entries, err := walk(dir, "15")
	if err != nil {
		t.Fatal(err)
	}
	store, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := newPartWriter(context.Background(), store, "base_000000010000000000000005_D_000000010000000000000004",
		Config{Concurrency: 1, PartSize: 1 << 30, Codec: codec.New(nil, nil, nil)}, zap.NewNop())
	files, err := w.writeAll(entries, newDeltaPlan(from, parent, entries))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]catalog.ManifestFile{}
	for _, f := range files {
		got[f.Path] = f
	}
	for _, tt := range tests {
		f, ok := got[tt.path]
		if !ok {
			t.Errorf("%s: %s is not in the manifest", tt.name, tt.path)
			continue
		}
		if f.Delta != tt.want || !slices.Equal(f.Pages, tt.wantPages) {
			t.Errorf("%s: %s stored as %q pages %v, want %q pages %v", tt.name, tt.path, f.Delta, f.Pages, tt.want, tt.wantPages)
		}
		if f.Size != int64(len(pages(tt.pages...))) {
			t.Errorf("%s: size %d", tt.name, f.Size)
		}
		if f.Delta == "unchanged" && f.SHA256 != "parent-sum" {
			t.Errorf("%s: an unchanged file keeps the parent's sha256, got %q", tt.name, f.SHA256)
		}
		if f.Delta == "" && len(f.SHA256) != 64 {
			t.Errorf("%s: a whole file has its own sha256, got %q", tt.name, f.SHA256)
		}
	}
}

func TestDeltaRefusal(t *testing.T) {
	boot := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	reboot := boot.Add(24 * time.Hour)
	parent := func(checksums, hints bool, started time.Time) *catalog.Sentinel {
		return &catalog.Sentinel{Name: "base_000000010000000000000002", DataChecksums: checksums, WALLogHints: hints, ServerStarted: started}
	}
	tests := []struct {
		name   string
		now    lsnSettings
		parent *catalog.Sentinel
		refuse string // a part of the reason; "" for a delta
	}{
		{"checksums", lsnSettings{true, false, boot}, parent(true, false, boot), ""},
		{"checksums, restarted since", lsnSettings{true, false, reboot}, parent(true, false, boot), ""},
		{"wal_log_hints", lsnSettings{false, true, boot}, parent(false, true, boot), ""},
		{"both", lsnSettings{true, true, reboot}, parent(true, true, boot), ""},
		{"neither", lsnSettings{false, false, boot}, parent(false, false, boot), "no data checksums and wal_log_hints is off"},
		{"neither now, parent had checksums", lsnSettings{false, false, reboot}, parent(true, false, boot), "wal_log_hints is off"},
		{"parent without either", lsnSettings{true, false, boot}, parent(false, false, boot), "does not record data checksums or wal_log_hints"},
		{"parent by an older walgo", lsnSettings{true, true, boot}, &catalog.Sentinel{Name: "base_000000010000000000000002"}, "older walgo"},
		{"wal_log_hints, restarted since", lsnSettings{false, true, reboot}, parent(false, true, boot), "restarted"},
		{"checksums turned off since", lsnSettings{false, true, reboot}, parent(true, true, boot), "restarted"},
		{"checksums turned on since (pg_checksums rewrote pages)", lsnSettings{true, true, reboot}, parent(false, true, boot), "restarted"},
	}
	for _, tt := range tests {
		got := deltaRefusal(tt.now, tt.parent)
		if tt.refuse == "" && got != "" || tt.refuse != "" && !strings.Contains(got, tt.refuse) {
			t.Errorf("%s: deltaRefusal = %q, want %q", tt.name, got, tt.refuse)
		}
	}
}
