package restore

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// fakeSpace makes fsSpace report a file system of size bytes on which
// only the prefetch folder's files take room, and free bytes besides.
func fakeSpace(t *testing.T, dir string, size, free int64) {
	t.Helper()
	old := fsSpace
	t.Cleanup(func() { fsSpace = old })
	fsSpace = func(string) (int64, int64, error) {
		used := int64(0)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				used += fi.Size()
			}
		}
		return free - used, size, nil
	}
}

// prefetched lists the complete prefetched segments in walDir's folder.
func prefetched(walDir string) []string {
	var out []string
	ents, _ := os.ReadDir(PrefetchDir(walDir))
	for _, e := range ents {
		if wal.Classify(e.Name()) == wal.KindSegment {
			if _, err := os.Stat(filepath.Join(PrefetchDir(walDir), e.Name()+SidecarExt)); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// TestPrefetchDiskBudget: the prefetch downloads only while pg_wal's file
// system keeps the reserve free, and removes the segments furthest ahead
// when Postgres' own files leave less than that.
func TestPrefetchDiskBudget(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 8)
	archiveSegs(t, s, "000000010000000000000010", 9, codec.Zstd{})
	size := int64(64 * segSize)
	reserve := reserveFor(segSize, size) // 4 segments
	// Room for the reserve and 2.5 segments more: 2 are fetched.
	fakeSpace(t, PrefetchDir(dir), size, reserve+5*segSize/2)
	if err := f.Prefetch(ctx, "000000010000000000000010", dir, segSize); err != nil {
		t.Fatal(err)
	}
	if got, want := prefetched(dir), []string{"000000010000000000000011", "000000010000000000000012"}; !slices.Equal(got, want) {
		t.Fatalf("prefetched %v, want %v", got, want)
	}
	// Plenty of room: the whole window.
	fakeSpace(t, PrefetchDir(dir), size, size)
	if err := f.Prefetch(ctx, "000000010000000000000010", dir, segSize); err != nil {
		t.Fatal(err)
	}
	if got := prefetched(dir); len(got) != 8 || got[7] != "000000010000000000000018" {
		t.Fatalf("prefetched %v, want 11..18", got)
	}
	// Postgres filled pg_wal: free space below the reserve by 1.5
	// segments, so the two furthest ahead go.
	fakeSpace(t, PrefetchDir(dir), size, 8*segSize+reserve-3*segSize/2)
	if err := f.Prefetch(ctx, "000000010000000000000010", dir, segSize); err != nil {
		t.Fatal(err)
	}
	if got := prefetched(dir); len(got) != 6 || got[5] != "000000010000000000000016" {
		t.Fatalf("prefetched %v, want 11..16", got)
	}
}

// TestPrefetchRequests: a prefetch lists the log id once and GETs each
// listed segment once; the segments the listing did not show cost
// nothing more.
func TestPrefetchRequests(t *testing.T) {
	ctx := context.Background()
	s, _, dir := setup(t, 0)
	cs := &counting{Store: s}
	f := NewFetcher(cs, FetchConfig{Codec: codec.New(codec.Zstd{}, nil, nil), Prefetch: 8, Concurrency: 3}, zap.NewNop())
	archiveSegs(t, s, "000000010000000000000010", 5, codec.Zstd{}) // 10..14
	if err := f.Prefetch(ctx, "000000010000000000000010", dir, segSize); err != nil {
		t.Fatal(err)
	}
	if got := prefetched(dir); len(got) != 4 {
		t.Fatalf("prefetched %v, want 11..14", got)
	}
	if got, want := cs.counts(), map[string]int{"list": 1, "get": 4}; !maps.Equal(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}
}

// recoveringCluster makes walDir's data directory look like a cluster in
// recovery: recovery.signal, and a postmaster.pid of this (live) process.
// It returns the signal file's path.
func recoveringCluster(t *testing.T, walDir string) string {
	t.Helper()
	data := filepath.Dir(walDir)
	if err := os.WriteFile(filepath.Join(data, "postmaster.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"+data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sig := filepath.Join(data, "recovery.signal")
	if err := os.WriteFile(sig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestPrefetchServesRecovery: in a recovering cluster one prefetch
// follows the position wal-fetch records (dropping what replay passed,
// fetching further), and at promotion it stops and removes its folder;
// when the server stops, too.
func TestPrefetchServesRecovery(t *testing.T) {
	for _, end := range []string{"promotion", "server stops"} {
		t.Run(end, func(t *testing.T) {
			ctx := context.Background()
			s, _, dir := setup(t, 0)
			f := NewFetcher(s, FetchConfig{Prefetch: 3, Concurrency: 2}, zaptest.NewLogger(t))
			archiveSegs(t, s, "000000010000000000000010", 10, codec.Zstd{}) // 10..19
			sig := recoveringCluster(t, dir)
			done := make(chan error, 1)
			go func() { done <- f.Prefetch(ctx, "000000010000000000000010", dir, segSize) }()
			waitFor(t, func() bool { return len(prefetched(dir)) == 3 }, "11..13 prefetched")
			if got := prefetched(dir); got[0] != "000000010000000000000011" {
				t.Fatalf("prefetched %v", got)
			}
			// wal-fetch served 14: the window moves to 15..17.
			if _, err := notePosition(dir, "000000010000000000000014", segSize); err != nil {
				t.Fatal(err)
			}
			want := []string{"000000010000000000000015", "000000010000000000000016", "000000010000000000000017"}
			waitFor(t, func() bool { return slices.Equal(prefetched(dir), want) }, "15..17 prefetched, 11..13 gone")
			select {
			case err := <-done:
				t.Fatalf("prefetch returned while the cluster recovers: %v", err)
			default:
			}
			if end == "promotion" {
				os.Remove(sig)
			} else {
				os.Remove(filepath.Join(filepath.Dir(dir), "postmaster.pid"))
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("prefetch still runs after the recovery ended")
			}
			if _, err := os.Stat(PrefetchDir(dir)); !os.IsNotExist(err) {
				t.Errorf("prefetch folder left after %s: %v", end, err)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clusterDir makes walDir's parent a data directory whose pg_control
// gives the system identifier of waltest's segments and the tests'
// segment size, as a restored cluster's does.
func clusterDir(t *testing.T, walDir string, seg []byte) {
	t.Helper()
	hdr, err := wal.ParseHeader(seg)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Dir(walDir)
	os.MkdirAll(filepath.Join(data, "global"), 0o700)
	if err := os.WriteFile(filepath.Join(data, pgdata.ControlFile), waltest.PgControlSegSize(t, hdr.SystemID, segSize), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFirstFetchStartsPrefetch: the first wal-fetch of a recovery starts
// the prefetch before it downloads its own segment (so the two overlap),
// and tells it the segment it serves; a wal-fetch while a prefetch runs
// starts none.
func TestFirstFetchStartsPrefetch(t *testing.T) {
	ctx := context.Background()
	s, _, dir := setup(t, 0)
	segs := archiveSegs(t, s, "000000010000000000000010", 3, codec.Zstd{})
	clusterDir(t, dir, segs["000000010000000000000010"])
	cs := &counting{Store: s}
	var starts []string
	var getsBefore []int
	f := NewFetcher(cs, FetchConfig{Prefetch: 2, Concurrency: 2, StartPrefetch: func(seg, walDir string, size int64) error {
		starts = append(starts, seg)
		getsBefore = append(getsBefore, cs.counts()["get"])
		if walDir != dir || size != segSize {
			t.Errorf("started for %s, size %d; want %s, %d", walDir, size, dir, segSize)
		}
		return nil
	}}, zap.NewNop())
	dest := filepath.Join(dir, "RECOVERYXLOG")
	if err := f.Fetch(ctx, "000000010000000000000010", dest); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(starts, []string{"000000010000000000000010"}) || getsBefore[0] != 0 {
		t.Fatalf("prefetch started %v with %v GETs made before it; want once, before the download", starts, getsBefore)
	}
	if pos, _, ok := readPosition(PrefetchDir(dir)); !ok || pos.Name() != "000000010000000000000010" {
		t.Fatalf("position %v (%v), want ...10", pos, ok)
	}
	// A prefetch runs (holds the lock): the next fetch starts none.
	lock, err := os.OpenFile(filepath.Join(PrefetchDir(dir), lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := f.Fetch(ctx, "000000010000000000000011", dest); err != nil {
		t.Fatal(err)
	}
	if len(starts) != 1 {
		t.Fatalf("prefetch started again while one runs: %v", starts)
	}
	if pos, _, _ := readPosition(PrefetchDir(dir)); pos.Name() != "000000010000000000000011" {
		t.Fatalf("position %v after serving ...11", pos)
	}
}

// TestFetchWaitsForPrefetchDownload: a wal-fetch of the segment the
// prefetch is downloading now waits for that download, takes its copy,
// and makes no request of its own.
func TestFetchWaitsForPrefetchDownload(t *testing.T) {
	ctx := context.Background()
	s, f, dir := setup(t, 2)
	name := "000000010000000000000011"
	segs := archiveSegs(t, s, "000000010000000000000010", 2, codec.Zstd{})
	if err := f.Prefetch(ctx, "000000010000000000000010", dir, segSize); err != nil {
		t.Fatal(err)
	}
	// Take the copy away and hold its claim, as the prefetch does while
	// it downloads; put it back and let go 300 ms later.
	pdir := PrefetchDir(dir)
	aside := t.TempDir()
	for _, n := range []string{name, name + SidecarExt} {
		if err := os.Rename(filepath.Join(pdir, n), filepath.Join(aside, n)); err != nil {
			t.Fatal(err)
		}
	}
	cl := prefetchClaims(dir)
	c, ok, err := cl.Try(name)
	if err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		for _, n := range []string{name, name + SidecarExt} {
			os.Rename(filepath.Join(aside, n), filepath.Join(pdir, n))
		}
		cl.Release(name, c)
	}()
	cs := &counting{Store: s}
	g := NewFetcher(cs, FetchConfig{Prefetch: 2, Concurrency: 2}, zap.NewNop())
	dest := filepath.Join(dir, "RECOVERYXLOG")
	t0 := time.Now()
	if err := g.Fetch(ctx, name, dest); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("returned after %v, before the download it waited for ended", d)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[name]) {
		t.Fatal("fetched content differs")
	}
	if got := cs.counts(); len(got) != 0 {
		t.Errorf("requests %v, want none: the prefetched copy serves it", got)
	}
	if _, err := os.Stat(cl.Path(name)); !os.IsNotExist(err) {
		t.Errorf("claim left: %v", err)
	}
}

// TestPrefetchKeepsPosition: in a recovering cluster the copy of the
// segment wal-fetch served last stays, so the second request Postgres
// makes for the segment it ended recovery in (after the next one was
// missing) is served from it without a request; a change to the file it
// shares with pg_wal is caught by its checksum (fetched again from the
// archive); once the position moves on, the copy goes.
func TestPrefetchKeepsPosition(t *testing.T) {
	ctx := context.Background()
	s, _, dir := setup(t, 0)
	cs := &counting{Store: s}
	f := NewFetcher(cs, FetchConfig{Prefetch: 2, Concurrency: 2}, zaptest.NewLogger(t))
	segs := archiveSegs(t, s, "000000010000000000000010", 3, codec.Zstd{}) // 10..12
	recoveringCluster(t, dir)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Prefetch(pctx, "000000010000000000000010", dir, segSize) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { return len(prefetched(dir)) == 2 }, "11 and 12 prefetched")

	dest := filepath.Join(dir, "RECOVERYXLOG")
	last := "000000010000000000000012"
	cs.counts()
	for i := range 2 {
		os.Remove(dest)
		if err := f.Fetch(ctx, last, dest); err != nil {
			t.Fatalf("fetch %d of %s: %v", i+1, last, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[last]) {
			t.Fatalf("fetch %d of %s: content differs", i+1, last)
		}
		// Postgres asks for 13 in between: not in the archive.
		if err := f.Fetch(ctx, "000000010000000000000013", filepath.Join(dir, "RECOVERYXLOG")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("fetch of a missing segment: %v", err)
		}
		time.Sleep(2 * prefetchPoll) // the prefetch reads the position and evicts
	}
	// Each miss is a GET and a LIST (the prefetch may list again too);
	// the second fetch of 12 costs nothing.
	if got := cs.counts(); got["get"] != 2 {
		t.Errorf("requests %v, want the two misses' GETs only", got)
	}

	// The file pg_wal shares with the copy is written to: the copy is not
	// used again, the archive's is.
	wf, err := os.OpenFile(dest, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	wf.WriteAt([]byte("overwritten"), 4096)
	wf.Close()
	if err := f.Fetch(ctx, last, dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[last]) {
		t.Fatal("a changed copy was served")
	}
	if got := cs.counts(); got["get"] != 1 {
		t.Errorf("requests %v after the copy changed, want one GET", got)
	}

	// The position moves on past both copies: they go.
	if _, err := notePosition(dir, "000000010000000000000014", segSize); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(prefetched(dir)) == 0 }, "copies behind the position removed")
}

// TestFetchOfMissingNext: the segment after the end of the archive, which
// the prefetch's listing did not show, costs one LIST when wal-fetch asks
// for it (not a GET and a LIST); once archived, a LIST and a GET find it.
func TestFetchOfMissingNext(t *testing.T) {
	ctx := context.Background()
	s, _, dir := setup(t, 0)
	cs := &counting{Store: s}
	f := NewFetcher(cs, FetchConfig{Prefetch: 2, Concurrency: 2}, zap.NewNop())
	archiveSegs(t, s, "000000010000000000000010", 2, codec.Zstd{}) // 10, 11
	if err := f.Prefetch(ctx, "000000010000000000000010", dir, segSize); err != nil {
		t.Fatal(err)
	}
	next := "000000010000000000000012"
	if got := missingHint(dir); got != next {
		t.Fatalf("missing hint %q, want %s", got, next)
	}
	cs.counts()
	dest := filepath.Join(dir, "RECOVERYXLOG")
	if err := f.Fetch(ctx, next, dest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("fetch of the missing next segment: %v", err)
	}
	if got, want := cs.counts(), map[string]int{"list": 1}; !maps.Equal(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}
	segs := archiveSegs(t, s, next, 1, codec.Zstd{})
	if err := f.Fetch(ctx, next, dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, segs[next]) {
		t.Fatal("content differs")
	}
	if got, want := cs.counts(), map[string]int{"list": 1, "get": 1}; !maps.Equal(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}
}
