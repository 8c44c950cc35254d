package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
)

// vector reads a real page or pg_control of a Postgres 15 cluster made by
// `initdb -k` from pgdata's testdata: base/1/2615 (pg_namespace) block 0,
// base/1/1255 (pg_proc) block 5, and global/pg_control's first bytes.
func vector(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "pgdata", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	vecNamespace = "pg_namespace_block0"
	vecProc5     = "pg_proc_block5"
	vecControl   = "pg_control"
)

// controlWith is the real pg_control with data_checksum_version set to v
// and its CRC recomputed (offsets: src/include/catalog/pg_control.h).
func controlWith(t *testing.T, v uint32) []byte {
	const checksumVerOff, crcOff = 252, 288
	b := make([]byte, pgdata.PageSize)
	copy(b, vector(t, vecControl))
	binary.LittleEndian.PutUint32(b[checksumVerOff:], v)
	binary.LittleEndian.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// verifyEnts is a small data directory with real pages.
func verifyEnts(t *testing.T, control []byte) []ent {
	ns, proc := vector(t, vecNamespace), vector(t, vecProc5)
	// pg_proc's block 5 at block 5 of a file, blocks 0-4 new (zero) pages.
	procFile := append(make([]byte, 5*pgdata.PageSize), proc...)
	ents := []ent{
		{path: "base/", typ: tar.TypeDir},
		{path: "base/1/", typ: tar.TypeDir},
		{path: "base/1/2615", body: ns},
		{path: "base/1/1255", body: procFile, part: 1},
		{path: "PG_VERSION", body: []byte("15\n")},
		{path: "pg_wal/", typ: tar.TypeDir},
		{path: "pg_wal/link", typ: tar.TypeSymlink, link: "../elsewhere"},
		{path: "global/", typ: tar.TypeDir, part: 1},
	}
	if control != nil {
		ents = append(ents, ent{path: "global/pg_control", body: control, part: 1})
	}
	return ents
}

func problems(r *VerifyReport) string {
	var s []string
	for _, p := range r.Problems {
		s = append(s, p.String())
	}
	return strings.Join(s, "\n")
}

func TestVerifyBackup(t *testing.T) {
	ctx := context.Background()
	vopts := func(pages bool) VerifyOptions {
		return VerifyOptions{Concurrency: 2, Pages: pages, Codec: codec.New(nil, nil, nil)}
	}
	badPage := func() []byte { // a flipped byte in a tuple, LSN before the start
		p := vector(t, vecNamespace)
		p[8000] ^= 0x40
		return p
	}
	tornPage := func() []byte { // damaged, but written after the backup started
		p := badPage()
		binary.LittleEndian.PutUint32(p[0:], 0)
		binary.LittleEndian.PutUint32(p[4:], 0x7000000)
		return p
	}
	tests := []struct {
		name    string
		no      uint64 // start segment: the start LSN is its start + 0x28
		ents    func() []ent
		parts   int
		damage  func(s storage.Store, sn *catalog.Sentinel) // after the backup is stored
		pages   bool
		want    []string // in the problems, in order
		stats   *PageStats
		noteHas string
	}{
		{name: "good", no: 3, parts: 2, ents: func() []ent { return verifyEnts(t, controlWith(t, 1)) }, pages: true,
			stats: &PageStats{Checksums: "on", ChecksumsFrom: "pg_control", Checked: 2, New: 5}},
		{name: "good without pages", no: 3, parts: 2, ents: func() []ent { return verifyEnts(t, controlWith(t, 1)) }},
		{name: "flipped byte in a partition", no: 3, parts: 2, ents: func() []ent { return verifyEnts(t, controlWith(t, 1)) },
			damage: func(s storage.Store, sn *catalog.Sentinel) { flip(t, s, sn.Parts[1].Key, -1) },
			want:   []string{"part_002.tar.zst: sha256 of the stored object is"}, noteHas: "coverage was not checked"},
		{name: "missing partition", no: 3, parts: 2, ents: func() []ent { return verifyEnts(t, controlWith(t, 1)) },
			damage: func(s storage.Store, sn *catalog.Sentinel) { s.Delete(ctx, sn.Parts[0].Key) },
			want:   []string{"part_001.tar.zst: partition is missing"}},
		{name: "missing manifest", no: 3, parts: 2, ents: func() []ent { return verifyEnts(t, controlWith(t, 1)) },
			damage: func(s storage.Store, sn *catalog.Sentinel) { s.Delete(ctx, sn.ManifestKey) },
			want:   []string{"manifest.json.zst: ", "is missing"}},
		{name: "file not in the manifest", no: 3, parts: 2,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				return append(e, ent{path: "extra", body: []byte("x"), noManifest: true})
			},
			want: []string{"part_001.tar.zst: extra: in the tar but not in the manifest"}},
		{name: "manifest entry not stored", no: 3, parts: 2,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				return append(e, ent{path: "base/1/3000", body: []byte("x"), noTar: true})
			},
			want: []string{"manifest.json.zst: base/1/3000: in the manifest but in none of the partitions"}},
		{name: "file content differs from the manifest", no: 3, parts: 2,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				return append(e, ent{path: "postgresql.conf", body: []byte("abc"), final: []byte("abd")})
			},
			want: []string{"postgresql.conf: sha256"}},
		{name: "file size differs from the manifest", no: 3, parts: 2,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				return append(e, ent{path: "postgresql.conf", body: []byte("abc"), final: []byte("abcd")})
			},
			want: []string{"postgresql.conf: 3 bytes in the tar, the manifest says 4"}},
		{name: "kind differs from the manifest", no: 3, parts: 2,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				return append(e, ent{path: "pg_wal/link2", typ: tar.TypeSymlink, link: "a", noManifest: true},
					ent{path: "pg_wal/link2", body: []byte("x"), noTar: true})
			},
			want: []string{"pg_wal/link2: a symlink in the tar, a file in the manifest"}},
		{name: "symlink target differs from the manifest", no: 3, parts: 2,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				return append(e, ent{path: "pg_wal/link2", typ: tar.TypeSymlink, link: "a", noManifest: true},
					ent{path: "pg_wal/link2", typ: tar.TypeSymlink, link: "b", noTar: true})
			},
			want: []string{`pg_wal/link2: symlink to "a" in the tar, to "b" in the manifest`}},
		{name: "page checksum mismatch", no: 3, parts: 2, pages: true,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				e[2].body = badPage()
				return e
			},
			want:  []string{"part_001.tar.zst: base/1/2615: block 0: page checksum 0x34BE, computed"},
			stats: &PageStats{Checksums: "on", ChecksumsFrom: "pg_control", Checked: 2, New: 5, Mismatches: 1}},
		{name: "page checksum mismatch without --pages", no: 3, parts: 2,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				e[2].body = badPage()
				return e
			}},
		{name: "torn page after the start is no error", no: 3, parts: 2, pages: true,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 1))
				e[2].body = tornPage()
				return e
			},
			stats: &PageStats{Checksums: "on", ChecksumsFrom: "pg_control", Checked: 1, New: 5, AfterStart: 1}},
		{name: "pages written after the start are skipped", no: 1, parts: 2, pages: true,
			ents:  func() []ent { return verifyEnts(t, controlWith(t, 1)) },
			stats: &PageStats{Checksums: "on", ChecksumsFrom: "pg_control", Checked: 0, New: 5, AfterStart: 2}},
		{name: "checksums off", no: 3, parts: 2, pages: true,
			ents: func() []ent {
				e := verifyEnts(t, controlWith(t, 0))
				e[2].body = badPage()
				return e
			},
			stats: &PageStats{Checksums: "off", ChecksumsFrom: "pg_control", New: 5}, noteHas: "no data checksums"},
		{name: "no pg_control: judged from the pages", no: 3, parts: 2, pages: true,
			ents: func() []ent {
				e := verifyEnts(t, nil)
				e[2].body = badPage()
				return append(e, ent{path: "base/1/2616", body: vector(t, vecNamespace)}) // pg_namespace's block 0 again: matches
			},
			want:    []string{"base/1/2615: block 0: page checksum"},
			stats:   &PageStats{Checksums: "on", ChecksumsFrom: "pages", Checked: 3, New: 5, Mismatches: 1},
			noteHas: "judged from the pages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			sn := putBackup(t, s, spec{no: tt.no, parts: tt.parts, ents: tt.ents()})
			if tt.damage != nil {
				tt.damage(s, sn)
			}
			rep, err := VerifyBackup(ctx, s, sn, vopts(tt.pages))
			if err != nil {
				t.Fatal(err)
			}
			got := problems(rep)
			t.Logf("problems:\n%s\nnotes: %q", got, rep.Notes)
			if rep.OK != (len(tt.want) == 0) {
				t.Errorf("ok %v, problems:\n%s", rep.OK, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems lack %q:\n%s", w, got)
				}
			}
			if tt.stats != nil && (rep.Pages == nil || *rep.Pages != *tt.stats) {
				t.Errorf("page stats %+v, want %+v", rep.Pages, tt.stats)
			}
			if !tt.pages && rep.Pages != nil {
				t.Errorf("page stats without Pages: %+v", rep.Pages)
			}
			if tt.noteHas != "" && !strings.Contains(strings.Join(rep.Notes, "\n"), tt.noteHas) {
				t.Errorf("notes %q lack %q", rep.Notes, tt.noteHas)
			}
		})
	}
}

func TestVerifyBackupDelta(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	ns, proc := vector(t, vecNamespace), vector(t, vecProc5)
	procFile := append(make([]byte, 5*pgdata.PageSize), proc...)
	full := putBackup(t, s, spec{no: 3, ents: []ent{
		{path: "base/", typ: tar.TypeDir}, {path: "base/1/", typ: tar.TypeDir},
		{path: "base/1/2615", body: ns}, {path: "base/1/1255", body: procFile},
		{path: "global/", typ: tar.TypeDir}, {path: "global/pg_control", body: controlWith(t, 1)},
	}})
	deltaEnts := func(pagesBody []byte) []ent {
		return []ent{
			{path: "base/", typ: tar.TypeDir}, {path: "base/1/", typ: tar.TypeDir},
			{path: "base/1/2615", delta: "unchanged", noTar: true, body: ns},
			{path: "base/1/1255", delta: "pages", pages: []uint32{5}, body: pagesBody, final: procFile, noSHA: true},
			{path: "global/", typ: tar.TypeDir}, {path: "global/pg_control", body: controlWith(t, 1)},
		}
	}
	opts := VerifyOptions{Pages: true, Codec: codec.New(nil, nil, nil)}

	delta := putBackup(t, s, spec{no: 5, parent: full, ents: deltaEnts(proc)})
	rep, err := VerifyBackup(ctx, s, delta, opts)
	if err != nil || !rep.OK || rep.Pages.Checked != 1 {
		t.Fatalf("good delta: %v, %+v\n%s", err, rep, problems(rep))
	}
	// The stored page is checked as block 5, not as the tar's first page.
	moved := bytes.Clone(proc)
	binary.LittleEndian.PutUint16(moved[8:], pgdata.PageChecksum(proc, 0))
	bad := putBackup(t, s, spec{no: 6, parent: full, ents: deltaEnts(moved)})
	rep, err = VerifyBackup(ctx, s, bad, opts)
	if err != nil || rep.OK || !strings.Contains(problems(rep), "base/1/1255: block 5: page checksum") {
		t.Fatalf("page checked with the wrong block number: %v\n%s", err, problems(rep))
	}
	// A page delta whose size does not match its page list.
	short := putBackup(t, s, spec{no: 7, parent: full, ents: deltaEnts(proc[:100])})
	rep, err = VerifyBackup(ctx, s, short, opts)
	if err != nil || rep.OK || !strings.Contains(problems(rep), "page delta of 100 bytes in the tar, the manifest lists 1 pages") {
		t.Fatalf("short page delta: %v\n%s", err, problems(rep))
	}
	// A missing parent.
	if err := s.Delete(ctx, catalog.SentinelKey(full.Name)); err != nil {
		t.Fatal(err)
	}
	rep, err = VerifyBackup(ctx, s, delta, opts)
	if err != nil || rep.OK || !strings.Contains(problems(rep), "delta parent "+full.Name) {
		t.Fatalf("missing parent: %v\n%s", err, problems(rep))
	}
}

// failingGet fails every Get of a partition as an unreachable store would.
type failingGet struct{ storage.Store }

func (f failingGet) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if strings.Contains(key, "/part_") {
		return nil, storage.ErrUnreachable
	}
	return f.Store.Get(ctx, key)
}

func TestVerifyBackupStoreFailure(t *testing.T) {
	s := newStore(t)
	sn := putBackup(t, s, spec{no: 3, parts: 2, ents: verifyEnts(t, controlWith(t, 1))})
	_, err := VerifyBackup(context.Background(), failingGet{s}, sn, VerifyOptions{})
	if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), sn.Parts[0].Key) {
		t.Fatalf("got %v; want ErrUnreachable naming the partition", err)
	}
}
