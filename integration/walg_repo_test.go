package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// walgSentinel is a WAL-G 3.x (BackupSentinelDtoV2) sentinel for a backup
// starting at lsn of the cluster with system identifier sysID.
func walgSentinel(lsn uint64, sysID string, at time.Time) string {
	return fmt.Sprintf(`{"LSN":%d,"FinishLSN":%d,"PgVersion":150018,"SystemIdentifier":%s,"UncompressedSize":31551207,`+
		`"CompressedSize":4152381,"DataCatalogSize":31540000,"UserData":null,"ChkpNum":null,"Version":2,`+
		`"StartTime":%q,"FinishTime":%q,"DateFmt":"%%Y-%%m-%%dT%%H:%%M:%%S.%%fZ","Hostname":"db-1",`+
		`"DataDir":"/var/lib/postgresql/15/main","IsPermanent":false}`,
		lsn, lsn+0x200, sysID, at.Add(-time.Minute).Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
}

// plantWALG stores a WAL-G backup the way WAL-G lays it out: its folder
// (tar partitions, metadata.json) and, last, its sentinel.
func plantWALG(t *testing.T, r repo, name, sentinel string) {
	t.Helper()
	st := r.openStore(t)
	ctx := context.Background()
	for key, body := range map[string]string{
		catalog.BackupFolder(name) + "tar_partitions/part_1.tar.lz4": "not walgo's",
		catalog.BackupFolder(name) + "metadata.json":                 `{"start_time":"x"}`,
		catalog.SentinelKey(name):                                    sentinel,
	} {
		if err := st.Put(ctx, key, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	pgtest.Chown(t, r.root)
}

func exists(t *testing.T, r repo, key string) bool {
	t.Helper()
	_, err := r.openStore(t).Stat(context.Background(), key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestSharedWithWALG (issue 10 items 4 and 14, issue 8 item 8): one WAL-G
// sentinel in basebackups_005/ no longer stops any command. backup-list
// lists it as foreign with its start LSN and time; LATEST, --target-time,
// backup-push --delta, restore-test and wal-verify never take it;
// backup-verify --all passes; every delete keeps it and the WAL from its
// start (--include-foreign lets that WAL go), and only delete everything
// removes it. A damaged sentinel and a sentinel copied over another
// backup's key are named, never restored, and block nothing else.
func TestSharedWithWALG(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "1", "-q")
	src.SQL(t, markerSQL)
	first := src.SQL(t, "select pg_walfile_name(pg_current_wal_lsn())")
	src.SQL(t, "select pg_switch_wal()")
	env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
	mustWalgoAs(t, src, env, "backup-push")
	full := listBackups(t, r)
	if len(full) != 1 || full[0] <= "base_"+first {
		t.Fatalf("backups %v: want one starting after %s", full, first)
	}
	sysID := src.SQL(t, "select system_identifier from pg_control_system()")
	walg := "base_" + first
	walgStart := uint64(0x28) // in the first segment, as WAL-G names it
	var seg1 struct{ log, seg uint64 }
	fmt.Sscanf(first[8:], "%08X%08X", &seg1.log, &seg1.seg)
	walgStart += (seg1.log<<32 | seg1.seg<<24)
	plantWALG(t, r, walg, walgSentinel(walgStart, sysID, time.Date(2026, 11, 30, 9, 12, 31, 0, time.UTC)))
	firstKey := catalog.WALPrefix + first + ".zst"
	if !exists(t, r, firstKey) {
		t.Fatalf("%s not archived", firstKey)
	}

	// backup-list shows it apart; --json lists walgo's own only.
	out := mustWalgo(t, r.env, "backup-list")
	if !strings.Contains(out.stdout, full[0]) || !strings.Contains(out.stdout, walg) || !strings.Contains(out.stdout, "WAL-G") ||
		!strings.Contains(out.stdout, fmt.Sprintf("%X/%X", uint32(walgStart>>32), uint32(walgStart))) || !strings.Contains(out.stdout, "2026-11-30 09:12:31") {
		t.Fatalf("backup-list:\n%s", out.stdout)
	}
	if got := listBackups(t, r); len(got) != 1 || got[0] != full[0] {
		t.Fatalf("backup-list --json: %v", got)
	}
	var foreign []catalog.ForeignBackup
	out = mustWalgo(t, r.env, "backup-list", "--json", "--foreign")
	if err := json.Unmarshal([]byte(out.stdout), &foreign); err != nil || len(foreign) != 1 || foreign[0].Kind != catalog.ForeignWALG || foreign[0].SystemID != sysID {
		t.Fatalf("backup-list --json --foreign: %v\n%s", err, out.stdout)
	}

	// A delta takes walgo's full backup as its parent.
	m1 := mark(t, src, 1)
	src.PgBench(t, "-n", "-T", "2", "-c", "2")
	mustWalgoAs(t, src, env, "backup-push", "--delta")
	var detail []struct {
		Name        string `json:"name"`
		DeltaParent string `json:"delta_parent"`
	}
	out = mustWalgo(t, r.env, "backup-list", "--json", "--detail")
	if err := json.Unmarshal([]byte(out.stdout), &detail); err != nil || len(detail) != 2 || detail[1].DeltaParent != full[0] {
		t.Fatalf("after backup-push --delta: %v\n%s", err, out.stdout)
	}
	delta := detail[1].Name
	mark(t, src, 2)
	archiveAll(t, src)

	mustWalgo(t, r.env, "wal-verify")
	mustWalgo(t, r.env, "backup-verify", "--all")
	work, tmp := pgtest.OwnedDir(t, "drill-work"), pgtest.OwnedDir(t, "drill-tmp")
	if res := mustWalgoAs(t, src, append([]string{"TMPDIR=" + tmp}, r.env...), "restore-test", "--work-dir", work, "LATEST"); !strings.Contains(res.stdout, delta) {
		t.Errorf("restore-test LATEST did not test %s:\n%s", delta, res.stdout)
	}
	latest := pgtest.OwnedDir(t, "latest")
	if res := mustWalgo(t, r.env, "backup-fetch", latest+"/data", "LATEST"); !strings.Contains(res.stdout, "restored "+delta+" ") {
		t.Errorf("backup-fetch LATEST did not restore %s:\n%s", delta, res.stdout)
	}
	c := restoreAndStart(t, r, []string{"--target-time", m1.time})
	waitPromoted(t, c)
	if got := state(t, c); got != m1.checksums {
		t.Fatalf("--target-time: state differs\n got %s\nwant %s", got, m1.checksums)
	}
	c.Stop(t)

	// Every delete leaves it, and the WAL from its start.
	for _, args := range [][]string{
		{"delete", "retain", "1"},
		{"delete", "retain", "1", "--confirm"},
		{"delete", "retain", "FULL", "1", "--confirm"},
		{"delete", "before", delta, "--confirm"},
		{"delete", "garbage", "--confirm"},
		{"delete", "everything"},
	} {
		res := mustWalgo(t, r.env, args...)
		if !strings.Contains(res.stdout, walg) {
			t.Errorf("%v does not show the WAL-G backup:\n%s", args, res.stdout)
		}
		if !exists(t, r, catalog.SentinelKey(walg)) || !exists(t, r, firstKey) {
			t.Fatalf("%v deleted the WAL-G backup or the WAL it needs:\n%s", args, res.stdout)
		}
	}

	// The scheduler: its backup, retention (--retain 1) and drill all pass,
	// and its retention keeps the WAL-G backup and its WAL too.
	spec, _ := atSoon(5 * time.Second)
	a := startAgent(t, src, append([]string{"TMPDIR=" + tmp}, env...), "--backup-at", spec, "--retain", "1", "--drill", "--work-dir", work)
	m := a.waitRun(t)
	if code := a.stop(t); code != 0 {
		t.Fatalf("walgo schedule exited %d after SIGTERM", code)
	}
	for _, k := range []string{"walgo_last_backup_success", "walgo_last_retention_success", "walgo_last_drill_success"} {
		if m[k] != 1 {
			t.Errorf("schedule with a WAL-G backup in the repository: %s = %v, want 1\n%s", k, m[k], a.stderr.String())
		}
	}
	if !exists(t, r, catalog.SentinelKey(walg)) || !exists(t, r, firstKey) {
		t.Fatal("the scheduler's retention deleted the WAL-G backup or the WAL it needs")
	}
	own := listBackups(t, r)
	if len(own) != 1 {
		t.Fatalf("after the scheduler's --retain 1: %v", own)
	}

	mustWalgo(t, r.env, "delete", "retain", "1", "--include-foreign", "--confirm")
	if !exists(t, r, catalog.SentinelKey(walg)) || exists(t, r, firstKey) {
		t.Fatal("--include-foreign: the WAL-G sentinel must stay and the WAL only it needs go")
	}

	// A damaged sentinel, and the one backup's sentinel copied over another key.
	const damaged, copied = "base_0000000100000000000000F0", "base_0000000100000000000000F1"
	st := r.openStore(t)
	ctx := context.Background()
	st.Put(ctx, catalog.SentinelKey(damaged), strings.NewReader(`{"format":1,"name":"base_00000001`))
	st.Put(ctx, catalog.SentinelKey(copied), strings.NewReader(string(readObject(t, st, catalog.SentinelKey(own[0])))))
	pgtest.Chown(t, r.root)
	out = mustWalgo(t, r.env, "backup-list")
	rows := 0
	for _, l := range strings.Split(out.stdout, "\n") {
		if strings.HasPrefix(l, own[0]+" ") {
			rows++
		}
	}
	if rows != 1 || !strings.Contains(out.stdout, catalog.SentinelKey(damaged)) ||
		!strings.Contains(out.stdout, "describes backup "+own[0]) {
		t.Errorf("backup-list with a damaged and a copied sentinel:\n%s", out.stdout)
	}
	dir := pgtest.OwnedDir(t, "copied")
	if res := walgo(t, r.env, "backup-fetch", dir+"/data", copied); res.code != 5 || !strings.Contains(res.stderr, "describes backup "+own[0]) {
		t.Errorf("backup-fetch of a key holding another backup's sentinel: exit %d, %s", res.code, res.stderr)
	}
	if res := walgo(t, r.env, "backup-verify", "--all"); res.code != 5 || !strings.Contains(res.stdout, catalog.SentinelKey(damaged)) {
		t.Errorf("backup-verify --all with a damaged sentinel: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	mustWalgo(t, r.env, "wal-verify")

	mustWalgo(t, r.env, "delete", "everything", "--confirm")
	for _, key := range []string{catalog.SentinelKey(walg), catalog.BackupFolder(walg) + "metadata.json", catalog.SentinelKey(damaged)} {
		if exists(t, r, key) {
			t.Errorf("delete everything left %s", key)
		}
	}
}

// TestBackupNamedLikeAWALGBackup: WAL-G names its backups as walgo does
// (base_<start segment>), so a walgo backup starting in the segment of a
// WAL-G backup in the same repository gets a name of its own: WAL-G's
// sentinel and folder stay as they were, and walgo's backup restores.
func TestBackupNamedLikeAWALGBackup(t *testing.T) {
	r := fileRepo(t)
	src, fast := smallCluster(t, r)
	sysID := src.SQL(t, "select system_identifier from pg_control_system()")
	segSize, err := strconv.ParseInt(src.SQL(t, "select setting::bigint * 1 from pg_settings where name = 'wal_segment_size'"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// WAL-G backups in the segment being written and the next two: the
	// next backup starts in one of them.
	seg, err := wal.ParseSegment(src.SQL(t, "select pg_walfile_name(pg_current_wal_insert_lsn())"))
	if err != nil {
		t.Fatal(err)
	}
	planted := map[string]string{} // name -> sentinel
	for i := range 3 {
		name := catalog.BackupName(seg, "")
		planted[name] = walgSentinel(uint64(seg.StartLSN(segSize))+0x28, sysID, time.Date(2026, 11, 30, 9, 12, 31+i, 0, time.UTC))
		plantWALG(t, r, name, planted[name])
		seg = seg.Next(segSize)
	}
	mustWalgoAs(t, src, fast, "backup-push")
	mark(t, src, 1)
	want := state(t, src)
	archiveAll(t, src)

	list := listBackups(t, r)
	if len(list) != 1 {
		t.Fatalf("walgo's backups: %v, want one", list)
	}
	id, err := catalog.ParseBackupName(list[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := planted[catalog.BackupName(id.Start, "")]; !ok {
		t.Fatalf("backup %s did not start in a segment of a WAL-G backup (%v): the test proves nothing", list[0], planted)
	}
	if id.Seq < 2 {
		t.Errorf("backup %s starts where a WAL-G backup does and has no name of its own", list[0])
	}
	st := r.openStore(t)
	for name, sentinel := range planted {
		if got := string(readObject(t, st, catalog.SentinelKey(name))); got != sentinel {
			t.Errorf("WAL-G's sentinel %s changed:\n%s", name, got)
		}
		if got := string(readObject(t, st, catalog.BackupFolder(name)+"tar_partitions/part_1.tar.lz4")); got != "not walgo's" {
			t.Errorf("WAL-G's partition of %s changed: %q", name, got)
		}
	}
	c := restoreAndStart(t, r, []string{list[0]})
	waitPromoted(t, c)
	if got := state(t, c); got != want {
		t.Fatalf("restored %s: state differs\n got %s\nwant %s", list[0], got, want)
	}
}
