package restore

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
)

const (
	// copyBufSize is the buffer each download worker copies file data with.
	copyBufSize = 256 << 10
	// controlFile is written under controlTmp and renamed into place last:
	// without it Postgres refuses to start, so a restore cut short (even by
	// a crash that skips the cleanup) never leaves a startable directory.
	controlFile = pgdata.ControlFile
	controlTmp  = controlFile + ".walgo-restore"
)

// physName is where a file of the backup is written while restoring.
func physName(p string) string {
	if p == controlFile {
		return controlTmp
	}
	return p
}

// logicalName is the inverse of physName.
func logicalName(p string) string {
	if p == controlTmp {
		return controlFile
	}
	return p
}

// cleanEntryName checks a tar entry or manifest path and returns it
// cleaned, slash-separated and relative ("." for the data directory). It
// refuses absolute paths and any ".." component.
func cleanEntryName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty path")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path")
	case strings.ContainsRune(name, 0):
		return "", errors.New("NUL in path")
	}
	for part := range strings.SplitSeq(name, "/") {
		if part == ".." {
			return "", errors.New(`path contains ".."`)
		}
	}
	return path.Clean(name), nil
}

// storeReadError marks an error of the stored object's reader (network,
// cancellation), so it is not mistaken for corrupt data once it has come
// through a decoder and the tar reader.
type storeReadError struct{ err error }

func (e storeReadError) Error() string { return e.err.Error() }
func (e storeReadError) Unwrap() error { return e.err }

// sourceReader reads a stored object: it stops once ctx is done, counts
// bytes, and remembers and marks its first error.
type sourceReader struct {
	ctx   context.Context
	r     io.Reader
	n     int64
	count func(n int64) // also told of every read, if set
	err   error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, storeReadError{s.err}
	}
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, storeReadError{err}
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.count != nil && n > 0 {
		s.count(int64(n))
	}
	if err != nil && err != io.EOF {
		s.err = err
		return n, storeReadError{err}
	}
	return n, err
}

// readError classifies an error met while reading decoded data: the
// store's own errors pass unchanged, anything else means the data is bad.
func readError(err error) error {
	var se storeReadError
	if errors.As(err, &se) {
		return se.err
	}
	if errors.Is(err, codec.ErrCorrupt) {
		return err
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %v", codec.ErrCorrupt, err)
}

// sourceError prefers the stored object's own read error, if it had one,
// over what a decoder made of it.
func sourceError(src *sourceReader, err error) error {
	if src.err != nil {
		return src.err
	}
	return readError(err)
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", codec.ErrCorrupt, fmt.Sprintf(format, args...))
}

// restorer writes backup layers into one directory (and the folders of it
// that live elsewhere), through os.Roots so that nothing can land outside
// them.
type restorer struct {
	fs    *destTree
	dir   string
	store storage.Store
	log   *zap.Logger
	conc  int

	mu       sync.Mutex
	expect   map[string]string // path -> sha256 the latest manifest that gave one says
	verified map[string]string // path -> sha256 its content was checked against when written

	downloaded atomic.Int64
	written    atomic.Int64
	codec      *codec.Codec
	progress   func(done, total int64) // nil: none
	total      int64                   // stored bytes of every layer's partitions
}

func newRestorer(t *destTree, dir string, store storage.Store, opts *BackupFetchOptions) *restorer {
	return &restorer{
		fs:       t,
		dir:      dir,
		store:    store,
		log:      opts.Log,
		conc:     opts.Concurrency,
		codec:    opts.Codec,
		progress: opts.Progress,
		expect:   map[string]string{},
		verified: map[string]string{},
	}
}

// layerState tracks which files of one layer its partitions held.
type layerState struct {
	*layer
	mu   sync.Mutex
	seen map[string]bool
}

// restoreLayer applies one backup of the chain: its partitions in
// parallel, then removes what its manifest no longer lists, then checks
// that every file it stores was stored and every file it keeps is there.
func (r *restorer) restoreLayer(ctx context.Context, l *layer) error {
	st := &layerState{layer: l, seen: map[string]bool{}}
	if err := r.restoreParts(ctx, st); err != nil {
		return err
	}
	if err := r.prune(l); err != nil {
		return err
	}
	for p, f := range l.files {
		if !fs.FileMode(f.Mode).IsRegular() {
			continue
		}
		switch f.Delta {
		case "", "pages":
			if !st.seen[p] {
				return corrupt("backup %s: %s is in none of its partitions", l.sn.Name, p)
			}
		case "unchanged":
			fi, err := r.fs.Lstat(physName(p))
			if err != nil || !fi.Mode().IsRegular() {
				return corrupt("backup %s keeps %s from its parent, which did not restore it", l.sn.Name, p)
			}
			if f.SHA256 != "" {
				r.expect[p] = strings.ToLower(f.SHA256)
			}
		}
	}
	return nil
}

func (r *restorer) restoreParts(ctx context.Context, st *layerState) error {
	return forEach(ctx, st.sn.Parts, r.conc, func(ctx context.Context, p catalog.Part, buf []byte) error {
		return r.restorePartRetrying(ctx, st, p, buf)
	})
}

// restorePartRetrying restores a partition, starting it over when the
// storage fails mid-transfer: the store retries opening an object, not
// reading it, and one connection reset must not throw away hours of a
// restore. Corrupt data and local failures are not retried.
func (r *restorer) restorePartRetrying(ctx context.Context, st *layerState, part catalog.Part, buf []byte) error {
	for attempt := 1; ; attempt++ {
		var files []string
		err := r.restorePart(ctx, st, part, buf, &files)
		if err == nil || attempt >= storage.TransferAttempts || ctx.Err() != nil ||
			!errors.Is(err, storage.ErrUnreachable) || errors.Is(err, codec.ErrCorrupt) {
			return err
		}
		r.log.Warn("partition transfer failed; starting it over", zap.String("key", part.Key),
			zap.Int("attempt", attempt), zap.Error(err))
		if uerr := r.undoPart(st, files); uerr != nil {
			return fmt.Errorf("%w (and starting over failed: %w)", err, uerr)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * transferRetryWait):
		}
	}
}

// undoPart forgets the files a failed attempt restored, so that the next
// one writes them again: whole files are removed (they are created
// exclusively), page deltas are simply written again.
func (r *restorer) undoPart(st *layerState, files []string) error {
	st.mu.Lock()
	for _, name := range files {
		delete(st.seen, name)
	}
	st.mu.Unlock()
	for _, name := range files {
		if st.files[name].Delta != "" {
			continue
		}
		if err := r.fs.Remove(physName(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", name, err)
		}
	}
	return nil
}

// forEach runs fn on every item, conc at a time, each worker with its own
// copy buffer. The first error cancels the rest and is returned.
func forEach[T any](ctx context.Context, items []T, conc int, fn func(context.Context, T, []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	jobs := make(chan T)
	for range min(max(conc, 1), len(items)) {
		wg.Go(func() {
			buf := make([]byte, copyBufSize)
			for p := range jobs {
				if ctx.Err() != nil {
					continue
				}
				if err := fn(ctx, p, buf); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		})
	}
feed:
	for _, p := range items {
		select {
		case jobs <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// restorePart streams one partition: Get, sha256 of the stored bytes,
// decode, untar into the directory. Memory stays bounded by the buffers.
// The regular files it starts writing are added to files.
func (r *restorer) restorePart(ctx context.Context, st *layerState, part catalog.Part, buf []byte, files *[]string) error {
	key := part.Key
	ext, err := keyExt(key, ".tar.")
	if err != nil {
		return err
	}
	rc, err := r.store.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return corrupt("backup %s: partition %s is missing", st.sn.Name, key)
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	src := &sourceReader{ctx: ctx, r: io.TeeReader(rc, h), count: r.countDownload}
	dec, err := r.codec.Decode(ext, src)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", key, sourceError(src, err))
	}
	err = r.untar(st, tar.NewReader(dec), key, src, buf, files)
	if err == nil {
		// Past the tar's end marker to the codec's end, so its checks run.
		if _, rerr := io.Copy(io.Discard, dec); rerr != nil {
			err = fmt.Errorf("fetch %s: %w", key, sourceError(src, rerr))
		}
	}
	dec.Close()
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, src); err != nil {
		return fmt.Errorf("fetch %s: %w", key, sourceError(src, err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, part.SHA256) {
		return corrupt("%s: sha256 of the stored object is %s, the sentinel says %s", key, got, part.SHA256)
	}
	if part.Size > 0 && src.n != part.Size {
		return corrupt("%s: %d bytes stored, the sentinel says %d", key, src.n, part.Size)
	}
	return nil
}

func (r *restorer) untar(st *layerState, tr *tar.Reader, key string, src *sourceReader, buf []byte, files *[]string) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fetch %s: %w", key, sourceError(src, err))
		}
		if err := r.entry(st, hdr, tr, key, src, buf, files); err != nil {
			return err
		}
	}
}

// entry restores one tar entry. Its path must be relative, without "..",
// and must not pass through a symlink; the os.Root refuses anything else
// that would leave the directory.
func (r *restorer) entry(st *layerState, hdr *tar.Header, tr io.Reader, key string, src *sourceReader, buf []byte, files *[]string) error {
	name, err := cleanEntryName(strings.TrimSuffix(hdr.Name, "/"))
	if err == nil && name == controlTmp {
		err = errors.New("reserved name")
	}
	if err != nil {
		return corrupt("%s: refusing tar entry %q: %v", key, hdr.Name, err)
	}
	if err := r.checkParents(name); err != nil {
		var ue *unsafePathError
		if errors.As(err, &ue) {
			return corrupt("%s: refusing tar entry %q: %v", key, hdr.Name, err)
		}
		return fmt.Errorf("restore %s: %w", name, err)
	}
	mf := st.files[name]
	switch hdr.Typeflag {
	case tar.TypeDir:
		if name == "." {
			return nil
		}
		if mf != nil && !fs.FileMode(mf.Mode).IsDir() {
			return corrupt("%s: %s is a folder, the manifest says %v", key, name, fs.FileMode(mf.Mode).Type())
		}
		return r.mkdir(name)
	case tar.TypeSymlink:
		if name == "." {
			return corrupt("%s: refusing tar entry %q: not a symlink name", key, hdr.Name)
		}
		if mf != nil && (fs.FileMode(mf.Mode)&fs.ModeSymlink == 0 || mf.Link != hdr.Linkname) {
			return corrupt("%s: symlink %s -> %s does not match the manifest", key, name, hdr.Linkname)
		}
		if err := r.makeRoom(name); err != nil {
			return err
		}
		// The target is stored as is and never followed while restoring.
		if err := r.fs.Symlink(hdr.Linkname, name); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		return nil
	case tar.TypeReg:
		if mf == nil || !fs.FileMode(mf.Mode).IsRegular() {
			return corrupt("%s: file %s is not a file in the manifest of %s", key, name, st.sn.Name)
		}
		st.mu.Lock()
		dup := st.seen[name]
		st.seen[name] = true
		st.mu.Unlock()
		if dup {
			return corrupt("%s: %s is stored twice in backup %s", key, name, st.sn.Name)
		}
		*files = append(*files, name)
		switch mf.Delta {
		case "":
			return r.writeFile(name, mf, hdr, tr, key, src, buf)
		case "pages":
			return r.patchFile(name, mf, hdr, tr, key, src, buf)
		}
		return corrupt("%s: %s is stored, but the manifest says %q", key, name, mf.Delta)
	case tar.TypeXGlobalHeader:
		return nil
	}
	return corrupt("%s: refusing tar entry %q: unsupported type %q", key, hdr.Name, hdr.Typeflag)
}

// unsafePathError: a path leads through a symlink or a non-folder.
type unsafePathError struct{ msg string }

func (e *unsafePathError) Error() string { return e.msg }

// checkParents refuses a path whose existing parent folders include a
// symlink or something other than a folder (an *unsafePathError):
// restoring never follows links.
func (r *restorer) checkParents(p string) error {
	for i := range len(p) {
		if p[i] != '/' {
			continue
		}
		parent := p[:i]
		fi, err := r.fs.Lstat(parent)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nor will anything below it
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return &unsafePathError{"its parent " + parent + " is a symlink"}
		}
		if !fi.IsDir() {
			return &unsafePathError{"its parent " + parent + " is not a folder"}
		}
	}
	return nil
}

// pathError marks unsafe paths as corrupt data and adds p to any error.
func pathError(p string, err error) error {
	var ue *unsafePathError
	if errors.As(err, &ue) {
		return corrupt("restore %s: %v", p, err)
	}
	return fmt.Errorf("restore %s: %w", p, err)
}

// makeRoom creates p's parent folders and removes whatever an earlier
// layer left at p.
func (r *restorer) makeRoom(p string) error {
	if err := r.checkParents(p); err != nil {
		return pathError(p, err)
	}
	if dir := path.Dir(p); dir != "." {
		if err := r.fs.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
		}
	}
	fi, err := r.fs.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("restore %s: %w", p, err)
	case fi.IsDir():
		err = r.fs.RemoveAll(p)
	default:
		err = r.fs.Remove(p)
	}
	if err != nil {
		return fmt.Errorf("restore %s: replace: %w", p, err)
	}
	return nil
}

// mkdir creates folder p (0700 while restoring; finish sets its mode).
func (r *restorer) mkdir(p string) error {
	fi, err := r.fs.Lstat(p)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		if err := r.makeRoom(p); err != nil {
			return err
		}
	}
	if err := r.fs.MkdirAll(p, 0o700); err != nil {
		return fmt.Errorf("restore %s: %w", p, err)
	}
	return nil
}

// copyData copies src to dst with buf, counting written bytes, and keeps
// read and write errors apart.
func (r *restorer) copyData(dst io.Writer, src io.Reader, buf []byte) (n int64, rerr, werr error) {
	for {
		m, err := src.Read(buf)
		if m > 0 {
			w, err := dst.Write(buf[:m])
			n += int64(w)
			r.written.Add(int64(w))
			if err != nil {
				return n, nil, err
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// writeFile restores a whole file, checking its sha256 against the manifest
// while writing. syncAll fsyncs it at the end, with many files at once.
func (r *restorer) writeFile(name string, mf *catalog.ManifestFile, hdr *tar.Header, tr io.Reader, key string, src *sourceReader, buf []byte) error {
	if hdr.Size != mf.Size {
		return corrupt("%s: %s is %d bytes, the manifest says %d", key, name, hdr.Size, mf.Size)
	}
	phys := physName(name)
	if err := r.makeRoom(phys); err != nil {
		return err
	}
	out, err := r.fs.OpenFile(phys, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	// Hashed on a goroutine of its own: one partition is one goroutine
	// reading, writing and hashing, and hashing is a fifth of its time.
	h := codec.NewAsyncSHA256()
	defer h.Close()
	_, rerr, werr := r.copyData(io.MultiWriter(out, h), tr, buf)
	if cerr := out.Close(); werr == nil {
		werr = cerr
	}
	if rerr != nil {
		return fmt.Errorf("restore %s from %s: %w", name, key, sourceError(src, rerr))
	}
	if werr != nil {
		return fmt.Errorf("restore %s: %w", name, werr)
	}
	sum := h.Sum()
	if !strings.EqualFold(sum, mf.SHA256) {
		return corrupt("%s in %s: sha256 %s, the manifest says %s", name, key, sum, mf.SHA256)
	}
	r.mu.Lock()
	r.expect[name], r.verified[name] = sum, sum
	r.mu.Unlock()
	return nil
}

// patchFile applies a "pages" delta to the file an earlier layer restored:
// resize it to the manifest's size, then write each stored page in place.
// finish checks the result against the final manifest's sha256.
func (r *restorer) patchFile(name string, mf *catalog.ManifestFile, hdr *tar.Header, tr io.Reader, key string, src *sourceReader, buf []byte) error {
	if hdr.Size != int64(len(mf.Pages))*pgdata.PageSize {
		return corrupt("%s: delta of %s is %d bytes, the manifest lists %d pages", key, name, hdr.Size, len(mf.Pages))
	}
	phys := physName(name)
	fi, err := r.fs.Lstat(phys)
	if err != nil || !fi.Mode().IsRegular() {
		return corrupt("%s: page delta of %s, which the parent backup did not restore", key, name)
	}
	if fi.Mode().Perm()&0o600 != 0o600 {
		if err := r.fs.Chmod(phys, 0o600); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
	}
	out, err := r.fs.OpenFile(phys, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	defer out.Close()
	if err := out.Truncate(mf.Size); err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	page := buf[:pgdata.PageSize]
	for _, pg := range mf.Pages {
		if _, err := io.ReadFull(tr, page); err != nil {
			return fmt.Errorf("restore %s from %s: %w", name, key, sourceError(src, err))
		}
		off := int64(pg) * pgdata.PageSize
		n := min(pgdata.PageSize, mf.Size-off) // checkManifest made off < Size
		if _, err := out.WriteAt(page[:n], off); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		r.written.Add(n)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("restore %s: fsync: %w", name, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	r.mu.Lock()
	r.expect[name], r.verified[name] = strings.ToLower(mf.SHA256), ""
	r.mu.Unlock()
	return nil
}

// prune removes everything in the directory that l's manifest does not
// list (files dropped since the parent), keeping the folders that lead to
// listed paths.
func (r *restorer) prune(l *layer) error {
	keep := make(map[string]bool, len(l.files))
	for p := range l.files {
		for q := p; q != "." && !keep[q]; q = path.Dir(q) {
			keep[q] = true
		}
	}
	var drop []string
	err := r.fs.walk(func(p string, d fs.DirEntry) error {
		if p == "." || keep[logicalName(p)] {
			return nil
		}
		drop = append(drop, p)
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore into %s: %w", r.dir, err)
	}
	for _, p := range drop {
		r.log.Debug("removing what the backup no longer holds", zap.String("backup", l.sn.Name), zap.String("path", p))
		if err := r.fs.RemoveAll(p); err != nil {
			return fmt.Errorf("restore: remove %s: %w", p, err)
		}
		delete(r.expect, logicalName(p))
		delete(r.verified, logicalName(p))
	}
	return nil
}

// finish makes the directory match the final manifest: folders and links
// present, every file there with its size, every file not checked against
// its final sha256 while written (page deltas) checked now, the skipped
// folders created, modes and times set. It returns the number of files.
func (r *restorer) finish(ctx context.Context, l *layer) (int, error) {
	paths := make([]string, 0, len(l.files))
	for p := range l.files {
		paths = append(paths, p)
	}
	sort.Strings(paths) // parents first
	var check []string
	files := 0
	for _, p := range paths {
		f := l.files[p]
		mode := fs.FileMode(f.Mode)
		phys := physName(p)
		fi, err := r.fs.Lstat(phys)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("restore %s: %w", p, err)
		}
		switch {
		case mode.IsDir():
			if err == nil && !fi.IsDir() {
				return 0, corrupt("backup %s: %s is a folder, but a %v was restored", l.sn.Name, p, fi.Mode().Type())
			}
			if err != nil {
				if err := r.checkParents(p); err != nil {
					return 0, pathError(p, err)
				}
				if err := r.fs.MkdirAll(p, 0o700); err != nil {
					return 0, fmt.Errorf("restore %s: %w", p, err)
				}
			}
		case mode&fs.ModeSymlink != 0:
			if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				if target, err := r.fs.Readlink(p); err == nil && target == f.Link {
					continue
				}
			} else if err == nil {
				return 0, corrupt("backup %s: %s is a symlink, but a %v was restored", l.sn.Name, p, fi.Mode().Type())
			}
			if err := r.makeRoom(p); err != nil {
				return 0, err
			}
			if err := r.fs.Symlink(f.Link, p); err != nil {
				return 0, fmt.Errorf("restore %s: %w", p, err)
			}
		default:
			if err != nil || !fi.Mode().IsRegular() {
				return 0, corrupt("backup %s: %s was not restored", l.sn.Name, p)
			}
			if fi.Size() != f.Size {
				return 0, corrupt("backup %s: %s restored with %d bytes, the manifest says %d", l.sn.Name, p, fi.Size(), f.Size)
			}
			files++
			if want := r.expect[p]; want != "" && r.verified[p] != want {
				check = append(check, p)
			}
		}
	}
	if err := r.verify(ctx, l, check); err != nil {
		return 0, err
	}
	r.makeSkippedDirs(l.sn)
	if err := r.setModes(l, paths); err != nil {
		return 0, err
	}
	if err := r.fs.link(); err != nil {
		return 0, err
	}
	return files, nil
}

// verify hashes files whose content was patched (or changed kind of
// check) and compares them with the sha256 the chain's manifests give.
func (r *restorer) verify(ctx context.Context, l *layer, paths []string) error {
	return forEach(ctx, paths, r.conc, func(ctx context.Context, p string, buf []byte) error {
		return r.verifyOne(ctx, l, p, buf)
	})
}

func (r *restorer) verifyOne(ctx context.Context, l *layer, p string, buf []byte) error {
	f, err := r.fs.Open(physName(p))
	if err != nil {
		return fmt.Errorf("verify %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, &sourceReader{ctx: ctx, r: f}, buf); err != nil {
		return fmt.Errorf("verify %s: %w", p, readError(err))
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want := r.expect[p]; got != want {
		return corrupt("%s: sha256 %s after applying backup %s and its parents, the manifest says %s", p, got, l.sn.Name, want)
	}
	return nil
}

// makeSkippedDirs creates the folders a base backup leaves out, where
// missing. An existing entry (pg_wal may be a symlink) is left alone.
func (r *restorer) makeSkippedDirs(sn *catalog.Sentinel) {
	for _, d := range pgdata.RestoreDirs(sn.PGVersion) {
		_, err := r.fs.Lstat(d)
		if err == nil {
			continue
		}
		if errors.Is(err, fs.ErrNotExist) {
			err = r.fs.Mkdir(d, 0o700)
		}
		if err != nil {
			r.log.Warn("could not create folder", zap.String("folder", d), zap.Error(err))
		}
	}
}

// setModes gives files and folders their manifest mode and time, folders
// deepest first (after everything inside them is written). Folders keep
// owner rwx, which Postgres needs on every folder of its data directory.
func (r *restorer) setModes(l *layer, paths []string) error {
	for i := len(paths) - 1; i >= 0; i-- {
		p := paths[i]
		f := l.files[p]
		mode := fs.FileMode(f.Mode)
		if mode&fs.ModeSymlink != 0 {
			continue // Chmod and Chtimes would follow the link
		}
		perm := mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		if mode.IsDir() {
			perm |= 0o700
		}
		if err := r.fs.Chmod(physName(p), perm); err != nil {
			return fmt.Errorf("restore %s: %w", p, err)
		}
		if !f.ModTime.IsZero() {
			if err := r.fs.Chtimes(physName(p), f.ModTime, f.ModTime); err != nil {
				return fmt.Errorf("restore %s: %w", p, err)
			}
		}
	}
	return nil
}

// syncAll fsyncs every file and folder restored. Files are synced several
// at a time, not one by one as they are written: a thousand serial fsyncs
// cost more than the whole download.
func (r *restorer) syncAll() error {
	var files, dirs []string
	err := r.fs.walk(func(p string, d fs.DirEntry) error {
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
		case d.Type().IsRegular():
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("restore into %s: fsync: %w", r.dir, err)
	}
	syncOne := func(p string) error {
		f, err := r.fs.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	}
	jobs := make(chan string)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range 8 {
		wg.Go(func() {
			for p := range jobs {
				if err := syncOne(p); err != nil {
					once.Do(func() { firstErr = err })
				}
			}
		})
	}
	for _, p := range files {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	for _, p := range dirs {
		if err := syncOne(p); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return fmt.Errorf("restore into %s: fsync: %w", r.dir, firstErr)
	}
	return nil
}

// placeControlFile renames global/pg_control into place, the last step of
// a restore, and makes the rename durable.
func (r *restorer) placeControlFile(l *layer) error {
	if _, err := r.fs.Lstat(controlTmp); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// The cluster restored must be the one the sentinel names: a sentinel
	// put over another backup's key must never be restored as that backup.
	if want := l.sn.SystemID; want != "" {
		b, err := readRootHead(r.fs.main, controlTmp, pgdata.PageSize)
		if err != nil {
			return fmt.Errorf("restore %s: %w", controlFile, err)
		}
		if id, err := pgdata.ControlSystemID(b); err == nil && strconv.FormatUint(id, 10) != want {
			return fmt.Errorf("%w: backup %s: its pg_control is of database system %d, its sentinel says %s", codec.ErrCorrupt, l.sn.Name, id, want)
		}
	}
	if err := r.fs.Rename(controlTmp, controlFile); err != nil {
		return fmt.Errorf("restore %s: %w", controlFile, err)
	}
	dir := path.Dir(controlFile)
	if f := l.files[dir]; f != nil && !f.ModTime.IsZero() {
		r.fs.Chtimes(dir, f.ModTime, f.ModTime)
	}
	d, err := r.fs.Open(dir)
	if err != nil {
		return fmt.Errorf("restore %s: %w", controlFile, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("restore %s: fsync: %w", controlFile, err)
	}
	return nil
}

// countDownload adds n stored bytes read and reports the running total.
// A partition started over counts again: the total is what was read.
func (r *restorer) countDownload(n int64) {
	d := r.downloaded.Add(n)
	if r.progress != nil {
		r.progress(d, max(r.total, d))
	}
}

// setTotal sums the stored sizes of every layer's partitions: what
// progress counts towards.
func (r *restorer) setTotal(layers []*layer) {
	for _, l := range layers {
		for _, p := range l.sn.Parts {
			r.total += p.Size
		}
	}
}

// readRootHead reads at most n bytes from the start of a file below root.
func readRootHead(root *os.Root, name string, n int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}
