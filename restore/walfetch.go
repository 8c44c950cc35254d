// Package restore brings data back out of the archive: wal-fetch for
// restore_command (with prefetch), and later base backup restores.
package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/lockfile"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// ErrInvalid: the request names no WAL file or a bad destination.
var ErrInvalid = errors.New("invalid request")

// FetchConfig holds wal-fetch's settings.
type FetchConfig struct {
	// Codec decodes (and decrypts) objects; its extension is tried first.
	Codec *codec.Codec
	// Prefetch is how many following segments to fetch in the background.
	Prefetch int
	// Concurrency is how many prefetch downloads run at once.
	Concurrency int
	// StartPrefetch starts the detached background prefetch for the
	// segments after seg (the caller knows how to launch itself, and
	// hands it the settings this Fetcher was made with). Nil disables
	// prefetch.
	StartPrefetch func(seg string, walDir string, segSize int64) error
	// Repository identifies the repository behind the store beyond its
	// String() (which names its location): a repository id, once the
	// repository has one. Prefetched copies carry a tag made of both, and
	// a copy made for any other repository is never used.
	Repository string
}

// Fetcher serves restore_command.
type Fetcher struct {
	store storage.Store
	cfg   FetchConfig
	log   *zap.Logger

	sysOnce sync.Once
	sysID   uint64 // of the cluster being recovered; 0 if unknown
	segSize int64  // its WAL segment size; 0 if unknown
	tag     string // the repository's tag in prefetched copies
}

// readControl reads the cluster's pg_control once (see clusterControl):
// walDir is the folder fetched WAL goes to (pg_wal, or the prefetch
// folder inside it).
func (f *Fetcher) readControl(walDir string) {
	f.sysOnce.Do(func() {
		if filepath.Base(walDir) == "prefetch" && filepath.Base(filepath.Dir(walDir)) == "walgo" {
			walDir = filepath.Dir(filepath.Dir(walDir))
		}
		f.sysID, f.segSize = clusterControl(walDir, f.log)
	})
}

// systemID is the cluster's system identifier; 0 if unknown.
func (f *Fetcher) systemID(walDir string) uint64 {
	f.readControl(walDir)
	return f.sysID
}

// segmentSize is the cluster's WAL segment size; 0 if unknown.
func (f *Fetcher) segmentSize(walDir string) int64 {
	f.readControl(walDir)
	return f.segSize
}

// NewFetcher returns a Fetcher.
func NewFetcher(store storage.Store, cfg FetchConfig, log *zap.Logger) *Fetcher {
	if cfg.Codec == nil {
		cfg.Codec = codec.New(nil, nil, nil)
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	sum := sha256.Sum256([]byte(store.String() + "\n" + cfg.Repository))
	return &Fetcher{store: store, cfg: cfg, log: log, tag: hex.EncodeToString(sum[:16])}
}

// PrefetchDir is the folder inside pg_wal that prefetched segments wait in.
func PrefetchDir(walDir string) string { return filepath.Join(walDir, "walgo", "prefetch") }

// Fetch writes WAL file name to dest (restore_command's %f and %p). It
// returns an error wrapping storage.ErrNotFound when the archive does not
// hold the file, and other errors for every other failure. dest is written
// whole or not at all.
func (f *Fetcher) Fetch(ctx context.Context, name, dest string) error {
	start := time.Now()
	kind := wal.Classify(name)
	if kind == wal.KindUnknown {
		return fmt.Errorf("%w: %q is not a WAL file name", ErrInvalid, name)
	}
	absDest, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("%w: destination %s: %v", ErrInvalid, dest, err)
	}
	if fi, err := os.Stat(filepath.Dir(absDest)); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: destination folder %s does not exist", ErrInvalid, filepath.Dir(absDest))
	}
	walDir := filepath.Dir(absDest)
	sweepFetchTemps(walDir, f.log)
	if kind == wal.KindSegment {
		size, ok := f.takePrefetched(name, absDest)
		if !ok {
			size, ok = f.awaitPrefetched(ctx, name, absDest)
		}
		if ok {
			f.log.Info("fetched", zap.String("wal", name), zap.Bool("prefetched", true), zap.Duration("took", time.Since(start)))
			f.startPrefetch(name, walDir, size)
			return nil
		}
	}
	started := kind == wal.KindSegment && f.startPrefetchFirst(name, walDir)
	size, err := f.download(ctx, name, absDest)
	if err != nil {
		return err
	}
	f.log.Info("fetched", zap.String("wal", name), zap.Int64("bytes", size), zap.Duration("took", time.Since(start)))
	if kind == wal.KindSegment && !started {
		f.startPrefetch(name, walDir, size)
	}
	return nil
}

// startPrefetch tells the background prefetch that Postgres is at
// segment name, and starts one if none runs.
func (f *Fetcher) startPrefetch(name, walDir string, segSize int64) {
	if f.cfg.Prefetch <= 0 || f.cfg.StartPrefetch == nil {
		return
	}
	start, err := notePosition(walDir, name, segSize)
	if err == nil && start {
		err = f.cfg.StartPrefetch(name, walDir, segSize)
	}
	if err != nil {
		f.log.Warn("start prefetch", zap.String("wal", name), zap.Error(err))
	}
}

// startPrefetchFirst starts the background prefetch at name before this
// call downloads name itself, when none runs yet and pg_control gives the
// segment size, and reports whether it did: the first call of a recovery
// then overlaps its download with the prefetch's start, listing and first
// downloads. A running prefetch hears of the position once name is
// served, as before.
func (f *Fetcher) startPrefetchFirst(name, walDir string) bool {
	if f.cfg.Prefetch <= 0 || f.cfg.StartPrefetch == nil {
		return false
	}
	size := f.segmentSize(walDir)
	if size == 0 || prefetchRunning(walDir) {
		return false
	}
	f.startPrefetch(name, walDir, size)
	return true
}

// prefetchWaitMax bounds how long wal-fetch waits for a segment the
// prefetch is downloading before it downloads the segment itself.
var prefetchWaitMax = 30 * time.Second

// awaitPrefetched takes name from the prefetch folder once the prefetch
// finishes downloading it, if it is downloading it now (it holds the
// segment's claim): a download that started earlier ends sooner than a
// new one, and the segment is fetched once.
func (f *Fetcher) awaitPrefetched(ctx context.Context, name, dest string) (int64, bool) {
	cl := prefetchClaims(filepath.Dir(dest))
	if !lockfile.Held(cl.Path(name)) {
		return 0, false
	}
	c, ok, err := cl.Wait(ctx, name, prefetchWaitMax)
	if err != nil || !ok {
		return 0, false
	}
	defer cl.Release(name, c)
	return f.takePrefetched(name, dest)
}

// download fetches name into dest through a temp file in dest's folder:
// decode, check, fsync, rename, fsync the folder. It returns the plain
// size. The first attempt finds the file with catalog.OpenWAL (one GET
// when it is stored with the configured codec), or with
// catalog.OpenWALListed (one LIST) for a file most likely missing: a
// history file, or the segment the prefetch found missing (missingFile).
// Once found, a copy that is gone is a storage failure
// (catalog.ErrVanished), never "not in the archive".
func (f *Fetcher) download(ctx context.Context, name, dest string) (int64, error) {
	open := func() (*catalog.OpenedWAL, error) { return catalog.OpenWAL(ctx, f.store, name, f.cfg.Codec) }
	// Postgres asks for the next timeline's history at the end of every
	// recovery and at each poll of a standby: it is missing almost every
	// time. The hinted segment is where the prefetch's listing ended.
	kind := wal.Classify(name)
	if kind == wal.KindHistory || kind == wal.KindSegment && missingHint(filepath.Dir(dest)) == name {
		open = func() (*catalog.OpenedWAL, error) { return catalog.OpenWALListed(ctx, f.store, name) }
	}
	found, err := open()
	if err != nil {
		return 0, err
	}
	if len(found.Unreadable) > 0 {
		f.log.Warn("ignoring copies stored with an extension walgo does not read", zap.String("wal", name),
			zap.String("using", found.Key), zap.Strings("ignored", found.Unreadable))
	}
	return f.fetchObject(ctx, found.WALObject, found.Body, name, dest, nil)
}

// fetchObject downloads the stored copy o of name into dest (see
// download), from rc if it is already open. A copy that is gone is a
// storage failure (catalog.ErrVanished). With h (the prefetch), h sees
// every plain byte and nothing is fsynced: the prefetch's sidecar, checked
// when the copy is taken, proves it whole instead.
func (f *Fetcher) fetchObject(ctx context.Context, o catalog.WALObject, rc io.ReadCloser, name, dest string, h hash.Hash) (int64, error) {
	// The store retries opening an object, not reading it: a body cut off
	// by the network starts over here, so one broken transfer never makes
	// Postgres stop recovery.
	var n int64
	var err error
	for attempt := 1; ; attempt++ {
		if h != nil {
			h.Reset()
		}
		if rc == nil {
			if rc, err = f.store.Get(ctx, o.Key); errors.Is(err, storage.ErrNotFound) {
				return 0, fmt.Errorf("fetch %s: read once, then %w", o.Key, catalog.ErrVanished)
			} else if err != nil {
				return 0, fmt.Errorf("fetch %s: %w", o.Key, err)
			}
		}
		n, err = f.downloadOnce(o, rc, name, dest, h)
		rc = nil
		if err == nil || attempt >= storage.TransferAttempts || !errors.Is(err, storage.ErrUnreachable) || errors.Is(err, codec.ErrCorrupt) {
			return n, err
		}
		f.log.Warn("download failed; starting over", zap.String("wal", name), zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(time.Duration(attempt) * transferRetryWait):
		}
	}
}

// transferRetryWait grows the wait after each transfer of a WAL file or
// backup partition cut off mid-way (storage.TransferAttempts in all).
var transferRetryWait = time.Second // a variable for the tests

// downloadOnce decodes the opened object rc into dest and closes rc.
func (f *Fetcher) downloadOnce(o catalog.WALObject, rc io.ReadCloser, name, dest string, h hash.Hash) (int64, error) {
	defer rc.Close()
	dec, err := f.cfg.Codec.Decode(o.Ext, rc)
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", o.Key, err)
	}
	defer dec.Close()
	dir := filepath.Dir(dest)
	tmp, err := os.CreateTemp(dir, fetchTempPrefix+name+"-*")
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Held until the file is renamed: sweepFetchTemps leaves it alone.
	if err := syscall.Flock(int(tmp.Fd()), syscall.LOCK_EX); err != nil {
		return 0, fmt.Errorf("fetch %s: lock %s: %w", name, tmp.Name(), err)
	}
	var w io.Writer = tmp
	if h != nil {
		w = io.MultiWriter(tmp, h)
	}
	n, err := io.Copy(w, dec)
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", o.Key, err)
	}
	if k := wal.Classify(name); k == wal.KindSegment || k == wal.KindPartial {
		if err := checkSegmentFile(tmp, name, n, f.systemID(filepath.Dir(dest))); err != nil {
			return 0, fmt.Errorf("fetch %s: %w: %w", o.Key, codec.ErrCorrupt, err)
		}
	}
	durable := h == nil
	if durable {
		if err := tmp.Sync(); err != nil {
			return 0, fmt.Errorf("fetch %s: fsync: %w", name, err)
		}
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return 0, fmt.Errorf("fetch %s: %w", name, err)
	}
	ok = true
	// Synced already (or checked when taken): closing can lose nothing.
	tmp.Close()
	if !durable {
		return n, nil
	}
	if err := syncDir(dir); err != nil {
		return 0, fmt.Errorf("fetch %s: fsync folder: %w", name, err)
	}
	return n, nil
}

// fetchTempPrefix starts the name of every temp file a fetch writes.
const fetchTempPrefix = ".walgo-fetch-"

// staleTemp is how old (last written) a fetch's temp file must be before
// sweepFetchTemps may take it for a leftover: a fetch locks its temp file
// right after creating it, and this covers that moment many times over.
const staleTemp = time.Minute

// sweepFetchTemps removes the temp files that fetches killed before their
// rename left in dir: walgo's own names only, last written over staleTemp
// ago, and not locked by a running fetch.
func sweepFetchTemps(dir string, log *zap.Logger) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		if !strings.HasPrefix(n, fetchTempPrefix) {
			continue
		}
		p := filepath.Join(dir, n)
		if removeStaleTemp(p) {
			log.Info("removed a temp file a killed wal-fetch left", zap.String("file", p))
		}
	}
}

func removeStaleTemp(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || time.Since(fi.ModTime()) < staleTemp {
		return false
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return false // a fetch is writing it
	}
	return os.Remove(p) == nil
}

// checkSegmentFile checks a fetched segment's long page header against its
// name and size and, when sysID is not 0, against the system identifier of
// the cluster being recovered: Postgres would end recovery on another
// cluster's segment ("WAL file is from different database system") and
// promote without the WAL after it.
func checkSegmentFile(f *os.File, name string, size int64, sysID uint64) error {
	seg, err := wal.ParseSegment(name[:24])
	if err != nil {
		return err
	}
	buf := make([]byte, wal.HeaderSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("%w: %d bytes, shorter than a header", wal.ErrBadHeader, size)
	}
	h, err := wal.ParseHeader(buf)
	if err != nil {
		return err
	}
	if err := h.Check(seg, size); err != nil {
		return err
	}
	if sysID != 0 && h.SystemID != sysID {
		return fmt.Errorf("%w: %s is WAL of database system %d, but the cluster being recovered is %d (another cluster's WAL stored under this name, or the wrong repository)",
			wal.ErrBadHeader, name, h.SystemID, sysID)
	}
	return nil
}

// clusterControl is the system identifier and WAL segment size of the
// cluster recovering into walDir, from its global/pg_control: Postgres
// runs restore_command in the data directory, and pg_wal is inside it.
// 0 for what neither place's pg_control gives (wal-fetch run by hand
// somewhere else): the header is then checked without the identifier,
// and the prefetch starts after the first download.
func clusterControl(walDir string, log *zap.Logger) (sysID uint64, segSize int64) {
	dirs := []string{filepath.Dir(walDir)}
	if wd, err := os.Getwd(); err == nil && wd != dirs[0] {
		dirs = append([]string{wd}, dirs...)
	}
	for _, d := range dirs {
		p := filepath.Join(d, pgdata.ControlFile)
		b, err := readHead(p, pgdata.PageSize)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			if c, perr := pgdata.ParseControl(b); perr == nil {
				return c.SystemID, int64(c.WALSegSize)
			}
			var id uint64
			if id, err = pgdata.ControlSystemID(b); err == nil {
				return id, 0
			}
		}
		log.Warn("cannot read the cluster's system identifier: segments are not checked against it", zap.String("pg_control", p), zap.Error(err))
		return 0, 0
	}
	return 0, 0
}

// readHead reads at most n bytes from the start of a file.
func readHead(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// takePrefetched moves a prefetched copy of name to dest if it was
// prefetched from this repository and is whole: its CRC-32C matches the
// one recorded while it was downloaded (the download itself was checked
// by the codec and the segment header). A damaged or unfinished copy, or
// one from another repository, is removed and ignored. It returns the
// segment size.
//
// Postgres waits for this call, so it does no more than it must: no
// request (the store is not touched), one read of the copy, a link and a
// rename, and no fsync: Postgres fsyncs the segments it keeps (durable_rename
// when it renames RECOVERYXLOG) and fetches again after a crash.
func (f *Fetcher) takePrefetched(name, dest string) (int64, bool) {
	dir := PrefetchDir(filepath.Dir(dest))
	p := filepath.Join(dir, name)
	sum, tag, ok := readSidecar(p)
	if !ok {
		return 0, false
	}
	if tag != f.tag {
		f.log.Info("ignoring a segment prefetched from another repository", zap.String("wal", name))
		os.Remove(p)
		os.Remove(p + SidecarExt)
		return 0, false
	}
	discard := func(why string) (int64, bool) {
		f.log.Warn("ignoring damaged prefetched segment", zap.String("wal", name), zap.String("why", why))
		os.Remove(p)
		os.Remove(p + SidecarExt)
		return 0, false
	}
	file, err := os.Open(p)
	if err != nil {
		return discard(err.Error())
	}
	h := newCopySum()
	n, err := io.Copy(h, file)
	if err == nil {
		err = checkSegmentFile(file, name, n, f.systemID(filepath.Dir(dest)))
	}
	file.Close()
	if err != nil {
		return discard(err.Error())
	}
	if got := copySum(h); got != sum {
		return discard(fmt.Sprintf("checksum %s, recorded %s", got, sum))
	}
	// A hard link (same file system: both inside pg_wal) renamed into
	// place, not a rename of the copy: the copy stays while it is the
	// position (see prefetcher.evict), because Postgres asks once more for
	// the segment it ended recovery in. Its checksum is checked again
	// then, so whatever wrote to the shared file since is caught.
	tmp := filepath.Join(filepath.Dir(dest), fetchTempPrefix+name+"-link")
	os.Remove(tmp)
	if err := os.Link(p, tmp); err != nil {
		// A file system without hard links: hand the copy over.
		if err := os.Rename(p, dest); err != nil {
			return discard(err.Error())
		}
		os.Remove(p + SidecarExt)
		return n, true
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return discard(err.Error())
	}
	return n, true
}

// SidecarExt names the file beside each prefetched segment that says it is
// whole and where it came from: "crc32c:<checksum of the segment>
// <repository tag>". It is written only after the segment is in place, and
// the copy is checked against it when it is taken, so a copy cut short by
// a crash, or changed since, is never used.
//
// CRC-32C, the checksum Postgres puts on every WAL record, runs in
// hardware at many GB/s: checking a 16 MiB segment while Postgres waits
// costs ~2 ms, where sha256 cost ~15 ms (a third of the call). It guards
// against accidental damage on the local disk; what came over the network
// was checked by the codec already.
const SidecarExt = ".sum"

// newCopySum returns the hash of a prefetched copy that the sidecar records
// (the standard library builds the Castagnoli table once).
func newCopySum() hash.Hash32 { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }

// copySum is h's value as the sidecar writes it.
func copySum(h hash.Hash32) string { return fmt.Sprintf("crc32c:%08x", h.Sum32()) }

// readSidecar reads the sidecar of the prefetched segment at p. A sidecar
// without a tag gives "", which matches no repository.
func readSidecar(p string) (sum, tag string, ok bool) {
	b, err := os.ReadFile(p + SidecarExt)
	if err != nil {
		return "", "", false
	}
	sum, tag, _ = strings.Cut(strings.TrimSpace(string(b)), " ")
	return sum, tag, true
}

// InStandby reports whether the cluster that restore_command's dest belongs
// to is a standby (standby.signal in its data directory). Postgres runs
// restore_command in the data directory with dest under pg_wal.
func InStandby(dest string) bool {
	return signalled(dest, pgdata.StandbySignalFile)
}

// signalled reports whether one of the signal files is in the data
// directory of walFile (a path under pg_wal): the grandparent of walFile,
// or the working directory, where Postgres runs its hooks.
func signalled(walFile string, signals ...string) bool {
	abs, err := filepath.Abs(walFile)
	if err != nil {
		return false
	}
	candidates := []string{filepath.Dir(filepath.Dir(abs))}
	if wd, err := os.Getwd(); err == nil {
		candidates = append(candidates, wd)
	}
	for _, d := range candidates {
		for _, s := range signals {
			if _, err := os.Stat(filepath.Join(d, s)); err == nil {
				return true
			}
		}
	}
	return false
}

// SweepAfterRecovery removes the prefetch folder of walDir (the pg_wal
// that archive_command's file is in) once its cluster is out of recovery
// (no recovery.signal or standby.signal): nothing will ever take those
// segments. It leaves the folder while a prefetch still runs in it; a
// later call removes it.
func SweepAfterRecovery(walDir string, log *zap.Logger) {
	dir := PrefetchDir(walDir)
	if _, err := os.Lstat(dir); err != nil {
		return
	}
	if signalled(filepath.Join(walDir, "RECOVERYXLOG"), pgdata.RecoverySignalFile, pgdata.StandbySignalFile) {
		return
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return // a prefetch still runs
	}
	if err := os.RemoveAll(dir); err != nil {
		log.Warn("remove the prefetch folder left by recovery", zap.String("folder", dir), zap.Error(err))
		return
	}
	log.Info("removed the prefetch folder left by recovery", zap.String("folder", dir))
}
