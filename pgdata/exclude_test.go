package pgdata

import (
	"slices"
	"testing"
)

func TestSkip(t *testing.T) {
	skipped := []string{
		"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest",
		"postgresql.auto.conf.tmp", "current_logfiles.tmp", "recovery.signal", "standby.signal",
		"global/pg_internal.init", "base/5/pg_internal.init", "base/5/pg_internal.init.123",
		"base/pgsql_tmp", "base/5/pgsql_tmp", "pg_tblspc/16400/PG_15_202209061/pgsql_tmp", "base/pgsql_tmp/pgsql_tmp123.0",
		"base/5/t3_16390", "base/5/t3_16390_fsm", "pg_tblspc/16400/PG_15_202209061/5/t3_16390.1",
	}
	kept := []string{
		"PG_VERSION", "postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "global/pg_control",
		"global/1262", "base/5/16384", "base/5/16384_init", "base/5/PG_VERSION", "pg_xact/0000",
		"pg_multixact/offsets/0000", "pg_logical/replorigin_checkpoint", "current_logfiles",
		"t3_16390", "pg_xact/t3_16390", // not in a database folder
	}
	for _, p := range skipped {
		if !Skip(p) {
			t.Errorf("Skip(%q) = false", p)
		}
	}
	for _, p := range kept {
		if Skip(p) {
			t.Errorf("Skip(%q) = true", p)
		}
	}
}

func TestSkipContents(t *testing.T) {
	for _, p := range []string{"pg_wal", "pg_xlog", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans", "pg_logical/snapshots", "pg_logical/mappings"} {
		if !SkipContents(p) {
			t.Errorf("SkipContents(%q) = false", p)
		}
	}
	for _, p := range []string{"pg_xact", "pg_multixact", "global", "base", "pg_logical", "pg_tblspc", "pg_stat", "base/pg_wal"} {
		if SkipContents(p) {
			t.Errorf("SkipContents(%q) = true", p)
		}
	}
}

func TestRestoreDirs(t *testing.T) {
	for _, v := range []int{150004, 170000} {
		dirs := RestoreDirs(v)
		for i, d := range dirs {
			for _, later := range dirs[i+1:] {
				if len(later) < len(d) && d[:len(later)] == later {
					t.Errorf("%d: %s comes before its parent %s", v, d, later)
				}
			}
		}
		// Every folder whose contents a backup leaves out is made again.
		for p := range skipContents {
			if p != "pg_xlog" && !slices.Contains(dirs, p) {
				t.Errorf("%d: %s is not made again", v, p)
			}
		}
		if has := slices.Contains(dirs, "pg_wal/summaries"); has != (v >= 170000) {
			t.Errorf("%d: pg_wal/summaries %v", v, has)
		}
		if !slices.Contains(dirs, "pg_wal/archive_status") {
			t.Errorf("%d: no pg_wal/archive_status", v)
		}
	}
	RestoreDirs(150000)[0] = "changed"
	if RestoreDirs(150000)[0] != "pg_wal" {
		t.Error("RestoreDirs hands out its own slice")
	}
}
