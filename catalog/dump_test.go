package catalog

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
)

func TestDumpNamesAndKeys(t *testing.T) {
	start := time.Date(2026, 3, 8, 9, 5, 7, 123, time.FixedZone("PDT", -7*3600))
	name := DumpName(start, "a1")
	if name != "dump_20260308T160507Z_a1" {
		t.Fatalf("DumpName = %s", name)
	}
	enc := codec.New(codec.LZ4{}, mustRecipients(t), nil)
	tests := []struct {
		ext  Ext
		key  string
		want string
	}{
		{codec.Zstd{}, "dumps_005/dump_20260308T160507Z_a1/dump.pgdump.zst", "zst"},
		{codec.New(nil, nil, nil), "dumps_005/dump_20260308T160507Z_a1/dump.pgdump.zst", "zst"},
		{enc, "dumps_005/dump_20260308T160507Z_a1/dump.pgdump.lz4.age", "lz4.age"},
		{codec.None{}, "dumps_005/dump_20260308T160507Z_a1/dump.pgdump.none", "none"},
	}
	for _, tt := range tests {
		key := DumpKey(name, tt.ext)
		if key != tt.key {
			t.Errorf("DumpKey(%s) = %s, want %s", tt.ext.Ext(), key, tt.key)
		}
		if ext, ok := DumpKeyExt(name, key); !ok || ext != tt.want {
			t.Errorf("DumpKeyExt(%s) = %q, %v", key, ext, ok)
		}
	}
	if got := DumpSentinelKey(name); got != "dumps_005/dump_20260308T160507Z_a1_dump_sentinel.json" {
		t.Errorf("DumpSentinelKey = %s", got)
	}
	for _, bad := range []string{
		"dumps_005/dump_20260308T160507Z_a1/dump.pgdump.br",
		"dumps_005/dump_20260308T160507Z_a1/other.zst",
		"dumps_005/dump_20260308T160508Z_a1/dump.pgdump.zst",
	} {
		if _, ok := DumpKeyExt(name, bad); ok {
			t.Errorf("DumpKeyExt accepted %s", bad)
		}
	}
	for n, want := range map[string]bool{
		"dump_20260308T160507Z_a1":      true,
		"dump_20261308T160507Z_a1":      false, // month 13
		"dump_20260308T160507":          false,
		"dump_20260308T160507Z":         false, // no tag
		"dump_20260308T160507Z_":        false,
		"dump_20260308T160507Z_A1":      false, // lower-case hex only
		"dump_20260308T160507Z_a1_b":    false,
		"dump_2026030T8160507Z_a1":      false,
		"dump_20260308T160507Z_a1/../x": false,
		"base_20260308T160507Z":         false,
		"":                              false,
	} {
		if ValidDumpName(n) != want {
			t.Errorf("ValidDumpName(%q) = %v", n, !want)
		}
	}
}

func mustRecipients(t *testing.T) []age.Recipient {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return []age.Recipient{id.Recipient()}
}

func dumpSentinel(name string, finish time.Time) *DumpSentinel {
	return &DumpSentinel{
		Format: DumpFormat, Name: name, Database: "app", PGVersion: 150008, PGServerVersion: "15.8",
		PgDumpVersion: "15.8", StartTime: finish.Add(-time.Minute), FinishTime: finish,
		Size: 1000, SHA256: strings.Repeat("a", 64), Key: DumpKey(name, codec.Zstd{}),
		StoredSize: 900, StoredSHA256: strings.Repeat("b", 64), WalgoVersion: "test", Hostname: "h",
	}
}

func TestDumpSentinelRoundTrip(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := dumpSentinel("dump_20260308T160507Z_a1", t0)
	d.FromBackup = "base_000000010000000000000003"
	if err := WriteDumpSentinel(ctx, st, d); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDumpSentinel(ctx, st, d.Name)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *d {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, d)
	}
	if got.Ext() != "zst" {
		t.Errorf("Ext = %s", got.Ext())
	}

	tests := []struct {
		name   string
		edit   func(*DumpSentinel)
		raw    string
		target error
	}{
		{name: "unknown format", edit: func(d *DumpSentinel) { d.Format = 2 }, target: ErrFormat},
		{name: "no format", edit: func(d *DumpSentinel) { d.Format = 0 }, target: ErrFormat},
		{name: "bad name", edit: func(d *DumpSentinel) { d.Name = "../etc" }, target: codec.ErrCorrupt},
		{name: "foreign key", edit: func(d *DumpSentinel) { d.Key = "basebackups_005/x" }, target: codec.ErrCorrupt},
		{name: "not json", raw: "{", target: codec.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.raw)
			if tt.edit != nil {
				c := *d
				tt.edit(&c)
				b, _ = EncodeDumpSentinel(&c)
			}
			if _, err := DecodeDumpSentinel(b); !errors.Is(err, tt.target) {
				t.Fatalf("got %v, want %v", err, tt.target)
			}
		})
	}

	// A sentinel stored under another dump's name is refused.
	other := "dump_20260308T160508Z_a1"
	b, _ := EncodeDumpSentinel(d)
	if err := st.Put(ctx, DumpSentinelKey(other), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDumpSentinel(ctx, st, other); !errors.Is(err, codec.ErrCorrupt) {
		t.Fatalf("misplaced sentinel: %v", err)
	}
	if _, err := ReadDumpSentinel(ctx, st, "dump_20990101T000000Z_a1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("missing dump: %v", err)
	}
}

func TestListDumpsAndNameInUse(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Names sort one way, finish times the other: the list follows times.
	a := dumpSentinel("dump_20260101T000000Z_a1", t0.Add(2*time.Hour))
	b := dumpSentinel("dump_20260102T000000Z_a1", t0.Add(time.Hour))
	for _, d := range []*DumpSentinel{a, b} {
		if err := st.Put(ctx, d.Key, strings.NewReader("data")); err != nil {
			t.Fatal(err)
		}
		if err := WriteDumpSentinel(ctx, st, d); err != nil {
			t.Fatal(err)
		}
	}
	unfinished := "dump_20260103T000000Z_a1"
	if err := st.Put(ctx, DumpKey(unfinished, codec.Zstd{}), strings.NewReader("partial")); err != nil {
		t.Fatal(err)
	}
	list, err := ListDumps(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != b.Name || list[1].Name != a.Name {
		t.Fatalf("ListDumps: %v", dumpNames(list))
	}
	latest, err := LatestDump(ctx, st)
	if err != nil || latest.Name != a.Name {
		t.Fatalf("LatestDump: %v, %v", latest, err)
	}
	for n, want := range map[string]bool{a.Name: true, unfinished: true, "dump_20260104T000000Z_a1": false} {
		if got, err := DumpNameInUse(ctx, st, n); err != nil || got != want {
			t.Errorf("DumpNameInUse(%s) = %v, %v", n, got, err)
		}
	}
}

func dumpNames(l []*DumpSentinel) []string {
	var out []string
	for _, d := range l {
		out = append(out, d.Name)
	}
	return out
}

// dumpInventory builds an inventory of finished dumps (name -> finish
// minute after t0) and unfinished folders (name -> age of the newest
// object at t0+1h).
func dumpInventory(finished map[string]int, unfinished map[string]time.Duration, extra ...string) *DumpInventory {
	inv := &DumpInventory{}
	for n, m := range finished {
		d := dumpSentinel(n, t0.Add(time.Duration(m)*time.Minute))
		inv.Dumps = append(inv.Dumps, d)
		inv.Objects = append(inv.Objects,
			storage.ObjectInfo{Key: d.Key, Size: 900, ModTime: d.FinishTime},
			storage.ObjectInfo{Key: DumpSentinelKey(n), Size: 10, ModTime: d.FinishTime})
	}
	for n, age := range unfinished {
		inv.Objects = append(inv.Objects, storage.ObjectInfo{Key: DumpKey(n, codec.Zstd{}), Size: 50, ModTime: t0.Add(time.Hour - age)})
	}
	for _, k := range extra {
		inv.Objects = append(inv.Objects, storage.ObjectInfo{Key: k, Size: 1, ModTime: t0})
	}
	return inv
}

func TestPlanDumpDelete(t *testing.T) {
	// Names run opposite to finish times: ages must come from the sentinels.
	finished := map[string]int{
		"dump_20260105T000000Z_a1": 10, // oldest
		"dump_20260104T000000Z_a1": 20,
		"dump_20260103T000000Z_a1": 30,
		"dump_20260102T000000Z_a1": 40, // newest
	}
	unfinished := map[string]time.Duration{
		"dump_20260101T000000Z_a1": 48 * time.Hour, // old leftovers
		"dump_20260106T000000Z_a1": time.Minute,    // may still be running
	}
	now := t0.Add(time.Hour)
	tests := []struct {
		name       string
		req        DeleteRequest
		del        []string // finished dumps deleted
		delUnf     []string // unfinished deleted
		err        error
		deleteObjs int
	}{
		{name: "retain 2", req: DeleteRequest{Mode: DeleteRetain, N: 2},
			del: []string{"dump_20260105T000000Z_a1", "dump_20260104T000000Z_a1"}, deleteObjs: 4},
		{name: "retain more than there are", req: DeleteRequest{Mode: DeleteRetain, N: 10}},
		{name: "retain 0", req: DeleteRequest{Mode: DeleteRetain}, err: ErrBadRequest},
		{name: "retain full is not a dump mode", req: DeleteRequest{Mode: DeleteRetainFull, N: 1}, err: ErrBadRequest},
		{name: "before name", req: DeleteRequest{Mode: DeleteBefore, BeforeName: "dump_20260103T000000Z_a1"},
			del: []string{"dump_20260105T000000Z_a1", "dump_20260104T000000Z_a1"}, deleteObjs: 4},
		{name: "before time", req: DeleteRequest{Mode: DeleteBefore, Before: t0.Add(25 * time.Minute)},
			del: []string{"dump_20260105T000000Z_a1", "dump_20260104T000000Z_a1"}, deleteObjs: 4},
		{name: "before every dump", req: DeleteRequest{Mode: DeleteBefore, Before: t0.Add(time.Hour)}, err: ErrBadRequest},
		{name: "before unknown name", req: DeleteRequest{Mode: DeleteBefore, BeforeName: "dump_20270101T000000Z_a1"}, err: storage.ErrNotFound},
		{name: "before nothing", req: DeleteRequest{Mode: DeleteBefore}, err: ErrBadRequest},
		{name: "everything", req: DeleteRequest{Mode: DeleteEverything},
			del:    []string{"dump_20260105T000000Z_a1", "dump_20260104T000000Z_a1", "dump_20260103T000000Z_a1", "dump_20260102T000000Z_a1"},
			delUnf: []string{"dump_20260101T000000Z_a1", "dump_20260106T000000Z_a1"}, deleteObjs: 10},
		{name: "garbage", req: DeleteRequest{Mode: DeleteGarbage},
			delUnf: []string{"dump_20260101T000000Z_a1"}, deleteObjs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Now, tt.req.MinAge = now, 24*time.Hour
			inv := dumpInventory(finished, unfinished, "dumps_005/README", "dumps_005/junk/dump.pgdump.zst")
			p, err := PlanDumpDelete(inv, tt.req)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("got %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var del, delUnf []string
			for i, v := range p.Dumps {
				if i > 0 && v.FinishTime.Before(p.Dumps[i-1].FinishTime) {
					t.Errorf("dumps not in finish order: %v", p.Dumps)
				}
				if v.Delete {
					del = append(del, v.Name)
					if v.Keys[0] != DumpSentinelKey(v.Name) || len(v.Keys) != 2 {
						t.Errorf("%s: keys %v, want the sentinel first, then the data", v.Name, v.Keys)
					}
				}
			}
			for _, u := range p.Unfinished {
				if u.Delete {
					delUnf = append(delUnf, u.Name)
				}
			}
			slices.Sort(delUnf)
			if !slices.Equal(del, tt.del) || !slices.Equal(delUnf, tt.delUnf) {
				t.Fatalf("deletes %v and unfinished %v, want %v and %v", del, delUnf, tt.del, tt.delUnf)
			}
			if p.Totals.DeleteObjects != tt.deleteObjs || p.Totals.KeepDumps != len(finished)-len(tt.del) {
				t.Errorf("totals %+v", p.Totals)
			}
			if !slices.Equal(p.Unrecognized, []string{"dumps_005/README", "dumps_005/junk/dump.pgdump.zst"}) {
				t.Errorf("unrecognized %v", p.Unrecognized)
			}
		})
	}
}

func TestApplyDumpPlan(t *testing.T) {
	ctx := context.Background()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old := dumpSentinel("dump_20260101T000000Z_a1", t0)
	newer := dumpSentinel("dump_20260102T000000Z_a1", t0.Add(time.Hour))
	for _, d := range []*DumpSentinel{old, newer} {
		if err := st.Put(ctx, d.Key, strings.NewReader("data")); err != nil {
			t.Fatal(err)
		}
		if err := WriteDumpSentinel(ctx, st, d); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := ReadDumpInventory(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanDumpDelete(inv, DeleteRequest{Mode: DeleteRetain, N: 1, Now: time.Now(), MinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	res, err := ApplyDumpPlan(ctx, st, p, ApplyOptions{Concurrency: 1, OnDelete: func(k string) { order = append(order, k) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Dumps != 1 || res.Objects != 2 || !slices.Equal(order, []string{DumpSentinelKey(old.Name), old.Key}) {
		t.Fatalf("result %+v, order %v", res, order)
	}
	list, err := ListDumps(ctx, st)
	if err != nil || len(list) != 1 || list[0].Name != newer.Name {
		t.Fatalf("after apply: %v, %v", dumpNames(list), err)
	}
	if _, err := st.Stat(ctx, old.Key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("old dump's data still there: %v", err)
	}
	// Running the plan again is harmless.
	if _, err := ApplyDumpPlan(ctx, st, p, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeDumpSentinel: whatever a sentinel holds, a decoded one names a
// valid dump whose key lies in its own folder, and re-encodes stably.
func FuzzDecodeDumpSentinel(f *testing.F) {
	b, _ := EncodeDumpSentinel(dumpSentinel("dump_20260308T160507Z_a1", t0))
	f.Add(b)
	f.Add([]byte(`{"format":1,"name":"dump_20260308T160507Z_a1","key":"dumps_005/dump_20260308T160507Z_a1/dump.pgdump.zst.age"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDumpSentinel(b)
		if err != nil {
			return
		}
		if !ValidDumpName(d.Name) || !strings.HasPrefix(d.Key, DumpFolder(d.Name)) || d.Ext() == "" {
			t.Fatalf("accepted %+v", d)
		}
		re, err := EncodeDumpSentinel(d)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := DecodeDumpSentinel(re)
		if err != nil {
			t.Fatalf("re-encoded sentinel does not decode: %v", err)
		}
		if re2, _ := EncodeDumpSentinel(d2); !bytes.Equal(re, re2) {
			t.Fatalf("unstable encoding:\n%s\n%s", re, re2)
		}
	})
}
