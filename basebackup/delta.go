package basebackup

import (
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/wal"
)

// deltaPlan says what a delta backup compares against, and which files may
// be stored as only their changed pages (or not at all).
//
// A page is taken from the parent only when pgdata.Unchanged says so: its
// LSN is older than the parent's start, so no WAL-logged change touched it
// since the parent read it. That holds for a relation's main fork on a
// cluster whose page LSNs move on every change (data checksums or
// wal_log_hints; see deltaRefusal), and for a file that is the same file
// the parent read. It does not hold for:
//   - the visibility map and free space map forks (and init forks): stored
//     whole (pgdata.PageDeltas);
//   - files that are not relations (pg_control, pg_filenode.map, pg_xact,
//     pg_multixact, ...): stored whole;
//   - a database dropped and created again under the same oid: CREATE
//     DATABASE ... STRATEGY FILE_COPY (and ALTER DATABASE ... SET
//     TABLESPACE) copy files with their old page LSNs, so a relation of the
//     new database can look unchanged against another relation the parent
//     held at that path. A database's PG_VERSION is written when it is
//     created and never again: when it is not the parent's (path and
//     modification time), all the database's files are stored whole.
type deltaPlan struct {
	from   wal.LSN // the parent's start LSN: pages at or after it changed
	parent map[string]catalog.ManifestFile
	// recreated holds the databases whose PG_VERSION differs from the
	// parent's.
	recreated map[uint32]bool
}

// newDeltaPlan compares the data directory's entries with the parent's
// manifest, whose backup started at from.
func newDeltaPlan(from wal.LSN, parent []catalog.ManifestFile, entries []entry) *deltaPlan {
	d := &deltaPlan{from: from, parent: map[string]catalog.ManifestFile{}, recreated: map[uint32]bool{}}
	type version struct {
		path string
		info catalog.ManifestFile
	}
	before := map[uint32]version{}
	for _, f := range parent {
		d.parent[f.Path] = f
		if db, dir, ok := pgdata.DatabaseDir(f.Path); ok && f.Path == dir+"/"+pgdata.VersionFile {
			before[db] = version{f.Path, f}
		}
	}
	now := map[uint32]bool{}
	for _, e := range entries {
		db, dir, ok := pgdata.DatabaseDir(e.name)
		if !ok {
			continue
		}
		if e.name != dir+"/"+pgdata.VersionFile {
			if _, seen := now[db]; !seen {
				now[db] = false
			}
			continue
		}
		now[db] = true
		b, found := before[db]
		if !found || b.path != e.name || !b.info.ModTime.Equal(e.info.ModTime()) || b.info.Size != e.info.Size() {
			d.recreated[db] = true
		}
	}
	for db, hasVersion := range now {
		if !hasVersion {
			d.recreated[db] = true // no PG_VERSION to tell: trust nothing
		}
	}
	return d
}

// base returns the parent's manifest entry that a file may be stored as a
// delta of, or false when the file must be stored whole.
func (d *deltaPlan) base(name string) (catalog.ManifestFile, bool) {
	if d == nil {
		return catalog.ManifestFile{}, false
	}
	rp, ok := pgdata.ParseRelPath(name)
	if !ok || !rp.PageDeltas() || d.recreated[rp.Database] && rp.Database != 0 {
		return catalog.ManifestFile{}, false
	}
	f, ok := d.parent[name]
	if !ok || !fs.FileMode(f.Mode).IsRegular() || path.Clean(f.Path) != name {
		return catalog.ManifestFile{}, false
	}
	return f, true
}

// lsnSettings decide whether every change to a page gives it a new LSN:
// with data checksums or wal_log_hints, setting hint bits or the
// all-visible flag on a page first logs a full image of it; without both,
// Postgres changes pages without a new LSN. Changing either needs a restart.
type lsnSettings struct {
	checksums, walLogHints bool
	started                time.Time // pg_postmaster_start_time()
}

// deltaRefusal says why a delta built on parent could miss changes, or ""
// when page LSNs have been reliable since parent started: data checksums or
// wal_log_hints now and when parent was taken, and either data checksums
// both times (they cannot be turned off without a restart and
// pg_checksums) or no restart since parent (so wal_log_hints stayed on).
func deltaRefusal(now lsnSettings, parent *catalog.Sentinel) string {
	switch {
	case !now.checksums && !now.walLogHints:
		return "the cluster has no data checksums and wal_log_hints is off: Postgres then sets hint bits and the all-visible flag without giving the page a new LSN, so a delta could restore pages that do not match the visibility map; turn wal_log_hints on (a restart) for delta backups"
	case !parent.DataChecksums && !parent.WALLogHints:
		return fmt.Sprintf("the parent backup %s does not record data checksums or wal_log_hints (it was taken without either, or by an older walgo)", parent.Name)
	case !(now.checksums && parent.DataChecksums) && !now.started.Equal(parent.ServerStarted):
		return fmt.Sprintf("the server restarted since the parent backup %s and the cluster has no data checksums: wal_log_hints may have been off in between", parent.Name)
	}
	return ""
}
