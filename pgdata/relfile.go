package pgdata

import (
	"regexp"
	"strconv"
	"strings"
)

// Fork is one fork of a relation (src/include/common/relpath.h).
type Fork uint8

const (
	MainFork Fork = iota // the data itself: "<relfilenode>"
	FSMFork              // free space map: "_fsm"
	VMFork               // visibility map: "_vm"
	InitFork             // an unlogged relation's empty initial state: "_init"
)

func (f Fork) String() string {
	switch f {
	case MainFork:
		return "main"
	case FSMFork:
		return "fsm"
	case VMFork:
		return "vm"
	case InitFork:
		return "init"
	}
	return "fork(" + strconv.Itoa(int(f)) + ")"
}

var forkSuffix = map[string]Fork{"": MainFork, "fsm": FSMFork, "vm": VMFork, "init": InitFork}

// RelSegSize is RELSEG_SIZE, the pages in one relation segment file (1 GiB
// of 8 KiB pages, the default; pg_control holds a cluster's own value):
// block numbers in file "N.1" start there.
const RelSegSize = 131072

// Oids of the two tablespaces every cluster has.
const (
	DefaultTablespace = 1663 // pg_default: base/
	GlobalTablespace  = 1664 // pg_global: global/
)

// RelFile is a parsed relation segment file name.
type RelFile struct {
	Node    uint32 // relfilenode
	Fork    Fork
	Segment uint32 // 0 for the first 1 GiB, 1 for "N.1", ...
}

// relName matches <relfilenode>[_fork][.segno]; tempName adds the t<backend>_
// prefix of a temporary relation.
var (
	relName  = regexp.MustCompile(`^(\d+)(?:_(fsm|vm|init))?(?:\.(\d+))?$`)
	tempName = regexp.MustCompile(`^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$`)
)

// ParseRelFileName parses a relation segment file's base name, such as
// "16384", "16384_vm" or "16384.2". Temporary relations ("t3_16384") are
// not relation files of a backup (see IsTempRelation).
func ParseRelFileName(base string) (RelFile, bool) {
	m := relName.FindStringSubmatch(base)
	if m == nil {
		return RelFile{}, false
	}
	node, err := strconv.ParseUint(m[1], 10, 32)
	if err != nil {
		return RelFile{}, false
	}
	rf := RelFile{Node: uint32(node), Fork: forkSuffix[m[2]]}
	if m[3] != "" {
		seg, err := strconv.ParseUint(m[3], 10, 32)
		if err != nil {
			return RelFile{}, false
		}
		rf.Segment = uint32(seg)
	}
	return rf, true
}

// IsTempRelation reports whether a base name is a temporary relation's file
// ("t<backend>_<relfilenode>..."): pg_basebackup leaves them out, as they
// are gone after a restart anyway.
func IsTempRelation(base string) bool { return tempName.MatchString(base) }

// RelPath is a relation file located in the data directory.
type RelPath struct {
	Tablespace uint32 // DefaultTablespace, GlobalTablespace or a pg_tblspc oid
	Database   uint32 // 0 for shared relations (global/)
	RelFile
}

// ParseRelPath parses a slash-separated path relative to the data
// directory: base/<db>/<file>, global/<file> or
// pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/<file>. Anything else
// (pg_control, pg_filenode.map, PG_VERSION, files under pg_xact, ...) is not
// a relation file.
func ParseRelPath(p string) (RelPath, bool) {
	parts := strings.Split(p, "/")
	var rp RelPath
	var base string
	switch {
	case len(parts) == 3 && parts[0] == "base":
		db, ok := parseOid(parts[1])
		if !ok {
			return RelPath{}, false
		}
		rp.Tablespace, rp.Database, base = DefaultTablespace, db, parts[2]
	case len(parts) == 2 && parts[0] == "global":
		rp.Tablespace, base = GlobalTablespace, parts[1]
	case len(parts) == 5 && parts[0] == TablespaceDir:
		spc, ok1 := parseOid(parts[1])
		_, _, ok2 := ParseVersionDir(parts[2])
		db, ok3 := parseOid(parts[3])
		if !ok1 || !ok2 || !ok3 {
			return RelPath{}, false
		}
		rp.Tablespace, rp.Database, base = spc, db, parts[4]
	default:
		return RelPath{}, false
	}
	rf, ok := ParseRelFileName(base)
	if !ok {
		return RelPath{}, false
	}
	rp.RelFile = rf
	return rp, true
}

// IsRelation reports whether p (relative, slash-separated) is a relation
// segment file: its pages carry an LSN and, with data checksums, a checksum.
func IsRelation(p string) bool {
	_, ok := ParseRelPath(p)
	return ok
}

// PageDeltas reports whether a relation file may be backed up as only the
// pages whose LSN changed. Only the main fork may: clearing a visibility
// map bit is not WAL-logged on the map's page and leaves its LSN alone, the
// free space map is hardly WAL-logged at all, and an init fork is tiny.
// WAL-G pages main forks only too; PostgreSQL 17's incremental backup sends
// the free space map whole and learns visibility map changes from the heap
// records in its WAL summaries, which page LSNs cannot tell; pgBackRest
// never trusts page LSNs (it compares files and block checksums).
func (r RelPath) PageDeltas() bool { return r.Fork == MainFork }

// PageDeltas reports whether the file at p may be backed up as a page
// delta: a relation's main fork (see RelPath.PageDeltas).
func PageDeltas(p string) bool {
	rp, ok := ParseRelPath(p)
	return ok && rp.PageDeltas()
}

// DatabaseDir returns the database a path lies in ("base/5/16384" and
// "pg_tblspc/16400/PG_15_202209061/5/16384" are in database 5) and the path
// of that folder; ok is false outside database folders.
func DatabaseDir(p string) (db uint32, dir string, ok bool) {
	parts := strings.Split(p, "/")
	switch {
	case len(parts) >= 3 && parts[0] == "base":
		db, ok = parseOid(parts[1])
		dir = strings.Join(parts[:2], "/")
	case len(parts) >= 5 && parts[0] == TablespaceDir:
		_, _, vok := ParseVersionDir(parts[2])
		_, sok := parseOid(parts[1])
		db, ok = parseOid(parts[3])
		ok = ok && vok && sok
		dir = strings.Join(parts[:4], "/")
	}
	if !ok {
		return 0, "", false
	}
	return db, dir, true
}

// VersionFile is the PG_VERSION file: one in the data directory, one in the
// folder of each database in its default tablespace, written when the
// database is created and never again.
const VersionFile = "PG_VERSION"

func parseOid(s string) (uint32, bool) {
	if s == "" || s[0] == '0' || len(s) > 10 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// UnloggedRelations returns the relfilenodes among one folder's file names
// that have an init fork: unlogged relations. A backup keeps only their init
// forks; at the end of recovery Postgres rebuilds each main fork from it.
func UnloggedRelations(names []string) map[uint32]bool {
	out := map[uint32]bool{}
	for _, n := range names {
		if rf, ok := ParseRelFileName(n); ok && rf.Fork == InitFork {
			out[rf.Node] = true
		}
	}
	return out
}
