package pgdata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// TablespaceDir is the folder of the data directory that holds one symlink
// per tablespace, pg_tblspc/<oid>, pointing at its location.
const TablespaceDir = "pg_tblspc"

// TablespaceMapFile is the file a backup (and so a restore) may carry
// instead of the pg_tblspc symlinks: one "<oid> <location>" line each.
// Postgres creates the links from it when it starts from the backup, and
// refuses to start if pg_tblspc/<oid> is then a non-empty folder.
const TablespaceMapFile = "tablespace_map"

// TablespaceLink is the path of a tablespace's symlink, relative to the
// data directory.
func TablespaceLink(oid uint32) string {
	return TablespaceDir + "/" + strconv.FormatUint(uint64(oid), 10)
}

// ParseTablespaceLink returns the oid of a path "pg_tblspc/<oid>".
func ParseTablespaceLink(p string) (uint32, bool) {
	rest, ok := strings.CutPrefix(p, TablespaceDir+"/")
	if !ok {
		return 0, false
	}
	return parseOid(rest)
}

// TablespacesInside lists the folders of dataDir (relative,
// slash-separated) that a tablespace link in pg_tblspc points at: Postgres
// warns about a location inside the data directory but allows it. A backup
// stores such a folder's content once, as the tablespace, and the folder
// itself empty, as pg_basebackup does. Links are resolved through
// symlinks on both sides; an in-place tablespace (a folder in pg_tblspc,
// not a link) is not listed.
func TablespacesInside(dataDir string) (map[string]bool, error) {
	root, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(dataDir, TablespaceDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if _, ok := parseOid(e.Name()); !ok {
			continue
		}
		target, err := filepath.EvalSymlinks(filepath.Join(dataDir, TablespaceDir, e.Name()))
		if err != nil {
			continue // a dangling link: the walk reports it
		}
		rel, err := filepath.Rel(root, target)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			continue
		}
		out[filepath.ToSlash(rel)] = true
	}
	return out, nil
}

// VersionDir is the folder inside a tablespace that one major version of
// Postgres uses (TABLESPACE_VERSION_DIRECTORY, "PG_15_202209061"), so that
// clusters of two versions can share a location during pg_upgrade.
func VersionDir(serverVersion int, catalogVersion uint32) string {
	return "PG_" + MajorVersion(serverVersion) + "_" + strconv.FormatUint(uint64(catalogVersion), 10)
}

// MajorVersion turns server_version_num (150004, 90624) into the major
// version PG_VERSION holds and version folders are named with ("15",
// "9.6").
func MajorVersion(serverVersion int) string {
	if serverVersion >= 100000 {
		return strconv.Itoa(serverVersion / 10000)
	}
	return fmt.Sprintf("%d.%d", serverVersion/10000, serverVersion/100%100)
}

// ParseVersionDir splits a version folder's name into its major version
// ("15", "9.6") and catalog version.
func ParseVersionDir(name string) (major string, catalogVersion uint32, ok bool) {
	rest, found := strings.CutPrefix(name, "PG_")
	if !found {
		return "", 0, false
	}
	major, cat, found := strings.Cut(rest, "_")
	if !found || major == "" || strings.Trim(major, "0123456789.") != "" {
		return "", 0, false
	}
	n, err := strconv.ParseUint(cat, 10, 32)
	if err != nil || len(cat) != 9 {
		return "", 0, false
	}
	return major, uint32(n), true
}

// MapEntry is one line of a tablespace_map.
type MapEntry struct {
	OID      uint32
	Location string
}

// ErrTablespaceMap: a tablespace_map that cannot be read.
var ErrTablespaceMap = errors.New("bad tablespace_map")

// ParseTablespaceMap reads a tablespace_map as Postgres writes it
// (do_pg_backup_start) and reads it (read_tablespace_map): "<oid>
// <location>" lines, where a backslash escapes the next character, so that
// a location may hold a line break or a backslash.
func ParseTablespaceMap(s string) ([]MapEntry, error) {
	var out []MapEntry
	var line strings.Builder
	escaped := false
	flush := func() error {
		l := line.String()
		line.Reset()
		if l == "" {
			return nil
		}
		oid, loc, ok := strings.Cut(l, " ")
		n, okOid := parseOid(oid)
		if !ok || !okOid || loc == "" {
			return fmt.Errorf("%w: line %q: want \"<oid> <location>\"", ErrTablespaceMap, l)
		}
		out = append(out, MapEntry{OID: n, Location: loc})
		return nil
	}
	for _, r := range s {
		switch {
		case escaped:
			line.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped = true
		case r == '\n' || r == '\r':
			if err := flush(); err != nil {
				return nil, err
			}
		default:
			line.WriteRune(r)
		}
	}
	if escaped {
		return nil, fmt.Errorf("%w: ends in a backslash", ErrTablespaceMap)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// FormatTablespaceMap writes entries as Postgres writes a tablespace_map,
// sorted by oid.
func FormatTablespaceMap(entries []MapEntry) string {
	es := append([]MapEntry{}, entries...)
	sort.Slice(es, func(i, j int) bool { return es[i].OID < es[j].OID })
	var b strings.Builder
	for _, e := range es {
		b.WriteString(strconv.FormatUint(uint64(e.OID), 10))
		b.WriteByte(' ')
		for _, r := range e.Location {
			if r == '\n' || r == '\r' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
