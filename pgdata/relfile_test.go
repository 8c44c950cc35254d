package pgdata

import "testing"

func TestParseRelPath(t *testing.T) {
	tests := []struct {
		path   string
		ok     bool
		want   RelPath
		deltas bool
	}{
		{"base/5/16384", true, RelPath{DefaultTablespace, 5, RelFile{16384, MainFork, 0}}, true},
		{"base/5/16384.12", true, RelPath{DefaultTablespace, 5, RelFile{16384, MainFork, 12}}, true},
		{"base/5/16384_vm", true, RelPath{DefaultTablespace, 5, RelFile{16384, VMFork, 0}}, false},
		{"base/5/16384_vm.1", true, RelPath{DefaultTablespace, 5, RelFile{16384, VMFork, 1}}, false},
		{"base/5/16384_fsm", true, RelPath{DefaultTablespace, 5, RelFile{16384, FSMFork, 0}}, false},
		{"base/5/16384_init", true, RelPath{DefaultTablespace, 5, RelFile{16384, InitFork, 0}}, false},
		{"global/1262", true, RelPath{GlobalTablespace, 0, RelFile{1262, MainFork, 0}}, true},
		{"pg_tblspc/16400/PG_15_202209061/5/16401", true, RelPath{16400, 5, RelFile{16401, MainFork, 0}}, true},
		{"pg_tblspc/16400/PG_15_202209061/5/16401_vm", true, RelPath{16400, 5, RelFile{16401, VMFork, 0}}, false},
		{"pg_tblspc/16400/PG_9.6_201608131/5/16401", true, RelPath{16400, 5, RelFile{16401, MainFork, 0}}, true},
		// Not relation files: whole, always.
		{"global/pg_control", false, RelPath{}, false},
		{"global/pg_filenode.map", false, RelPath{}, false},
		{"base/5/pg_filenode.map", false, RelPath{}, false},
		{"base/5/PG_VERSION", false, RelPath{}, false},
		{"base/5/pg_internal.init", false, RelPath{}, false},
		{"base/5/t3_16390", false, RelPath{}, false},
		{"pg_xact/0000", false, RelPath{}, false},
		{"pg_multixact/offsets/0000", false, RelPath{}, false},
		{"pg_multixact/members/0000", false, RelPath{}, false},
		{"pg_commit_ts/0000", false, RelPath{}, false},
		{"pg_twophase/00000300", false, RelPath{}, false},
		{"base/5/16384_foo", false, RelPath{}, false},
		{"base/05/16384", false, RelPath{}, false},
		{"base/5/99999999999", false, RelPath{}, false},
		{"16384", false, RelPath{}, false},
		{"base/16384", false, RelPath{}, false},
		{"pg_tblspc/16400/16401", false, RelPath{}, false},
		{"pg_tblspc/16400/PG_15_202209061/16401", false, RelPath{}, false},
		{"pg_tblspc/16400/PG_15_2022/5/16401", false, RelPath{}, false},
		{"pg_wal/000000010000000000000001", false, RelPath{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseRelPath(tt.path)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseRelPath(%q) = %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
		if IsRelation(tt.path) != tt.ok {
			t.Errorf("IsRelation(%q) = %v", tt.path, !tt.ok)
		}
		if PageDeltas(tt.path) != tt.deltas {
			t.Errorf("PageDeltas(%q) = %v, want %v", tt.path, !tt.deltas, tt.deltas)
		}
	}
}

func TestTempRelations(t *testing.T) {
	for name, want := range map[string]bool{
		"t3_16390": true, "t3_16390_vm": true, "t12_16390.1": true, "t3_16390_fsm": true,
		"16390": false, "t_16390": false, "t3_": false, "pgsql_tmp": false, "t3_16390_x": false,
	} {
		if got := IsTempRelation(name); got != want {
			t.Errorf("IsTempRelation(%q) = %v", name, got)
		}
	}
}

func TestDatabaseDir(t *testing.T) {
	tests := []struct {
		path string
		db   uint32
		dir  string
		ok   bool
	}{
		{"base/5/16384", 5, "base/5", true},
		{"base/5/PG_VERSION", 5, "base/5", true},
		{"base/5", 0, "", false},
		{"pg_tblspc/16400/PG_15_202209061/5/16401", 5, "pg_tblspc/16400/PG_15_202209061/5", true},
		{"pg_tblspc/16400/PG_15_202209061/5", 0, "", false},
		{"pg_tblspc/16400/other/5/16401", 0, "", false},
		{"global/1262", 0, "", false},
		{"base/pgsql_tmp/x", 0, "", false},
	}
	for _, tt := range tests {
		db, dir, ok := DatabaseDir(tt.path)
		if db != tt.db || dir != tt.dir || ok != tt.ok {
			t.Errorf("DatabaseDir(%q) = %d, %q, %v; want %d, %q, %v", tt.path, db, dir, ok, tt.db, tt.dir, tt.ok)
		}
	}
}

func TestUnloggedRelations(t *testing.T) {
	got := UnloggedRelations([]string{"16384", "16400", "16400_init", "16400_fsm", "16401_init", "PG_VERSION", "t3_16500_init"})
	if len(got) != 2 || !got[16400] || !got[16401] {
		t.Errorf("UnloggedRelations = %v, want 16400 and 16401", got)
	}
}

func TestForkString(t *testing.T) {
	for f, want := range map[Fork]string{MainFork: "main", FSMFork: "fsm", VMFork: "vm", InitFork: "init", 9: "fork(9)"} {
		if f.String() != want {
			t.Errorf("%d: %q", f, f.String())
		}
	}
}
