package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/faultproxy"
	"github.com/walgo/walgo/internal/foreigntest"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// foreignKey is where a WAL file stored with extension ext lives.
func foreignKey(name, ext string) string {
	if ext == "" {
		return catalog.WALPrefix + name
	}
	return catalog.WALPrefix + name + "." + ext
}

// TestFetchForeignThroughCLI: wal-fetch as Postgres runs it, against what
// WAL-G and WAL-E store: their codecs are read; an extension walgo cannot
// read, and another cluster's segment under the right name, stop recovery
// (exit above 125, naming the cause) instead of ending it early (exit 1).
func TestFetchForeignThroughCLI(t *testing.T) {
	for _, rk := range repoKinds {
		t.Run(rk.name, func(t *testing.T) {
			r := rk.make(t)
			st := r.openStore(t)
			ctx := context.Background()
			put := func(key string, b []byte) {
				t.Helper()
				if err := st.Put(ctx, key, bytes.NewReader(b)); err != nil {
					t.Fatal(err)
				}
			}
			seg, _ := wal.ParseSegment("000000010000000000000020")
			want := map[string][]byte{}
			for _, ext := range foreigntest.Exts {
				data := waltest.Segment(t, seg.Name(), smallSeg, 4)
				put(foreignKey(seg.Name(), ext), foreigntest.Encode(t, ext, data))
				want[seg.Name()] = data
				seg = seg.Next(smallSeg)
			}
			const unknown = "000000010000000000000030"
			put(foreignKey(unknown, "xz"), waltest.Segment(t, unknown, smallSeg, 4))
			// Another cluster's segment: right name, right address, another
			// system identifier in its header.
			const other = "000000010000000000000031"
			alien := waltest.Segment(t, other, smallSeg, 4)
			binary.LittleEndian.PutUint64(alien[24:], 6000000000000000042)
			put(foreignKey(other, "br"), foreigntest.Encode(t, "br", alien))

			data := filepath.Join(t.TempDir(), "data")
			os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
			os.MkdirAll(filepath.Join(data, "global"), 0o700)
			hdr, _ := wal.ParseHeader(want["000000010000000000000020"])
			os.WriteFile(filepath.Join(data, pgdata.ControlFile), waltest.PgControl(t, hdr.SystemID), 0o600)
			dest := filepath.Join(data, "pg_wal", "RECOVERYXLOG")
			env := append([]string{"WALGO_PREFETCH=0"}, r.env...)
			for name, b := range want {
				mustWalgo(t, env, "wal-fetch", name, dest)
				if got, _ := os.ReadFile(dest); !bytes.Equal(got, b) {
					t.Errorf("%s: fetched content differs", name)
				}
			}
			res := walgo(t, env, "wal-fetch", unknown, dest)
			if res.code <= 125 || !strings.Contains(res.stderr, foreignKey(unknown, "xz")) {
				t.Errorf("unknown extension: exit %d, stderr %q; want > 125 naming the object", res.code, res.stderr)
			}
			res = walgo(t, env, "wal-fetch", other, dest)
			if res.code <= 125 || !strings.Contains(res.stderr, "database system 6000000000000000042") {
				t.Errorf("another cluster's segment: exit %d, stderr %q; want > 125 naming both systems", res.code, res.stderr)
			}
		})
	}
}

// TestFetchRequests counts the S3 requests of one wal-fetch process
// (issue 11): a segment stored with the configured codec is one GET; a
// missing one a GET and a LIST; never a HEAD or a bucket check.
func TestFetchRequests(t *testing.T) {
	r := s3Repo(t)
	st := r.openStore(t)
	ctx := context.Background()
	const name = "000000010000000000000040"
	var buf bytes.Buffer
	w, _ := codec.Zstd{}.NewWriter(&buf)
	w.Write(waltest.Segment(t, name, smallSeg, 1))
	w.Close()
	if err := st.Put(ctx, catalog.WALKey(name, codec.Zstd{}), bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	proxy, err := faultproxy.Start(faultproxy.Config{Target: r.s3.Endpoint, Observe: func(req *http.Request, _ faultproxy.Fault, _ bool) {
		op := req.Method
		switch q := req.URL.Query(); {
		case q.Has("list-type"):
			op = "LIST"
		case req.Method == http.MethodHead && strings.Count(strings.Trim(req.URL.Path, "/"), "/") == 0:
			op = "HEAD bucket"
		}
		mu.Lock()
		seen[op]++
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	env := []string{"WALGO_PREFETCH=0"}
	for _, e := range r.env {
		if !strings.HasPrefix(e, "WALGO_S3_ENDPOINT=") {
			env = append(env, e)
		}
	}
	env = append(env, "WALGO_S3_ENDPOINT="+proxy.URL)
	data := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700)
	dest := filepath.Join(data, "pg_wal", "RECOVERYXLOG")
	take := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = map[string]int{}
		return out
	}
	mustWalgo(t, env, "wal-fetch", name, dest)
	if got := take(); len(got) != 1 || got["GET"] != 1 {
		t.Errorf("wal-fetch of a stored segment: requests %v, want exactly one GET", got)
	}
	// The first miss in a pg_wal also reads the repository description
	// (a missing repository must never read as "not in the archive"), which
	// pg_wal/walgo/repository then caches for 5 minutes.
	for i, want := range []int{2, 1} {
		if res := walgo(t, env, "wal-fetch", "000000010000000000000041", dest); res.code != 1 {
			t.Fatalf("missing segment: exit %d: %s", res.code, res.stderr)
		}
		if got := take(); len(got) != 2 || got["GET"] != want || got["LIST"] != 1 {
			t.Errorf("wal-fetch %d of a missing segment: requests %v, want %d GET and one LIST", i+1, got, want)
		}
	}
	// The next timeline's history file, which Postgres asks for at the end
	// of every recovery: missing almost always, so listed first.
	if res := walgo(t, env, "wal-fetch", "00000002.history", dest); res.code != 1 {
		t.Fatalf("missing history file: exit %d: %s", res.code, res.stderr)
	}
	if got := take(); len(got) != 1 || got["LIST"] != 1 {
		t.Errorf("wal-fetch of a missing history file: requests %v, want exactly one LIST", got)
	}
}

// TestMixedCodecRestore: a repository whose WAL was written by several
// tools over time (walgo's zstd, lz4 and gzip; WAL-G's brotli, lzma and
// "none"; WAL-E's lzop) restores and replays to the very end: every row.
func TestMixedCodecRestore(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.SQL(t, "create table t (id int primary key, pad text)")
	src.SQL(t, "insert into t select g, repeat('x', 200) from generate_series(1, 500) g")
	mustWalgoAs(t, src, r.env, "backup-push")
	const rounds = 14
	for i := range rounds {
		src.SQL(t, fmt.Sprintf("insert into t select g, repeat('y', 200) from generate_series(%d, %d) g", 501+i*250, 500+(i+1)*250))
		src.SQL(t, "select pg_switch_wal()")
	}
	final := src.SQL(t, "select count(*), sum(hashtext(pad || id))::text from t")
	archiveAll(t, src)

	// Re-store every archived WAL file in turn with another tool's codec.
	st := r.openStore(t)
	ctx := context.Background()
	objs, err := catalog.ListWAL(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	exts := []string{"zst", "lz4", "gz", "br", "lzma", "lzo", ""}
	used := map[string]int{}
	for i, o := range objs {
		if o.Kind != wal.KindSegment {
			continue
		}
		plain := decodeObject(t, st, o)
		ext := exts[i%len(exts)]
		var b []byte
		switch ext {
		case "zst", "lz4", "gz":
			c, _ := codec.ByExt(ext)
			b = encodeWith(t, c.(codec.Compression), plain)
		default:
			b = foreigntest.Encode(t, ext, plain)
		}
		if err := st.Delete(ctx, o.Key); err != nil {
			t.Fatal(err)
		}
		if err := st.Put(ctx, foreignKey(o.Name, ext), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		used[ext]++
	}
	for _, ext := range exts {
		if used[ext] == 0 {
			t.Fatalf("no segment stored as %q: %v", ext, used)
		}
	}
	pgtest.Chown(t, r.root)
	t.Logf("segments by codec: %v", used)

	c := restoreAndStart(t, r, []string{"LATEST"})
	waitPromoted(t, c)
	if got := c.SQL(t, "select count(*), sum(hashtext(pad || id))::text from t"); got != final {
		t.Fatalf("restored through mixed codecs: %s, want %s (the source's)", got, final)
	}
}

func decodeObject(t *testing.T, st storage.Store, o catalog.WALObject) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), o.Key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	dec, err := codec.New(nil, nil, nil).Decode(o.Ext, rc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(dec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func encodeWith(t *testing.T, c codec.Compression, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := c.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
