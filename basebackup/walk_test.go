package basebackup

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/wal"
)

func touch(t *testing.T, root string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWalkSkipsWhatPgBasebackupSkips(t *testing.T) {
	data := t.TempDir()
	touch(t, data,
		"PG_VERSION", "postgresql.conf", "global/pg_control", "global/1262", "global/pg_internal.init",
		"base/5/1259", "base/5/1259_fsm", "base/5/16384", "base/5/16384.1",
		"base/5/16400", "base/5/16400_init", "base/5/16400_fsm", "base/5/16400.1", // unlogged
		"base/5/pgsql_tmp/pgsql_tmp123.0", "base/pgsql_tmp/t",
		"pg_wal/000000010000000000000001", "pg_wal/archive_status/000000010000000000000001.ready",
		"pg_replslot/slot/state", "pg_stat_tmp/global.stat", "pg_subtrans/0000", "pg_notify/0000",
		"pg_serial/0000", "pg_snapshots/x", "pg_dynshmem/mmap.1", "pg_logical/snapshots/a.snap",
		"pg_logical/replorigin_checkpoint",
		"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "recovery.signal",
		"pg_xact/0000", "pg_multixact/offsets/0000",
	)
	ts := t.TempDir()
	touch(t, ts, "PG_15_202209061/5/17000", "PG_14_202107181/5/16999", "lost+found/x")
	os.MkdirAll(filepath.Join(data, "pg_tblspc"), 0o700)
	if err := os.Symlink(ts, filepath.Join(data, "pg_tblspc", "17000")); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/etc/hosts", filepath.Join(data, "conf-link"))

	entries, got := walkNames(t, data)
	want := []string{
		"PG_VERSION", "base", "base/5", "base/5/1259", "base/5/1259_fsm", "base/5/16384", "base/5/16384.1",
		"base/5/16400_init", "conf-link", "global", "global/1262",
		"pg_dynshmem", "pg_logical", "pg_logical/replorigin_checkpoint", "pg_logical/snapshots",
		"pg_multixact", "pg_multixact/offsets", "pg_multixact/offsets/0000", "pg_notify", "pg_replslot",
		"pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans",
		"pg_tblspc", "pg_tblspc/17000", "pg_tblspc/17000/PG_15_202209061", "pg_tblspc/17000/PG_15_202209061/5",
		"pg_tblspc/17000/PG_15_202209061/5/17000",
		"pg_wal", "pg_xact", "pg_xact/0000", "postgresql.conf", "global/pg_control",
	}
	if !slices.Equal(got, want) {
		t.Errorf("walk:\n got %q\nwant %q", got, want)
	}
	for _, e := range entries {
		if e.name == "conf-link" && e.link != "/etc/hosts" {
			t.Errorf("other symlinks are stored as links: %+v", e)
		}
		if e.name == "pg_tblspc/17000" && (e.link != "" || !e.info.IsDir() || e.followed != ts) {
			t.Errorf("tablespace link must be stored as the folder it points at: %+v", e)
		}
	}
}

func TestChangedPages(t *testing.T) {
	const from = wal.LSN(0x5000000)
	var file []byte
	file = append(file, relPage(0x4000000, 1)...)         // 0: older: unchanged
	file = append(file, relPage(0x5000000, 1)...)         // 1: at from: changed
	file = append(file, relPage(0x6000000, 1)...)         // 2: newer: changed
	file = append(file, make([]byte, pgdata.PageSize)...) // 3: all-zero: changed (the parent may hold an old page here)
	file = append(file, relPage(0, 7)...)                 // 4: unstamped: changed
	file = append(file, relPage(0x1000000, 1)...)         // 5: old: unchanged
	file = append(file, relPage(0x4000000, 1)[:100]...)   // 6: cut short while read: changed
	p := filepath.Join(t.TempDir(), "16384")
	os.WriteFile(p, file, 0o600)
	f, _ := os.Open(p)
	defer f.Close()
	w := newPartWriter(context.Background(), nil, "x", Config{Concurrency: 1}, zap.NewNop())
	got, err := w.changedPages(f, 7*pgdata.PageSize, 7*pgdata.PageSize, from) // the parent had 7 pages; the file shrank while read
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{1, 2, 3, 4, 6}; !slices.Equal(got, want) {
		t.Errorf("changed pages %v, want %v", got, want)
	}
}

func TestLinkedDirs(t *testing.T) {
	data, ts, wal := t.TempDir(), t.TempDir(), t.TempDir()
	touch(t, data, "PG_VERSION", "pg_tblspc/17005/PG_15_202209061/5/17006")
	touch(t, ts, "PG_15_202209061/5/17001")
	if err := os.Symlink(ts, filepath.Join(data, "pg_tblspc", "17000")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(wal, filepath.Join(data, "pg_wal")); err != nil {
		t.Fatal(err)
	}
	entries, err := walk(data, "15")
	if err != nil {
		t.Fatal(err)
	}
	got, walDir := linkedDirs(entries, []tablespace{
		{oid: 17000, name: "fast", location: "/somewhere/else"}, // the link is what the backup restores from
		{oid: 17005, name: "inplace", location: "pg_tblspc/17005"},
		{oid: 17009, name: "new", location: "/srv/new"}, // created after the walk
	})
	want := []catalog.Tablespace{
		{OID: 17000, Name: "fast", Location: ts},
		{OID: 17005, Name: "inplace", Location: "pg_tblspc/17005"},
		{OID: 17009, Name: "new", Location: "/srv/new"},
	}
	if !slices.Equal(got, want) || walDir != wal {
		t.Errorf("linkedDirs = %+v, %q\nwant %+v, %q", got, walDir, want, wal)
	}
}

// A tablespace whose location is inside the data directory (Postgres warns
// but allows it) is stored once, through its pg_tblspc link, as
// pg_basebackup does: the folder itself stays, empty, so a restore to the
// original paths finds the tablespace's location there and empty.
func TestTablespaceInsideDataDir(t *testing.T) {
	data := t.TempDir()
	touch(t, data, "PG_VERSION", "tsin/PG_15_202209061/5/17001", "pg_tblspc/.keep", "other/file")
	os.Remove(filepath.Join(data, "pg_tblspc", ".keep"))
	// Linked by absolute path, through a symlink to the data directory, as
	// a location may be.
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(data, alias); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(alias, "tsin"), filepath.Join(data, "pg_tblspc", "17000")); err != nil {
		t.Fatal(err)
	}
	_, names := walkNames(t, data)
	for _, want := range []string{"tsin", "pg_tblspc/17000", "pg_tblspc/17000/PG_15_202209061/5/17001", "other/file"} {
		if !slices.Contains(names, want) {
			t.Errorf("the backup lacks %s: %v", want, names)
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, "tsin/") {
			t.Errorf("the tablespace is stored a second time, as %s", n)
		}
	}
}

// walkNames walks data as a backup does and lists its entries' names, in
// tar order.
func walkNames(t *testing.T, data string) ([]entry, []string) {
	t.Helper()
	entries, err := walk(data, "15")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.name)
	}
	return entries, names
}
