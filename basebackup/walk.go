package basebackup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Folders whose contents pg_basebackup leaves out: the folder itself is
// kept (empty), its contents are rebuilt by Postgres or not needed.
var skipContents = map[string]bool{
	"pg_wal":               true,
	"pg_dynshmem":          true,
	"pg_notify":            true,
	"pg_replslot":          true,
	"pg_serial":            true,
	"pg_snapshots":         true,
	"pg_stat_tmp":          true,
	"pg_subtrans":          true,
	"pg_xlog":              true, // before Postgres 10
	"pg_log":               false,
	"pgsql_tmp":            true,
	"pg_logical/snapshots": true,
	"pg_logical/mappings":  true,
}

// Files pg_basebackup leaves out, wherever they are.
var skipFiles = map[string]bool{
	"postmaster.pid":           true,
	"postmaster.opts":          true,
	"backup_label":             true, // the backup's own comes from pg_backup_stop
	"tablespace_map":           true,
	"backup_manifest":          true,
	"postgresql.auto.conf.tmp": true,
	"current_logfiles.tmp":     true,
	"pg_internal.init":         true,
	"recovery.signal":          true,
	"standby.signal":           true,
}

// relFile matches a relation segment: <relfilenode>[_fork][.segno].
var relFile = regexp.MustCompile(`^(\d+)(_(fsm|vm|init))?(\.\d+)?$`)

// entry is one thing to put in the backup.
type entry struct {
	name string // slash-separated, relative to the data directory
	path string // on disk
	info fs.FileInfo
	link string // symlink target, for links stored as links
}

// walk lists what a backup of dataDir holds, in tar order. Tablespace links
// in pg_tblspc are followed and stored in place. Files that vanish while
// walking are left out: Postgres removes files all the time.
func walk(dataDir string) ([]entry, error) {
	var out []entry
	unlogged := map[string]bool{} // folder/relfilenode that has an _init fork
	var visit func(dir, name string) error
	visit = func(dir, name string) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		for _, e := range ents {
			if m := relFile.FindStringSubmatch(e.Name()); m != nil && m[3] == "init" {
				unlogged[name+"/"+m[1]] = true
			}
		}
		for _, e := range ents {
			rel := e.Name()
			if name != "" {
				rel = name + "/" + e.Name()
			}
			if skipFiles[e.Name()] || strings.HasPrefix(e.Name(), "pgsql_tmp") || strings.HasPrefix(e.Name(), "pg_internal.init") {
				continue
			}
			if m := relFile.FindStringSubmatch(e.Name()); m != nil && m[3] != "init" && unlogged[name+"/"+m[1]] {
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
				if name == "pg_tblspc" || rel == "pg_wal" {
					st, err := os.Stat(p)
					if err != nil {
						return err
					}
					out = append(out, entry{name: rel, path: p, info: st})
					if !skipContents[rel] {
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
				if skipContents[rel] {
					continue
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
		ci, cj := out[i].name == "global/pg_control", out[j].name == "global/pg_control"
		if ci != cj {
			return cj
		}
		return out[i].name < out[j].name
	})
	return out, nil
}

// isRelation reports whether a backup entry is a relation file whose pages
// carry LSNs (so a delta can skip unchanged pages).
func isRelation(name string) bool {
	dir, base := filepath.Split(name)
	if !relFile.MatchString(base) {
		return false
	}
	return strings.HasPrefix(dir, "base/") || dir == "global/" || strings.HasPrefix(dir, "pg_tblspc/")
}
