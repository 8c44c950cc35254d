// Package archive is wal-push: it stores one WAL file Postgres hands to
// archive_command, and pushes the next .ready files ahead of time so that
// Postgres' following calls return at once.
package archive

import (
	"context"
	"crypto/sha256"
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
	"github.com/walgo/walgo/ratelimit"
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
	// Limiter caps upload bytes/s across all files; nil means no limit.
	Limiter *ratelimit.Limiter
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
	marks := markers{dir: filepath.Join(walDir, "walgo", "pushed"), store: p.store.String()}

	if marks.take(name) {
		p.log.Info("already pushed by look-ahead", zap.String("wal", name), zap.Duration("took", time.Since(start)))
		return Result{Name: name, Skipped: true}, nil
	}

	var ahead []string
	if p.cfg.Concurrency > 1 {
		ahead = readyAfter(walDir, name, p.cfg.Concurrency-1)
	}
	results := make([]Result, len(ahead))
	errs := make([]error, len(ahead))
	var wg sync.WaitGroup
	for i, n := range ahead {
		wg.Go(func() {
			results[i], errs[i] = p.pushFile(ctx, filepath.Join(walDir, n))
		})
	}
	res, err := p.pushFile(ctx, abs)
	wg.Wait()

	// A look-ahead failure is not this call's failure: Postgres will ask
	// for that file next and get the error then.
	for i, n := range ahead {
		if errs[i] != nil {
			p.log.Warn("look-ahead push failed", zap.String("wal", n), zap.Error(errs[i]))
			continue
		}
		if merr := marks.put(n); merr != nil {
			p.log.Warn("record look-ahead push", zap.String("wal", n), zap.Error(merr))
			continue
		}
		res.LookAhead = append(res.LookAhead, n)
	}
	marks.clean(walDir)
	if err != nil {
		return res, err
	}
	p.log.Info("pushed", zap.String("wal", name), zap.Bool("already_archived", res.Skipped),
		zap.Int64("bytes", res.Plain), zap.Int64("stored_bytes", res.Stored),
		zap.Strings("look_ahead", res.LookAhead), zap.Duration("took", time.Since(start)))
	return res, nil
}

// pushFile stores one file, or checks that the archive's copy is identical.
func (p *Pusher) pushFile(ctx context.Context, path string) (Result, error) {
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

	existing, err := catalog.FindWAL(ctx, p.store, name, p.cfg.Codec)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	if len(existing) > 0 {
		same, err := p.sameContent(ctx, existing[0], f)
		switch {
		case err == nil && same:
			res.Skipped = true
			res.Stored = existing[0].Size
			p.log.Debug("already archived with identical content", zap.String("wal", name))
			return res, nil
		case err == nil:
			return res, fmt.Errorf("push %s: %w (%s in %s); refusing to overwrite it", name, ErrConflict, existing[0].Key, p.store)
		case errors.Is(err, codec.ErrCorrupt) && kind != wal.KindHistory:
			// A damaged copy holds nothing worth keeping; the local file
			// is the only good one, so store it in its place.
			p.log.Warn("archived copy is damaged; replacing it", zap.String("wal", name), zap.String("key", existing[0].Key), zap.Error(err))
			for _, o := range existing {
				if derr := p.store.Delete(ctx, o.Key); derr != nil {
					return res, fmt.Errorf("push %s: remove damaged copy: %w", name, derr)
				}
			}
		default:
			return res, fmt.Errorf("push %s: compare with archived copy: %w", name, err)
		}
	}

	body := &compressor{ctx: ctx, f: f, codec: p.cfg.Codec, limiter: p.cfg.Limiter}
	if err := body.Rewind(); err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	key := catalog.WALKey(name, p.cfg.Codec)
	err = p.store.Put(ctx, key, body)
	body.stop()
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	res.Stored = body.n
	p.log.Debug("stored", zap.String("wal", name), zap.String("key", key), zap.Int64("stored_bytes", body.n), zap.Duration("took", time.Since(start)))
	return res, nil
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

// sameContent compares the archived object with the local file by sha256
// of their plain bytes.
func (p *Pusher) sameContent(ctx context.Context, o catalog.WALObject, f *os.File) (bool, error) {
	rc, err := p.store.Get(ctx, o.Key)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	dec, err := p.cfg.Codec.Decode(o.Ext, rc)
	if err != nil {
		return false, err
	}
	defer dec.Close()
	remote := sha256.New()
	if _, err := io.Copy(remote, dec); err != nil {
		return false, err
	}
	local := sha256.New()
	if _, err := io.Copy(local, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return false, fmt.Errorf("read local file: %w", err)
	}
	return string(remote.Sum(nil)) == string(local.Sum(nil)), nil
}

// compressor is a Put body that compresses a file as it is read, and can
// start over for a retry (storage.Rewinder).
type compressor struct {
	ctx     context.Context
	f       *os.File
	codec   *codec.Codec
	limiter *ratelimit.Limiter
	pr      *io.PipeReader
	r       io.Reader
	done    chan struct{}
	n       int64
}

var _ storage.Rewinder = (*compressor)(nil)

func (c *compressor) Rewind() error {
	c.stop()
	pr, pw := io.Pipe()
	c.pr, c.n, c.done = pr, 0, make(chan struct{})
	c.r = c.limiter.Reader(c.ctx, pr)
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
// in a folder inside pg_wal. Each names the store it was pushed to, so a
// change of storage never trusts an old marker. Postgres' .done files are
// never touched.
type markers struct {
	dir   string
	store string
}

func (m markers) path(name string) string { return filepath.Join(m.dir, name) }

func (m markers) put(name string) error {
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return err
	}
	tmp := m.path("." + name + ".tmp")
	if err := os.WriteFile(tmp, []byte(m.store+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.path(name))
}

// take reports whether name was pushed ahead to this store, and forgets it.
func (m markers) take(name string) bool {
	b, err := os.ReadFile(m.path(name))
	if err != nil {
		return false
	}
	os.Remove(m.path(name))
	return strings.TrimSpace(string(b)) == m.store
}

// clean drops markers whose .ready file is gone: Postgres archived those
// files some other way, and a marker must never outlive its file.
func (m markers) clean(walDir string) {
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		ready := filepath.Join(walDir, "archive_status", e.Name()+".ready")
		if _, err := os.Stat(ready); errors.Is(err, fs.ErrNotExist) {
			os.Remove(m.path(e.Name()))
		}
	}
}
