package torture

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	base := func() *Fingerprint {
		return &Fingerprint{
			Tables: []TableFP{
				{Name: "t1", Tablespace: "pg_default", Rows: 10, Hash: "123", IndexRows: 10, IndexSum: "55"},
				{Name: "u1", Unlogged: true, Tablespace: "pg_default", Rows: 3, Hash: "9", IndexRows: 3, IndexSum: "6"},
			},
			Sequences: []SequenceFP{{Name: "torture_seq", LastValue: 100, LogCnt: 20, IsCalled: true}},
			Prepared:  []string{"g1 745 postgres torture 2026-12-01T10:00:00.000000Z"},
		}
	}
	restoredOK := func() *Fingerprint {
		f := base()
		f.Tables[1].Rows, f.Tables[1].Hash, f.Tables[1].IndexRows, f.Tables[1].IndexSum = 0, "0", 0, "0"
		return f
	}
	for _, tc := range []struct {
		name   string
		change func(*Fingerprint)
		want   string // a line Diff must give; "" for none
	}{
		{"equal", func(*Fingerprint) {}, ""},
		{"sequence record replayed", func(f *Fingerprint) { f.Sequences[0].LastValue, f.Sequences[0].LogCnt = 120, 0 }, ""},
		{"sequence behind", func(f *Fingerprint) { f.Sequences[0].LastValue, f.Sequences[0].LogCnt = 90, 30 }, "sequences:"},
		{"sequence ahead", func(f *Fingerprint) { f.Sequences[0].LastValue, f.Sequences[0].LogCnt = 150, 0 }, "sequences:"},
		{"a row lost", func(f *Fingerprint) { f.Tables[0].Rows, f.Tables[0].Hash = 9, "100" }, "table t1: 9 rows (hash 100), want 10 rows (hash 123)"},
		{"a row changed", func(f *Fingerprint) { f.Tables[0].Hash = "124" }, "table t1: 10 rows (hash 124)"},
		{"stale visibility map", func(f *Fingerprint) { f.Tables[0].IndexRows = 11 }, "10 rows by a sequential scan, 11 by an index-only scan"},
		{"pg_check_visible", func(f *Fingerprint) { f.Tables[0].NotVisible = 2 }, "pg_check_visible: 2 tuples"},
		{"pg_check_frozen", func(f *Fingerprint) { f.Tables[0].NotFrozen = 2 }, "pg_check_frozen: 2 tuples"},
		{"amcheck", func(f *Fingerprint) { f.Amcheck = "heap table t1: block 3 ..." }, "pg_amcheck --heapallindexed: heap table"},
		{"unlogged rows kept", func(f *Fingerprint) { f.Tables[1] = base().Tables[1] }, "table u1: 3 rows (hash 9), want 0 rows (hash 0)"},
		{"table missing", func(f *Fingerprint) { f.Tables = f.Tables[:1] }, "table u1: missing"},
		{"table extra", func(f *Fingerprint) { f.Tables = append(f.Tables, TableFP{Name: "t9", Rows: 4}) }, "table t9: should not exist"},
		{"wrong tablespace", func(f *Fingerprint) { f.Tables[0].Tablespace = "torture_ts" }, "table t1: unlogged false in tablespace torture_ts, want unlogged false in pg_default"},
		{"prepared lost", func(f *Fingerprint) { f.Prepared = nil }, "prepared transactions: [], want [g1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := restoredOK()
			tc.change(got)
			d := Diff(base().Restored(), got)
			switch {
			case tc.want == "" && len(d) > 0:
				t.Fatalf("want no difference, got %q", d)
			case tc.want != "" && !strings.Contains(strings.Join(d, "\n"), tc.want):
				t.Fatalf("want a line with %q, got %q", tc.want, d)
			}
		})
	}
}
