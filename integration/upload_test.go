package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/storage"
)

// TestPushRequestsS3 counts the S3 requests of wal-push processes (issue
// 11 item 1): a new file is exactly one PUT; the same file again (a retry)
// is the PUT the server refuses (412) and one HEAD; different content the
// same two requests and exit 3. No HEAD bucket, no probing of codecs.
func TestPushRequestsS3(t *testing.T) {
	r := s3Repo(t)
	p := startS3Proxy(t, r, s3ProxyOptions{})
	env := withEnv(p.env, "WALGO_UPLOAD_CONCURRENCY=1")
	dir := waltest.PgWal(t)
	const name = "000000010000000000000007"
	path := waltest.WriteFile(t, dir, name, waltest.Segment(t, name, smallSeg, 1))
	// The first push in a pg_wal reads the repository description once
	// (then cached in pg_wal/walgo/repository for 5 minutes).
	mustWalgo(t, env, "wal-push", path)
	first, _ := p.take()
	t.Logf("first wal-push in a pg_wal: %v", first)
	if total(first) != 2 || first["GET"] != 1 || first["PUT"] != 1 {
		t.Errorf("first wal-push: requests %v, want one GET (the repository) and one PUT", first)
	}
	for _, tc := range []struct {
		what string
		seed uint64
		code int
		want map[string]int64
	}{
		{"new segment", 1, 0, map[string]int64{"PUT": 1}},
		{"the same segment again", 1, 0, map[string]int64{"PUT": 1, "HEAD": 1}},
		{"different content", 2, 3, map[string]int64{"PUT": 1, "HEAD": 1}},
	} {
		const seg = "000000010000000000000008"
		path := waltest.WriteFile(t, dir, seg, waltest.Segment(t, seg, smallSeg, tc.seed))
		if res := walgo(t, env, "wal-push", path); res.code != tc.code {
			t.Fatalf("%s: exit %d, want %d\n%s", tc.what, res.code, tc.code, res.stderr)
		}
		got, _ := p.take()
		t.Logf("wal-push, %s: %v", tc.what, got)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("wal-push, %s: requests %v, want %v", tc.what, got, tc.want)
		}
	}
}

// TestServerIgnoringCreateOnly (issue 11 item 1): a server that accepts
// If-None-Match: * and overwrites anyway (here versitygw behind a proxy
// that drops the header), or one that refuses the header (501), is found
// by walgo init's probe and recorded in the repository; every command then
// checks before writing and says so, so a retried push still exits 0, a
// second push of different content still exits 3, and the first copy
// stays.
func TestServerIgnoringCreateOnly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    s3ProxyOptions
		verb    string
		storage catalog.Capabilities
	}{
		{"ignores", s3ProxyOptions{ignoreIfNoneMatch: true}, "ignores", catalog.Capabilities{Metadata: true}},
		{"refuses", s3ProxyOptions{refuseIfNoneMatch: true}, "refuses", catalog.Capabilities{CreateRefused: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s3Storage(t)
			p := startS3Proxy(t, r, tc.opts)
			res := mustWalgo(t, p.env, "init")
			if !strings.Contains(res.stdout, "create-only writes: false") || !strings.Contains(res.stderr, tc.verb+" create-only writes") {
				t.Fatalf("init behind a server that %s If-None-Match:\n%s%s\nwant create-only writes: false and a warning", tc.verb, res.stdout, res.stderr)
			}
			got, err := catalog.ReadRepository(context.Background(), r.openStore(t))
			if err != nil {
				t.Fatal(err)
			}
			if got.Storage != tc.storage {
				t.Fatalf("recorded %+v, want %+v", got.Storage, tc.storage)
			}
			env := withEnv(p.env, "WALGO_UPLOAD_CONCURRENCY=1", "WALGO_LOG_LEVEL=info")
			dir := waltest.PgWal(t)
			const name = "00000064.history"
			a := []byte("1\t0/3000000\tbefore 2026-05-01 10:00:00+00 (fork a)\n")
			path := waltest.WriteFile(t, dir, name, a)
			res = mustWalgo(t, env, "wal-push", path)
			if !strings.Contains(res.stderr, tc.verb+" conditional writes") {
				t.Errorf("wal-push on such a server does not warn:\n%s", res.stderr)
			}
			mustWalgo(t, env, "wal-push", path) // a retry of the same file
			p.take()
			waltest.WriteFile(t, dir, name, []byte("1\t0/3000000\tbefore 2026-05-01 10:00:01+00 (fork b)\n"))
			if res := walgo(t, env, "wal-push", path); res.code != 3 {
				t.Fatalf("different content on a server that %s If-None-Match: exit %d, want 3\n%s", tc.verb, res.code, res.stderr)
			}
			ops, _ := p.take()
			t.Logf("refused wal-push with the check before the write: %v", ops)
			if ops["PUT"] != 0 {
				t.Errorf("the checked write sent %d PUTs, want none", ops["PUT"])
			}
			if got := fetchPlain(t, r.openStore(t), name); string(got) != string(a) {
				t.Errorf("stored %q, want the first push's %q", got, a)
			}
		})
	}
}

// TestDeleteBatchFallback (issue 11 item 6): delete removes WAL with one
// DeleteObjects per 1,000 keys, and where the server refuses DeleteObjects
// (501 NotImplemented) it deletes one key at a time and still removes
// everything.
func TestDeleteBatchFallback(t *testing.T) {
	const segs = 12
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%v", refuse), func(t *testing.T) {
			r := s3Repo(t)
			st := r.openStore(t)
			ctx := context.Background()
			for i := range segs {
				n := fmt.Sprintf("0000000100000000000000%02X", i+1)
				if err := st.Put(ctx, catalog.WALKey(n, codec.Zstd{}), strings.NewReader("x")); err != nil {
					t.Fatal(err)
				}
			}
			p := startS3Proxy(t, r, s3ProxyOptions{refuseBatchDelete: refuse})
			res := mustWalgo(t, p.env, "delete", "everything", "--confirm")
			ops, _ := p.take()
			t.Logf("delete everything of %d WAL files (DeleteObjects refused: %v): %v\n%s", segs, refuse, ops, res.stdout)
			want := map[bool][2]int64{false: {1, 0}, true: {1, segs}}[refuse]
			if ops["POST"] != want[0] || ops["DELETE"] != want[1] {
				t.Errorf("requests %v, want %d POST (DeleteObjects) and %d DELETE", ops, want[0], want[1])
			}
			n := 0
			if err := st.List(ctx, catalog.WALPrefix, func(storage.ObjectInfo) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("%d WAL objects left after delete everything", n)
			}
		})
	}
}

// TestMarkerOfRecreatedRepository (issue 10 item 7): look-ahead markers in
// pg_wal/walgo/pushed are trusted only for the repository that they were
// made in. The repository is emptied and created again under the same URL
// while the marked segments wait for their archive_command: each is then
// pushed again (exit 0 and stored), never taken as archived.
func TestMarkerOfRecreatedRepository(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			st := r.openStore(t)
			env := withEnv(r.env, "WALGO_UPLOAD_CONCURRENCY=4", "WALGO_LOG_LEVEL=info")
			dir := waltest.PgWal(t)
			names := make([]string, 4)
			for i := range names {
				names[i] = fmt.Sprintf("0000000100000000000000%02X", i+1)
				waltest.WriteFile(t, dir, names[i], waltest.Segment(t, names[i], smallSeg, 1))
				if i > 0 {
					waltest.WriteFile(t, filepath.Join(dir, "archive_status"), names[i]+".ready", nil)
				}
			}
			res := mustWalgo(t, env, "wal-push", filepath.Join(dir, names[0]))
			if !strings.Contains(res.stderr, names[3]) {
				t.Fatalf("no look-ahead push of %s:\n%s", names[3], res.stderr)
			}
			// The marker works for its own repository.
			res = mustWalgo(t, env, "wal-push", filepath.Join(dir, names[1]))
			if !strings.Contains(res.stderr, "already pushed ahead") {
				t.Fatalf("marker of this repository not used:\n%s", res.stderr)
			}
			// Emptied and created again under the same URL. Each push is
			// then alone (no look-ahead) and its .ready file goes, as
			// Postgres renames it once archive_command exits 0.
			recreate(t, r, st)
			for _, n := range names[2:] {
				res := mustWalgo(t, withEnv(env, "WALGO_UPLOAD_CONCURRENCY=1"), "wal-push", filepath.Join(dir, n))
				if err := os.Remove(filepath.Join(dir, "archive_status", n+".ready")); err != nil {
					t.Fatal(err)
				}
				if strings.Contains(res.stderr, "already pushed ahead") {
					t.Errorf("%s: marker of the old repository trusted:\n%s", n, res.stderr)
				}
				if !exists(t, r, catalog.WALKey(n, codec.Zstd{})) {
					t.Errorf("%s: wal-push exited 0 and the new repository does not hold it", n)
				}
			}
		})
	}
}

// recreate empties r and runs walgo init there again.
func recreate(t *testing.T, r repo, st storage.Store) {
	t.Helper()
	ctx := context.Background()
	if r.kind == "file" {
		entries, err := os.ReadDir(r.root)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(r.root, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		var keys []string
		if err := st.List(ctx, "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if err := st.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.init(t)
}

// TestNetworkRateLimitEveryUpload (issue 11 item 7): WALGO_NETWORK_RATE_LIMIT
// holds for backup-push and dump-push (bytes uploaded, counted at the S3
// proxy, over the command's wall time) and for copy (pg_dump's bytes over
// its data phase), not only for wal-push. The bound is one-sided: a slow
// machine only makes the rate lower. The unlimited backup-push is logged
// for comparison.
func TestNetworkRateLimitEveryUpload(t *testing.T) {
	const limit = 1 << 20 // 1 MiB/s
	r := s3Repo(t)
	src, env := smallCluster(t, r)
	src.SQL(t, "create table blob as select g, md5(g::text) || md5((g + 1)::text) v from generate_series(1, 100000) g")
	p := startS3Proxy(t, r, s3ProxyOptions{})
	limited := withEnv(append([]string{"WALGO_PG_BINDIR=" + pgtest.BinDir(t)}, env...),
		"WALGO_S3_ENDPOINT="+p.URL, "WALGO_NETWORK_RATE_LIMIT=1MiB")
	check := func(what string, bytes int64, took time.Duration) {
		t.Helper()
		rate := float64(bytes) / took.Seconds()
		t.Logf("%s: %.1f MiB in %.2fs = %.2f MiB/s (limit 1 MiB/s)", what, float64(bytes)/(1<<20), took.Seconds(), rate/(1<<20))
		if bytes < 2*limit {
			t.Fatalf("%s moved only %d bytes: too little to show a rate", what, bytes)
		}
		// 64 KiB of burst, and the last part may be sent while the clock
		// stops: 10% over is still "honoured".
		if rate > 1.1*limit {
			t.Errorf("%s at %.2f MiB/s: the 1 MiB/s limit is not honoured", what, rate/(1<<20))
		}
	}

	free := withEnv(limited, "WALGO_NETWORK_RATE_LIMIT=0")
	res := mustWalgoAs(t, src, free, "backup-push")
	_, n := p.take()
	t.Logf("backup-push unlimited: %.1f MiB in %.2fs", float64(n)/(1<<20), res.took.Seconds())
	res = mustWalgoAs(t, src, limited, "backup-push")
	_, n = p.take()
	check("backup-push", n, res.took)

	res = mustWalgoAs(t, src, limited, "dump-push")
	_, n = p.take()
	check("dump-push", n, res.took)

	dst := pgtest.New(t, pgtest.Options{})
	dst.Start(t)
	res = mustWalgo(t, limited, "copy", dbDSN(src, "postgres"), dbDSN(dst, "postgres"))
	m := regexp.MustCompile(`: ([0-9.]+) ([KMG])iB in \S+ \(data ([^,]+),`).FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("copy printed no size and data time:\n%s", res.stdout)
	}
	size, _ := strconv.ParseFloat(m[1], 64)
	data, err := time.ParseDuration(m[3])
	if err != nil {
		t.Fatal(err)
	}
	check("copy", int64(size*float64(int64(1)<<(10*(strings.Index("KMG", m[2])+1)))), data)
}
