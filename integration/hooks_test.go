package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/wal"
)

// TestPrefetchReadsItsParentsRepository: the background prefetch of
// `walgo --storage B wal-fetch` reads B, not the WALGO_STORAGE=A of the
// environment, works with no WALGO_STORAGE at all, and a copy it
// prefetched is never handed out for another repository.
func TestPrefetchReadsItsParentsRepository(t *testing.T) {
	a, b := fileRepo(t), fileRepo(t)
	names := []string{"000000010000000000000070", "000000010000000000000071", "000000010000000000000072", "000000010000000000000073"}
	content := map[string]map[string][]byte{a.url: {}, b.url: {}}
	for i, r := range []repo{a, b} {
		dir := waltest.PgWal(t)
		for _, n := range names {
			seg := waltest.Segment(t, n, smallSeg, uint64(10+i))
			content[r.url][n] = seg
			mustWalgo(t, r.env, "wal-push", waltest.WriteFile(t, dir, n, seg))
		}
	}
	fetched := func(t *testing.T, dest, from, name string) {
		t.Helper()
		got, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case bytes.Equal(got, content[from][name]):
		case bytes.Equal(got, content[a.url][name]), bytes.Equal(got, content[b.url][name]):
			t.Fatalf("%s: got the other repository's copy, want %s's", name, from)
		default:
			t.Fatalf("%s: content differs from both repositories'", name)
		}
	}
	prefetched := func(t *testing.T, walDir string, names ...string) {
		t.Helper()
		pdir := filepath.Join(walDir, "walgo", "prefetch")
		waitNoPrefetcher(t, pdir)
		for _, n := range names {
			pgtest.WaitFor(t, 30*time.Second, func() bool {
				waitNoPrefetcher(t, pdir)
				_, err := os.Stat(filepath.Join(pdir, n+restore.SidecarExt))
				return err == nil
			}, n+" prefetched")
		}
	}
	newData := func(t *testing.T) (walDir, dest string) {
		walDir = filepath.Join(t.TempDir(), "data", "pg_wal")
		os.MkdirAll(walDir, 0o700)
		return walDir, filepath.Join(walDir, "RECOVERYXLOG")
	}

	t.Run("flag over environment", func(t *testing.T) {
		walDir, dest := newData(t)
		env := []string{"WALGO_STORAGE=" + a.url, "WALGO_PREFETCH=3"}
		mustWalgo(t, env, "--storage", b.url, "wal-fetch", names[0], dest)
		fetched(t, dest, b.url, names[0])
		prefetched(t, walDir, names[1:]...)
		for _, n := range names[1:] {
			res := mustWalgo(t, env, "--storage", b.url, "wal-fetch", n, dest)
			fetched(t, dest, b.url, n)
			if !strings.Contains(res.stderr, `"prefetched": true`) {
				t.Errorf("%s: not taken from the prefetch folder: %s", n, res.stderr)
			}
			waitNoPrefetcher(t, filepath.Join(walDir, "walgo", "prefetch"))
		}
	})

	t.Run("no storage in the environment", func(t *testing.T) {
		walDir, dest := newData(t)
		mustWalgo(t, []string{"WALGO_PREFETCH=3"}, "--storage", b.url, "wal-fetch", names[0], dest)
		prefetched(t, walDir, names[1:]...)
	})

	t.Run("prefetched for another repository", func(t *testing.T) {
		walDir, dest := newData(t)
		mustWalgo(t, []string{"WALGO_PREFETCH=3"}, "--storage", b.url, "wal-fetch", names[0], dest)
		prefetched(t, walDir, names[1:]...)
		res := mustWalgo(t, []string{"WALGO_PREFETCH=0", "WALGO_STORAGE=" + a.url}, "wal-fetch", names[1], dest)
		fetched(t, dest, a.url, names[1])
		if strings.Contains(res.stderr, `"prefetched": true`) {
			t.Errorf("took a copy prefetched from %s for %s: %s", b.url, a.url, res.stderr)
		}
	})
}

// TestRestoreCommandNamesTheRepository: a backup restored from repository
// B with a config file that names repository A (and a server environment
// that names A too) replays from B, because the restore_command written
// names B; once the restored cluster is promoted, its next wal-push
// removes the prefetch folder the recovery left in pg_wal.
func TestRestoreCommandNamesTheRepository(t *testing.T) {
	b := fileRepo(t)
	a := fileRepo(t)
	forkRepo := fileRepo(t)
	src := archivingCluster(t, b)
	src.SQL(t, markerSQL)
	mustWalgoAs(t, src, b.env, "backup-push")
	for i := 1; i <= 3; i++ {
		src.SQL(t, fmt.Sprintf("insert into marker values (%d, 'marker %d'); select pg_switch_wal()", i, i))
	}
	want := markers(t, src)
	archiveAll(t, src)

	confDir := pgtest.OwnedDir(t, "conf")
	conf := filepath.Join(confDir, "walgo.conf")
	if err := os.WriteFile(conf, []byte("WALGO_STORAGE="+a.url+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, confDir)
	dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
	mustWalgo(t, nil, "--config", conf, "--storage", b.url, "backup-fetch", dir, "LATEST")
	auto, err := os.ReadFile(filepath.Join(dir, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(auto), "--storage "+b.url) {
		t.Errorf("restore_command does not name %s:\n%s", b.url, auto)
	}
	pgtest.Chown(t, dir)
	c := pgtest.OpenExisting(t, dir, pgtest.Options{Env: a.env, Conf: []string{
		"archive_mode = on",
		fmt.Sprintf("archive_command = '%s --storage %s wal-push %%p'", walgoBin, forkRepo.url),
	}})
	c.Start(t)
	waitPromoted(t, c)
	if got := markers(t, c); got != want {
		t.Fatalf("restored cluster differs from the source\n got %s\nwant %s", got, want)
	}
	pdir := filepath.Join(dir, "pg_wal", "walgo", "prefetch")
	pgtest.WaitFor(t, 3*time.Minute, func() bool {
		last := c.SQL(t, "select pg_walfile_name(pg_switch_wal())")
		for {
			archived := c.SQL(t, "select coalesce(last_archived_wal, '') >= '"+last+"' from pg_stat_archiver")
			if archived == "t" {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		_, err := os.Stat(pdir)
		return os.IsNotExist(err)
	}, "the promoted cluster's wal-push to remove "+pdir)
}

// TestRecoveryStopsWhenConfigVanishes: a cluster in archive recovery whose
// config file disappears mid-way stops (restore_command fails above 125,
// Postgres logs the FATAL), promotes nothing, and recovers every row once
// the file is back and it is started again. The file disappears when the
// storage is first asked for a segment some way into the recovery: a proxy
// in front of the S3 server removes it then.
func TestRecoveryStopsWhenConfigVanishes(t *testing.T) {
	srv := s3Repo(t)
	pgtest.Require(t)
	src := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{"-k", "--wal-segsize=1"},
		Env:        srv.env,
		Conf: []string{
			"archive_mode = on",
			fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin),
		},
	})
	src.Start(t)
	src.SQL(t, markerSQL)
	mustWalgoAs(t, src, srv.env, "backup-push")
	start := src.SQL(t, "select pg_walfile_name(pg_current_wal_lsn())")
	for i := 1; i <= 12; i++ {
		src.SQL(t, fmt.Sprintf("insert into marker values (%d, repeat('x', 200)); select pg_switch_wal()", i))
	}
	src.SQL(t, "create table filler as select g, md5(g::text) from generate_series(1, 20000) g")
	want := markers(t, src) + "|" + src.SQL(t, "select count(*), sum(g) from filler")
	archiveAll(t, src)
	startSeg, err := wal.ParseSegment(start)
	if err != nil {
		t.Fatal(err)
	}
	trigger := startSeg.Next(1 << 20).Next(1 << 20).Next(1 << 20).Name()

	confDir := pgtest.OwnedDir(t, "conf")
	conf := filepath.Join(confDir, "walgo.conf")
	var removed sync.Once
	target, _ := url.Parse(srv.s3.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/wal_005/"+trigger) {
			removed.Do(func() {
				t.Logf("storage asked for %s: removing %s", trigger, conf)
				os.Remove(conf)
			})
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	var settings strings.Builder
	for _, kv := range srv.env {
		if strings.HasPrefix(kv, "WALGO_S3_ENDPOINT=") {
			kv = "WALGO_S3_ENDPOINT=" + proxy.URL
		}
		settings.WriteString(kv + "\n")
	}
	writeConf := func() {
		if err := os.WriteFile(conf, []byte(settings.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		pgtest.Chown(t, confDir)
	}
	writeConf()

	dir := filepath.Join(pgtest.OwnedDir(t, "restore"), "data")
	mustWalgo(t, nil, "--config", conf, "backup-fetch", dir, "LATEST")
	pgtest.Chown(t, dir)
	c := pgtest.OpenExisting(t, dir, pgtest.Options{Conf: []string{"archive_mode = off"}})
	if err := c.TryStart(); err != nil {
		t.Logf("start (the server may stop before it accepts connections): %v", err)
	}
	promoted := func(log []byte) bool {
		return bytes.Contains(log, []byte("selected new timeline ID")) || bytes.Contains(log, []byte("archive recovery complete"))
	}
	pgtest.WaitFor(t, 5*time.Minute, func() bool {
		log, _ := os.ReadFile(c.LogFile())
		return !c.Running() || promoted(log)
	}, "the server to stop recovery (or to promote)")
	log, _ := os.ReadFile(c.LogFile())
	if promoted(log) {
		t.Fatalf("the cluster was promoted without its config file, with %s rows of %s:\n%s",
			c.SQL(t, "select count(*) from marker"), "12", lastLines(string(log), 40))
	}
	if !bytes.Contains(log, []byte("could not restore file")) || !bytes.Contains(log, []byte("exit code 130")) {
		t.Fatalf("the log shows no FATAL from restore_command exiting 130:\n%s", lastLines(string(log), 40))
	}
	if _, err := os.Stat(filepath.Join(dir, "recovery.signal")); err != nil {
		t.Fatalf("recovery.signal is gone: %v", err)
	}
	if cd := c.ControlData(t); cd["Database cluster state"] != "in archive recovery" {
		t.Fatalf("cluster state %q, want in archive recovery", cd["Database cluster state"])
	}

	writeConf()
	c.Start(t)
	waitPromoted(t, c)
	if got := markers(t, c) + "|" + c.SQL(t, "select count(*), sum(g) from filler"); got != want {
		t.Fatalf("recovered cluster differs from the source\n got %s\nwant %s", got, want)
	}
}

// markers is the content of the marker table.
func markers(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.SQL(t, "select coalesce(string_agg(id || ':' || md5(note), ',' order by id), '') from marker")
}
