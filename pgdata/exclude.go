package pgdata

import (
	"path"
	"strings"
)

// What a base backup leaves out, as pg_basebackup does
// (src/backend/backup/basebackup.c: excludeDirContents, excludeFiles,
// temporary files and relations) plus walgo's own leftovers.

// skipContents are the folders whose contents a backup leaves out: the
// folder itself is kept (empty), Postgres rebuilds what goes in it.
var skipContents = map[string]bool{
	"pg_wal":               true, // the backup's WAL comes from the archive
	"pg_xlog":              true, // pg_wal before Postgres 10
	"pg_dynshmem":          true,
	"pg_notify":            true,
	"pg_replslot":          true, // slots are not copied, as pg_basebackup does
	"pg_serial":            true,
	"pg_snapshots":         true,
	"pg_stat_tmp":          true,
	"pg_subtrans":          true,
	"pg_logical/snapshots": true, // of logical slots, which are not copied
	"pg_logical/mappings":  true,
}

// Files of the data directory's top folder that backup and restore name.
const (
	PIDFile            = "postmaster.pid"
	BackupLabelFile    = "backup_label"
	RecoverySignalFile = "recovery.signal" // archive recovery to a target, then promotion
	StandbySignalFile  = "standby.signal"  // a standby: recovery that never ends
	AutoConfFile       = "postgresql.auto.conf"
)

// skipFiles are left out wherever they are.
var skipFiles = map[string]bool{
	PIDFile:                true,
	"postmaster.opts":      true,
	BackupLabelFile:        true, // the backup's own comes from pg_backup_stop
	TablespaceMapFile:      true, // likewise
	"backup_manifest":      true, // belongs to the backup this cluster was restored from
	AutoConfFile + ".tmp":  true,
	"current_logfiles.tmp": true,
	RecoverySignalFile:     true, // a restore writes its own
	StandbySignalFile:      true,
}

// Prefixes of names left out wherever they are: temporary files and
// folders, and the relation cache files rebuilt at startup.
var skipPrefixes = []string{"pgsql_tmp", "pg_internal.init"}

// SkipContents reports whether a backup keeps folder p (slash-separated,
// relative to the data directory) but none of its contents.
func SkipContents(p string) bool { return skipContents[p] }

// Skip reports whether a backup leaves out the file or folder p
// (slash-separated, relative to the data directory) altogether: the files
// pg_basebackup skips, temporary files and folders, and temporary
// relations in database folders. Unlogged relations are judged per folder
// (see UnloggedRelations).
func Skip(p string) bool {
	base := path.Base(p)
	if skipFiles[base] {
		return true
	}
	for _, pre := range skipPrefixes {
		if strings.HasPrefix(base, pre) {
			return true
		}
	}
	if IsTempRelation(base) {
		_, dir, ok := DatabaseDir(p)
		return ok && dir == path.Dir(p)
	}
	return false
}

// restoreDirs are the folders a restore must create when the backup did
// not hold them: their contents were left out, and Postgres needs them
// (pg_wal/archive_status among them). Parents come before their children.
var restoreDirs = []string{
	"pg_wal", "pg_wal/archive_status",
	"pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots",
	"pg_stat_tmp", "pg_subtrans",
	"pg_logical", "pg_logical/snapshots", "pg_logical/mappings",
}

// RestoreDirs returns the folders a restore creates where missing, parents
// first, for a cluster of server_version_num version.
func RestoreDirs(version int) []string {
	dirs := append([]string{}, restoreDirs...)
	if version >= 170000 {
		dirs = append(dirs, "pg_wal/summaries")
	}
	return dirs
}

// WALDir is the WAL folder of the data directory (Postgres 10 and later).
// It may be a symlink to a folder elsewhere (initdb --waldir).
const WALDir = "pg_wal"
