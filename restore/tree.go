package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// destTree is the folder a restore writes into, addressed as the data
// directory it becomes: slash-separated paths relative to it. Some of its
// folders may live elsewhere: tablespaces restored to their own locations
// and a pg_wal moved with --waldir. Each such folder is an os.Root of its
// own, so that no path written through it can leave the folder it belongs
// in, and the symlink Postgres follows (pg_tblspc/<oid>, pg_wal) is made
// only once everything is in place (link).
type destTree struct {
	main  *os.Root
	moved []*movedDir
}

// movedDir is a folder of the data directory restored elsewhere.
type movedDir struct {
	path   string // in the data directory: "pg_tblspc/16400", "pg_wal"
	target string // where its contents go: an absolute folder
	what   string // what it is, for messages: `tablespace "ts1" (16400)`
	from   string // where it was on the backed-up cluster, if known
	// within: target's path in the data directory, when it lies inside it
	// (a tablespace located there, restored to the original paths); the
	// data directory's own tree holds that folder empty.
	within string
	root   *os.Root
	// created: the restore made target, and removes it again on failure.
	created bool
}

// resolve returns the root a path lies in and the path inside it.
func (t *destTree) resolve(p string) (*os.Root, string, *movedDir) {
	for _, m := range t.moved {
		if p == m.path {
			return m.root, ".", m
		}
		if rest, ok := strings.CutPrefix(p, m.path+"/"); ok {
			return m.root, rest, m
		}
	}
	return t.main, p, nil
}

// errMovedRoot refuses replacing a moved folder itself with something else.
func errMovedRoot(m *movedDir) error {
	return corrupt("%s is restored to %s as a folder; the backup holds something else there", m.path, m.target)
}

func (t *destTree) Lstat(p string) (fs.FileInfo, error) {
	root, rel, _ := t.resolve(p)
	return root.Lstat(rel)
}

func (t *destTree) Open(p string) (*os.File, error) {
	root, rel, _ := t.resolve(p)
	return root.Open(rel)
}

func (t *destTree) OpenFile(p string, flag int, perm fs.FileMode) (*os.File, error) {
	root, rel, _ := t.resolve(p)
	return root.OpenFile(rel, flag, perm)
}

func (t *destTree) Mkdir(p string, perm fs.FileMode) error {
	root, rel, _ := t.resolve(p)
	if rel == "." {
		return nil
	}
	return root.Mkdir(rel, perm)
}

func (t *destTree) MkdirAll(p string, perm fs.FileMode) error {
	root, rel, _ := t.resolve(p)
	if rel == "." {
		return nil
	}
	return root.MkdirAll(rel, perm)
}

func (t *destTree) Remove(p string) error {
	root, rel, m := t.resolve(p)
	if rel == "." {
		return errMovedRoot(m)
	}
	return root.Remove(rel)
}

func (t *destTree) RemoveAll(p string) error {
	root, rel, m := t.resolve(p)
	if rel == "." {
		return errMovedRoot(m)
	}
	return root.RemoveAll(rel)
}

func (t *destTree) Symlink(target, p string) error {
	root, rel, m := t.resolve(p)
	if rel == "." {
		return errMovedRoot(m)
	}
	return root.Symlink(target, rel)
}

func (t *destTree) Readlink(p string) (string, error) {
	root, rel, _ := t.resolve(p)
	return root.Readlink(rel)
}

func (t *destTree) Chmod(p string, mode fs.FileMode) error {
	root, rel, _ := t.resolve(p)
	return root.Chmod(rel, mode)
}

func (t *destTree) Chtimes(p string, atime, mtime time.Time) error {
	root, rel, _ := t.resolve(p)
	return root.Chtimes(rel, atime, mtime)
}

func (t *destTree) Rename(from, to string) error {
	r1, rel1, _ := t.resolve(from)
	r2, rel2, _ := t.resolve(to)
	if r1 != r2 {
		return fmt.Errorf("rename %s to %s: not in the same folder", from, to)
	}
	return r1.Rename(rel1, rel2)
}

// walk calls fn for everything in the tree, as fs.WalkDir does, the moved
// folders after the rest, each path as the data directory names it.
func (t *destTree) walk(fn func(p string, d fs.DirEntry) error) error {
	visit := func(root *os.Root, prefix string) error {
		return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case prefix == "":
				if d.IsDir() && t.holdsMoved(p) {
					// A moved folder's contents are walked from its own root.
					if err := fn(p, d); err != nil {
						return err
					}
					return fs.SkipDir
				}
			case p == ".":
				p = prefix
			default:
				p = prefix + "/" + p
			}
			return fn(p, d)
		})
	}
	if err := visit(t.main, ""); err != nil {
		return err
	}
	for _, m := range t.moved {
		if err := visit(m.root, m.path); err != nil {
			return err
		}
	}
	return nil
}

// holdsMoved reports whether folder p of the data directory is where a
// moved folder's contents go (movedDir.within).
func (t *destTree) holdsMoved(p string) bool {
	for _, m := range t.moved {
		if m.within == p {
			return true
		}
	}
	return false
}

// link makes each moved folder's symlink in the data directory, where
// Postgres looks for it.
func (t *destTree) link() error {
	for _, m := range t.moved {
		if dir := path.Dir(m.path); dir != "." {
			if err := t.main.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("restore %s: %w", m.path, err)
			}
		}
		if err := t.main.Remove(m.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore %s: %w", m.path, err)
		}
		if err := t.main.Symlink(m.target, m.path); err != nil {
			return fmt.Errorf("restore %s: link to %s: %w", m.path, m.target, err)
		}
	}
	return nil
}

func (t *destTree) close() {
	for _, m := range t.moved {
		if m.root != nil {
			m.root.Close()
			m.root = nil
		}
	}
}
