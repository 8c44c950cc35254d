// Package file is the embedded default backend: objects are files under a
// root directory, written atomically (temp file, fsync, rename or link,
// fsync dir). Objects are 0600 and folders 0700: unencrypted WAL is for
// the repository's owner only.
package file

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/walgo/walgo/storage"
)

// tmpPrefix marks files still being written. List never shows them.
const tmpPrefix = ".walgo-tmp-"

// Store keeps objects as files below Root.
type Store struct {
	root string
}

var _ storage.Store = (*Store)(nil)

// New returns a store rooted at dir, which must exist: a missing folder is
// an error wrapping fs.ErrNotExist, never created, so that an unmounted
// volume is not taken for an empty store. Init creates it.
func New(dir string) (*Store, error) {
	abs, err := rootPath(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("file storage: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("file storage: %s is not a folder", abs)
	}
	return &Store{root: abs}, nil
}

// Init creates dir (0700, with its missing parents, each fsynced into its
// parent) if it does not exist, and returns a store rooted there.
func Init(dir string) (*Store, error) {
	abs, err := rootPath(dir)
	if err != nil {
		return nil, err
	}
	if err := mkdirs(abs); err != nil {
		return nil, fmt.Errorf("file storage: %w", err)
	}
	return New(abs)
}

func rootPath(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("file storage: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("file storage: %w", err)
	}
	return abs, nil
}

func (s *Store) String() string { return "file://" + s.root }

// path maps a key to a file, refusing keys that could leave the root.
func (s *Store) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") {
		return "", fmt.Errorf("%w: invalid key %q", storage.ErrPermanent, key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, tmpPrefix) {
			return "", fmt.Errorf("%w: invalid key %q", storage.ErrPermanent, key)
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put writes the object through a temp file in its folder: fsync, rename
// over any old object, fsync of the folder.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	return s.write(ctx, "put", key, r, nil, func(tmp, p string) error {
		return os.Rename(tmp, p)
	})
}

// Create writes like Put but publishes the temp file with link(2), which
// fails if the name exists: of two Creates of one key exactly one links.
// The metadata are extended attributes (user.walgo.<name>) of the temp
// file, set before it is linked, so an object is never visible without
// them. On a filesystem without user extended attributes the object is
// stored without its metadata (Stat reports none).
func (s *Store) Create(ctx context.Context, key string, r io.Reader, meta storage.Metadata) error {
	if err := meta.Check(); err != nil {
		return fmt.Errorf("create %s: %w", key, err)
	}
	return s.write(ctx, "create", key, r, meta, func(tmp, p string) error {
		err := os.Link(tmp, p)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %w", storage.ErrExists, err)
		}
		if err != nil {
			return err
		}
		return os.Remove(tmp)
	})
}

// write stores r in a temp file next to key's file (0600), with meta as
// extended attributes, fsyncs it and hands it to publish, then fsyncs the
// folder. The temp file never outlives a failure.
func (s *Store) write(ctx context.Context, op, key string, r io.Reader, meta storage.Metadata, publish func(tmp, p string) error) (err error) {
	defer func() { err = storage.MarkFull(err) }()
	p, err := s.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := mkdirs(dir); err != nil {
		return fail(op, key, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:])+"-"+filepath.Base(p))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(op, key, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fail(op, key, err)
	}
	if err = setMetadata(tmp, meta); err != nil {
		return fmt.Errorf("%s %s: metadata: %w", op, key, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("%s %s: fsync: %w", op, key, err)
	}
	if err = f.Close(); err != nil {
		return fail(op, key, err)
	}
	if err = ctx.Err(); err != nil {
		return fail(op, key, err)
	}
	if err = publish(tmp, p); err != nil {
		return fail(op, key, err)
	}
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("%s %s: fsync dir: %w", op, key, err)
	}
	return nil
}

// mkdirs creates dir and its missing parents (0700: WAL may be
// unencrypted), fsyncing the parent of each folder it creates, so that a
// crash cannot lose a folder whose objects were reported durable.
func mkdirs(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent == dir {
		return err
	}
	if err := mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made by a concurrent write
		}
		return err
	}
	return syncDir(parent)
}

// fail wraps err with the operation and key; a permission error is
// storage.ErrPermanent (retrying cannot fix it) and says why it happens.
func fail(op, key string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%s %s: %w: %w (a repository's objects are 0600 and its folders 0700: run walgo as the user that owns them, the one Postgres runs as)", op, key, storage.ErrPermanent, err)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// missing reports an error that means "no such object": the path is absent,
// or a part of it is an object, not a folder ("a/b" when "a" is a file).
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// syncDir fsyncs a folder, so the entries just made or removed in it
// survive a crash. A variable so tests can see which folders are synced.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader stops a copy once ctx is done, so a cancelled Put ends promptly.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if missing(err) {
		return nil, fmt.Errorf("get %s: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fail("get", key, err)
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, storage.ErrNotFound)
	}
	return f, nil
}

func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	fi, err := os.Stat(p)
	if missing(err) || err == nil && fi.IsDir() {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return storage.ObjectInfo{}, fail("stat", key, err)
	}
	meta, err := getMetadata(p)
	if missing(err) {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: metadata: %w", key, err)
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), Metadata: meta}, nil
}

// List walks only the directory that holds the prefix' last part, so a
// prefix such as "wal_005/000000010000000A" reads one folder, not the tree.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	infos, err := s.scan(ctx, prefix, false)
	if err != nil {
		return fail("list", prefix, err)
	}
	for _, f := range infos {
		if err := fn(f.ObjectInfo); err != nil {
			return err
		}
	}
	return nil
}

// Leftovers lists the temp files of Puts that never finished (killed,
// crashed) for keys under prefix; a Put still running shows as well, with
// a recent ModTime. The ID is the temp file's path below the root.
func (s *Store) Leftovers(ctx context.Context, prefix string, fn func(storage.Leftover) error) error {
	temps, err := s.scan(ctx, prefix, true)
	if err != nil {
		return fmt.Errorf("leftovers %s: %w", prefix, err)
	}
	for _, f := range temps {
		if err := fn(storage.Leftover{Key: f.Key, ID: f.rel, Size: f.Size, ModTime: f.ModTime}); err != nil {
			return err
		}
	}
	return nil
}

// RemoveLeftover removes a temp file Leftovers listed. It refuses any ID
// that is not a temp file below the root.
func (s *Store) RemoveLeftover(ctx context.Context, l storage.Leftover) error {
	dir, name := path.Split(l.ID)
	if !strings.HasPrefix(name, tmpPrefix) {
		return fmt.Errorf("%w: %q is not a leftover", storage.ErrPermanent, l.ID)
	}
	if dir != "" {
		if _, err := s.path(strings.TrimSuffix(dir, "/")); err != nil {
			return fmt.Errorf("%w: %q is not a leftover", storage.ErrPermanent, l.ID)
		}
	}
	if err := os.Remove(filepath.Join(s.root, filepath.FromSlash(l.ID))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove leftover %s: %w", l.ID, err)
	}
	return nil
}

var _ storage.Sweeper = (*Store)(nil)

// scanned is a file found by scan: an object, or a temp file with the key
// its Put was writing.
type scanned struct {
	storage.ObjectInfo
	rel string // path below the root, slash-separated
}

// scan finds the objects under prefix in key order, or with temps the
// temp files of unfinished Puts of such keys.
func (s *Store) scan(ctx context.Context, prefix string, temps bool) ([]scanned, error) {
	dirKey, _ := splitDir(prefix)
	start := s.root
	if dirKey != "" {
		start = filepath.Join(s.root, filepath.FromSlash(dirKey))
	}
	var found []scanned
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		rel = filepath.ToSlash(rel)
		key := rel
		if d.IsDir() {
			// Skip folders that cannot hold a matching key.
			if p != start && !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if isTemp := strings.HasPrefix(d.Name(), tmpPrefix); isTemp != temps {
			return nil
		} else if isTemp {
			// .walgo-tmp-<16 hex>-<base name of the key>
			base := strings.TrimPrefix(d.Name(), tmpPrefix)
			if i := strings.IndexByte(base, '-'); i >= 0 {
				base = base[i+1:]
			}
			key = path.Join(path.Dir(rel), base)
		}
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted while listing
		}
		if err != nil {
			return err
		}
		found = append(found, scanned{storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, rel})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(found, func(i, j int) bool { return found[i].rel < found[j].rel })
	return found, nil
}

func splitDir(prefix string) (dir, rest string) {
	i := strings.LastIndex(prefix, "/")
	if i < 0 {
		return "", prefix
	}
	return prefix[:i], prefix[i+1:]
}

func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if missing(err) {
			return nil
		}
		return fail("delete", key, err)
	}
	// Without it a crash can bring a deleted object back, after the
	// caller went on as if it were gone (a retention run's order).
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("delete %s: fsync dir: %w", key, err)
	}
	return nil
}

// DeleteBatch removes the keys and then fsyncs each folder they were in
// once, rather than once per key.
func (s *Store) DeleteBatch(ctx context.Context, keys []string) error {
	dirs := map[string]bool{}
	for _, key := range keys {
		p, err := s.path(key)
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("delete batch: %w", err)
		}
		if err := os.Remove(p); err != nil {
			if missing(err) {
				continue
			}
			return fail("delete", key, err)
		}
		dirs[filepath.Dir(p)] = true
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("delete batch: fsync dir: %w", err)
		}
	}
	return nil
}

var _ storage.BatchDeleter = (*Store)(nil)
