package basebackup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// partWriter streams entries into tar partitions, each compressed and
// uploaded while the next is written, with at most Concurrency in flight.
type partWriter struct {
	ctx   context.Context
	store storage.Store
	name  string
	cfg   Config
	log   *zap.Logger

	cur   *partition
	n     int
	sem   chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	parts []catalog.Part
	err   error
	plain int64 // tar bytes written, all partitions
	read  int64 // bytes read from disk, for progress
	total int64
}

type partition struct {
	key  string
	pw   *io.PipeWriter
	tw   *tar.Writer
	enc  io.WriteCloser
	out  *codec.SumWriter
	size int64
}

func newPartWriter(ctx context.Context, store storage.Store, name string, cfg Config, log *zap.Logger) *partWriter {
	return &partWriter{ctx: ctx, store: store, name: name, cfg: cfg, log: log, sem: make(chan struct{}, cfg.Concurrency)}
}

func (w *partWriter) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *partWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// open starts partition n+1 and its upload.
func (w *partWriter) open() error {
	select {
	case w.sem <- struct{}{}:
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
	w.n++
	key := catalog.PartKey(w.name, w.n, w.cfg.Codec)
	pr, pw := io.Pipe()
	out := codec.NewSumWriter(pw) // sees every stored byte on its way to the upload
	// The upload reads before the encoder exists: age writes its header
	// as soon as it is created, and a pipe blocks until someone reads.
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { <-w.sem }()
		err := w.store.Put(w.ctx, key, pr)
		pr.CloseWithError(err) // unblocks the writer if the upload failed
		if err != nil {
			w.fail(fmt.Errorf("upload %s: %w", key, err))
			return
		}
		w.mu.Lock()
		w.parts = append(w.parts, catalog.Part{Key: key, Size: out.N, SHA256: out.SHA256()})
		w.mu.Unlock()
		w.log.Debug("partition stored", zap.String("key", key), zap.Int64("stored_bytes", out.N))
	}()
	enc, err := w.cfg.Codec.NewWriter(out)
	if err != nil {
		pw.CloseWithError(err)
		return err
	}
	w.cur = &partition{key: key, pw: pw, tw: tar.NewWriter(enc), enc: enc, out: out}
	return nil
}

// close ends the current partition's stream; its upload finishes on its own.
func (w *partWriter) close() error {
	p := w.cur
	w.cur = nil
	err := p.tw.Close()
	if err == nil {
		err = p.enc.Close()
	}
	if err != nil {
		p.pw.CloseWithError(err)
		return err
	}
	return p.pw.Close()
}

// writeAll writes every entry and waits for every upload. It returns the
// manifest's file list.
func (w *partWriter) writeAll(entries []entry, delta *deltaPlan) ([]catalog.ManifestFile, error) {
	for _, e := range entries {
		if e.info.Mode().IsRegular() {
			w.total += e.info.Size()
		}
	}
	var files []catalog.ManifestFile
	err := func() error {
		for _, e := range entries {
			if err := w.failed(); err != nil {
				return err
			}
			if w.cur != nil && w.cur.size >= w.cfg.PartSize {
				if err := w.close(); err != nil {
					return err
				}
			}
			if w.cur == nil {
				if err := w.open(); err != nil {
					return err
				}
			}
			mf, ok, err := w.writeEntry(e, delta)
			if err != nil {
				return err
			}
			if ok {
				files = append(files, mf)
			}
		}
		if w.cur == nil { // an empty data directory still gets a partition
			if err := w.open(); err != nil {
				return err
			}
		}
		return w.close()
	}()
	if err != nil && w.cur != nil {
		w.cur.pw.CloseWithError(err)
	}
	w.wg.Wait()
	if ferr := w.failed(); ferr != nil {
		return nil, ferr
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(w.parts, func(i, j int) bool { return w.parts[i].Key < w.parts[j].Key })
	return files, nil
}

func (w *partWriter) header(h *tar.Header) error {
	h.Format = tar.FormatPAX
	if err := w.cur.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write %s: %w", w.cur.key, err)
	}
	return nil
}

// writeEntry stores one entry; ok is false for a file that vanished.
func (w *partWriter) writeEntry(e entry, delta *deltaPlan) (mf catalog.ManifestFile, ok bool, err error) {
	mf = catalog.ManifestFile{Path: e.name, Mode: uint32(e.info.Mode()), ModTime: e.info.ModTime().UTC()}
	switch {
	case e.info.IsDir():
		mf.Mode = uint32(fs.ModeDir | e.info.Mode().Perm())
		return mf, true, w.header(&tar.Header{Typeflag: tar.TypeDir, Name: e.name + "/", Mode: int64(e.info.Mode().Perm()), ModTime: e.info.ModTime()})
	case e.link != "":
		mf.Link = e.link
		return mf, true, w.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: e.name, Linkname: e.link, Mode: 0o777, ModTime: e.info.ModTime()})
	}
	f, err := os.Open(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		return mf, false, nil // removed by Postgres since the walk: WAL replay recreates it if needed
	}
	if err != nil {
		return mf, false, fmt.Errorf("open %s: %w", e.path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return mf, false, fmt.Errorf("stat %s: %w", e.path, err)
	}
	size := fi.Size()
	mf.Size, mf.Mode, mf.ModTime = size, uint32(fi.Mode().Perm()), fi.ModTime().UTC()
	if size%pgdata.PageSize == 0 {
		if parent, found := delta.base(e.name); found {
			pages, err := w.changedPages(f, size, parent.Size, delta.from)
			if err != nil {
				return mf, false, fmt.Errorf("read %s: %w", e.path, err)
			}
			switch {
			case len(pages) == 0 && size == parent.Size:
				mf.Delta, mf.SHA256 = "unchanged", parent.SHA256
				return mf, true, nil
			case int64(len(pages))*pgdata.PageSize*2 < size:
				mf.Delta, mf.Pages = "pages", pages
				return mf, true, w.writePages(f, e, pages)
			}
		}
	}
	sum, err := w.writeWhole(f, e, size)
	mf.SHA256 = sum
	return mf, true, err
}

// writeWhole stores size bytes of f. A file that shrank while read is
// padded with zeros; one that grew is cut at size: a live cluster's files
// change under a backup, and WAL replay from the start LSN repairs them.
func (w *partWriter) writeWhole(f *os.File, e entry, size int64) (string, error) {
	if err := w.header(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: size, Mode: int64(e.info.Mode().Perm()), ModTime: e.info.ModTime()}); err != nil {
		return "", err
	}
	// Hashed on a goroutine of its own, beside reading and tar writing.
	h := codec.NewAsyncSHA256()
	defer h.Close()
	dst := io.MultiWriter(w.cur.tw, h)
	src := w.cfg.DiskLimiter.Reader(w.ctx, &progressReader{r: f, w: w})
	n, err := io.CopyN(dst, src, size)
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("back up %s: %w", e.path, err)
	}
	if n < size {
		if _, err := io.CopyN(dst, zeros{}, size-n); err != nil {
			return "", fmt.Errorf("back up %s: %w", e.path, err)
		}
	}
	w.cur.size += size
	w.plain += size
	return h.Sum(), nil
}

// changedPages reads every page and lists the pages a delta must store:
// those past the parent's end, those cut short while read, and those
// pgdata.Unchanged does not vouch for (changed at or after from, all-zero,
// unstamped, not sane).
func (w *partWriter) changedPages(f *os.File, size, parentSize int64, from wal.LSN) ([]uint32, error) {
	var pages []uint32
	buf := make([]byte, pgdata.PageSize)
	src := w.cfg.DiskLimiter.Reader(w.ctx, &progressReader{r: io.NewSectionReader(f, 0, size), w: w})
	for i := int64(0); i*pgdata.PageSize < size; i++ {
		_, err := io.ReadFull(src, buf)
		short := err == io.EOF || err == io.ErrUnexpectedEOF // shrank while read: stored (as zeros)
		if err != nil && !short {
			return nil, err
		}
		if short || (i+1)*pgdata.PageSize > parentSize || !pgdata.Unchanged(buf, from) {
			pages = append(pages, uint32(i))
		}
	}
	return pages, nil
}

func (w *partWriter) writePages(f *os.File, e entry, pages []uint32) error {
	size := int64(len(pages)) * pgdata.PageSize
	if err := w.header(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: size, Mode: int64(e.info.Mode().Perm()), ModTime: e.info.ModTime()}); err != nil {
		return err
	}
	buf := make([]byte, pgdata.PageSize)
	for _, p := range pages {
		n, err := f.ReadAt(buf, int64(p)*pgdata.PageSize)
		if err != nil && err != io.EOF {
			return fmt.Errorf("back up %s: %w", e.path, err)
		}
		clear(buf[n:])
		if _, err := w.cur.tw.Write(buf); err != nil {
			return fmt.Errorf("write %s: %w", w.cur.key, err)
		}
	}
	w.cur.size += size
	w.plain += size
	return nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// progressReader reports bytes read from disk to Config.Progress.
type progressReader struct {
	r io.Reader
	w *partWriter
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 && p.w.cfg.Progress != nil {
		p.w.read += int64(n)
		p.w.cfg.Progress(p.w.read, p.w.total)
	}
	return n, err
}
