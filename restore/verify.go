package restore

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// Backup verification reads every object of one backup back, as a restore
// would, but writes nothing: the sha256 of each stored partition against
// the sentinel, each whole file's sha256 against the manifest, that the
// tars hold exactly what the manifest lists, and optionally the Postgres
// page checksum of every relation page.

const (
	// maxProblems is how many problems a report lists; the rest are counted.
	maxProblems = 1000
	// maxPending bounds the page mismatches held until pg_control (stored
	// last) says whether the cluster has data checksums at all.
	maxPending = 10000
)

// VerifyOptions says how VerifyBackup reads a backup.
type VerifyOptions struct {
	// Codec decodes stored objects; nil reads unencrypted objects only.
	Codec *codec.Codec
	// Concurrency is how many partitions are read at once (at least 1).
	Concurrency int
	// Pages also checks the page checksum of every relation page, when
	// the cluster has data checksums.
	Pages bool
	// Log receives progress; nil logs nothing.
	Log *zap.Logger
}

// Problem is one thing wrong with a backup: in which object, which file of
// the backup if any, and what.
type Problem struct {
	Key  string `json:"key,omitempty"`
	File string `json:"file,omitempty"`
	Msg  string `json:"problem"`
}

func (p Problem) String() string {
	s := p.Key
	if p.File != "" {
		if s != "" {
			s += ": "
		}
		s += p.File
	}
	if s != "" {
		s += ": "
	}
	return s + p.Msg
}

// PageStats counts what the page checks saw.
type PageStats struct {
	// Checksums is "on" or "off": whether the cluster has data checksums.
	Checksums string `json:"data_checksums"`
	// ChecksumsFrom is "pg_control", or "pages" when pg_control could not
	// be read and the share of matching pages decided.
	ChecksumsFrom string `json:"data_checksums_from"`
	// Checked pages had their checksum computed and compared.
	Checked int64 `json:"checked"`
	// New pages (pd_upper 0) carry no checksum.
	New int64 `json:"skipped_new"`
	// AfterStart pages have an LSN at or after the backup's start: they
	// may be torn, read while Postgres wrote them, and WAL replay from the
	// start rewrites them, so they are not checked.
	AfterStart int64 `json:"skipped_after_start"`
	// Mismatches are pages whose checksum is wrong.
	Mismatches int64 `json:"mismatches"`
}

// VerifyReport is what VerifyBackup found in one backup.
type VerifyReport struct {
	Backup      string     `json:"backup"`
	DeltaParent string     `json:"delta_parent,omitempty"`
	Partitions  int        `json:"partitions"`
	StoredBytes int64      `json:"stored_bytes"`
	Files       int        `json:"files"`       // regular files read from the tars
	PlainBytes  int64      `json:"plain_bytes"` // their bytes
	Pages       *PageStats `json:"pages,omitempty"`
	Notes       []string   `json:"notes,omitempty"`
	Problems    []Problem  `json:"problems"`
	// MoreProblems counts the problems beyond the listed ones.
	MoreProblems int  `json:"more_problems,omitempty"`
	OK           bool `json:"ok"`
}

// VerifyBackup reads every object of backup sn back without writing
// anything: its delta parents must exist; the manifest's sha256 must match
// the sentinel and it must be valid; every partition's stored bytes must
// match the sentinel's sha256 and size and decode to a tar; every whole
// file must match the manifest's size and sha256, every page delta hold
// the pages the manifest lists; each folder, link and stored file must be
// in the manifest and every manifest entry stored (but files the manifest
// marks "unchanged", which a delta takes from its parent). With
// opts.Pages, relation pages are checked against their Postgres checksum
// (see checkPage).
//
// Damage is reported in the VerifyReport, with memory bounded whatever the
// backup's size; the error is for failures to read the store (unreachable,
// a missing or wrong age key, ctx done).
func VerifyBackup(ctx context.Context, store storage.Store, sn *catalog.Sentinel, opts VerifyOptions) (*VerifyReport, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	opts.Concurrency = max(1, opts.Concurrency)
	v := &verifier{
		store: store, sn: sn, opts: opts,
		rep:  &VerifyReport{Backup: sn.Name, DeltaParent: sn.DeltaParent, Partitions: len(sn.Parts), Problems: []Problem{}},
		seen: map[string]bool{},
	}
	opts.Log.Info("verifying backup", zap.String("backup", sn.Name), zap.Int("partitions", len(sn.Parts)), zap.Bool("pages", opts.Pages))

	lineageOf := func(sysid string, tli uint32) (catalog.Lineage, error) {
		return catalog.ReadLineage(ctx, store, opts.Codec, sysid, tli)
	}
	if _, err := backupChain(ctx, store, sn, lineageOf); err != nil {
		if !isDataError(err) && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		v.problem(catalog.SentinelKey(sn.Name), "", problemText(err))
	}
	l, err := fetchManifest(ctx, store, opts.Codec, sn, sn.DeltaParent == "")
	switch {
	case err == nil:
		v.files = l.files
	case isDataError(err):
		v.problem(sn.ManifestKey, "", problemText(err))
		v.rep.Notes = append(v.rep.Notes, "the manifest could not be read: files and coverage were not checked")
	default:
		return nil, err
	}
	if len(sn.Parts) == 0 {
		v.problem(catalog.SentinelKey(sn.Name), "", "the sentinel lists no partitions")
	}
	if err := v.parts(ctx); err != nil {
		return nil, err
	}
	v.coverage()
	if opts.Pages {
		v.finishPages()
	}
	rep := v.rep
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Key < rep.Problems[j].Key })
	rep.OK = len(rep.Problems) == 0
	opts.Log.Info("verified backup", zap.String("backup", sn.Name), zap.Bool("ok", rep.OK), zap.Int("problems", len(rep.Problems)+rep.MoreProblems))
	return rep, nil
}

// isDataError: an error that says the stored data is wrong, as opposed to
// the store or the keys failing.
func isDataError(err error) bool {
	return errors.Is(err, codec.ErrCorrupt) || errors.Is(err, catalog.ErrFormat) || errors.Is(err, codec.ErrUnknown)
}

// problemText is an error as a problem's message: without the "corrupt
// data" every problem would repeat.
func problemText(err error) string {
	return strings.TrimPrefix(err.Error(), codec.ErrCorrupt.Error()+": ")
}

type verifier struct {
	store storage.Store
	sn    *catalog.Sentinel
	opts  VerifyOptions
	files map[string]*catalog.ManifestFile // nil when the manifest is unreadable

	mu      sync.Mutex
	rep     *VerifyReport
	seen    map[string]bool // tar entries, by cleaned name
	damaged bool            // a partition could not be read whole
	control []byte          // the start of global/pg_control
	pages   pageTally
	pending []pageMismatch
}

// pageTally counts page checks; mismatches wait in pending.
type pageTally struct {
	matched, mismatched, newPages, afterStart, unlisted int64
}

func (t *pageTally) add(o pageTally) {
	t.matched += o.matched
	t.mismatched += o.mismatched
	t.newPages += o.newPages
	t.afterStart += o.afterStart
	t.unlisted += o.unlisted
}

// pageMismatch is a page whose checksum did not match with the default
// segment size; finishPages judges it once pg_control is known.
type pageMismatch struct {
	key, file  string
	segno, blk uint32 // relation segment number, block within the file
	stored     uint16
	blockSum   uint32
	lsn        wal.LSN
}

func (v *verifier) problem(key, file, msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.addLocked(Problem{Key: key, File: file, Msg: msg})
}

func (v *verifier) addLocked(p Problem) {
	if len(v.rep.Problems) >= maxProblems {
		v.rep.MoreProblems++
		return
	}
	v.rep.Problems = append(v.rep.Problems, p)
}

// parts reads the partitions, opts.Concurrency at once. A failure of the
// store stops them all.
func (v *verifier) parts(ctx context.Context) error {
	return forEach(ctx, v.sn.Parts, v.opts.Concurrency, v.part)
}

// partRead is what reading one partition found.
type partRead struct {
	key     string
	probs   []Problem
	broken  string // the stream could not be read to its end: why
	files   int
	plain   int64
	pages   pageTally
	pending []pageMismatch
}

func (r *partRead) add(file, format string, args ...any) {
	r.probs = append(r.probs, Problem{Key: r.key, File: file, Msg: fmt.Sprintf(format, args...)})
}

// part streams one partition: Get, sha256 of the stored bytes, decode,
// read the tar. Only store failures are returned.
func (v *verifier) part(ctx context.Context, p catalog.Part, buf []byte) error {
	key := p.Key
	pr := &partRead{key: key}
	if !strings.HasPrefix(key, catalog.BackupFolder(v.sn.Name)) || strings.Contains(key, "..") {
		return v.mergePart(pr, "partition key is outside the backup")
	}
	ext, err := keyExt(key, ".tar.")
	if err != nil {
		return v.mergePart(pr, problemText(err))
	}
	rc, err := v.store.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return v.mergePart(pr, "partition is missing")
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	src := &sourceReader{ctx: ctx, r: io.TeeReader(rc, h)}
	dec, err := v.opts.Codec.Decode(ext, src)
	switch {
	case err != nil && src.err != nil:
		return fmt.Errorf("fetch %s: %w", key, src.err)
	case errors.Is(err, codec.ErrNoKey), errors.Is(err, codec.ErrWrongKey):
		return fmt.Errorf("fetch %s: %w", key, err)
	case err != nil:
		pr.broken = "does not decode: " + problemText(err)
	default:
		err = v.untar(pr, tar.NewReader(dec), src, buf)
		if err == nil && pr.broken == "" {
			// Past the tar's end marker to the codec's end, so its checks run.
			if _, rerr := io.Copy(io.Discard, dec); rerr != nil {
				if src.err != nil {
					err = src.err
				} else {
					pr.broken = "does not decode: " + problemText(readError(rerr))
				}
			}
		}
		dec.Close()
		if err != nil {
			return fmt.Errorf("fetch %s: %w", key, err)
		}
	}
	if _, err := io.Copy(io.Discard, src); err != nil {
		return fmt.Errorf("fetch %s: %w", key, src.err)
	}
	v.mu.Lock()
	v.rep.StoredBytes += src.n
	v.mu.Unlock()
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, p.SHA256) {
		// What the damage did to the decoded stream is noise after this.
		msg := fmt.Sprintf("sha256 of the stored object is %s, the sentinel says %s", got, p.SHA256)
		if p.Size > 0 && src.n != p.Size {
			msg += fmt.Sprintf(" (%d bytes stored, the sentinel says %d)", src.n, p.Size)
		}
		return v.mergePart(pr, msg)
	}
	if p.Size > 0 && src.n != p.Size {
		return v.mergePart(pr, fmt.Sprintf("%d bytes stored, the sentinel says %d", src.n, p.Size))
	}
	if pr.broken != "" {
		return v.mergePart(pr, "the stored object matches its sha256 but "+pr.broken)
	}
	return v.mergePart(pr, "")
}

// mergePart adds what a partition read found to the report. A non-empty
// fatal replaces its entry problems: the partition is damaged as a whole.
func (v *verifier) mergePart(pr *partRead, fatal string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if fatal != "" {
		v.damaged = true
		v.addLocked(Problem{Key: pr.key, Msg: fatal})
		return nil
	}
	for _, p := range pr.probs {
		v.addLocked(p)
	}
	v.rep.Files += pr.files
	v.rep.PlainBytes += pr.plain
	v.pages.add(pr.pages)
	for _, m := range pr.pending {
		if len(v.pending) < maxPending {
			v.pending = append(v.pending, m)
		} else {
			v.pages.unlisted++
		}
	}
	return nil
}

// untar checks each entry of a partition. It returns store failures; a
// stream that cannot be read on sets pr.broken.
func (v *verifier) untar(pr *partRead, tr *tar.Reader, src *sourceReader, buf []byte) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if src.err != nil {
				return src.err
			}
			pr.broken = "its tar cannot be read: " + problemText(readError(err))
			return nil
		}
		if err := v.entry(pr, hdr, tr, src, buf); err != nil || pr.broken != "" {
			return err
		}
	}
}

// entry checks one tar entry against the manifest.
func (v *verifier) entry(pr *partRead, hdr *tar.Header, tr io.Reader, src *sourceReader, buf []byte) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanEntryName(strings.TrimSuffix(hdr.Name, "/"))
	if err == nil && name == controlTmp {
		err = errors.New("reserved name")
	}
	if err != nil {
		pr.add(hdr.Name, "unsafe tar entry: %v", err)
		return nil
	}
	if name == "." {
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeSymlink, tar.TypeReg:
	default:
		pr.add(name, "unsupported tar entry type %q", hdr.Typeflag)
		return nil
	}
	v.mu.Lock()
	dup := v.seen[name]
	v.seen[name] = true
	v.mu.Unlock()
	if dup {
		pr.add(name, "stored twice")
		return nil
	}
	if v.files == nil { // no manifest: read the data through, for the stream checks
		_, err := v.readFile(pr, name, nil, tr, src, buf)
		return err
	}
	mf := v.files[name]
	if mf == nil {
		pr.add(name, "in the tar but not in the manifest")
		if hdr.Typeflag == tar.TypeReg {
			_, err := v.readFile(pr, name, nil, tr, src, buf)
			return err
		}
		return nil
	}
	mode := fs.FileMode(mf.Mode)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !mode.IsDir() {
			pr.add(name, "a folder in the tar, a %v in the manifest", typeName(mode))
		}
		return nil
	case tar.TypeSymlink:
		if mode&fs.ModeSymlink == 0 {
			pr.add(name, "a symlink in the tar, a %v in the manifest", typeName(mode))
		} else if mf.Link != hdr.Linkname {
			pr.add(name, "symlink to %q in the tar, to %q in the manifest", hdr.Linkname, mf.Link)
		}
		return nil
	}
	if !mode.IsRegular() {
		pr.add(name, "a file in the tar, a %v in the manifest", typeName(mode))
		return nil
	}
	switch mf.Delta {
	case "":
		if hdr.Size != mf.Size {
			pr.add(name, "%d bytes in the tar, the manifest says %d", hdr.Size, mf.Size)
			return nil
		}
	case "pages":
		if want := int64(len(mf.Pages)) * pgdata.PageSize; hdr.Size != want {
			pr.add(name, "page delta of %d bytes in the tar, the manifest lists %d pages (%d bytes)", hdr.Size, len(mf.Pages), want)
			return nil
		}
	default:
		pr.add(name, "stored, but the manifest says %q", mf.Delta)
		return nil
	}
	sum, err := v.readFile(pr, name, mf, tr, src, buf)
	if err != nil || pr.broken != "" {
		return err
	}
	if mf.Delta == "" && !strings.EqualFold(sum, mf.SHA256) {
		pr.add(name, "sha256 %s, the manifest says %s", sum, mf.SHA256)
	}
	return nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "folder"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "file"
	}
	return m.Type().String()
}

// readFile streams one file's data: its sha256 (for a whole file), the
// page checks (for a relation file, with Pages), and the start of
// pg_control. mf is nil when the entry is only read through.
func (v *verifier) readFile(pr *partRead, name string, mf *catalog.ManifestFile, tr io.Reader, src *sourceReader, buf []byte) (string, error) {
	var h hash.Hash
	if mf != nil && mf.Delta == "" {
		h = sha256.New()
	}
	segno, rel := uint32(0), false
	if mf != nil && v.opts.Pages {
		var rp pgdata.RelPath
		rp, rel = pgdata.ParseRelPath(name)
		segno = rp.Segment
	}
	var off int64
	for {
		n, err := fill(tr, buf)
		if n > 0 {
			chunk := buf[:n]
			if h != nil {
				h.Write(chunk)
			}
			if name == pgdata.ControlFile && off < pgdata.PageSize {
				v.mu.Lock()
				v.control = append(v.control, chunk[:min(int64(n), pgdata.PageSize-off)]...)
				v.mu.Unlock()
			}
			if rel {
				for p := 0; p+pgdata.PageSize <= n; p += pgdata.PageSize {
					i := (off + int64(p)) / pgdata.PageSize
					blk := uint32(i)
					if mf.Delta == "pages" {
						blk = mf.Pages[i] // the size check made i < len(Pages)
					}
					v.checkPage(pr, name, segno, blk, chunk[p:p+pgdata.PageSize])
				}
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if src.err != nil {
				return "", src.err
			}
			pr.broken = fmt.Sprintf("its tar breaks off in %s: %s", name, problemText(readError(err)))
			return "", nil
		}
	}
	if mf != nil {
		pr.files++
		pr.plain += off
	}
	if h == nil {
		return "", nil
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fill reads into buf until it is full or r fails; io.EOF only when r
// ended.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// checkPage checks one relation page, the way pg_checksums does, with one
// difference for a backup of a live cluster: a page whose LSN is at or
// after the backup's start is not checked, since it may have been read
// while Postgres wrote it (torn), and WAL replay from the start rewrites
// it. New pages (pd_upper 0) carry no checksum. A mismatch waits until
// pg_control says whether checksums are on.
func (v *verifier) checkPage(pr *partRead, name string, segno, blk uint32, page []byte) {
	h := pgdata.ParsePageHeader(page)
	if h.IsNew() {
		pr.pages.newPages++
		return
	}
	lsn, stored := h.LSN, h.Checksum
	if lsn >= v.sn.StartLSN {
		pr.pages.afterStart++
		return
	}
	sum := pgdata.ChecksumBlock(page)
	if pgdata.FinishChecksum(sum, segno*pgdata.RelSegSize+blk) == stored {
		pr.pages.matched++
		return
	}
	pr.pages.mismatched++
	if len(pr.pending) < maxPending {
		pr.pending = append(pr.pending, pageMismatch{key: pr.key, file: name, segno: segno, blk: blk, stored: stored, blockSum: sum, lsn: lsn})
	} else {
		pr.pages.unlisted++
	}
}

// finishPages decides whether the cluster has data checksums, from
// pg_control or, failing that, from the pages (with checksums off, a page
// matches by chance once in 65535), and reports the mismatches if so.
func (v *verifier) finishPages() {
	t := v.pages
	st := &PageStats{New: t.newPages, AfterStart: t.afterStart}
	v.rep.Pages = st
	relSeg := uint32(pgdata.RelSegSize)
	ci, err := pgdata.ParseControl(v.control)
	on := false
	if err == nil {
		st.ChecksumsFrom = "pg_control"
		on = ci.DataChecksumVersion != 0
		if ci.RelSegSize != 0 {
			relSeg = ci.RelSegSize
		}
		if ci.BlockSize != pgdata.PageSize {
			v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("the cluster's block size is %d: pages not checked", ci.BlockSize))
			st.Checksums = "unknown"
			return
		}
	} else {
		st.ChecksumsFrom = "pages"
		on = t.matched > t.mismatched
		v.rep.Notes = append(v.rep.Notes, "pg_control: "+err.Error()+": data checksums judged from the pages")
	}
	if !on {
		st.Checksums = "off"
		v.rep.Notes = append(v.rep.Notes, "the cluster has no data checksums: pages not checked")
		return
	}
	st.Checksums = "on"
	matched, mismatched := t.matched, t.mismatched
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, m := range v.pending {
		want := pgdata.FinishChecksum(m.blockSum, m.segno*relSeg+m.blk)
		if want == m.stored {
			matched++
			mismatched--
			continue
		}
		v.addLocked(Problem{Key: m.key, File: m.file, Msg: fmt.Sprintf(
			"block %d: page checksum 0x%04X, computed 0x%04X (page LSN %s, before the backup start %s)",
			m.segno*relSeg+m.blk, m.stored, want, m.lsn, v.sn.StartLSN)})
	}
	if t.unlisted > 0 {
		v.addLocked(Problem{Msg: fmt.Sprintf("%d further page checksum mismatches not listed", t.unlisted)})
	}
	st.Checked, st.Mismatches = matched+mismatched, mismatched
}

// coverage reports manifest entries that no partition stored. It is
// skipped when a partition could not be read whole, whose entries would
// all be reported again.
func (v *verifier) coverage() {
	if v.files == nil {
		return
	}
	if v.damaged {
		v.rep.Notes = append(v.rep.Notes, "a partition could not be read whole: the manifest's coverage was not checked")
		return
	}
	paths := make([]string, 0, len(v.files))
	for p := range v.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := v.files[p]
		if fs.FileMode(f.Mode).IsRegular() && f.Delta == "unchanged" {
			continue // taken from the parent: no tar entry
		}
		if !v.seen[p] {
			v.problem(v.sn.ManifestKey, p, "in the manifest but in none of the partitions")
		}
	}
}
