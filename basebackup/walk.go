package basebackup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/walgo/walgo/pgdata"
)

// entry is one thing to put in the backup.
type entry struct {
	name string // slash-separated, relative to the data directory
	path string // on disk
	info fs.FileInfo
	link string // symlink target, for links stored as links
	// followed is the target of a symlink stored as the folder it points
	// at (a tablespace, a pg_wal moved elsewhere).
	followed string
}

// walk lists what a backup of dataDir holds, in tar order. Tablespace links
// in pg_tblspc are followed and stored in place, with only the version
// folder of major (pgdata.MajorVersion; "" keeps them all) inside them, as
// pg_basebackup sends: a location may also hold another version's folder
// (pg_upgrade). A tablespace located inside the data directory is stored
// once, through its link; its folder is stored empty
// (pgdata.TablespacesInside). Files that vanish while walking are left
// out: Postgres removes files all the time.
func walk(dataDir, major string) ([]entry, error) {
	inside, err := pgdata.TablespacesInside(dataDir)
	if err != nil {
		return nil, err
	}
	var out []entry
	var visit func(dir, name string) error
	visit = func(dir, name string) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		names := make([]string, len(ents))
		for i, e := range ents {
			names[i] = e.Name()
		}
		unlogged := pgdata.UnloggedRelations(names)
		for _, e := range ents {
			rel := e.Name()
			if name != "" {
				rel = name + "/" + e.Name()
			}
			if pgdata.Skip(rel) {
				continue
			}
			if _, ok := pgdata.ParseTablespaceLink(name); ok && major != "" {
				if m, _, ok := pgdata.ParseVersionDir(e.Name()); !ok || m != major {
					continue // another version's folder, or not Postgres' at all
				}
			}
			if rf, ok := pgdata.ParseRelFileName(e.Name()); ok && rf.Fork != pgdata.InitFork && unlogged[rf.Node] {
				continue // unlogged relation: only its init fork is kept
			}
			p := filepath.Join(dir, e.Name())
			fi, err := os.Lstat(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				// Tablespaces (and a pg_wal moved elsewhere) are followed.
				if name == pgdata.TablespaceDir || rel == pgdata.WALDir {
					st, err := os.Stat(p)
					if err != nil {
						return err
					}
					out = append(out, entry{name: rel, path: p, info: st, followed: target})
					if !pgdata.SkipContents(rel) {
						if err := visit(p, rel); err != nil {
							return err
						}
					}
					continue
				}
				out = append(out, entry{name: rel, path: p, info: fi, link: target})
				continue
			}
			if fi.IsDir() {
				out = append(out, entry{name: rel, path: p, info: fi})
				if pgdata.SkipContents(rel) || inside[rel] {
					continue // inside: a tablespace's location, stored through its link
				}
				if err := visit(p, rel); err != nil {
					return err
				}
				continue
			}
			if fi.Mode().IsRegular() {
				out = append(out, entry{name: rel, path: p, info: fi})
			}
		}
		return nil
	}
	if err := visit(dataDir, ""); err != nil {
		return nil, err
	}
	// pg_control goes last, as pg_basebackup sends it: the copy then
	// reflects a checkpoint no older than any data file in the backup.
	sort.SliceStable(out, func(i, j int) bool {
		ci, cj := out[i].name == pgdata.ControlFile, out[j].name == pgdata.ControlFile
		if ci != cj {
			return cj
		}
		return out[i].name < out[j].name
	})
	return out, nil
}
