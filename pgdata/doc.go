// Package pgdata knows what a PostgreSQL data directory is made of, so that
// backup and restore share one copy of each fact:
//
//   - relation files: "<relfilenode>[_fork][.segno]" under base/<db>/,
//     global/ and pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/; their forks
//     (main, fsm, vm, init), segment numbers, temporary relations, and which
//     files may be stored as page deltas (the main fork only);
//   - the 8 KiB page: header fields (pd_lsn, pd_checksum, pd_lower,
//     pd_upper, ...), new and all-zero pages, and the page checksum;
//   - what a base backup leaves out (what pg_basebackup skips) and the
//     folders a restore must create again;
//   - unlogged relations (only their init fork is backed up);
//   - tablespaces: pg_tblspc/<oid> links, the version folder inside a
//     tablespace, and the tablespace_map file format;
//   - global/pg_control: the fields walgo reads from it.
//
// It does no I/O beyond what a caller hands it: functions take names and
// bytes, never open files.
package pgdata
