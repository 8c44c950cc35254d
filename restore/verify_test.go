package restore

import (
	"archive/tar"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
)

// Real pages and pg_control of a Postgres 15 cluster made by `initdb -k`,
// zlib-compressed: each page carries the checksum Postgres computed in
// pd_checksum, so it is its own test vector.
const (
	// base/1/2615 (pg_namespace), block 0: pd_checksum 0x34BE, LSN 0/1683D10.
	vecNamespace = "eNrt2cFqwjAcBvAvXUqnXjyWiuCOw6NeBd/Dg8QytWCtzHr3LfSi7kmGj+QjmGiCTBS0jO3y/SDkT1qSL/9rAKDaGYvvtkQbhzoa" +
		"sqGXICHwtdvD13N1F4nlNhKBrg+bSICIiIiIiIiIiIiIiIiI6A9UvPPsHikDyKX3HmLVApLpMPtMVZ5k0/48Hn+k6rm9y3r03MYl" +
		"CXj2oLIdeLn8aBOYPC6TzdN988Pgt/L4V/f17X3Xr8BsMZgk8QP9af5ff27mb97P/4xaeCeP+WCGy3Oqf+ZxpM1T0fVs1I9VribZ" +
		"qFieIv25fmz3zMt8KQzic548U/O8aH/MMUcMMjf3"
	// base/1/1255 (pg_proc), block 5: pd_checksum 0xCA71, LSN 0/15213A0.
	vecProc5 = "eNrN11lvElEUB/B7aatdLRYp3Wjp3uqb6UPffOWR+GZ8qLRMCckwFLgSTXhwF3fUuq8fhL43PvWTuO9L6hk6m//kElMlc0lOMoe5" +
		"E35zcjgzlzHGXoaO8vyrVlZjCc5irTH6isVfpHjleZlvPivxdor40xKvPCnxzceUU8QflXnlIeUPKKeI36fz9yhfp3y9zON3y7x6" +
		"J8W3bhd4kCJRLfHqrRLfuil4kCJxg/LrlF+jnCJxtcCrVwp8q0LrKRKXKb9E+UXKKRIXKD9P+TnKKRJnBWcKfv5EtbF5NspaOmLb" +
		"272B+jeHaMGqnkuKhUUtv8vf6KLopOiuZ2eOeM+tMs5ZpsjMXwuaZz2mIYqAdVyjgw2KMGDQPwf+g7Z/Ma0xH/0blj8EGPTPgn/e" +
		"9QuV/ELinwH/nOPXVaq/Lqv/NPhnXb9K9ddl9Z8C/4zjN1SqvyGr/yT4px3/rsdPM/wOBv0T4J9y5qe/88ecnzXHvyCdP+Pgn3T9" +
		"QiW/rP9j4J9w/LpK9ZfOnzHwj7t+leovnT+j4I85fkOl+kvnTxT8Y47f3/kDfun8GQH/qDM/F7KZpviZ4zfnY6P5WXPe31wM+ofB" +
		"H3X9a7pCfhuD/iHwj7j+VKbkvz8CGPQPgn/Y0z8ndXX8Ngb9A+AfcvcvvvY/7l9k/R8B/6Dr97X/0S/r/37wD7h+X/vf9kcAg/4w" +
		"+COe/vGz/9Ev6/8D4O+nBRlDaIUlfZk1uX8aPb8EHRw3n1+AQX8I/GHHX9T99B8L7NxDCDDo7wN/Hy0QmayWW00lTzfLXyruzAqK" +
		"E+C3P2FAoHs/uDtpgZHMais5YyUpcplUE+sealD3kJVHAYP+IPh/USwLoZ0S9Quza018b4s08A9a9xAFDPp7wf/T/M+YF2jmJf69" +
		"d9r+CGDQvw/8Pyx/Wijk92DQ3wP+77Zfpfqn5fXvBv83y6+r5Nfl/i7wf7X9KvWPLu+fTvB/sfxaXiG/B4P+DvB/rs9Pc7l5oX/z" +
		"M2TdQxQw6G8H/ye28/wy6pf4V3/bHwEM+veC/6PlTwuF/B4M+veA/4PtV6n+aXn928D/3vLrKvl1ub8V/O9sv0r9o8v7pwX8by2/" +
		"llfI78GgPwD+NxR6xtCWUpmiSBor2n/3/92+UVj7lihg0M/B/5rV912H2T98/sZvOsIUa+Dnnn1vzyq981uS3+sLjFY="
	// global/pg_control, its first 296 bytes (the rest is zeros).
	vecControl = "eNoLq1lZnFTCmi3CysCgWs7Lw8gAASAxEP1DpIQRmWZEwiBwhQlCs5gixM4wYaqDmYcOXjAzEA1gZqUAMQcQc0H5DlCaA0q3XzNy" +
		"ZFAAsYAOUYBoBakBMc+wQxTC3DbRpvGZezd/asuZ853RNRdmfdryO1Aq47rQ1Pc5nkGb+XsWNZy9CTIAABdGI9E="
)

func vector(t *testing.T, s string) []byte {
	t.Helper()
	z, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	r, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPageChecksum(t *testing.T) {
	tests := []struct {
		name string
		page []byte
		blk  uint32
		want uint16
	}{
		{"pg_namespace block 0", vector(t, vecNamespace), 0, 0x34BE},
		{"pg_proc block 5", vector(t, vecProc5), 5, 0xCA71},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.page) != pageSize {
				t.Fatalf("vector is %d bytes", len(tt.page))
			}
			if got := binary.LittleEndian.Uint16(tt.page[8:]); got != tt.want {
				t.Fatalf("vector's pd_checksum is %#x, want %#x", got, tt.want)
			}
			if got := pageChecksum(tt.page, tt.blk); got != tt.want {
				t.Errorf("pageChecksum = %#x, want %#x", got, tt.want)
			}
			// pd_checksum itself is not part of the sum.
			p := bytes.Clone(tt.page)
			binary.LittleEndian.PutUint16(p[8:], 0xFFFF)
			if got := pageChecksum(p, tt.blk); got != tt.want {
				t.Errorf("pd_checksum changed the sum: %#x", got)
			}
			// The block number is mixed in: a moved page does not match.
			if got := pageChecksum(tt.page, tt.blk+1); got == tt.want {
				t.Errorf("block %d has the same checksum", tt.blk+1)
			}
			// A flipped bit anywhere is caught.
			for _, off := range []int{0, 10, 100, 4096, pageSize - 1} {
				p := bytes.Clone(tt.page)
				p[off] ^= 0x01
				if got := pageChecksum(p, tt.blk); got == tt.want {
					t.Errorf("bit flipped at %d not caught", off)
				}
			}
		})
	}
}

// controlWith is the real pg_control with data_checksum_version set to v
// and its CRC recomputed.
func controlWith(t *testing.T, v uint32) []byte {
	b := make([]byte, pageSize)
	copy(b, vector(t, vecControl))
	binary.LittleEndian.PutUint32(b[ctlChecksumVerOff:], v)
	binary.LittleEndian.PutUint32(b[ctlCRCOff:], crc32.Checksum(b[:ctlCRCOff], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func TestParseControl(t *testing.T) {
	real := vector(t, vecControl)
	ci, err := parseControl(real)
	if err != nil || ci != (controlInfo{version: 1300, blockSize: 8192, relSegSize: 131072, checksumVersion: 1}) {
		t.Fatalf("real pg_control: %+v, %v", ci, err)
	}
	if ci, err := parseControl(controlWith(t, 0)); err != nil || ci.checksumVersion != 0 {
		t.Errorf("checksums off: %+v, %v", ci, err)
	}
	bad := bytes.Clone(real)
	bad[ctlChecksumVerOff] = 0 // without fixing the CRC
	if _, err := parseControl(bad); err == nil {
		t.Error("a damaged pg_control was accepted")
	}
	if _, err := parseControl(real[:100]); err == nil {
		t.Error("a short pg_control was accepted")
	}
	if _, err := parseControl(nil); err == nil {
		t.Error("no pg_control was accepted")
	}
	// Another layout whose CRC happens to sit at the same place but whose
	// sizes make no sense is refused.
	odd := controlWith(t, 1)
	binary.LittleEndian.PutUint32(odd[ctlBlockSizeOff:], 12345)
	binary.LittleEndian.PutUint32(odd[ctlCRCOff:], crc32.Checksum(odd[:ctlCRCOff], crc32.MakeTable(crc32.Castagnoli)))
	if _, err := parseControl(odd); err == nil {
		t.Error("an implausible pg_control was accepted")
	}
}

func TestRelationSegment(t *testing.T) {
	tests := []struct {
		name  string
		segno uint32
		ok    bool
	}{
		{"base/1/1255", 0, true},
		{"base/16384/16385.2", 2, true},
		{"base/16384/16385_fsm", 0, true},
		{"base/16384/16385_vm.1", 1, true},
		{"base/16384/16385_init", 0, true},
		{"global/1262", 0, true},
		{"pg_tblspc/16400/PG_15_202209061/16384/16401", 0, true},
		{"global/pg_control", 0, false},
		{"global/pg_filenode.map", 0, false},
		{"base/1/PG_VERSION", 0, false},
		{"base/1/t3_16390", 0, false},
		{"pg_xact/0000", 0, false},
		{"1255", 0, false},
	}
	for _, tt := range tests {
		segno, ok := relationSegment(tt.name)
		if segno != tt.segno || ok != tt.ok {
			t.Errorf("relationSegment(%q) = %d, %v; want %d, %v", tt.name, segno, ok, tt.segno, tt.ok)
		}
	}
}

// verifyEnts is a small data directory with real pages.
func verifyEnts(t *testing.T, control []byte) []ent {
	ns, proc := vector(t, vecNamespace), vector(t, vecProc5)
	// pg_proc's block 5 at block 5 of a file, blocks 0-4 new (zero) pages.
	procFile := append(make([]byte, 5*pageSize), proc...)
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
	procFile := append(make([]byte, 5*pageSize), proc...)
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
	binary.LittleEndian.PutUint16(moved[8:], pageChecksum(proc, 0))
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
