package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
)

// specialSQL makes a table of types whose text forms a dump must carry
// exactly.
const specialSQL = `create table special(id int primary key, j jsonb, a text[], ts timestamptz, b bytea,
	n numeric, u uuid, r int4range, p point, e text);
insert into special select i, jsonb_build_object('k', i, 'l', array[i, -i]), array['x' || i, null, 'q''"\'],
	'2026-03-08 02:30:00+00'::timestamptz + i * interval '1 hour', decode(md5(i::text), 'hex'),
	i * 1.000000000000000001, md5(i::text)::uuid, int4range(i, i + 10), point(i, -i), E'tab\there\nnewline ' || i
	from generate_series(1, 200) i`

// dbState is the content checksum of every pgbench table and of special
// in database db.
func dbState(t *testing.T, c *pgtest.Cluster, db string) string {
	t.Helper()
	return c.SQL(t, `\connect `+db+"\n"+tableChecksums) + "|" +
		c.SQL(t, `\connect `+db+"\n"+`select md5(string_agg(s::text, ';' order by id)) from special s`)
}

// dbDSN is the superuser's connection string for database db.
func dbDSN(c *pgtest.Cluster, db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.Port(), db)
}

// dumpRow is what the tests read of dump-list --json.
type dumpRow struct {
	Name       string `json:"name"`
	Database   string `json:"database"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Key        string `json:"key"`
	StoredSize int64  `json:"stored_size"`
	FromBackup string `json:"from_backup"`
	PgDump     string `json:"pg_dump_version"`
}

func listDumps(t *testing.T, env []string) []dumpRow {
	t.Helper()
	out := mustWalgo(t, env, "dump-list", "--json")
	var list []dumpRow
	if err := json.Unmarshal([]byte(out.stdout), &list); err != nil {
		t.Fatalf("dump-list --json: %v\n%s", err, out.stdout)
	}
	return list
}

// pgDumpWatch polls the source's pg_stat_activity every 50 ms for pg_dump
// sessions (pg_dump sets application_name) until stopped.
type pgDumpWatch struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	seen  int // most pg_dump sessions seen at once
	polls int
	err   error
}

func watchPgDump(t *testing.T, c *pgtest.Cluster) *pgDumpWatch {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	w := &pgDumpWatch{stop: make(chan struct{})}
	w.wg.Go(func() {
		defer conn.Close(context.Background())
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var n int
			if err := conn.QueryRow(context.Background(), `select count(*) from pg_stat_activity where application_name = 'pg_dump'`).Scan(&n); err != nil {
				w.err = err
				return
			}
			w.polls++
			w.seen = max(w.seen, n)
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	})
	return w
}

func (w *pgDumpWatch) done(t *testing.T) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	if w.err != nil {
		t.Fatalf("watching pg_stat_activity: %v", w.err)
	}
}

// TestDump: dump-push of a pgbench database, dump-list, dump-restore into a
// new database with matching content; a non-empty target is refused
// without --confirm and left untouched; encryption; a flipped byte fails
// dump-fetch with exit 5 and leaves no file; --from-backup dumps a restored
// copy with no pg_dump session on the source; dump-delete retain.
func TestDump(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	src.SQL(t, specialSQL)
	want := dbState(t, src, "postgres")
	bin := "WALGO_PG_BINDIR=" + pgtest.BinDir(t)
	env := append([]string{bin}, r.env...)
	st := r.openStore(t)

	// dump-push as the operator would: as postgres, PG* environment.
	watch := watchPgDump(t, src)
	push := mustWalgoAs(t, src, r.env, "dump-push")
	watch.done(t)
	t.Logf("direct dump-push: %s (pg_dump sessions seen on the source: %d in %d polls)", strings.TrimSpace(push.stdout), watch.seen, watch.polls)
	list := listDumps(t, env)
	if len(list) != 1 || list[0].Database != "postgres" || list[0].Size == 0 || list[0].StoredSize == 0 || list[0].FromBackup != "" ||
		list[0].Key != "dumps_005/"+list[0].Name+"/dump.pgdump.zst" || !strings.HasPrefix(list[0].PgDump, "15.") {
		t.Fatalf("dump-list after one dump-push: %+v", list)
	}
	direct := list[0]
	table := mustWalgo(t, env, "dump-list")
	if !strings.Contains(table.stdout, direct.Name) || !strings.Contains(table.stdout, "postgres") {
		t.Errorf("dump-list table:\n%s", table.stdout)
	}

	t.Run("pg_dump fails", func(t *testing.T) {
		// A role that may connect but read nothing: pg_dump stops at its
		// first table.
		src.SQL(t, "create role reader login")
		res := walgo(t, env, "dump-push", "host=127.0.0.1 port="+fmt.Sprint(src.Port())+" user=reader dbname=postgres sslmode=disable")
		if res.code != 6 || !strings.Contains(res.stderr, "pg_dump") || !strings.Contains(res.stderr, "permission denied") {
			t.Fatalf("dump-push with a failing pg_dump: exit %d, want 6 with pg_dump's message\n%s", res.code, res.stderr)
		}
		if list := listDumps(t, env); len(list) != 1 {
			t.Fatalf("a failed dump-push is listed: %+v", list)
		}
		for _, k := range storeKeys(t, st) {
			if strings.HasPrefix(k, "dumps_005/") && !strings.HasPrefix(k, "dumps_005/"+direct.Name) {
				t.Errorf("a failed dump-push left %s", k)
			}
		}
	})

	t.Run("restore into a new database", func(t *testing.T) {
		src.SQL(t, "create database restored")
		res := mustWalgo(t, env, "dump-restore", direct.Name, dbDSN(src, "restored"), "--jobs", "2")
		t.Log(strings.TrimSpace(res.stdout))
		if got := dbState(t, src, "restored"); got != want {
			t.Fatalf("restored content differs\n got %s\nwant %s", got, want)
		}

		// Not empty any more: refused without --confirm, untouched.
		src.SQL(t, `\connect restored`+"\nupdate pgbench_branches set bbalance = 4242 where bid = 1; drop table special")
		changed := src.SQL(t, `\connect restored`+"\n"+tableChecksums)
		res = walgo(t, env, "dump-restore", "LATEST", dbDSN(src, "restored"))
		if res.code != 3 || !strings.Contains(res.stderr, "--confirm") || !strings.Contains(res.stderr, "drops") {
			t.Fatalf("dump-restore into a non-empty database: exit %d, want 3 and a message about --confirm\n%s", res.code, res.stderr)
		}
		if got := src.SQL(t, `\connect restored`+"\n"+tableChecksums); got != changed {
			t.Fatal("a refused dump-restore changed the target")
		}
		mustWalgo(t, env, "dump-restore", direct.Name, dbDSN(src, "restored"), "--confirm")
		if got := dbState(t, src, "restored"); got != want {
			t.Fatalf("dump-restore --confirm: content differs\n got %s\nwant %s", got, want)
		}
	})

	t.Run("flipped byte", func(t *testing.T) {
		path := filepath.Join(r.root, direct.Key)
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 0x20
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(path, orig, 0o600)
		out := filepath.Join(t.TempDir(), "out.pgdump")
		res := walgo(t, env, "dump-fetch", direct.Name, out)
		if res.code != 5 || !strings.Contains(res.stderr, direct.Key) {
			t.Fatalf("dump-fetch of a damaged dump: exit %d, want 5 naming %s\n%s", res.code, direct.Key, res.stderr)
		}
		if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
			t.Fatalf("a failed dump-fetch left %s behind", ents[0].Name())
		}
	})

	t.Run("encrypted", func(t *testing.T) {
		idFile, recipient, _ := ageKey(t)
		enc := append([]string{"WALGO_AGE_RECIPIENTS=" + recipient}, env...)
		mustWalgo(t, enc, "dump-push", dbDSN(src, "postgres"))
		list := listDumps(t, env)
		d := list[len(list)-1]
		if len(list) != 2 || !strings.HasSuffix(d.Key, ".zst.age") {
			t.Fatalf("encrypted dump: %+v", list)
		}
		head := readObject(t, st, d.Key)
		if !bytes.HasPrefix(head, []byte("age-encryption.org/v1")) || bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			t.Fatalf("stored dump is not age-encrypted: starts with %q", head[:min(len(head), 24)])
		}
		out := filepath.Join(t.TempDir(), "enc.pgdump")
		res := walgo(t, env, "dump-fetch", d.Name, out)
		if res.code != 2 || !strings.Contains(res.stderr, "no age identity") {
			t.Fatalf("dump-fetch without the identity: exit %d, want 2 and the no-key message\n%s", res.code, res.stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatal("dump-fetch without the identity left a file")
		}
		mustWalgo(t, append([]string{"WALGO_AGE_IDENTITY_FILE=" + idFile}, env...), "dump-fetch", d.Name, out)
		b, err := os.ReadFile(out)
		if err != nil || int64(len(b)) != d.Size || !bytes.HasPrefix(b, []byte("PGDMP")) {
			t.Fatalf("fetched encrypted dump: %d bytes (want %d), %v", len(b), d.Size, err)
		}
	})

	t.Run("s3", func(t *testing.T) {
		s3r := s3Repo(t)
		s3env := append([]string{bin}, s3r.env...)
		mustWalgo(t, s3env, "dump-push", dbDSN(src, "postgres"))
		list := listDumps(t, s3env)
		if len(list) != 1 {
			t.Fatalf("s3 dump-list: %+v", list)
		}
		out := filepath.Join(t.TempDir(), "s3.pgdump")
		mustWalgo(t, s3env, "dump-fetch", "LATEST", out)
		b, err := os.ReadFile(out)
		if sum := sha256.Sum256(b); err != nil || hex.EncodeToString(sum[:]) != list[0].SHA256 {
			t.Fatalf("fetched from s3: %d bytes, %v; sha256 differs from the sentinel's", len(b), err)
		}
	})

	t.Run("from backup", func(t *testing.T) {
		mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
		backups := listBackups(t, r)
		watch := watchPgDump(t, src)
		res := walgoAs(t, src, r.env, "dump-push", "--from-backup", "LATEST")
		watch.done(t)
		if res.code != 0 {
			t.Fatalf("dump-push --from-backup: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		t.Log(strings.TrimSpace(res.stdout))
		if watch.seen != 0 || watch.polls < 2 {
			t.Fatalf("%d pg_dump sessions seen on the source during dump-push --from-backup (%d polls)", watch.seen, watch.polls)
		}
		list := listDumps(t, env)
		d := list[len(list)-1]
		if d.FromBackup != backups[len(backups)-1] || d.Database != "postgres" {
			t.Fatalf("dump from backup: %+v, backups %v", d, backups)
		}
		src.SQL(t, "create database fromback")
		mustWalgo(t, env, "dump-restore", d.Name, dbDSN(src, "fromback"))
		if got := dbState(t, src, "fromback"); got != want {
			t.Fatalf("dump of the restored copy differs from the source\n got %s\nwant %s", got, want)
		}
	})

	t.Run("dump-delete retain 1", func(t *testing.T) {
		before := listDumps(t, env)
		if len(before) < 2 {
			t.Fatalf("want at least 2 dumps, have %d", len(before))
		}
		newest := before[len(before)-1]
		dry := mustWalgo(t, env, "dump-delete", "retain", "1")
		for _, d := range before[:len(before)-1] {
			if !strings.Contains(dry.stdout, catalog.DumpSentinelKey(d.Name)) || !strings.Contains(dry.stdout, d.Key) {
				t.Errorf("the dry run does not list %s's objects:\n%s", d.Name, dry.stdout)
			}
		}
		if !strings.Contains(dry.stdout, "DRY RUN") || len(listDumps(t, env)) != len(before) {
			t.Fatalf("the dry run deleted something:\n%s", dry.stdout)
		}
		mustWalgo(t, env, "dump-delete", "retain", "1", "--confirm")
		after := listDumps(t, env)
		if len(after) != 1 || after[0].Name != newest.Name {
			t.Fatalf("after retain 1 --confirm: %+v, want only %s", after, newest.Name)
		}
		for _, d := range before[:len(before)-1] {
			if ents, _ := os.ReadDir(filepath.Join(r.root, "dumps_005", d.Name)); len(ents) > 0 {
				t.Errorf("%s's data is still stored", d.Name)
			}
		}
	})
}

// TestDumpBeyondPartLimit: with S3's part limit lowered to 3 (as 10,000 is
// for S3: 78 GiB at 8 MiB parts), a dump-push whose stored dump is larger
// than 3 parts of 8 MiB is stored whole, because the parts grow as the
// stream goes on, and dump-fetch reads it back checksum-verified.
func TestDumpBeyondPartLimit(t *testing.T) {
	r := s3Repo(t)
	src := archivingCluster(t, r)
	// Random hex: about 2:1 for pg_dump's and walgo's compression, so
	// 64 MB of it stores as well over 24 MiB.
	src.SQL(t, "create table blob as select g, md5(random()::text) || md5(random()::text) v from generate_series(1, 1000000) g")
	env := append([]string{"WALGO_PG_BINDIR=" + pgtest.BinDir(t), "WALGO_S3_MAX_PARTS=3"}, r.env...)
	mustWalgoAs(t, src, env, "dump-push")
	list := listDumps(t, env)
	if len(list) != 1 {
		t.Fatalf("dump-list: %+v", list)
	}
	if list[0].StoredSize <= 3*8<<20 {
		t.Fatalf("stored dump is %d bytes: not beyond 3 parts of 8 MiB, the test proves nothing", list[0].StoredSize)
	}
	out := filepath.Join(pgtest.OwnedDir(t, "dumpout"), "blob.dump")
	mustWalgo(t, env, "dump-fetch", list[0].Name, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); int64(len(b)) != list[0].Size || hex.EncodeToString(sum[:]) != list[0].SHA256 {
		t.Errorf("fetched %d bytes, sha256 %x; the sentinel says %d, %s", len(b), sum, list[0].Size, list[0].SHA256)
	}
}
