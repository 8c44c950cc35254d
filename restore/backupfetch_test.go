package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

const testSegSize = 16 << 20

var baseTime = time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)

// ent is one entry of a hand-built backup: in its tar, its manifest or both.
type ent struct {
	path       string
	typ        byte   // tar type; 0 means tar.TypeReg
	body       []byte // tar content
	final      []byte // restored content, for the manifest's size and sha256 (default body)
	mode       fs.FileMode
	mtime      time.Time
	link       string
	delta      string
	pages      []uint32
	part       int // 0-based partition
	noTar      bool
	noManifest bool
	noSHA      bool // leave the manifest's sha256 empty, as backup-push does for deltas
}

// spec describes a hand-built backup.
type spec struct {
	no        uint64 // start segment number: names the backup, sets its LSNs
	segSize   int64  // testSegSize if 0
	tli       uint32 // timeline (default 1)
	parent    *catalog.Sentinel
	finish    time.Time
	nextXID   uint64
	parts     int
	comp      codec.Compression
	systemID  string
	pgVersion int
	tsMap     string
	spaces    []catalog.Tablespace
	ents      []ent
}

func encode(t *testing.T, c codec.Compression, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := c.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// putBackup stores a backup built by hand: tar partitions, manifest and
// sentinel, all through the catalog's keys.
func putBackup(t *testing.T, s storage.Store, sp spec) *catalog.Sentinel {
	t.Helper()
	ctx := context.Background()
	segSize := int64(testSegSize)
	if sp.segSize != 0 {
		segSize = sp.segSize
	}
	if sp.tli == 0 {
		sp.tli = 1
	}
	seg := wal.SegmentFromNo(sp.tli, sp.no, segSize)
	parent := ""
	if sp.parent != nil {
		parent = sp.parent.Name
	}
	name := catalog.BackupName(seg, parent)
	comp := sp.comp
	if comp == nil {
		comp = codec.Zstd{}
	}
	if sp.finish.IsZero() {
		sp.finish = baseTime.Add(time.Duration(sp.no) * time.Hour)
	}
	nparts := max(1, sp.parts)
	bufs := make([]bytes.Buffer, nparts)
	tws := make([]*tar.Writer, nparts)
	for i := range tws {
		tws[i] = tar.NewWriter(&bufs[i])
	}
	var files []catalog.ManifestFile
	for _, e := range sp.ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = map[byte]fs.FileMode{tar.TypeDir: 0o700, tar.TypeSymlink: 0o777}[typ]
			if mode == 0 {
				mode = 0o600
			}
		}
		mtime := e.mtime
		if mtime.IsZero() {
			mtime = baseTime
		}
		if !e.noTar {
			hdr := &tar.Header{Name: e.path, Typeflag: typ, Mode: int64(mode.Perm()), ModTime: mtime, Linkname: e.link, Format: tar.FormatPAX}
			if typ == tar.TypeReg {
				hdr.Size = int64(len(e.body))
			}
			if err := tws[e.part].WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			if _, err := tws[e.part].Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
		if e.noManifest {
			continue
		}
		fm := catalog.ManifestFile{Path: strings.TrimSuffix(e.path, "/"), ModTime: mtime, Link: e.link, Delta: e.delta, Pages: e.pages}
		switch typ {
		case tar.TypeDir:
			fm.Mode = uint32(mode | fs.ModeDir)
		case tar.TypeSymlink:
			fm.Mode = uint32(mode | fs.ModeSymlink)
		default:
			fm.Mode = uint32(mode)
			content := e.body
			if e.final != nil {
				content = e.final
			}
			fm.Size = int64(len(content))
			if !e.noSHA {
				fm.SHA256 = sum(content)
			}
		}
		files = append(files, fm)
	}
	sn := &catalog.Sentinel{
		Format:         catalog.SentinelFormat,
		Name:           name,
		StartLSN:       seg.StartLSN(segSize) + 0x28,
		FinishLSN:      seg.StartLSN(segSize) + 0x100,
		Timeline:       sp.tli,
		StartTime:      sp.finish.Add(-time.Minute),
		FinishTime:     sp.finish,
		PGVersion:      160004,
		SystemID:       "7441234567890123456",
		SegmentSize:    segSize,
		NextXID:        sp.nextXID,
		Hostname:       "db1",
		DataDir:        "/var/lib/postgresql/16/main",
		Compression:    comp.Name(),
		BackupLabel:    "START WAL LOCATION: " + seg.StartLSN(segSize).String() + " (file " + seg.Name() + ")\nLABEL: " + name + "\n",
		TablespaceMap:  sp.tsMap,
		Tablespaces:    sp.spaces,
		DeltaParent:    parent,
		WalgoVersion:   "test",
		ManifestKey:    catalog.ManifestKey(name, comp),
		ManifestSHA256: "",
	}
	if sp.systemID != "" {
		sn.SystemID = sp.systemID
	}
	if sp.pgVersion != 0 {
		sn.PGVersion = sp.pgVersion
	}
	for i, tw := range tws {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		stored := encode(t, comp, bufs[i].Bytes())
		key := catalog.PartKey(name, i+1, comp)
		if err := s.Put(ctx, key, bytes.NewReader(stored)); err != nil {
			t.Fatal(err)
		}
		sn.Parts = append(sn.Parts, catalog.Part{Key: key, Size: int64(len(stored)), SHA256: sum(stored)})
		sn.CompressedSize += int64(len(stored))
		sn.UncompressedSize += int64(bufs[i].Len())
	}
	mj, err := json.Marshal(catalog.Manifest{Format: catalog.ManifestFormat, Backup: name, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	stored := encode(t, comp, mj)
	if err := s.Put(ctx, sn.ManifestKey, bytes.NewReader(stored)); err != nil {
		t.Fatal(err)
	}
	sn.ManifestSHA256 = sum(stored)
	sn.FileCount = len(files)
	if err := catalog.WriteSentinel(ctx, s, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// archiveWAL stores what w wrote as archived segments (zstd).
func archiveWAL(t *testing.T, s storage.Store, w *waltest.Writer) {
	t.Helper()
	segs, data := w.Segments()
	for i, seg := range segs {
		put(t, s, catalog.WALKey(seg.Name(), codec.Zstd{}), encode(t, codec.Zstd{}, data[i]))
	}
}

func newStore(t *testing.T) *file.Store {
	t.Helper()
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func opts(dir string) BackupFetchOptions {
	return BackupFetchOptions{
		Dir:            dir,
		Name:           Latest,
		Concurrency:    3,
		RestoreCommand: "/usr/local/bin/walgo --storage file:///repo wal-fetch %f %p",
	}
}

// tree lists everything under dir, relative, sorted.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBackupFetchFull(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	mt := func(h int) time.Time { return baseTime.Add(-time.Duration(h) * time.Hour) }
	big := randBytes(1, 3<<20+123)
	rel := randBytes(2, 3*pgdata.PageSize)
	control := randBytes(3, pgdata.PageSize)
	ents := []ent{
		{path: "base/", typ: tar.TypeDir, mode: 0o700, mtime: mt(1)},
		{path: "base/1/", typ: tar.TypeDir, mode: 0o700, mtime: mt(2)},
		{path: "base/1/1259", body: rel, mtime: mt(3)},
		{path: "base/1/16384", body: big, mtime: mt(4), part: 1},
		{path: "global/", typ: tar.TypeDir, mtime: mt(5), part: 2},
		{path: "global/pg_control", body: control, mtime: mt(6), part: 2},
		{path: "PG_VERSION", body: []byte("16\n"), mtime: mt(7), part: 1},
		{path: "postgresql.conf", body: []byte("shared_buffers = 128MB\n"), mode: 0o640, mtime: mt(8)},
		{path: "readonly", body: []byte("r"), mode: 0o400, mtime: mt(9), part: 2},
		{path: "empty.file", body: []byte{}, mtime: mt(10)},
		{path: "pg_stat/", typ: tar.TypeDir, mode: 0o750, mtime: mt(11), part: 1},
		{path: "pg_tblspc/", typ: tar.TypeDir, mtime: mt(12)},
		{path: "pg_wal_elsewhere", typ: tar.TypeSymlink, link: "/mnt/wal/somewhere", part: 2},
		{path: "rel_link", typ: tar.TypeSymlink, link: "base/1"},
		{path: "manifest_only_link", typ: tar.TypeSymlink, link: "../nowhere", noTar: true},
		{path: "manifest_only_dir", typ: tar.TypeDir, mode: 0o700, mtime: mt(13), noTar: true},
		{path: "notinmanifest/", typ: tar.TypeDir, noManifest: true}, // pruned
	}
	sn := putBackup(t, s, spec{no: 2, parts: 3, ents: ents})
	dir := filepath.Join(t.TempDir(), "data") // created by the restore
	o := opts(dir)
	o.Log = zaptest.NewLogger(t)
	var mu sync.Mutex
	var lastDone, lastTotal, calls int64
	o.Progress = func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if done < lastDone || done > total {
			t.Errorf("progress %d of %d after %d", done, total, lastDone)
		}
		lastDone, lastTotal = done, total
		calls++
	}
	res, err := BackupFetch(ctx, s, o)
	if err != nil {
		t.Fatal(err)
	}
	var stored int64
	for _, p := range sn.Parts {
		stored += p.Size
	}
	if calls == 0 || lastDone != res.Downloaded || lastTotal != stored || lastDone != stored {
		t.Errorf("progress: %d calls, last %d of %d; downloaded %d, stored %d", calls, lastDone, lastTotal, res.Downloaded, stored)
	}
	if res.Backup != sn.Name || len(res.Chain) != 1 || res.Files != 7 || res.Downloaded == 0 || res.Written < int64(len(big)) {
		t.Errorf("result %+v", res)
	}
	for _, e := range ents {
		p := filepath.Join(dir, strings.TrimSuffix(e.path, "/"))
		fi, err := os.Lstat(p)
		if e.noManifest {
			if err == nil {
				t.Errorf("%s: not in the manifest, yet restored", e.path)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", e.path, err)
			continue
		}
		switch e.typ {
		case tar.TypeSymlink:
			if got, _ := os.Readlink(p); got != e.link {
				t.Errorf("%s -> %q, want %q", e.path, got, e.link)
			}
			continue
		case tar.TypeDir:
			if !fi.IsDir() {
				t.Errorf("%s: not a folder", e.path)
			}
		default:
			if got := readFile(t, p); !bytes.Equal(got, e.body) {
				t.Errorf("%s: content differs (%d bytes, want %d)", e.path, len(got), len(e.body))
			}
		}
		want := e.mode
		if want == 0 {
			want = map[bool]fs.FileMode{true: 0o700, false: 0o600}[e.typ == tar.TypeDir]
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", e.path, fi.Mode().Perm(), want)
		}
		if !e.mtime.IsZero() && !fi.ModTime().Equal(e.mtime) {
			t.Errorf("%s: mtime %v, want %v", e.path, fi.ModTime(), e.mtime)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode: %v %v", fi.Mode(), err)
	}
	for _, d := range pgdata.RestoreDirs(150000) {
		if fi, err := os.Lstat(filepath.Join(dir, d)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, fi, err)
		}
	}
	if got := string(readFile(t, filepath.Join(dir, "backup_label"))); got != sn.BackupLabel {
		t.Errorf("backup_label %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "tablespace_map")); err == nil {
		t.Error("tablespace_map written for a backup without tablespaces")
	}
	if _, err := os.Stat(filepath.Join(dir, "recovery.signal")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "standby.signal")); err == nil {
		t.Error("standby.signal without Standby")
	}
	if _, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(controlTmp))); err == nil {
		t.Error("pg_control temp name left behind")
	}
	conf := string(readFile(t, filepath.Join(dir, "postgresql.auto.conf")))
	if !strings.Contains(conf, "\nrestore_command = '/usr/local/bin/walgo --storage file:///repo wal-fetch %f %p'\n") ||
		!strings.Contains(conf, "\nrecovery_target_timeline = '1'\n") || strings.Contains(conf, "recovery_target_action") {
		t.Errorf("postgresql.auto.conf:\n%s", conf)
	}
}

func TestBackupFetchCodecs(t *testing.T) {
	for _, c := range []codec.Compression{codec.Zstd{}, codec.LZ4{}, codec.Gzip{}, codec.None{}} {
		s := newStore(t)
		body := randBytes(9, 100_000)
		putBackup(t, s, spec{no: 2, comp: c, ents: []ent{{path: "f", body: body}}})
		dir := t.TempDir()
		if _, err := BackupFetch(context.Background(), s, opts(dir)); err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		if !bytes.Equal(readFile(t, filepath.Join(dir, "f")), body) {
			t.Errorf("%s: content differs", c.Name())
		}
	}
}

func pages(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestBackupFetchDeltaChain(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := func(seed uint64) []byte { return randBytes(seed, pgdata.PageSize) }
	a0, a1, a1b, a2 := p(10), p(11), p(12), p(13)
	b0, b1, b0b := p(20), p(21), p(22)
	ctl1, ctl2, ctl3 := p(30), p(31), p(32)
	e1 := []byte("new in the first delta")

	full := putBackup(t, s, spec{no: 2, parts: 2, ents: []ent{
		{path: "base/", typ: tar.TypeDir},
		{path: "base/a", body: pages(a0, a1)},
		{path: "base/b", body: pages(b0, b1), part: 1},
		{path: "base/c", body: []byte("dropped later")},
		{path: "d", body: []byte("d v1"), part: 1},
		{path: "olddir/", typ: tar.TypeDir},
		{path: "olddir/x", body: []byte("x")},
		{path: "oldlink", typ: tar.TypeSymlink, link: "base"},
		{path: "global/", typ: tar.TypeDir},
		{path: "global/pg_control", body: ctl1},
	}})
	mid := putBackup(t, s, spec{no: 4, parent: full, parts: 2, ents: []ent{
		{path: "base/", typ: tar.TypeDir},
		// page 1 changed, page 2 appended
		{path: "base/a", body: pages(a1b, a2), final: pages(a0, a1b, a2), delta: "pages", pages: []uint32{1, 2}, noSHA: true},
		{path: "base/b", final: pages(b0, b1), delta: "unchanged", noTar: true},
		{path: "d", final: []byte("d v1"), delta: "unchanged", noTar: true},
		{path: "e", body: e1, part: 1},
		{path: "global/", typ: tar.TypeDir},
		{path: "global/pg_control", body: ctl2, part: 1},
	}})
	last := putBackup(t, s, spec{no: 6, parent: mid, ents: []ent{
		{path: "base/", typ: tar.TypeDir},
		{path: "base/a", final: pages(a0, a1b, a2), delta: "unchanged", noTar: true, noSHA: true},
		// shrunk to one page, and that page changed
		{path: "base/b", body: b0b, final: b0b, delta: "pages", pages: []uint32{0}, noSHA: true},
		{path: "d", body: []byte("d v3")},
		{path: "e", final: e1, delta: "unchanged", noTar: true},
		{path: "global/", typ: tar.TypeDir},
		{path: "global/pg_control", body: ctl3, final: ctl3, delta: "pages", pages: []uint32{0}},
	}})

	dir := t.TempDir()
	res, err := BackupFetch(ctx, s, opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{full.Name, mid.Name, last.Name}; strings.Join(res.Chain, ",") != strings.Join(want, ",") || res.Backup != last.Name {
		t.Errorf("chain %v, want %v", res.Chain, want)
	}
	want := map[string][]byte{
		"base/a":            pages(a0, a1b, a2),
		"base/b":            b0b,
		"d":                 []byte("d v3"),
		"e":                 e1,
		"global/pg_control": ctl3,
	}
	for name, content := range want {
		if got := readFile(t, filepath.Join(dir, name)); !bytes.Equal(got, content) {
			t.Errorf("%s: content differs (%d bytes, want %d)", name, len(got), len(content))
		}
	}
	for _, gone := range []string{"base/c", "olddir", "oldlink"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s was dropped since the full backup but is still there", gone)
		}
	}
	if got := string(readFile(t, filepath.Join(dir, "backup_label"))); got != last.BackupLabel {
		t.Errorf("backup_label is not the last backup's: %q", got)
	}

	t.Run("patched file differs from final manifest", func(t *testing.T) {
		s := newStore(t)
		full := putBackup(t, s, spec{no: 2, ents: []ent{{path: "a", body: pages(a0, a1)}}})
		putBackup(t, s, spec{no: 4, parent: full, ents: []ent{
			// the final manifest expects a different result than the pages give
			{path: "a", body: a1b, final: pages(a0, a2), delta: "pages", pages: []uint32{1}},
		}})
		dir := t.TempDir()
		_, err := BackupFetch(ctx, s, opts(dir))
		if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "a: sha256") {
			t.Fatalf("want a corrupt error naming the file, got %v", err)
		}
		if got := tree(t, dir); len(got) != 0 {
			t.Errorf("restore folder not emptied: %v", got)
		}
	})
	t.Run("unchanged file the parent lacks", func(t *testing.T) {
		s := newStore(t)
		full := putBackup(t, s, spec{no: 2, ents: []ent{{path: "a", body: []byte("a")}}})
		putBackup(t, s, spec{no: 4, parent: full, ents: []ent{
			{path: "a", final: []byte("a"), delta: "unchanged", noTar: true},
			{path: "z", final: []byte("z"), delta: "unchanged", noTar: true},
		}})
		_, err := BackupFetch(ctx, s, opts(t.TempDir()))
		if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "z from its parent") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestBackupFetchCorrupt(t *testing.T) {
	ctx := context.Background()
	body := randBytes(5, 200_000)
	tests := []struct {
		name    string
		comp    codec.Compression
		damage  func(t *testing.T, s storage.Store, sn *catalog.Sentinel)
		wantKey func(sn *catalog.Sentinel) string // must appear in the error
		wantMsg string
	}{
		{
			name: "flipped byte in a zstd partition",
			comp: codec.Zstd{},
			damage: func(t *testing.T, s storage.Store, sn *catalog.Sentinel) {
				flip(t, s, sn.Parts[1].Key, -1)
			},
			wantKey: func(sn *catalog.Sentinel) string { return sn.Parts[1].Key },
		},
		{
			name: "flipped byte in file data, uncompressed",
			comp: codec.None{},
			damage: func(t *testing.T, s storage.Store, sn *catalog.Sentinel) {
				flip(t, s, sn.Parts[1].Key, 100_000)
			},
			wantKey: func(sn *catalog.Sentinel) string { return sn.Parts[1].Key },
			wantMsg: "big in ",
		},
		{
			name: "partition sha256 differs from the sentinel",
			comp: codec.Zstd{},
			damage: func(t *testing.T, s storage.Store, sn *catalog.Sentinel) {
				sn.Parts[0].SHA256 = strings.Repeat("0", 64)
				if err := catalog.WriteSentinel(ctx, s, sn); err != nil {
					t.Fatal(err)
				}
			},
			wantKey: func(sn *catalog.Sentinel) string { return sn.Parts[0].Key },
			wantMsg: "sha256 of the stored object",
		},
		{
			name: "truncated partition",
			comp: codec.LZ4{},
			damage: func(t *testing.T, s storage.Store, sn *catalog.Sentinel) {
				b := get(t, s, sn.Parts[1].Key)
				put(t, s, sn.Parts[1].Key, b[:len(b)/2])
			},
			wantKey: func(sn *catalog.Sentinel) string { return sn.Parts[1].Key },
		},
		{
			name: "missing partition",
			comp: codec.Zstd{},
			damage: func(t *testing.T, s storage.Store, sn *catalog.Sentinel) {
				if err := s.Delete(ctx, sn.Parts[1].Key); err != nil {
					t.Fatal(err)
				}
			},
			wantKey: func(sn *catalog.Sentinel) string { return sn.Parts[1].Key },
		},
		{
			name: "flipped byte in the manifest",
			comp: codec.None{},
			damage: func(t *testing.T, s storage.Store, sn *catalog.Sentinel) {
				b := get(t, s, sn.ManifestKey)
				b = bytes.Replace(b, []byte(`"small"`), []byte(`"smalL"`), 1)
				put(t, s, sn.ManifestKey, b)
			},
			wantKey: func(sn *catalog.Sentinel) string { return sn.ManifestKey },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			sn := putBackup(t, s, spec{no: 2, parts: 2, comp: tt.comp, ents: []ent{
				{path: "small", body: []byte("small")},
				{path: "big", body: body, part: 1},
			}})
			tt.damage(t, s, sn)
			for _, existing := range []bool{true, false} {
				dir := filepath.Join(t.TempDir(), "data")
				if existing {
					os.Mkdir(dir, 0o755)
				}
				_, err := BackupFetch(ctx, s, opts(dir))
				if !errors.Is(err, codec.ErrCorrupt) {
					t.Fatalf("want ErrCorrupt, got %v", err)
				}
				t.Log(err)
				if !strings.Contains(err.Error(), tt.wantKey(sn)) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error does not name %s / %q: %v", tt.wantKey(sn), tt.wantMsg, err)
				}
				_, statErr := os.Stat(dir)
				if existing && (statErr != nil || len(tree(t, dir)) != 0) {
					t.Errorf("restore folder not left empty: %v %v", tree(t, dir), statErr)
				}
				if !existing && statErr == nil {
					t.Errorf("restore folder created by the restore is left behind: %v", tree(t, dir))
				}
			}
		})
	}
	t.Run("file content differs from the manifest", func(t *testing.T) {
		s := newStore(t)
		sn := putBackup(t, s, spec{no: 2, ents: []ent{{path: "f", body: []byte("actual"), final: []byte("wanted")}}})
		dir := t.TempDir()
		_, err := BackupFetch(ctx, s, opts(dir))
		// Sizes match ("actual" and "wanted"), so only the sha256 tells them apart.
		if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "f in "+sn.Parts[0].Key+": sha256") {
			t.Fatalf("got %v", err)
		}
		if got := tree(t, dir); len(got) != 0 {
			t.Errorf("restore folder not emptied: %v", got)
		}
	})
}

func get(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func put(t *testing.T, s storage.Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// flip inverts one byte of a stored object: at off, or in the middle if off < 0.
func flip(t *testing.T, s storage.Store, key string, off int) {
	t.Helper()
	b := get(t, s, key)
	if off < 0 {
		off = len(b) / 2
	}
	b[off] ^= 0xff
	put(t, s, key, b)
}

func TestBackupFetchUnsafeEntries(t *testing.T) {
	ctx := context.Background()
	top := t.TempDir()
	outside := filepath.Join(top, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(top, "data")
	relOutside, _ := filepath.Rel(dir, outside) // "../outside"
	tests := []struct {
		name string
		ents []ent
	}{
		{"dot-dot", []ent{{path: "../evil", body: []byte("x"), noManifest: true}}},
		{"inner dot-dot", []ent{{path: "a/../../evil", body: []byte("x"), noManifest: true}}},
		{"absolute", []ent{{path: filepath.Join(outside, "abs"), body: []byte("x"), noManifest: true}}},
		{"absolute folder", []ent{{path: outside + "/sub/", typ: tar.TypeDir, noManifest: true}}},
		{"symlink to an absolute path, then a file below it", []ent{
			{path: "link", typ: tar.TypeSymlink, link: outside},
			{path: "link/file", body: []byte("x")},
		}},
		{"symlink to a relative path outside, then a file below it", []ent{
			{path: "up", typ: tar.TypeSymlink, link: relOutside},
			{path: "up/file", body: []byte("x")},
		}},
		{"symlink inside, then a file below it", []ent{
			{path: "base/", typ: tar.TypeDir},
			{path: "inner", typ: tar.TypeSymlink, link: "base"},
			{path: "inner/file", body: []byte("x")},
		}},
		{"symlink, then a folder below it", []ent{
			{path: "link", typ: tar.TypeSymlink, link: outside},
			{path: "link/sub/", typ: tar.TypeDir},
		}},
		{"symlink, then a symlink below it", []ent{
			{path: "link", typ: tar.TypeSymlink, link: outside},
			{path: "link/l2", typ: tar.TypeSymlink, link: "/etc"},
		}},
		{"hard link", []ent{
			{path: "f", body: []byte("x")},
			{path: "hard", typ: tar.TypeLink, link: "f", noManifest: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			putBackup(t, s, spec{no: 2, ents: tt.ents})
			_, err := BackupFetch(ctx, s, opts(dir))
			if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "refusing tar entry") {
				t.Fatalf("want a refused entry, got %v", err)
			}
			t.Log(err)
			if got := tree(t, outside); len(got) != 0 {
				t.Errorf("written outside the restore folder: %v", got)
			}
			if got := tree(t, top); strings.Join(got, ",") != "outside" {
				t.Errorf("left behind: %v", got)
			}
		})
	}
}

func TestBackupFetchDirChecks(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	putBackup(t, s, spec{no: 2, ents: []ent{{path: "PG_VERSION", body: []byte("16\n")}}})

	t.Run("non-empty refused and untouched", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "keep"), []byte("mine"), 0o644)
		_, err := BackupFetch(ctx, s, opts(dir))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("got %v", err)
		}
		if got := tree(t, dir); strings.Join(got, ",") != "keep" || string(readFile(t, filepath.Join(dir, "keep"))) != "mine" {
			t.Errorf("folder changed: %v", got)
		}
	})
	t.Run("overwrite", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "old/ro"), 0o755)
		os.WriteFile(filepath.Join(dir, "old/ro/f"), []byte("old"), 0o644)
		os.Chmod(filepath.Join(dir, "old/ro"), 0o500)
		o := opts(dir)
		o.Overwrite = true
		if _, err := BackupFetch(ctx, s, o); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(dir, "old")); err == nil {
			t.Error("old contents survived --overwrite")
		}
		if string(readFile(t, filepath.Join(dir, "PG_VERSION"))) != "16\n" {
			t.Error("not restored")
		}
	})
	t.Run("overwrite refuses a running server", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte("123"), 0o600)
		o := opts(dir)
		o.Overwrite = true
		if _, err := BackupFetch(ctx, s, o); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "postmaster.pid") {
			t.Fatalf("got %v", err)
		}
		if got := tree(t, dir); strings.Join(got, ",") != "postmaster.pid" {
			t.Errorf("folder changed: %v", got)
		}
	})
	t.Run("not a folder", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "file")
		os.WriteFile(p, nil, 0o600)
		if _, err := BackupFetch(ctx, s, opts(p)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("unknown backup leaves overwrite folder alone", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "keep"), nil, 0o600)
		o := opts(dir)
		o.Overwrite, o.Name = true, "base_000000010000000000000099"
		if _, err := BackupFetch(ctx, s, o); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("got %v", err)
		}
		if got := tree(t, dir); strings.Join(got, ",") != "keep" {
			t.Errorf("folder changed: %v", got)
		}
	})
	t.Run("cancelled while downloading", func(t *testing.T) {
		dir := t.TempDir()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cs := cancelOnGet{Store: s, cancel: cancel, suffix: ".tar.zst"}
		if _, err := BackupFetch(cctx, cs, opts(dir)); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
		if got := tree(t, dir); len(got) != 0 {
			t.Errorf("left behind: %v", got)
		}
	})
}

// cancelOnGet cancels a context when an object whose key ends in suffix is
// opened.
type cancelOnGet struct {
	storage.Store
	cancel context.CancelFunc
	suffix string
}

func (c cancelOnGet) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := c.Store.Get(ctx, key)
	if strings.HasSuffix(key, c.suffix) {
		c.cancel()
	}
	return rc, err
}

func TestBackupFetchNotFound(t *testing.T) {
	ctx := context.Background()
	t.Run("unknown name", func(t *testing.T) {
		s := newStore(t)
		putBackup(t, s, spec{no: 2, ents: []ent{{path: "f", body: []byte("f")}}})
		for _, name := range []string{"base_000000010000000000000077", "nonsense"} {
			o := opts(t.TempDir())
			o.Name = name
			_, err := BackupFetch(ctx, s, o)
			if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: got %v", name, err)
			}
		}
	})
	t.Run("empty repository", func(t *testing.T) {
		_, err := BackupFetch(ctx, newStore(t), opts(t.TempDir()))
		if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "no backups") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("missing delta parent", func(t *testing.T) {
		s := newStore(t)
		full := putBackup(t, s, spec{no: 2, ents: []ent{{path: "f", body: []byte("f")}}})
		putBackup(t, s, spec{no: 4, parent: full, ents: []ent{{path: "f", final: []byte("f"), delta: "unchanged", noTar: true}}})
		if err := s.Delete(ctx, catalog.SentinelKey(full.Name)); err != nil {
			t.Fatal(err)
		}
		_, err := BackupFetch(ctx, s, opts(t.TempDir()))
		if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), full.Name) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("delta parent of another cluster", func(t *testing.T) {
		s := newStore(t)
		full := putBackup(t, s, spec{no: 2, systemID: "1", ents: []ent{{path: "f", body: []byte("f")}}})
		d := putBackup(t, s, spec{no: 4, parent: full, systemID: "2", ents: []ent{{path: "f", final: []byte("f"), delta: "unchanged", noTar: true}}})
		o := opts(t.TempDir())
		o.Name = d.Name // LATEST is ambiguous with two clusters in the repository
		_, err := BackupFetch(ctx, s, o)
		if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "another cluster") {
			t.Errorf("got %v", err)
		}
	})
}

func TestChooseBackup(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	f := []ent{{path: "f", body: []byte("f")}}
	b1 := putBackup(t, s, spec{no: 2, nextXID: 100, ents: f})
	b2 := putBackup(t, s, spec{no: 4, nextXID: 200, ents: f})
	b3 := putBackup(t, s, spec{no: 6, nextXID: 300, ents: f})
	at := func(tm time.Time) *time.Time { return &tm }
	lsn := func(l wal.LSN) *wal.LSN { return &l }
	xid := func(x uint64) *uint64 { return &x }
	tests := []struct {
		name    string
		backup  string
		target  Target
		want    *catalog.Sentinel
		wantErr error
	}{
		{"latest", Latest, Target{}, b3, nil},
		{"no name, no target", "", Target{}, b3, nil},
		{"by name", b1.Name, Target{}, b1, nil},
		{"time after the last", "", Target{Time: at(b3.FinishTime.Add(time.Second))}, b3, nil},
		{"time between", "", Target{Time: at(b2.FinishTime.Add(time.Minute))}, b2, nil},
		{"time equal to a finish", "", Target{Time: at(b2.FinishTime)}, b1, nil},
		{"time before all", "", Target{Time: at(b1.FinishTime)}, nil, storage.ErrNotFound},
		{"lsn equal to a finish", "", Target{LSN: lsn(b2.FinishLSN)}, b2, nil},
		{"lsn just before a finish", "", Target{LSN: lsn(b2.FinishLSN - 1)}, b1, nil},
		{"lsn before all", "", Target{LSN: lsn(1)}, nil, storage.ErrNotFound},
		{"immediate: the newest", "", Target{Immediate: true}, b3, nil},
		{"immediate by name", b1.Name, Target{Immediate: true}, b1, nil},
		{"xid between", "", Target{XID: xid(250)}, b2, nil},
		{"xid equal", "", Target{XID: xid(200)}, b2, nil},
		{"xid before all", "", Target{XID: xid(99)}, nil, storage.ErrNotFound},
		{"restore point name", "", Target{Name: "before_upgrade"}, b3, nil},
		{"latest ignores the target", Latest, Target{Name: "x"}, b3, nil},
		{"named and before the target", b1.Name, Target{Time: at(b2.FinishTime)}, b1, nil},
		{"named but after the target", b3.Name, Target{Time: at(b2.FinishTime)}, nil, ErrInvalid},
		{"named but after the target lsn", b3.Name, Target{LSN: lsn(b2.FinishLSN)}, nil, ErrInvalid},
		{"named, xid not checked", b3.Name, Target{XID: xid(1)}, b3, nil},
		{"latest but after the target", Latest, Target{Time: at(b2.FinishTime)}, nil, ErrInvalid},
		{"latest before the target", Latest, Target{LSN: lsn(b3.FinishLSN)}, b3, nil},
	}
	x, err := catalog.ReadLineageIndex(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseBackup(ctx, s, x, tt.backup, nil, tt.target)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("want %v, got %v, %v", tt.wantErr, got.sn, err)
				}
				return
			}
			if err != nil || got.sn.Name != tt.want.Name || got.lineage.Timeline != 1 {
				t.Fatalf("want %s on lineage 1, got %v, %v", tt.want.Name, got, err)
			}
		})
	}
}

// putHistory stores a timeline history file, zstd-compressed.
func putHistory(t *testing.T, s storage.Store, tli uint32, body string) {
	t.Helper()
	put(t, s, catalog.WALKey(wal.HistoryName(tli), codec.Zstd{}), encode(t, codec.Zstd{}, []byte(body)))
}

// TestChooseBackupLineages: a primary on timeline 1 and a fork that left
// it at 0/5000100 on timeline 2, in one repository. Every choice stays in
// one history; where the backup and target leave several, the choice is
// refused with both named.
func TestChooseBackupLineages(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	f := []ent{{path: "f", body: []byte("f")}}
	b1 := putBackup(t, s, spec{no: 2, nextXID: 100, ents: f})         // both histories
	b1b := putBackup(t, s, spec{no: 4, nextXID: 200, ents: f})        // both, finished 0/4000100
	b2 := putBackup(t, s, spec{tli: 2, no: 6, nextXID: 300, ents: f}) // the fork's
	b3 := putBackup(t, s, spec{no: 7, nextXID: 400, ents: f})         // the primary's, after the fork
	putHistory(t, s, 2, "1\t0/5000100\tno recovery target specified\n")
	x, err := catalog.ReadLineageIndex(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := func(tm time.Time) *time.Time { return &tm }
	lsn := func(l wal.LSN) *wal.LSN { return &l }
	xid := func(x uint64) *uint64 { return &x }
	tests := []struct {
		name, backup, lineage string
		target                Target
		want                  *catalog.Sentinel
		wantTLI               uint32
		wantErr               string
	}{
		{"latest, none named", Latest, "", Target{}, nil, 0, "lineage 1: timeline 1; 3 backups, newest " + b3.Name},
		{"no name, none named", "", "", Target{}, nil, 0, "lineage 2: timeline 2, from timeline 1 at 0/5000100; 3 backups, newest " + b2.Name},
		{"latest of the primary", Latest, "1", Target{}, b3, 1, ""},
		{"latest of the fork", Latest, "2", Target{}, b2, 2, ""},
		{"the primary's backup after the fork", b3.Name, "", Target{}, b3, 1, ""},
		{"the fork's backup", b2.Name, "", Target{}, b2, 2, ""},
		{"a backup both share", b1.Name, "", Target{}, nil, 0, "restore " + b1.Name},
		{"a shared backup on the fork", b1.Name, "2", Target{}, b1, 2, ""},
		{"the primary's backup on the fork", b3.Name, "2", Target{}, nil, 0, "not on lineage 2"},
		{"unknown lineage", Latest, "9", Target{}, nil, 0, "no timeline 9"},
		{"lsn before the fork", "", "", Target{LSN: lsn(b1b.FinishLSN + 1)}, b1b, 1, ""},
		{"lsn after the fork", "", "", Target{LSN: lsn(0x5000200)}, nil, 0, "restore to LSN 0/5000200"},
		{"lsn after the fork, on the fork", "", "2", Target{LSN: lsn(0x6000200)}, b2, 2, ""},
		{"lsn after the fork, on the primary", "", "1", Target{LSN: lsn(0x6000200)}, b1b, 1, ""},
		{"named, lsn before the fork", b1.Name, "", Target{LSN: lsn(0x3000000)}, b1, 1, ""},
		{"time before a shared backup finished", "", "", Target{Time: at(b1b.FinishTime.Add(-time.Minute))}, b1, 1, ""},
		{"time after the shared backups", "", "", Target{Time: at(b2.FinishTime.Add(time.Minute))}, nil, 0, "lineage 2"},
		{"time after the fork, on the primary", "", "1", Target{Time: at(b2.FinishTime.Add(time.Minute))}, b1b, 1, ""},
		{"xid", "", "", Target{XID: xid(350)}, nil, 0, "lineage 1"},
		{"immediate: the newest, on its own timeline", "", "", Target{Immediate: true}, b3, 1, ""},
		{"immediate, a shared backup", b1.Name, "", Target{Immediate: true}, b1, 1, ""},
		{"immediate on the fork", "", "2", Target{Immediate: true}, b2, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pinned *catalog.Lineage
			var err error
			if tt.lineage != "" {
				var l catalog.Lineage
				l, err = x.Find(tt.lineage)
				pinned = &l
			}
			var got choice
			if err == nil {
				got, err = chooseBackup(ctx, s, x, tt.backup, pinned, tt.target)
			}
			if tt.wantErr != "" {
				if !errors.Is(err, catalog.ErrLineage) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want a lineage error with %q, got %v, %v", tt.wantErr, got.sn, err)
				}
				return
			}
			if err != nil || got.sn.Name != tt.want.Name || got.lineage.Timeline != tt.wantTLI {
				t.Fatalf("want %s on lineage %d, got %+v, %v", tt.want.Name, tt.wantTLI, got, err)
			}
		})
	}

	// The recovery timeline written is the chosen history's.
	dir := t.TempDir()
	o := opts(dir)
	o.Name, o.Lineage = Latest, "1"
	res, err := BackupFetch(ctx, s, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Backup != b3.Name || res.Lineage != "1" || res.Timeline != "1" {
		t.Errorf("restored %+v", res)
	}
	if conf := string(readFile(t, filepath.Join(dir, "postgresql.auto.conf"))); !strings.Contains(conf, "recovery_target_timeline = '1'\n") {
		t.Errorf("postgresql.auto.conf:\n%s", conf)
	}
	o = opts(t.TempDir())
	o.Name = Latest
	if _, err := BackupFetch(ctx, s, o); !errors.Is(err, catalog.ErrLineage) {
		t.Errorf("LATEST with two histories: %v", err)
	}
	// A target timeline names the lineage when none is.
	o = opts(t.TempDir())
	o.Name, o.Target.Timeline = Latest, "2"
	if res, err := BackupFetch(ctx, s, o); err != nil || res.Backup != b2.Name || res.Timeline != "2" {
		t.Errorf("LATEST on target timeline 2: %+v, %v", res, err)
	}
}

// TestBackupFetchChainAcrossHistories: a delta chain whose every link is
// on the child's history restores; one whose parent is of another history
// (the primary's backup after the fork, under a delta of the fork) is
// refused, naming the link.
func TestBackupFetchChainAcrossHistories(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	putHistory(t, s, 2, "1\t0/5000100\tno recovery target specified\n")
	a := []ent{{path: "a", body: []byte("a")}}
	unchanged := []ent{{path: "a", final: []byte("a"), delta: "unchanged", noTar: true}}
	b1 := putBackup(t, s, spec{no: 2, ents: a})
	b3 := putBackup(t, s, spec{no: 7, ents: a})
	good := putBackup(t, s, spec{tli: 2, no: 8, parent: b1, ents: unchanged})
	good2 := putBackup(t, s, spec{tli: 2, no: 9, parent: good, ents: unchanged})
	bad := putBackup(t, s, spec{tli: 2, no: 10, parent: b3, ents: unchanged})
	bad2 := putBackup(t, s, spec{tli: 2, no: 11, parent: bad, ents: unchanged})

	o := opts(t.TempDir())
	o.Name = good2.Name
	if res, err := BackupFetch(ctx, s, o); err != nil || strings.Join(res.Chain, ",") != b1.Name+","+good.Name+","+good2.Name {
		t.Fatalf("chain on one history: %v, %v", res, err)
	}
	for _, b := range []*catalog.Sentinel{bad, bad2} {
		dir := t.TempDir()
		o := opts(dir)
		o.Name = b.Name
		_, err := BackupFetch(ctx, s, o)
		want := "broken at " + bad.Name + " -> " + b3.Name
		if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "another history") {
			t.Errorf("%s: want a corrupt error with %q, got %v", b.Name, want, err)
		}
		if got := tree(t, dir); len(got) != 0 {
			t.Errorf("restore folder not left empty: %v", got)
		}
		rep, err := VerifyBackup(ctx, s, b, VerifyOptions{})
		if err != nil || rep.OK || !strings.Contains(fmt.Sprint(rep.Problems), "another history") {
			t.Errorf("backup-verify %s: %+v, %v", b.Name, rep, err)
		}
	}
}

func TestRecoverySettings(t *testing.T) {
	ctx := context.Background()
	tm := time.Date(2026, 11, 24, 12, 30, 0, 123456789, time.FixedZone("", 2*3600))
	l := wal.LSN(2*testSegSize + 0x300)
	x := uint64(4242)
	autoConf := "# Do not edit this file manually!\n" +
		"work_mem = '4MB'\n" +
		"restore_command = 'old command'\n" +
		"  Recovery_Target_Time='2020-01-01 00:00:00+00'\n" +
		"recovery_target_inclusive off\n" +
		"primary_conninfo = 'host=db0'" // no final newline
	tests := []struct {
		name   string
		opts   func(o *BackupFetchOptions)
		want   []string // lines, in order, after the existing ones
		signal string
	}{
		{
			name: "defaults",
			opts: func(o *BackupFetchOptions) {},
			want: []string{
				"restore_command = '/usr/local/bin/walgo --storage file:///repo wal-fetch %f %p'",
				"recovery_target_timeline = '1'", // the backup's lineage, not 'latest'
			},
			signal: "recovery.signal",
		},
		{
			name: "time target, pause, standby, quoting",
			opts: func(o *BackupFetchOptions) {
				o.Target = Target{Time: &tm, Action: "pause"}
				o.Standby = true
				o.RestoreCommand = `'/opt/wal go/walgo' --config '/etc/it'\''s\.conf' wal-fetch %f %p`
			},
			want: []string{
				`restore_command = '''/opt/wal go/walgo'' --config ''/etc/it''\\''''s\\.conf'' wal-fetch %f %p'`,
				"recovery_target_time = '2026-11-24 10:30:00.123456+00'",
				"recovery_target_action = 'pause'",
				"recovery_target_timeline = '1'", // the backup's lineage, not 'latest'
			},
			signal: "standby.signal",
		},
		{
			name: "lsn target, timeline",
			opts: func(o *BackupFetchOptions) { o.Target = Target{LSN: &l, Timeline: "3"} },
			want: []string{
				"restore_command = '/usr/local/bin/walgo --storage file:///repo wal-fetch %f %p'",
				"recovery_target_lsn = '0/2000300'",
				"recovery_target_action = 'promote'",
				"recovery_target_timeline = '3'",
			},
			signal: "recovery.signal",
		},
		{
			name: "xid target, shutdown",
			opts: func(o *BackupFetchOptions) { o.Target = Target{XID: &x, Action: "shutdown", Timeline: "current"} },
			want: []string{
				"restore_command = '/usr/local/bin/walgo --storage file:///repo wal-fetch %f %p'",
				"recovery_target_xid = '4242'",
				"recovery_target_action = 'shutdown'",
				"recovery_target_timeline = 'current'",
			},
			signal: "recovery.signal",
		},
		{
			name: "immediate, current timeline",
			opts: func(o *BackupFetchOptions) { o.Target = Target{Immediate: true, Timeline: "current"} },
			want: []string{
				"restore_command = '/usr/local/bin/walgo --storage file:///repo wal-fetch %f %p'",
				"recovery_target = 'immediate'",
				"recovery_target_action = 'promote'",
				"recovery_target_timeline = 'current'",
			},
			signal: "recovery.signal",
		},
		{
			name: "restore point with a quote",
			opts: func(o *BackupFetchOptions) { o.Target = Target{Name: "it's here"} },
			want: []string{
				"restore_command = '/usr/local/bin/walgo --storage file:///repo wal-fetch %f %p'",
				"recovery_target_name = 'it''s here'",
				"recovery_target_action = 'promote'",
				"recovery_target_timeline = '1'", // the backup's lineage, not 'latest'
			},
			signal: "recovery.signal",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			putBackup(t, s, spec{no: 2, finish: baseTime, ents: []ent{
				{path: "postgresql.auto.conf", body: []byte(autoConf)},
				// a backup of a standby may hold its signal file
				{path: "standby.signal", body: []byte{}},
			}})
			// The archive holds every target: walgo checks before restoring.
			w := waltest.NewWriter(testSegSize, 8192, wal.SegmentFromNo(1, 2, testSegSize))
			for w.Pos() < l+8 {
				w.Add(10, 0, 1, make([]byte, 100))
			}
			w.Commit(uint32(x), tm.Add(time.Hour))
			w.RestorePoint("it's here", tm.Add(time.Hour))
			archiveWAL(t, s, w)
			dir := t.TempDir()
			o := opts(dir)
			tt.opts(&o)
			if _, err := BackupFetch(ctx, s, o); err != nil {
				t.Fatal(err)
			}
			for _, sig := range []string{"recovery.signal", "standby.signal"} {
				_, err := os.Stat(filepath.Join(dir, sig))
				if (err == nil) != (sig == tt.signal) {
					t.Errorf("%s: exists=%v", sig, err == nil)
				}
			}
			conf := "postgresql.auto.conf"
			got := strings.Split(strings.TrimSuffix(string(readFile(t, filepath.Join(dir, conf))), "\n"), "\n")
			var tail []string
			for i, line := range got {
				if strings.HasPrefix(line, "# Recovery settings written by walgo") {
					tail = got[i+1:]
					got = got[:i]
					break
				}
			}
			if strings.Join(tail, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("settings:\n%s\nwant:\n%s", strings.Join(tail, "\n"), strings.Join(tt.want, "\n"))
			}
			wantHead := []string{
				"# Do not edit this file manually!",
				"work_mem = '4MB'",
				"# disabled by walgo backup-fetch: restore_command = 'old command'",
				"# disabled by walgo backup-fetch:   Recovery_Target_Time='2020-01-01 00:00:00+00'",
				"# disabled by walgo backup-fetch: recovery_target_inclusive off",
				"primary_conninfo = 'host=db0'",
			}
			if strings.Join(got, "\n") != strings.Join(wantHead, "\n") {
				t.Errorf("earlier lines:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}

// TestBackupFetchUnsupportedVersion: a backup of a PostgreSQL walgo does
// not support (an older walgo took 12; a newer one might take 19) is
// refused before anything is written, naming the version.
func TestBackupFetchUnsupportedVersion(t *testing.T) {
	for _, v := range []int{120022, 110005, 190001} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			s := newStore(t)
			putBackup(t, s, spec{no: 2, pgVersion: v, finish: baseTime, ents: []ent{{path: "PG_VERSION", body: []byte("12\n")}}})
			dir := filepath.Join(t.TempDir(), "data")
			_, err := BackupFetch(context.Background(), s, opts(dir))
			if !errors.Is(err, ErrInvalid) || !errors.Is(err, pgdata.ErrUnsupportedVersion) ||
				!strings.Contains(err.Error(), "walgo supports PostgreSQL 13 to 18") {
				t.Fatalf("BackupFetch: %v", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the restore folder was made: %v", err)
			}
		})
	}
}

func TestBackupFetchInvalidOptions(t *testing.T) {
	tm := time.Now()
	x := uint64(1)
	tests := []struct {
		name string
		opts func(o *BackupFetchOptions)
	}{
		{"two targets", func(o *BackupFetchOptions) { o.Target = Target{Time: &tm, XID: &x} }},
		{"action without target", func(o *BackupFetchOptions) { o.Target = Target{Action: "pause"} }},
		{"bad action", func(o *BackupFetchOptions) { o.Target = Target{XID: &x, Action: "stop"} }},
		{"bad timeline", func(o *BackupFetchOptions) { o.Target = Target{Timeline: "newest"} }},
		{"zero timeline", func(o *BackupFetchOptions) { o.Target = Target{Timeline: "0"} }},
		{"no restore command", func(o *BackupFetchOptions) { o.RestoreCommand = "" }},
		{"line break in restore command", func(o *BackupFetchOptions) { o.RestoreCommand = "a\nb" }},
		{"line break in target name", func(o *BackupFetchOptions) { o.Target = Target{Name: "a\nrestore_command='evil'"} }},
		{"no folder", func(o *BackupFetchOptions) { o.Dir = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts(t.TempDir())
			tt.opts(&o)
			if _, err := BackupFetch(context.Background(), newStore(t), o); !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v", err)
			}
		})
	}
}

// TestBackupFetchTablespaces: each tablespace goes to its original
// location, or where --tablespace (by name or oid) or TablespacesUnder
// says, with pg_tblspc/<oid> a symlink to it and no tablespace_map; pg_wal
// goes where WALDir says. A target that is not an empty folder apart from
// the data directory and the other targets is refused before anything is
// written, and a failed restore leaves the targets as it found them.
func TestBackupFetchTablespaces(t *testing.T) {
	const rel = "PG_16_202307071/5/16385"
	ents := func(oids ...string) []ent {
		out := []ent{{path: "pg_wal/", typ: tar.TypeDir}, {path: "pg_tblspc/", typ: tar.TypeDir}}
		for _, oid := range oids {
			out = append(out,
				ent{path: "pg_tblspc/" + oid + "/", typ: tar.TypeDir},
				ent{path: "pg_tblspc/" + oid + "/PG_16_202307071/", typ: tar.TypeDir},
				ent{path: "pg_tblspc/" + oid + "/PG_16_202307071/5/", typ: tar.TypeDir},
				ent{path: "pg_tblspc/" + oid + "/" + rel, body: []byte("rel " + oid)})
		}
		return out
	}
	type setup struct {
		dir, orig1, orig2, other string // the restore folder, the original locations, a spare folder
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, s setup) // makes folders non-empty and the like
		opts    func(s setup, o *BackupFetchOptions)
		where   func(s setup) map[string]string // oid (or "pg_wal") -> where its contents must be
		refuse  string
	}{
		{name: "original locations",
			where: func(s setup) map[string]string { return map[string]string{"16384": s.orig1, "16390": s.orig2} }},
		{name: "original location exists, empty",
			prepare: func(t *testing.T, s setup) { mkdir(t, s.orig1) },
			where:   func(s setup) map[string]string { return map[string]string{"16384": s.orig1, "16390": s.orig2} }},
		{name: "remapped by name and by oid",
			opts: func(s setup, o *BackupFetchOptions) {
				o.Tablespaces = map[string]string{"ts one": s.other + "/a", "16390": s.other + "/b"}
			},
			where: func(s setup) map[string]string {
				return map[string]string{"16384": s.other + "/a", "16390": s.other + "/b"}
			}},
		{name: "all under one folder (drills)",
			opts: func(s setup, o *BackupFetchOptions) { o.TablespacesUnder = s.other },
			where: func(s setup) map[string]string {
				return map[string]string{"16384": s.other + "/16384", "16390": s.other + "/16390"}
			}},
		{name: "one remapped, the rest under one folder",
			opts: func(s setup, o *BackupFetchOptions) {
				o.TablespacesUnder, o.Tablespaces = s.other+"/under", map[string]string{"ts two": s.other + "/b"}
			},
			where: func(s setup) map[string]string {
				return map[string]string{"16384": s.other + "/under/16384", "16390": s.other + "/b"}
			}},
		{name: "pg_wal elsewhere",
			opts: func(s setup, o *BackupFetchOptions) { o.WALDir, o.TablespacesUnder = s.other+"/wal", s.other+"/ts" },
			where: func(s setup) map[string]string {
				return map[string]string{"16384": s.other + "/ts/16384", "16390": s.other + "/ts/16390", "pg_wal": s.other + "/wal"}
			}},
		{name: "original location not empty",
			prepare: func(t *testing.T, s setup) { mkdir(t, s.orig1); writeTo(t, s.orig1+"/PG_16_202307071", "x") },
			refuse:  `tablespace "ts one" (16384) into ` + "ORIG1" + `: the folder is not empty (it holds PG_16_202307071); restore it elsewhere with --tablespace`},
		{name: "remapped folder not empty",
			prepare: func(t *testing.T, s setup) { writeTo(t, s.other+"/x", "x") },
			opts:    func(s setup, o *BackupFetchOptions) { o.Tablespaces = map[string]string{"16384": s.other} },
			refuse:  "the folder is not empty"},
		{name: "remapped onto a file",
			prepare: func(t *testing.T, s setup) { writeTo(t, s.other+"/f", "x") },
			opts:    func(s setup, o *BackupFetchOptions) { o.Tablespaces = map[string]string{"16384": s.other + "/f"} },
			refuse:  "not a folder"},
		{name: "no such tablespace",
			opts:   func(s setup, o *BackupFetchOptions) { o.Tablespaces = map[string]string{"ts9": s.other} },
			refuse: `--tablespace ts9: backup base_000000010000000000000002 has no such tablespace (it has "ts one" (16384), "ts two" (16390))`},
		{name: "by name and by oid",
			opts: func(s setup, o *BackupFetchOptions) {
				o.Tablespaces = map[string]string{"ts one": s.other + "/a", "16384": s.other + "/b"}
			},
			refuse: "twice"},
		{name: "inside the restore folder",
			opts:   func(s setup, o *BackupFetchOptions) { o.Tablespaces = map[string]string{"16384": s.dir + "/ts"} },
			refuse: "hold one another"},
		{name: "holding the restore folder",
			opts:   func(s setup, o *BackupFetchOptions) { o.Tablespaces = map[string]string{"16384": filepath.Dir(s.dir)} },
			refuse: "hold one another"},
		{name: "two into one folder",
			opts: func(s setup, o *BackupFetchOptions) {
				o.Tablespaces = map[string]string{"16384": s.other, "16390": s.other}
			},
			refuse: "would both go into"},
		{name: "one inside the other",
			opts: func(s setup, o *BackupFetchOptions) {
				o.Tablespaces = map[string]string{"16384": s.other, "16390": s.other + "/in"}
			},
			refuse: "would both go into"},
		{name: "pg_wal folder not empty",
			prepare: func(t *testing.T, s setup) { writeTo(t, s.other+"/wal/x", "x") },
			opts:    func(s setup, o *BackupFetchOptions) { o.WALDir, o.TablespacesUnder = s.other+"/wal", s.other+"/ts" },
			refuse:  "give --waldir an empty folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			su := setup{dir: base + "/data", orig1: base + "/mnt/ts one", orig2: base + "/mnt/ts2", other: base + "/other"}
			s := newStore(t)
			putBackup(t, s, spec{no: 2,
				tsMap:  "16384 " + su.orig1 + "\n16390 " + su.orig2 + "\n",
				spaces: []catalog.Tablespace{{OID: 16384, Name: "ts one", Location: su.orig1}, {OID: 16390, Name: "ts two", Location: su.orig2}},
				ents:   ents("16384", "16390")})
			if tt.prepare != nil {
				tt.prepare(t, su)
			}
			before := tree(t, base)
			o := opts(su.dir)
			if tt.opts != nil {
				tt.opts(su, &o)
			}
			_, err := BackupFetch(context.Background(), s, o)
			if tt.refuse != "" {
				want := strings.ReplaceAll(tt.refuse, "ORIG1", su.orig1)
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v, want ErrInvalid with %q", err, want)
				}
				if after := tree(t, base); !slices.Equal(after, before) {
					t.Errorf("a refused restore changed the folders:\nbefore %q\nafter  %q", before, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Join(su.dir, "tablespace_map")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("tablespace_map written (%v): Postgres would put the tablespaces back at their original locations", err)
			}
			for oid, where := range tt.where(su) {
				link := filepath.Join(su.dir, "pg_tblspc", oid)
				if oid == "pg_wal" {
					link = filepath.Join(su.dir, "pg_wal")
					if fi, err := os.Stat(filepath.Join(where, "archive_status")); err != nil || !fi.IsDir() {
						t.Errorf("no archive_status in the WAL folder %s: %v", where, err)
					}
				} else if got := string(readFile(t, filepath.Join(where, rel))); got != "rel "+oid {
					t.Errorf("tablespace %s in %s: %q", oid, where, got)
				}
				if target, err := os.Readlink(link); err != nil || target != where {
					t.Errorf("%s: link to %q (%v), want %q", link, target, err, where)
				}
				if fi, err := os.Stat(where); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("%s: %v %v, want a folder with mode 0700", where, fi, err)
				}
			}
		})
	}
}

// TestBackupFetchInPlaceTablespace: a tablespace inside the data directory
// (allow_in_place_tablespaces) is restored where it was, as a folder,
// unless --tablespace moves it out.
func TestBackupFetchInPlaceTablespace(t *testing.T) {
	s := newStore(t)
	putBackup(t, s, spec{no: 2,
		spaces: []catalog.Tablespace{{OID: 16384, Name: "inplace", Location: "pg_tblspc/16384"}},
		ents: []ent{
			{path: "pg_tblspc/", typ: tar.TypeDir},
			{path: "pg_tblspc/16384/", typ: tar.TypeDir}, {path: "pg_tblspc/16384/PG_16_202307071/", typ: tar.TypeDir},
			{path: "pg_tblspc/16384/PG_16_202307071/f", body: []byte("in place")},
		}})
	base := t.TempDir()
	if _, err := BackupFetch(context.Background(), s, opts(base+"/a")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(base + "/a/pg_tblspc/16384"); err != nil || !fi.IsDir() {
		t.Errorf("in-place tablespace: %v %v, want a folder", fi, err)
	}
	if got := string(readFile(t, base+"/a/pg_tblspc/16384/PG_16_202307071/f")); got != "in place" {
		t.Errorf("in place: %q", got)
	}
	o := opts(base + "/b")
	o.Tablespaces = map[string]string{"inplace": base + "/out"}
	if _, err := BackupFetch(context.Background(), s, o); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(base + "/b/pg_tblspc/16384"); err != nil || target != base+"/out" {
		t.Errorf("moved out: link %q %v", target, err)
	}
	if got := string(readFile(t, base+"/out/PG_16_202307071/f")); got != "in place" {
		t.Errorf("moved out: %q", got)
	}
}

// TestBackupFetchTablespaceInsideDataDir: a tablespace located inside the
// data directory (Postgres warns, but allows it) is restored to the
// original paths when the backup holds its folder empty, as walgo's
// backups do since they store it once (pgdata.TablespacesInside); a backup
// that holds the tablespace's files in that folder too is refused, as two
// copies would meet in one place.
func TestBackupFetchTablespaceInsideDataDir(t *testing.T) {
	for _, tt := range []struct {
		name   string
		extra  []ent // in the data directory's own "tsin" folder
		refuse string
	}{
		{name: "folder held empty"},
		{name: "folder held with the files too", extra: []ent{{path: "tsin/PG_16_202307071/", typ: tar.TypeDir}, {path: "tsin/PG_16_202307071/f", body: []byte("old copy")}},
			refuse: "hold one another"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir() + "/data"
			loc := dir + "/tsin"
			s := newStore(t)
			ents := append([]ent{
				{path: "pg_tblspc/", typ: tar.TypeDir}, {path: "tsin/", typ: tar.TypeDir},
				{path: "pg_tblspc/16384/", typ: tar.TypeDir}, {path: "pg_tblspc/16384/PG_16_202307071/", typ: tar.TypeDir},
				{path: "pg_tblspc/16384/PG_16_202307071/f", body: []byte("the tablespace")},
			}, tt.extra...)
			putBackup(t, s, spec{no: 2, tsMap: "16384 " + loc + "\n",
				spaces: []catalog.Tablespace{{OID: 16384, Name: "tsin", Location: loc}}, ents: ents})
			_, err := BackupFetch(context.Background(), s, opts(dir))
			if tt.refuse != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.refuse) {
					t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.refuse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if target, err := os.Readlink(dir + "/pg_tblspc/16384"); err != nil || target != loc {
				t.Errorf("link %q (%v), want %q", target, err, loc)
			}
			if got := string(readFile(t, loc+"/PG_16_202307071/f")); got != "the tablespace" {
				t.Errorf("tablespace file: %q", got)
			}
			if got := tree(t, loc); !slices.Equal(got, []string{"PG_16_202307071", "PG_16_202307071/f"}) {
				t.Errorf("the tablespace's folder holds %q", got)
			}
		})
	}
}

// TestBackupFetchTablespaceCleanup: a restore that fails halfway leaves a
// tablespace folder it created removed, and one that was there empty.
func TestBackupFetchTablespaceCleanup(t *testing.T) {
	base := t.TempDir()
	s := newStore(t)
	ts1, ts2 := base+"/ts1", base+"/ts2"
	mkdir(t, ts2)
	sn := putBackup(t, s, spec{no: 2, parts: 2,
		spaces: []catalog.Tablespace{{OID: 16384, Name: "a", Location: ts1}, {OID: 16390, Name: "b", Location: ts2}},
		ents: []ent{
			{path: "pg_tblspc/", typ: tar.TypeDir},
			{path: "pg_tblspc/16384/", typ: tar.TypeDir}, {path: "pg_tblspc/16384/PG_16_202307071/", typ: tar.TypeDir},
			{path: "pg_tblspc/16384/PG_16_202307071/f", body: []byte("a")},
			{path: "pg_tblspc/16390/", typ: tar.TypeDir}, {path: "pg_tblspc/16390/PG_16_202307071/", typ: tar.TypeDir},
			{path: "pg_tblspc/16390/PG_16_202307071/f", body: []byte("b")},
			{path: "global/", typ: tar.TypeDir, part: 1}, {path: "global/pg_control", body: []byte("ctl"), part: 1},
		}})
	// Damage the second partition: the first is restored, then this fails.
	key := sn.Parts[1].Key
	if err := s.Put(context.Background(), key, strings.NewReader("not zstd")); err != nil {
		t.Fatal(err)
	}
	_, err := BackupFetch(context.Background(), s, opts(base+"/data"))
	if !errors.Is(err, codec.ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if _, err := os.Lstat(ts1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s, made by the failed restore, is still there (%v)", ts1, err)
	}
	if ents, err := os.ReadDir(ts2); err != nil || len(ents) != 0 {
		t.Errorf("%s was empty before the failed restore: %v %v", ts2, ents, err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
}

func writeTo(t *testing.T, p, data string) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParseTargetTime(t *testing.T) {
	want := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-11-24T10:00:00Z", want, true},
		{"2026-11-24T12:00:00+02:00", want, true},
		{"2026-11-24 10:00:00+00", want, true},
		{"2026-11-24 10:00:00", want, true},
		{"2026-11-24T10:00:00", want, true},
		{"2026-11-24 11:00:00+0100", want, true},
		{"2026-11-24 05:00:00-05", want, true},
		{"2026-11-24 10:00:00 +00:00", want, true},
		{" 2026-11-24 10:00:00.5+00 ", want.Add(500 * time.Millisecond), true},
		{"2026-11-24", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"2026-11-24 10:00", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := ParseTargetTime(tt.in)
		if (err == nil) != tt.ok || tt.ok && !got.Equal(tt.want) {
			t.Errorf("ParseTargetTime(%q) = %v, %v", tt.in, got, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseTargetTime(%q): error %v is not ErrInvalid", tt.in, err)
		}
	}
}

func TestRestoreCommand(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"/usr/bin/walgo", "--config", "/etc/walgo.conf"}, "/usr/bin/walgo --config /etc/walgo.conf wal-fetch %f %p"},
		{[]string{"/opt/my walgo/walgo", "--storage", "s3://b/p%20x"}, "'/opt/my walgo/walgo' --storage s3://b/p%%20x wal-fetch %f %p"},
		{[]string{"/x/walgo", "--config", "/etc/it's.conf"}, `/x/walgo --config '/etc/it'\''s.conf' wal-fetch %f %p`},
		{[]string{"/x/walgo", "--s3-endpoint", "http://h:9000/?a=1&b=$HOME"}, `/x/walgo --s3-endpoint 'http://h:9000/?a=1&b=$HOME' wal-fetch %f %p`},
		{[]string{"/x/walgo", "--s3-region", ""}, `/x/walgo --s3-region '' wal-fetch %f %p`},
	}
	for _, tt := range tests {
		if got := RestoreCommand(tt.argv...); got != tt.want {
			t.Errorf("RestoreCommand(%q) = %s, want %s", tt.argv, got, tt.want)
		}
	}
}

func TestCleanEntryName(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"base/1/1259", "base/1/1259", true},
		{"./base//1/", "base/1", true},
		{".", ".", true},
		{"", "", false},
		{"/etc/passwd", "", false},
		{"../x", "", false},
		{"a/../b", "", false},
		{"a/..", "", false},
		{"a\x00b", "", false},
	}
	for _, tt := range tests {
		got, err := cleanEntryName(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("cleanEntryName(%q) = %q, %v", tt.in, got, err)
		}
	}
}

// A sentinel whose system identifier is not the one of the pg_control in
// its backup (a sentinel put over another cluster's backup) is never
// restored (issue 8 item 8).
func TestBackupFetchSystemIDMismatch(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		sentinel string
		ok       bool
	}{
		{"7441234567890123456", true},
		{"7441234567890123457", false},
	} {
		s := newStore(t)
		putBackup(t, s, spec{no: 2, parts: 1, systemID: tc.sentinel, ents: []ent{
			{path: "global/", typ: tar.TypeDir},
			{path: "global/pg_control", body: controlWithID(t, 7441234567890123456)},
			{path: "PG_VERSION", body: []byte("16\n")},
		}})
		dir := filepath.Join(t.TempDir(), "data")
		_, err := BackupFetch(ctx, s, opts(dir))
		switch {
		case tc.ok && err != nil:
			t.Fatalf("matching system id: %v", err)
		case !tc.ok && (!errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "database system 7441234567890123456")):
			t.Fatalf("sentinel of another system: err = %v, want ErrCorrupt naming both", err)
		case !tc.ok:
			if _, serr := os.Stat(filepath.Join(dir, "global", "pg_control")); serr == nil {
				t.Fatal("a refused restore left a pg_control Postgres could start on")
			}
		}
	}
}
