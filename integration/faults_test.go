package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/faultproxy"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// faultRates fail 20% of the requests (500, 503 SlowDown, resets, cut
// bodies) and stall 2% more for longer than walgo's timeouts.
var faultRates = faultproxy.Rates{
	InternalError: 0.05,
	SlowDown:      0.05,
	Reset:         0.05,
	Truncate:      0.05,
	Stall:         0.02,
}

// faultSeed is the fault proxy's seed: WALGO_FAULT_SEED, or a fixed one.
func faultSeed(t *testing.T) uint64 {
	if s := os.Getenv("WALGO_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("WALGO_FAULT_SEED=%q: %v", s, err)
		}
		return v
	}
	return 20261124
}

// withEnv returns env with every KEY=... of over replacing env's own.
func withEnv(env []string, over ...string) []string {
	keys := map[string]bool{}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !keys[k] {
			out = append(out, kv)
		}
	}
	return append(out, over...)
}

// TestArchiveThroughFaults: under pgbench load, with a proxy in front of the
// S3 server failing 20% of the requests and stalling some, every segment
// Postgres hands to wal-push ends up stored exactly once (no second codec
// copy, no temp or partial object) and fetches back byte-identical; then a
// backup-push through the same proxy either completes and restores to the
// source's state, or fails clearly and is not listed.
func TestArchiveThroughFaults(t *testing.T) {
	pgtest.Require(t)
	r := s3Repo(t)
	seed := faultSeed(t)
	proxy, err := faultproxy.Start(faultproxy.Config{
		Target:   r.s3.Endpoint,
		Seed:     seed,
		Rates:    faultRates,
		StallFor: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	viaProxy := withEnv(r.env,
		"WALGO_S3_ENDPOINT="+proxy.URL,
		"WALGO_STORAGE_TIMEOUT=2s",
		"WALGO_STORAGE_RETRIES=5",
	)

	ref := pgtest.OwnedDir(t, "ref")
	src := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{"-k"},
		Env:        viaProxy,
		Conf: []string{
			"archive_mode = on",
			fmt.Sprintf("archive_command = 'cp %%p %s/%%f && %s wal-push %%p'", ref, walgoBin),
		},
	})
	src.Start(t)
	src.PgBench(t, "-i", "-s", "5", "-q")
	src.SQL(t, markerSQL)

	// Load until 25 segments past the first have been written.
	first, _ := wal.ParseSegment(src.SQL(t, "select pg_walfile_name(pg_current_wal_lsn())"))
	for i := 0; ; i++ {
		cur, _ := wal.ParseSegment(src.SQL(t, "select pg_walfile_name(pg_current_wal_lsn())"))
		if cur.No(segSize)-first.No(segSize) >= 25 {
			break
		}
		src.PgBench(t, "-n", "-T", "1", "-c", "2")
		if i%2 == 0 {
			src.SQL(t, "select pg_switch_wal()")
		}
	}
	archiveAll(t, src)
	archived := proxy.Stats()
	failed := src.SQL(t, "select failed_count || ' ' || coalesce(last_failed_wal, '-') from pg_stat_archiver")

	// The store, read directly: each segment Postgres archived is there
	// exactly once, under its one key, and nothing else is.
	refSegs := segmentsIn(t, ref)
	if len(refSegs) < 20 {
		t.Fatalf("only %d segments archived, want at least 20", len(refSegs))
	}
	direct := r.s3Store(t)
	ctx := context.Background()
	keys := map[string]int64{}
	if err := direct.List(ctx, catalog.WALPrefix, func(oi storage.ObjectInfo) error {
		keys[oi.Key] = oi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, n := range refSegs {
		k := catalog.WALPrefix + n + ".zst"
		if _, ok := keys[k]; !ok {
			lost++
			t.Errorf("segment %s was archived by Postgres but %s is not in the store", n, k)
		}
		delete(keys, k)
	}
	for k, size := range keys {
		t.Errorf("unexpected object %s (%d bytes): a second copy, a temp or a partial object", k, size)
	}
	uploadsLeft := incompleteUploads(t, r)

	// Each fetches back through the proxy, byte-identical, on the first
	// call: in archive recovery (not standby) Postgres stops with FATAL on
	// any failure status, so wal-fetch must ride out the faults itself
	// (a cut-off transfer starts over inside wal-fetch).
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	noPrefetch := withEnv(viaProxy, "WALGO_PREFETCH=0")
	fetchFailures := map[int]int{}
	var fetchErrors []string
	for _, n := range refSegs {
		for attempt := 1; ; attempt++ {
			res := walgo(t, noPrefetch, "wal-fetch", n, dest)
			if res.code == 0 {
				break
			}
			fetchFailures[res.code]++
			fetchErrors = append(fetchErrors, fmt.Sprintf("%s: exit %d: %s", n, res.code, lastLines(res.stderr, 1)))
			if res.code == 1 {
				t.Fatalf("wal-fetch %s says it is not archived (exit 1) although it is: Postgres would end recovery early\n%s", n, res.stderr)
			}
			t.Fatalf("wal-fetch %s failed (Postgres would stop recovery):\n%s", n, strings.Join(fetchErrors, "\n"))
		}
		if !sameAsCopied(t, dest, ref, n) {
			t.Fatalf("%s: fetched through the faults, differs from what Postgres archived", n)
		}
	}
	fetched := proxy.Stats()
	for _, e := range fetchErrors {
		t.Logf("wal-fetch failure: %s", e)
	}

	// backup-push through the same proxy, with load running.
	lctx, stopLoad := context.WithCancel(ctx)
	load := src.Command(lctx, "pgbench", "-n", "-T", "600", "-c", "2")
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	bp := walgoAs(t, src, withEnv(viaProxy, "WALGO_DISK_RATE_LIMIT=0", "WALGO_PART_SIZE=32MiB"), "backup-push")
	stopLoad()
	load.Wait()
	backupOutcome := "completed and restored"
	names := listBackups(t, r)
	if bp.code != 0 {
		backupOutcome = fmt.Sprintf("failed (exit %d)", bp.code)
		t.Logf("backup-push through the faults failed: exit %d\n%s", bp.code, lastLines(bp.stderr, 5))
		if len(names) != 0 {
			t.Errorf("a failed backup-push is listed: %v", names)
		}
		if !strings.Contains(bp.stderr, "storage unreachable") && !strings.Contains(bp.stderr, "gave up") {
			t.Errorf("backup-push failed without naming the storage failure:\n%s", lastLines(bp.stderr, 5))
		}
	} else {
		if len(names) != 1 {
			t.Fatalf("backup-push succeeded, backup-list says %v", names)
		}
		src.SQL(t, "insert into marker values (1, 'after the backup')")
		want := state(t, src)
		archiveAll(t, src)
		c := restoreAndStart(t, r, []string{"LATEST"})
		waitPromoted(t, c)
		if got := state(t, c); got != want {
			t.Fatalf("restored from a backup taken through faults: state differs\n got %s\nwant %s", got, want)
		}
	}
	backedUp := proxy.Stats()
	uploadsLeftAfterBackup := incompleteUploads(t, r)

	logb, _ := os.ReadFile(src.LogFile())
	serverLog := string(logb)
	retries := strings.Count(serverLog, "storage operation failed, retrying")
	backupRetries := strings.Count(bp.stderr, "storage operation failed, retrying")
	replaced := strings.Count(serverLog, "archived copy is damaged")
	if replaced > 0 {
		t.Logf("wal-push took a good archived copy for damaged %d times (a read fault taken for corruption)", replaced)
	}
	codes := make([]string, 0, len(fetchFailures))
	for c, n := range fetchFailures {
		codes = append(codes, fmt.Sprintf("exit %d: %d", c, n))
	}
	sort.Strings(codes)
	t.Logf("FAULTS: seed %d, rates %.0f%% failing + %.0f%% stalled (5s, walgo timeout 2s, 5 attempts); "+
		"segments archived %d, lost %d, archiver failed_count/last_failed %s, retries seen in the server log %d, damaged-copy replacements %d; "+
		"incomplete multipart uploads left %d (after backup %d; upload ids lost by the proxy %d); "+
		"wal-fetch reruns %d [%s]; backup-push %s (%d retries); "+
		"proxy while archiving: %v; after fetching: %v; after backup: %v",
		seed, 100*(faultRates.Total()-faultRates.Stall), 100*faultRates.Stall,
		len(refSegs), lost, failed, retries, replaced,
		uploadsLeft, uploadsLeftAfterBackup, backedUp.LostUploadIDs,
		len(fetchErrors), strings.Join(codes, ", "), backupOutcome, backupRetries,
		archived, fetched, backedUp)
	// A fault on an upload's request is resent by the SDK from memory,
	// within one attempt, with no retry line in the log (wal-push is one
	// PutObject per segment): that every segment arrived, checked above,
	// is the proof that the faults were survived.
	if archived.Faults() == 0 {
		t.Errorf("no fault injected: %v, %d retries", archived, retries)
	}
	if int64(uploadsLeftAfterBackup) > backedUp.LostUploadIDs {
		t.Errorf("%d incomplete multipart uploads left, more than the %d whose id the proxy kept from walgo",
			uploadsLeftAfterBackup, backedUp.LostUploadIDs)
	}
	// Uploads whose id was lost cannot be aborted by the Put that began
	// them: delete garbage finds and aborts them.
	mustWalgo(t, r.env, "delete", "garbage", "--confirm", "--min-age=0s")
	if n := incompleteUploads(t, r); n != 0 {
		t.Errorf("%d incomplete multipart uploads left after delete garbage", n)
	}
}

// incompleteUploads lists the multipart uploads in r's bucket that were
// neither completed nor aborted.
func incompleteUploads(t *testing.T, r repo) int {
	t.Helper()
	out, err := r.s3.Client().ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(r.cfg.Bucket)})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	for _, u := range out.Uploads {
		t.Logf("incomplete multipart upload: %s (id %s, started %v)", aws.ToString(u.Key), aws.ToString(u.UploadId), aws.ToTime(u.Initiated))
	}
	return len(out.Uploads)
}
