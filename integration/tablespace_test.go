package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walgo/walgo/internal/pgtest"
)

// tsState fingerprints what the tablespace test writes: a table and its
// index in the tablespace, a table in the default one.
const tsState = `select (select count(*) || ':' || md5(string_agg(id || v, ',' order by id)) from big) || '|' ||
	(select count(*) || ':' || md5(string_agg(id::text, ',' order by id)) from plain) || '|' ||
	(select spcname from pg_class c join pg_tablespace s on s.oid = c.reltablespace where relname = 'big_v')`

// TestTablespaces is issue 8's fifth wrong restore: a tablespace outside
// PGDATA (and a pg_wal moved out with initdb --waldir). backup-fetch puts
// the tablespace back where it was unless --tablespace says otherwise,
// refuses a location that is not empty, and links pg_tblspc/<oid> to it;
// Postgres starts on the result, with the source's data and a clean
// pg_amcheck. restore-test passes on such a backup, and never touches the
// original tablespace folder.
func TestTablespaces(t *testing.T) {
	r := fileRepo(t)
	pgtest.Require(t)
	tsDir := pgtest.OwnedDir(t, "ts-original")
	walDir := filepath.Join(pgtest.OwnedDir(t, "wal-original"), "pg_wal")
	src := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{"-k", "--waldir=" + walDir},
		Env:        r.env,
		Conf:       []string{"archive_mode = on", fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin)},
	})
	src.Start(t)
	oid, end, want := tablespaceBackups(t, r, src, tsDir)
	list := listBackups(t, r)
	if len(list) != 2 || !strings.Contains(list[1], "_D_") {
		t.Fatalf("backups: %v", list)
	}
	delta := list[1]
	detail := backupDetails(t, r, 2)
	if ts := detail[1].Tablespaces; len(ts) != 1 || ts[0].Name != "ts1" || fmt.Sprint(ts[0].OID) != oid || ts[0].Location != tsDir {
		t.Errorf("backup-list --detail tablespaces: %+v, want ts1 (%s) at %s", ts, oid, tsDir)
	}
	if detail[1].WALDir != walDir {
		t.Errorf("backup-list --detail wal_directory %q, want %s", detail[1].WALDir, walDir)
	}

	// restore runs backup-fetch with args into a new folder and starts
	// Postgres there, the folders outside it given to its user.
	restore := func(t *testing.T, outside []string, args ...string) *pgtest.Cluster {
		t.Helper()
		dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
		res := mustWalgo(t, r.env, append([]string{"backup-fetch", dir, delta, "--target-lsn", end}, args...)...)
		for _, d := range outside {
			if !strings.Contains(res.stdout, " is a symlink to "+d+"\n") {
				t.Errorf("backup-fetch does not say where it put %s:\n%s", d, res.stdout)
			}
		}
		for _, d := range append([]string{dir}, outside...) {
			pgtest.Chown(t, d)
		}
		c := pgtest.OpenExisting(t, dir, pgtest.Options{Env: r.env, Conf: []string{"archive_mode = off"}})
		c.Start(t)
		waitPromoted(t, c)
		return c
	}
	check := func(t *testing.T, c *pgtest.Cluster, spcDir string) {
		t.Helper()
		if got := c.SQL(t, tsState); got != want {
			t.Errorf("restored data differs:\n got %s\nwant %s", got, want)
		}
		if got := c.SQL(t, "select pg_tablespace_location("+oid+")"); got != spcDir {
			t.Errorf("tablespace ts1 is at %q, want %q", got, spcDir)
		}
		link, err := os.Readlink(filepath.Join(c.DataDir(), "pg_tblspc", oid))
		if err != nil || link != spcDir {
			t.Errorf("pg_tblspc/%s: %q, %v; want a link to %s", oid, link, err, spcDir)
		}
		if _, err := os.Stat(filepath.Join(c.DataDir(), "tablespace_map")); err == nil {
			t.Errorf("tablespace_map left in the restored cluster")
		}
		amcheck(t, c)
	}

	t.Run("original location in use", func(t *testing.T) {
		dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
		res := walgo(t, r.env, "backup-fetch", dir, delta)
		if res.code != 2 || !strings.Contains(res.stderr, tsDir) || !strings.Contains(res.stderr, "not empty") ||
			!strings.Contains(res.stderr, "--tablespace") {
			t.Errorf("exit %d, want 2 refusing the original location %s:\n%s", res.code, tsDir, res.stderr)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("the refused restore left %s", dir)
		}
	})

	t.Run("remapped", func(t *testing.T) {
		spc := pgtest.OwnedDir(t, "ts-remapped")
		c := restore(t, []string{spc}, "--tablespace", "ts1="+spc)
		check(t, c, spc)
		if fi, err := os.Lstat(filepath.Join(c.DataDir(), "pg_wal")); err != nil || !fi.IsDir() {
			t.Errorf("pg_wal without --waldir: %v %v, want a folder inside the data directory", fi, err)
		}
	})

	t.Run("remapped by oid, pg_wal elsewhere", func(t *testing.T) {
		spc := pgtest.OwnedDir(t, "ts-by-oid")
		wal := filepath.Join(pgtest.OwnedDir(t, "wal"), "wal")
		c := restore(t, []string{spc, wal}, "--tablespace", oid+"="+spc, "--waldir", wal)
		check(t, c, spc)
		if link, err := os.Readlink(filepath.Join(c.DataDir(), "pg_wal")); err != nil || link != wal {
			t.Errorf("pg_wal: %q %v, want a link to %s", link, err, wal)
		}
		c.SQL(t, "select pg_switch_wal(); insert into plain values (100000); checkpoint;")
		if ents, _ := os.ReadDir(wal); len(ents) < 2 {
			t.Errorf("the restored cluster writes no WAL into %s: %v", wal, ents)
		}
	})

	t.Run("restore-test", func(t *testing.T) {
		before, _ := os.ReadDir(filepath.Join(tsDir, filepath.Base(firstVersionDir(t, tsDir))))
		work := pgtest.OwnedDir(t, "drill-work")
		res := walgoAs(t, src, r.env, "restore-test", "--work-dir", work, delta)
		if res.code != 0 {
			t.Fatalf("restore-test: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		if ents, _ := os.ReadDir(work); len(ents) != 0 {
			t.Errorf("restore-test left %s behind", ents[0].Name())
		}
		after, _ := os.ReadDir(filepath.Join(tsDir, filepath.Base(firstVersionDir(t, tsDir))))
		if len(after) != len(before) {
			t.Errorf("restore-test changed the original tablespace folder: %d entries before, %d after", len(before), len(after))
		}
	})

	t.Run("dump-push --from-backup", func(t *testing.T) {
		res := walgoAs(t, src, r.env, "dump-push", "--from-backup", delta)
		if res.code != 0 {
			t.Fatalf("dump-push --from-backup: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		if n := len(listDumps(t, r.env)); n != 1 {
			t.Errorf("%d dumps listed, want 1", n)
		}
	})

	t.Run("original location", func(t *testing.T) {
		// The source's host is gone: its tablespace folder is empty again.
		src.Stop(t)
		ents, err := os.ReadDir(tsDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(tsDir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		c := restore(t, []string{tsDir})
		check(t, c, tsDir)
	})
}

// tablespaceBackups fills the running cluster src with what tsState
// fingerprints, in a tablespace ts1 at loc, and takes a full backup and a
// delta, changing it in between. It returns the tablespace's oid, an LSN
// after the delta and tsState there, with everything up to it archived.
func tablespaceBackups(t *testing.T, r repo, src *pgtest.Cluster, loc string) (oid, end, want string) {
	t.Helper()
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	src.SQL(t, fmt.Sprintf(`create tablespace ts1 location '%s';
		create table big (id int primary key using index tablespace ts1, v text) tablespace ts1;
		create index big_v on big (v) tablespace ts1;
		insert into big select g, md5(g::text) from generate_series(1, 20000) g;
		create table plain (id int primary key);
		insert into plain select generate_series(1, 1000);`, loc))
	oid = src.SQL(t, "select oid from pg_tablespace where spcname = 'ts1'")
	mustWalgoAs(t, src, env, "backup-push")
	src.SQL(t, `update big set v = 'changed' where id % 7 = 0; delete from plain where id % 3 = 0; checkpoint;`)
	mustWalgoAs(t, src, env, "backup-push", "--delta")
	end = pointAfter(t, src)
	want = src.SQL(t, tsState)
	archiveAll(t, src)
	return oid, end, want
}

// firstVersionDir is the PG_<major>_<catversion> folder in a tablespace.
func firstVersionDir(t *testing.T, spc string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(spc, "PG_*"))
	if len(m) != 1 {
		t.Fatalf("version folders in %s: %v", spc, m)
	}
	return m[0]
}

// TestTablespaceInsideDataDir: a tablespace located inside the data
// directory (Postgres warns, but allows it) is stored once, through its
// link, and its folder empty, as pg_basebackup does. So a restore to the
// original paths (the host rebuilt, the data directory where it was) puts
// the tablespace back in its folder inside the data directory; before, the
// backup held the tablespace twice and that restore was refused.
func TestTablespaceInsideDataDir(t *testing.T) {
	r := fileRepo(t)
	pgtest.Require(t)
	src := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{"-k"},
		Env:        r.env,
		Conf:       []string{"archive_mode = on", fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin)},
	})
	loc := filepath.Join(src.DataDir(), "tsin")
	if err := os.Mkdir(loc, 0o700); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, loc)
	src.Start(t)
	oid, end, want := tablespaceBackups(t, r, src, loc)
	list := listBackups(t, r)
	if len(list) != 2 {
		t.Fatalf("backups: %v", list)
	}

	// The host is rebuilt: the data directory goes back where it was.
	src.Stop(t)
	dir := src.DataDir()
	if err := os.Rename(dir, dir+".lost"); err != nil {
		t.Fatal(err)
	}
	mustWalgo(t, r.env, "backup-fetch", dir, list[1], "--target-lsn", end)
	pgtest.Chown(t, dir)
	if link, err := os.Readlink(filepath.Join(dir, "pg_tblspc", oid)); err != nil || link != loc {
		t.Errorf("pg_tblspc/%s: %q, %v; want a link to %s", oid, link, err, loc)
	}
	if ents, err := os.ReadDir(loc); err != nil || len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), "PG_") {
		t.Errorf("the tablespace's folder holds %v (%v), want one version folder", ents, err)
	}
	c := pgtest.OpenExisting(t, dir, pgtest.Options{Env: r.env, Conf: []string{"archive_mode = off"}})
	c.Start(t)
	waitPromoted(t, c)
	if got := c.SQL(t, tsState); got != want {
		t.Errorf("restored data differs:\n got %s\nwant %s", got, want)
	}
	if got := c.SQL(t, "select pg_tablespace_location("+oid+")"); got != loc {
		t.Errorf("tablespace ts1 is at %q, want %q", got, loc)
	}
	amcheck(t, c)
}
