package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/walgo/walgo/internal/pgtest"
)

// tableFacts is what Postgres itself says about table t: its rows counted
// by a sequential scan and by an index-only scan, a fingerprint of its
// rows, and the tuples the visibility map wrongly calls all-visible or
// all-frozen (pg_visibility).
type tableFacts struct {
	seqCount, indexOnlyCount string
	fingerprint              string
	notVisible, notFrozen    string
}

func (f tableFacts) String() string {
	return fmt.Sprintf("seq scan %s rows, index-only scan %s rows, fingerprint %s, pg_check_visible %s, pg_check_frozen %s",
		f.seqCount, f.indexOnlyCount, f.fingerprint, f.notVisible, f.notFrozen)
}

func factsOf(t *testing.T, c *pgtest.Cluster, table string) tableFacts {
	t.Helper()
	c.SQL(t, "create extension if not exists pg_visibility")
	q := func(settings, query string) string {
		return c.SQL(t, "begin; "+settings+" "+query+"; commit;")
	}
	noIndex := "set local enable_indexscan = off; set local enable_indexonlyscan = off; set local enable_bitmapscan = off;"
	// Not enable_indexscan = off: it costs index-only scans out too.
	indexOnly := "set local enable_seqscan = off; set local enable_bitmapscan = off;"
	countIO := fmt.Sprintf("select count(*) from %s where id >= 0", table)
	plan := q(indexOnly, "explain (costs off) "+countIO)
	if !strings.Contains(plan, "Index Only Scan") {
		t.Fatalf("no index-only scan for %q:\n%s", countIO, plan)
	}
	// The index-only count first: a sequential scan prunes the pages it
	// reads, and the index-only scan must see them as restored.
	f := tableFacts{indexOnlyCount: q(indexOnly, countIO)}
	f.seqCount = q(noIndex, "select count(*) from "+table)
	f.fingerprint = q(noIndex, fmt.Sprintf("select md5(string_agg(id || ':' || pad, ',' order by id)) from %s", table))
	f.notVisible = c.SQL(t, fmt.Sprintf("select count(*) from pg_check_visible('%s')", table))
	f.notFrozen = c.SQL(t, fmt.Sprintf("select count(*) from pg_check_frozen('%s')", table))
	return f
}

// backupDetail is one backup as backup-list --json --detail shows it.
type backupDetail struct {
	Name           string `json:"name"`
	CompressedSize int64  `json:"compressed_size"`
	DeltaParent    string `json:"delta_parent"`
	DeltaRefused   string `json:"delta_refused"`
	Tablespaces    []struct {
		OID      uint32 `json:"oid"`
		Name     string `json:"name"`
		Location string `json:"location"`
	} `json:"tablespaces"`
	WALDir string `json:"wal_directory"`
}

// backupDetails runs backup-list --json --detail and fails the test unless
// it lists n backups.
func backupDetails(t *testing.T, r repo, n int) []backupDetail {
	t.Helper()
	var list []backupDetail
	out := mustWalgo(t, r.env, "backup-list", "--json", "--detail")
	if err := json.Unmarshal([]byte(out.stdout), &list); err != nil || len(list) != n {
		t.Fatalf("backup-list --json --detail: %v, want %d backups\n%s", err, n, out.stdout)
	}
	return list
}

// pointAfter returns the current WAL location as a recovery target, and
// writes a WAL record there so that recovery reaches it even when nothing
// else is written before the segment is archived (after pg_backup_stop, the
// location is the start of an empty segment).
func pointAfter(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	lsn := c.SQL(t, "select pg_current_wal_lsn()")
	c.SQL(t, "select pg_create_restore_point('walgo test point')")
	return lsn
}

// amcheck runs pg_amcheck --heapallindexed on every database and fails the
// test on any finding.
func amcheck(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	cmd := c.Command(context.Background(), "pg_amcheck", "--all", "--install-missing", "--heapallindexed",
		"-h", "127.0.0.1", "-p", fmt.Sprint(c.Port()), "-U", "postgres")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_amcheck --heapallindexed: %v\n%s", err, out)
	}
}

// TestDeltaRestoresExactRows is issue 8's first wrong restore: a frozen,
// all-visible table, a full backup, deletes and updates on every page, a
// delta. The restored delta must hold exactly the source's rows, by
// sequential and index-only scan alike, with a visibility map that
// pg_visibility finds true and a clean pg_amcheck. The other cases change
// fewer pages (the heap is stored as a page delta) and truncate the table
// with VACUUM, then extend it again over the pages the parent holds.
func TestDeltaRestoresExactRows(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes string
		rows    string // the source's count after the changes
	}{
		{"issue 8: every page", `delete from t where id % 10 = 0;
			update t set pad = 'y' where id % 10 = 5;`, "180000"},
		{"a few pages", `delete from t where id <= 20000 and id % 2 = 0;
			update t set pad = 'y' where id between 150000 and 151000;`, "190000"},
		{"truncated and extended again", `delete from t where id > 1000;
			vacuum t;
			insert into t select g, 'z' from generate_series(300001, 350000) g;
			vacuum (analyze) t;`, "51000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fileRepo(t)
			src := archivingCluster(t, r)
			env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
			src.SQL(t, `create table t (id int primary key, pad text) with (autovacuum_enabled = off);
				insert into t select g, 'x' from generate_series(1, 200000) g;
				vacuum (freeze) t;
				checkpoint;`)
			mustWalgoAs(t, src, env, "backup-push")
			src.SQL(t, tc.changes+" checkpoint;")
			mustWalgoAs(t, src, env, "backup-push", "--delta")
			// Restore to this point, before the checks below prune pages
			// and kill index entries on the source: replaying that would
			// hide the damage.
			end := pointAfter(t, src)
			want := factsOf(t, src, "t")
			if want.seqCount != tc.rows || want.indexOnlyCount != tc.rows || want.notVisible != "0" || want.notFrozen != "0" {
				t.Fatalf("the source itself: %s", want)
			}
			archiveAll(t, src)

			list := listBackups(t, r)
			if len(list) != 2 || !strings.Contains(list[1], "_D_") {
				t.Fatalf("backups %v: the second is not a delta", list)
			}
			delta := list[1]
			c := restoreAndStart(t, r, []string{delta, "--target-lsn", end})
			waitPromoted(t, c)
			got := factsOf(t, c, "t")
			t.Logf("source:   %s\nrestored: %s", want, got)
			if got != want {
				t.Errorf("restored delta %s differs from the source:\n got %s\nwant %s", delta, got, want)
			}
			amcheck(t, c)
		})
	}
}

// TestDeltaDatabaseCreatedAgain: a database dropped and created again
// under the same oid by copying its template's files (STRATEGY FILE_COPY)
// holds relation files with the template's old page LSNs at the paths the
// parent backup held the dropped database's files. The delta must not take
// the dropped database's pages for them.
func TestDeltaDatabaseCreatedAgain(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	src.SQL(t, `create database tmpl;`)
	src.SQL(t, `\c tmpl
		create table x (id int, v text);
		insert into x select g, 'template' from generate_series(1, 5000) g;
		checkpoint;`)
	src.SQL(t, `create database d1 oid 20000 template tmpl strategy file_copy;`)
	src.SQL(t, `\c d1
		update x set v = 'dropped database';
		checkpoint;`)
	mustWalgoAs(t, src, env, "backup-push")
	src.SQL(t, `drop database d1;`)
	src.SQL(t, `create database d2 oid 20000 template tmpl strategy file_copy;`)
	src.SQL(t, `checkpoint;`)
	mustWalgoAs(t, src, env, "backup-push", "--delta")
	end := pointAfter(t, src)
	const q = `\c d2
		select v || ':' || count(*) from x group by v order by v;`
	want := src.SQL(t, q)
	if want != "template:5000" {
		t.Fatalf("the source itself: %q", want)
	}
	archiveAll(t, src)
	list := listBackups(t, r)
	if len(list) != 2 || !strings.Contains(list[1], "_D_") {
		t.Fatalf("backups: %v", list)
	}
	c := restoreAndStart(t, r, []string{list[1], "--target-lsn", end})
	waitPromoted(t, c)
	if got := c.SQL(t, q); got != want {
		t.Errorf("database d2 restored from delta %s: %q, want %q", list[1], got, want)
	}
	amcheck(t, c)
}

// TestDeltaWithoutReliablePageLSNs: without data checksums and with
// wal_log_hints off, VACUUM marks heap pages all-visible without a new page
// LSN, so a delta would pair the parent's page (not all-visible) with a
// visibility map that says it is, and a later DELETE there would leave the
// map bit set: index-only scans then return deleted rows. backup-push
// --delta takes a full backup instead, and says so in its log and in the
// listing. With wal_log_hints on, the delta is made and restores right.
func TestDeltaWithoutReliablePageLSNs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hints string
		delta bool
	}{
		{"wal_log_hints off", "off", false},
		{"wal_log_hints on", "on", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fileRepo(t)
			pgtest.Require(t)
			src := pgtest.New(t, pgtest.Options{
				Env: r.env,
				Conf: []string{
					"archive_mode = on",
					fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin),
					"wal_log_hints = " + tc.hints,
				},
			})
			src.Start(t)
			if got := src.SQL(t, "show data_checksums"); got != "off" {
				t.Fatalf("data_checksums = %s", got)
			}
			env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
			src.SQL(t, `create table t (id int primary key, pad text) with (autovacuum_enabled = off);
				insert into t select g, 'x' from generate_series(1, 20000) g;
				checkpoint;`)
			mustWalgoAs(t, src, env, "backup-push")
			src.SQL(t, `vacuum t; checkpoint;`)
			res := mustWalgoAs(t, src, env, "backup-push", "--delta")
			end := pointAfter(t, src)
			archiveAll(t, src)

			list := backupDetails(t, r, 2)
			b := list[1]
			if tc.delta {
				if b.DeltaParent != list[0].Name || b.DeltaRefused != "" {
					t.Fatalf("with wal_log_hints on, --delta made %+v", b)
				}
			} else {
				if b.DeltaParent != "" || strings.Contains(b.Name, "_D_") {
					t.Fatalf("without checksums and wal_log_hints, --delta made a delta: %+v", b)
				}
				if !strings.Contains(b.DeltaRefused, "wal_log_hints") {
					t.Errorf("the listing does not say why the delta was refused: %+v", b)
				}
				if !strings.Contains(res.stderr, "delta refused") {
					t.Errorf("the log does not say the delta was refused:\n%s", res.stderr)
				}
				text := mustWalgo(t, r.env, "backup-list", "--detail").stdout
				if !strings.Contains(text, "delta refused") {
					t.Errorf("backup-list --detail does not show the refusal:\n%s", text)
				}
			}

			c := restoreAndStart(t, r, []string{b.Name, "--target-lsn", end})
			waitPromoted(t, c)
			c.SQL(t, "delete from t where id % 2 = 0")
			got := factsOf(t, c, "t")
			if got.seqCount != "10000" || got.indexOnlyCount != "10000" || got.notVisible != "0" || got.notFrozen != "0" {
				t.Errorf("restored %s, then half the rows deleted: %s", b.Name, got)
			}
			amcheck(t, c)
		})
	}
}
