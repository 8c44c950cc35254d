// Package archive is wal-push: it stores one WAL file Postgres hands to
// archive_command, and pushes the next .ready files ahead of time so that
// Postgres' following calls return at once.
package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/lockfile"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

var (
	// ErrConflict: the archive already holds this WAL file with other
	// content. Nothing was overwritten.
	ErrConflict = errors.New("archived copy differs from the local file")
	// ErrInvalid: the path is not a WAL file Postgres would archive.
	ErrInvalid = errors.New("invalid WAL file")
)

// Config holds wal-push's settings.
type Config struct {
	// Codec compresses (and maybe encrypts) what is stored, and reads
	// the archive's copies back for comparison.
	Codec *codec.Codec
	// Concurrency is how many files are pushed at once: the one asked for
	// plus up to Concurrency-1 look-ahead .ready files. 1 turns look-ahead off.
	Concurrency int
	// Now is the clock (time.Now when nil), for the age of the cached
	// repository description.
	Now func() time.Time
	// StartAhead, when set, starts a background pusher (a PushAhead for
	// walDir, in a process of its own that outlives the call). Push then
	// pushes only its own file, and after a success calls StartAhead when
	// other .ready files wait and no pusher runs (Concurrency > 1). When
	// nil, Push pushes up to Concurrency-1 further .ready files itself
	// before it returns (look-ahead).
	StartAhead func(walDir string) error
}

// Pusher pushes WAL files to one store.
type Pusher struct {
	store storage.Store
	cfg   Config
	log   *zap.Logger
}

// New returns a Pusher. cfg.Codec defaults to plain zstd.
func New(store storage.Store, cfg Config, log *zap.Logger) *Pusher {
	if cfg.Codec == nil {
		cfg.Codec = codec.New(nil, nil, nil)
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Pusher{store: store, cfg: cfg, log: log}
}

// Result says what Push did.
type Result struct {
	Name      string
	Skipped   bool // the archive already held identical content, or look-ahead pushed it
	Stored    int64
	Plain     int64
	LookAhead []string // other .ready files pushed in the same call
}

// Push archives the WAL file at path (archive_command's %p). It returns nil
// only once the file is durably stored, or the archive already holds the
// same content. Different content already archived is ErrConflict.
//
// Requests: a new file costs one create, nothing else. A file the archive
// holds costs the create that fails and one Stat, whose metadata (the
// plain content's sha256) confirms it without reading it back. A file a
// look-ahead push or the background pusher (Config.StartAhead) stored
// costs one read of the repository description,
// which proves the marker was made in this very repository. The
// repository description is otherwise read at most once per
// catalog.RepositoryCacheTTL
// (cached in pg_wal/walgo/repository). A missing repository fails with
// catalog.ErrNoRepository and stores nothing.
func (p *Pusher) Push(ctx context.Context, path string) (Result, error) {
	start := time.Now()
	abs, err := filepath.Abs(path)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	name := filepath.Base(abs)
	if wal.Classify(name) == wal.KindUnknown {
		return Result{}, fmt.Errorf("%w: %s: %q is not a WAL file name", ErrInvalid, path, name)
	}
	walDir := filepath.Dir(abs)
	own := filepath.Join(walDir, "walgo")
	marks := markers{dir: filepath.Join(own, "pushed"), store: p.store.String()}
	cache := catalog.RepositoryCache{Path: filepath.Join(own, "repository"), Now: p.cfg.Now}
	defer marks.clean(walDir)

	if done, err := p.pushedAhead(ctx, cache, marks, name); err != nil {
		return Result{Name: name}, err
	} else if done {
		// The pusher may have stopped (idle, or failed on a file): keep
		// one running while a backlog waits.
		p.startAhead(walDir, name, marks)
		return Result{Name: name, Skipped: true}, nil
	}
	repo, err := p.repository(ctx, cache, false)
	if err != nil {
		return Result{Name: name}, err
	}
	store := repo.Store(p.store, p.log)

	if p.cfg.StartAhead != nil {
		// The background pusher may be storing this very file: wait for
		// it rather than compress the file a second time.
		cl := lockfile.Claims{Dir: filepath.Join(own, "pushing")}
		c, ok, err := cl.Wait(ctx, name, claimWaitMax)
		if err != nil {
			return Result{Name: name}, fmt.Errorf("push %s: claim: %w", name, err)
		}
		if !ok {
			p.log.Warn("the background pusher held this file too long; pushing it here too", zap.String("wal", name), zap.Duration("waited", claimWaitMax))
		}
		defer cl.Release(name, c)
		if done, err := p.pushedAhead(ctx, cache, marks, name); err != nil || done {
			return Result{Name: name, Skipped: done}, err
		}
	}
	var ahead []string
	if p.cfg.Concurrency > 1 && p.cfg.StartAhead == nil {
		ahead = readyAfter(walDir, name, p.cfg.Concurrency-1)
	}
	results := make([]Result, len(ahead))
	errs := make([]error, len(ahead))
	var wg sync.WaitGroup
	for i, n := range ahead {
		wg.Go(func() {
			results[i], errs[i] = p.pushFile(ctx, store, filepath.Join(walDir, n))
		})
	}
	res, err := p.pushFile(ctx, store, abs)
	wg.Wait()

	// A look-ahead failure is not this call's failure: Postgres will ask
	// for that file next and get the error then.
	for i, n := range ahead {
		if errs[i] != nil {
			p.log.Warn("look-ahead push failed", zap.String("wal", n), zap.Error(errs[i]))
			continue
		}
		if merr := marks.put(n, repo.ID); merr != nil {
			p.log.Warn("record look-ahead push", zap.String("wal", n), zap.Error(merr))
			continue
		}
		res.LookAhead = append(res.LookAhead, n)
	}
	if err == nil && p.cfg.StartAhead != nil {
		// Marked before the claim is let go: a background pusher that
		// claims the file next sees that it is stored.
		if merr := marks.put(name, repo.ID); merr != nil {
			p.log.Warn("record push", zap.String("wal", name), zap.Error(merr))
		}
		// Only after a success: in an outage a pusher would fail too,
		// and log its own lines for every file.
		p.startAhead(walDir, name, marks)
	}
	if err != nil {
		return res, err
	}
	p.log.Info("pushed", zap.String("wal", name), zap.Bool("already_archived", res.Skipped),
		zap.Int64("bytes", res.Plain), zap.Int64("stored_bytes", res.Stored),
		zap.Strings("look_ahead", res.LookAhead), zap.Duration("took", time.Since(start)))
	return res, nil
}

// pushedAhead reports whether a marker says name is stored already (by a
// look-ahead push or the background pusher), in the repository the store
// holds now: the marker's repository ID is checked against a fresh read of
// the repository description, so one made before the repository was
// emptied and created again is not trusted.
func (p *Pusher) pushedAhead(ctx context.Context, cache catalog.RepositoryCache, marks markers, name string) (bool, error) {
	id, ok := marks.get(name)
	if !ok {
		return false, nil
	}
	repo, err := p.repository(ctx, cache, true)
	if err != nil {
		return false, err
	}
	if id == repo.ID {
		p.log.Info("already pushed ahead", zap.String("wal", name))
		return true, nil
	}
	p.log.Warn("look-ahead marker was made in another repository (emptied or created again since): pushing the file again",
		zap.String("wal", name), zap.String("marker_repository", id), zap.String("repository", repo.ID))
	os.Remove(marks.path(name)) // known false: not to be read again
	return false, nil
}

// startAhead starts the background pusher (Config.StartAhead) unless one
// runs, or no .ready file other than name waits unmarked within the next
// few.
func (p *Pusher) startAhead(walDir, name string, marks markers) {
	if p.cfg.StartAhead == nil || p.cfg.Concurrency < 2 || aheadRunning(walDir) {
		return
	}
	waiting := false
	for _, n := range readyAfter(walDir, name, p.cfg.Concurrency+1) {
		if !marks.has(n) {
			waiting = true
			break
		}
	}
	if !waiting {
		return
	}
	if err := p.cfg.StartAhead(walDir); err != nil {
		// Only speed is lost: each call still pushes its own file.
		p.log.Warn("start the background pusher", zap.Error(err))
	}
}

// repository returns the repository description, from the cache in
// pg_wal/walgo unless fresh (see catalog.RepositoryCache).
func (p *Pusher) repository(ctx context.Context, cache catalog.RepositoryCache, fresh bool) (catalog.Repository, error) {
	return cache.Read(ctx, p.store, fresh, p.log)
}

// pushFile stores one file with a create-only write, or, when the archive
// holds it already, checks that the archived copy is identical.
func (p *Pusher) pushFile(ctx context.Context, store storage.Store, path string) (Result, error) {
	start := time.Now()
	name := filepath.Base(path)
	kind := wal.Classify(name)
	res := Result{Name: name}
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !fi.Mode().IsRegular() {
		return res, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, path)
	}
	res.Plain = fi.Size()
	if kind == wal.KindSegment || kind == wal.KindPartial {
		if err := checkSegment(f, name, fi.Size()); err != nil {
			return res, fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
		}
	}
	sum, err := plainSum(f)
	if err != nil {
		return res, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	key := catalog.WALKey(name, p.cfg.Codec)

	if kind == wal.KindHistory {
		// A history file decides which timeline a recovery follows: one
		// stored under another codec must not get a twin with other
		// content. They are few and small; one listing is cheap.
		copies, _, err := catalog.ListWALCopies(ctx, store, name)
		if err != nil {
			return res, fmt.Errorf("push %s: %w", name, err)
		}
		for _, o := range copies {
			if o.Key == key {
				continue
			}
			if same, err := p.sameContent(ctx, store, o, f, sum); err != nil {
				return res, fmt.Errorf("push %s: compare with archived copy %s: %w", name, o.Key, err)
			} else if !same {
				return res, fmt.Errorf("push %s: %w (%s in %s); refusing to store another", name, ErrConflict, o.Key, p.store)
			}
			res.Skipped, res.Stored = true, o.Size
			return res, nil
		}
	}

	replaced := false
	for vanished := 0; ; {
		n, err := p.create(ctx, store, key, f, sum)
		if err == nil {
			res.Stored = n
			p.log.Debug("stored", zap.String("wal", name), zap.String("key", key), zap.Int64("stored_bytes", n), zap.Duration("took", time.Since(start)))
			return res, nil
		}
		if !errors.Is(err, storage.ErrExists) {
			return res, fmt.Errorf("push %s: %w", name, err)
		}
		oi, err := store.Stat(ctx, key)
		if errors.Is(err, storage.ErrNotFound) && vanished < len(vanishedWaits) {
			// Refused as taken, yet not there: another push of the name is
			// being published (a server may refuse before the winner's
			// object is visible) or a damaged copy was just removed.
			// Look again shortly.
			if err := sleepCtx(ctx, vanishedWaits[vanished]); err != nil {
				return res, fmt.Errorf("push %s: %w", name, err)
			}
			vanished++
			continue
		}
		if err != nil {
			return res, fmt.Errorf("push %s: stat archived copy: %w", name, err)
		}
		o, _ := catalog.ParseWALKey(key)
		o.Size = oi.Size
		same, err := p.sameInfo(ctx, store, o, oi, f, sum)
		switch {
		case err == nil && same:
			res.Skipped, res.Stored = true, oi.Size
			p.log.Debug("already archived with identical content", zap.String("wal", name))
			return res, nil
		case err == nil:
			return res, fmt.Errorf("push %s: %w (%s in %s); refusing to overwrite it", name, ErrConflict, key, p.store)
		case errors.Is(err, codec.ErrCorrupt) && kind != wal.KindHistory && !replaced:
			// A damaged copy holds nothing worth keeping; the local file
			// is the only good one, so store it in its place.
			p.log.Warn("archived copy is damaged; replacing it", zap.String("wal", name), zap.String("key", key), zap.Error(err))
			if derr := store.Delete(ctx, key); derr != nil {
				return res, fmt.Errorf("push %s: remove damaged copy: %w", name, derr)
			}
			replaced = true
		default:
			return res, fmt.Errorf("push %s: compare with archived copy: %w", name, err)
		}
	}
}

// vanishedWaits are the pauses before looking again at a name whose create
// was refused but whose object Stat does not find.
var vanishedWaits = []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// create compresses f into a create-only write of key carrying the plain
// content's sha256, and returns the bytes stored.
func (p *Pusher) create(ctx context.Context, store storage.Store, key string, f *os.File, sum string) (int64, error) {
	body := &compressor{ctx: ctx, f: f, codec: p.cfg.Codec}
	if err := body.Rewind(); err != nil {
		return 0, err
	}
	err := store.Create(ctx, key, body, storage.Metadata{catalog.MetaPlainSHA256: sum})
	body.stop()
	return body.n, err
}

// plainSum is the hex sha256 of f's content.
func plainSum(f *os.File) (string, error) {
	h := codec.NewSumWriter(io.Discard)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return h.SHA256(), nil
}

// checkSegment refuses a file whose size and first page do not make it the
// segment its name says: a short copy, a renamed file, something else.
func checkSegment(f *os.File, name string, size int64) error {
	seg, err := wal.ParseSegment(name[:24])
	if err != nil {
		return err
	}
	if !wal.ValidSegmentSize(size) {
		return fmt.Errorf("%w: size %d is not a WAL segment size", wal.ErrBadHeader, size)
	}
	buf := make([]byte, wal.HeaderSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	h, err := wal.ParseHeader(buf)
	if err != nil {
		return err
	}
	return h.Check(seg, size)
}

// sameContent compares the archived object o with the local file: by the
// sha256 in its metadata (one Stat), or, for an object stored without it
// (an older walgo, WAL-G), by reading it back.
func (p *Pusher) sameContent(ctx context.Context, store storage.Store, o catalog.WALObject, f *os.File, sum string) (bool, error) {
	oi, err := store.Stat(ctx, o.Key)
	if err != nil {
		return false, err
	}
	return p.sameInfo(ctx, store, o, oi, f, sum)
}

// sameInfo is sameContent with the object's Stat done.
func (p *Pusher) sameInfo(ctx context.Context, store storage.Store, o catalog.WALObject, oi storage.ObjectInfo, f *os.File, sum string) (bool, error) {
	if s := oi.Metadata[catalog.MetaPlainSHA256]; s != "" {
		return s == sum, nil
	}
	rc, err := store.Get(ctx, o.Key)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	dec, err := p.cfg.Codec.Decode(o.Ext, rc)
	if err != nil {
		return false, err
	}
	defer dec.Close()
	remote := codec.NewSumWriter(io.Discard)
	if _, err := io.Copy(remote, dec); err != nil {
		return false, err
	}
	return remote.SHA256() == sum, nil
}

// compressor is a Put body that compresses a file as it is read, and can
// start over for a retry (storage.Rewinder).
type compressor struct {
	ctx   context.Context
	f     *os.File
	codec *codec.Codec
	pr    *io.PipeReader
	r     io.Reader
	done  chan struct{}
	n     int64
}

var _ storage.Rewinder = (*compressor)(nil)

func (c *compressor) Rewind() error {
	c.stop()
	pr, pw := io.Pipe()
	c.pr, c.n, c.done = pr, 0, make(chan struct{})
	c.r = pr
	src := io.NewSectionReader(c.f, 0, 1<<62)
	go func(done chan struct{}) {
		defer close(done)
		w, err := c.codec.NewWriter(pw)
		if err == nil {
			_, err = io.Copy(w, src)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}(c.done)
	return nil
}

func (c *compressor) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// stop ends the compressing goroutine, if any, and waits for it.
func (c *compressor) stop() {
	if c.pr != nil {
		c.pr.CloseWithError(errors.New("upload ended"))
		<-c.done
		c.pr = nil
	}
}

// readyAfter lists up to n WAL files other than name that Postgres has
// marked .ready, in the order the archiver would ask for them.
func readyAfter(walDir, name string, n int) []string {
	ents, err := os.ReadDir(filepath.Join(walDir, "archive_status"))
	if err != nil {
		return nil
	}
	var ready []string
	for _, e := range ents {
		w, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || w == name || wal.Classify(w) == wal.KindUnknown {
			continue
		}
		ready = append(ready, w)
	}
	// The archiver takes history files first, then the oldest name.
	sort.Slice(ready, func(i, j int) bool {
		hi, hj := wal.Classify(ready[i]) == wal.KindHistory, wal.Classify(ready[j]) == wal.KindHistory
		if hi != hj {
			return hi
		}
		return ready[i] < ready[j]
	})
	if len(ready) > n {
		ready = ready[:n]
	}
	return ready
}

// markers is walgo's own record of files pushed ahead of Postgres' call,
// in a folder inside pg_wal. Each names the store it was pushed to and the
// repository's ID, so neither a change of storage nor a repository created
// again under the same URL makes an old marker trusted. Postgres' .done
// files are never touched.
type markers struct {
	dir   string
	store string
}

func (m markers) path(name string) string { return filepath.Join(m.dir, name) }

func (m markers) put(name, repoID string) error {
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return err
	}
	tmp := m.path("." + name + ".tmp")
	if err := os.WriteFile(tmp, []byte(m.store+"\n"+repoID+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.path(name))
}

// get returns the repository ID the marker of name was made in, if it was
// made for this store. The marker stays until clean finds its .ready file
// gone: until Postgres has renamed that, a background pusher must still
// see the file as pushed.
func (m markers) get(name string) (repoID string, ok bool) {
	b, err := os.ReadFile(m.path(name))
	if err != nil {
		return "", false
	}
	store, id, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if store != m.store || id == "" {
		return "", false
	}
	return id, true
}

// has reports whether a marker for this store says name is pushed.
func (m markers) has(name string) bool {
	_, ok := m.get(name)
	return ok
}

// clean drops markers whose .ready file is gone: Postgres archived those
// files some other way, and a marker must never outlive its file.
func (m markers) clean(walDir string) {
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			// A marker being written, by the background pusher perhaps;
			// one a crash left is removed once it is old.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.Remove(m.path(e.Name()))
			}
			continue
		}
		ready := filepath.Join(walDir, "archive_status", e.Name()+".ready")
		if _, err := os.Stat(ready); errors.Is(err, fs.ErrNotExist) {
			os.Remove(m.path(e.Name()))
		}
	}
}
