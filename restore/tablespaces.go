package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/pgdata"
)

// planMoves decides, before anything is written, where the folders of the
// final backup that do not live inside the data directory go: each
// tablespace to opts.Tablespaces[name or oid], else under
// opts.TablespacesUnder, else to its original location; pg_wal to
// opts.WALDir if set (else it is a folder inside dir). Every target must be
// an empty or missing folder outside dir and apart from the others, but
// for a folder the backup holds empty inside dir (a tablespace located
// inside the data directory, restored to the original paths).
func planMoves(final *layer, dir string, opts *BackupFetchOptions) ([]*movedDir, error) {
	sn := final.sn
	byOID := map[uint32]catalog.Tablespace{}
	for _, ts := range sn.Tablespaces {
		byOID[ts.OID] = ts
	}
	var oids []uint32
	for p, f := range final.files {
		if oid, ok := pgdata.ParseTablespaceLink(p); ok && fs.FileMode(f.Mode).IsDir() {
			oids = append(oids, oid)
		}
	}
	slices.Sort(oids)

	used := map[string]bool{}
	var moved []*movedDir
	for _, oid := range oids {
		ts, known := byOID[oid]
		what := fmt.Sprintf("tablespace %q (%d)", ts.Name, oid)
		if !known || ts.Name == "" {
			what = fmt.Sprintf("tablespace %d", oid)
		}
		target := ""
		for _, key := range []string{strconv.FormatUint(uint64(oid), 10), ts.Name} {
			if d, ok := opts.Tablespaces[key]; ok && key != "" {
				if target != "" {
					return nil, fmt.Errorf("%w: --tablespace gives %s twice (by name and by oid)", ErrInvalid, what)
				}
				target, used[key] = d, true
			}
		}
		switch {
		case target != "":
		case opts.TablespacesUnder != "":
			target = filepath.Join(opts.TablespacesUnder, strconv.FormatUint(uint64(oid), 10))
		case !known:
			return nil, fmt.Errorf("%w: backup %s does not record where %s was; give --tablespace %d=DIR", ErrInvalid, sn.Name, what, oid)
		case !filepath.IsAbs(ts.Location):
			continue // inside the data directory (an in-place tablespace): restored where it was
		default:
			target = ts.Location
		}
		moved = append(moved, &movedDir{path: pgdata.TablespaceLink(oid), target: target, what: what, from: ts.Location})
	}
	for key := range opts.Tablespaces {
		if !used[key] {
			var have []string
			for _, oid := range oids {
				have = append(have, fmt.Sprintf("%q (%d)", byOID[oid].Name, oid))
			}
			if len(have) == 0 {
				have = []string{"none"}
			}
			return nil, fmt.Errorf("%w: --tablespace %s: backup %s has no such tablespace (it has %s)", ErrInvalid, key, sn.Name, strings.Join(have, ", "))
		}
	}
	if opts.WALDir != "" {
		moved = append(moved, &movedDir{path: pgdata.WALDir, target: opts.WALDir, what: "the WAL folder " + pgdata.WALDir, from: sn.WALDir})
	}

	for _, m := range moved {
		abs, err := filepath.Abs(m.target)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: folder %s: %v", ErrInvalid, m.what, m.target, err)
		}
		m.target = abs
		if rel, ok := emptyFolderIn(final, dir, m.target); ok {
			// A tablespace located inside the data directory, restored to
			// the original paths: the backup holds its folder empty
			// (pgdata.TablespacesInside), so only the tablespace fills it.
			m.within = rel
			continue
		}
		if inside(m.target, dir) || inside(dir, m.target) {
			return nil, fmt.Errorf("%w: %s: %s and the restore folder %s hold one another; give it a folder of its own", ErrInvalid, m.what, m.target, dir)
		}
	}
	for i, a := range moved {
		for _, b := range moved[i+1:] {
			if inside(a.target, b.target) || inside(b.target, a.target) {
				return nil, fmt.Errorf("%w: %s and %s would both go into %s; give each a folder of its own", ErrInvalid, a.what, b.what, a.target)
			}
		}
		if err := checkEmpty(a); err != nil {
			return nil, err
		}
	}
	return moved, nil
}

// emptyFolderIn reports whether target is a folder inside the restore
// folder dir (not dir itself) that the backup holds with nothing in it, and
// its path there.
func emptyFolderIn(final *layer, dir, target string) (string, bool) {
	rel, err := filepath.Rel(dir, target)
	if err != nil || rel == "." || !inside(target, dir) {
		return "", false
	}
	rel = filepath.ToSlash(rel)
	f, ok := final.files[rel]
	if !ok || !fs.FileMode(f.Mode).IsDir() {
		return "", false
	}
	for p := range final.files {
		if strings.HasPrefix(p, rel+"/") {
			return "", false
		}
	}
	return rel, true
}

// inside reports whether folder a is b or inside it.
func inside(a, b string) bool {
	rel, err := filepath.Rel(b, a)
	return err == nil && (rel == "." || rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)))
}

// checkEmpty refuses a target that is not a missing or empty folder: a
// restore never writes into a tablespace or WAL folder in use.
func checkEmpty(m *movedDir) error {
	fi, err := os.Stat(m.target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore %s into %s: %w", m.what, m.target, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: restore %s into %s: not a folder", ErrInvalid, m.what, m.target)
	}
	ents, err := os.ReadDir(m.target)
	if err != nil {
		return fmt.Errorf("restore %s into %s: %w", m.what, m.target, err)
	}
	if len(ents) > 0 {
		hint := "restore it elsewhere with --tablespace NAME_OR_OID=DIR"
		if m.path == pgdata.WALDir {
			hint = "give --waldir an empty folder"
		}
		return fmt.Errorf("%w: restore %s into %s: the folder is not empty (it holds %s); %s", ErrInvalid, m.what, m.target, ents[0].Name(), hint)
	}
	return nil
}

// openMoves creates the moved folders (0700) and opens each as a root.
func openMoves(moved []*movedDir, log *zap.Logger) error {
	for _, m := range moved {
		if err := checkEmpty(m); err != nil { // again: it may have changed since the plan
			return err
		}
		if _, err := os.Lstat(m.target); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(m.target, 0o700); err != nil {
				return fmt.Errorf("restore %s into %s: %w", m.what, m.target, err)
			}
			m.created = true
			if err := syncDir(filepath.Dir(m.target)); err != nil {
				return fmt.Errorf("restore %s into %s: fsync parent: %w", m.what, m.target, err)
			}
		}
		root, err := os.OpenRoot(m.target)
		if err != nil {
			return fmt.Errorf("restore %s into %s: %w", m.what, m.target, err)
		}
		m.root = root
		log.Info("restoring "+m.what+" outside the data directory", zap.String("into", m.target), zap.String("original_location", m.from))
	}
	return nil
}

// undoMoves empties what a failed restore wrote into the moved folders and
// removes those it created.
func undoMoves(moved []*movedDir, log *zap.Logger) {
	for _, m := range moved {
		if m.root != nil {
			m.root.Close()
			m.root = nil
		}
		if _, err := os.Lstat(m.target); err != nil {
			continue
		}
		if err := removeContents(m.target); err != nil {
			log.Error("could not clean up after a failed restore", zap.String("dir", m.target), zap.Error(err))
			continue
		}
		if m.created {
			os.Remove(m.target)
		}
	}
}
