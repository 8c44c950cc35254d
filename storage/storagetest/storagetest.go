// Package storagetest is the conformance suite every storage.Store backend
// (and every wrapper around one) must pass.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/walgo/walgo/ratelimit"
	"github.com/walgo/walgo/storage"
)

// Run runs the suite. newStore returns a new, empty store for one subtest.
// Subtests run in parallel: newStore is called from several goroutines and
// the stores it returns must not share keys.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"Roundtrip", testRoundtrip},
		{"Overwrite", testOverwrite},
		{"Missing", testMissing},
		{"List", testList},
		{"ListStopsOnError", testListStopsOnError},
		{"InProgressPutInvisible", testInProgressPutInvisible},
		{"Delete", testDelete},
		{"FailingReader", testFailingReader},
		{"CancelledPut", testCancelledPut},
		{"ConcurrentPuts", testConcurrentPuts},
		{"InvalidKeys", testInvalidKeys},
		{"Create", testCreate},
		{"CreateExisting", testCreateExisting},
		{"CreateRace", testCreateRace},
		{"CreateFails", testCreateFails},
		{"Metadata", testMetadata},
		{"BatchDelete", testBatchDelete},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

const MiB = 1 << 20

// stream yields n deterministic pseudo-random bytes and hides every method
// but Read, so a backend cannot seek or learn the size up front.
type stream struct {
	r    *rand.ChaCha8
	left int64
}

func newStream(seed byte, n int64) *stream {
	var s [32]byte
	s[0] = seed
	return &stream{r: rand.NewChaCha8(s), left: n}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, _ := s.r.Read(p)
	s.left -= int64(n)
	return n, nil
}

func digest(t *testing.T, r io.Reader) ([32]byte, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return [32]byte(h.Sum(nil)), n
}

func put(t *testing.T, s storage.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(data)); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func get(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func list(t *testing.T, s storage.Store, prefix string) []storage.ObjectInfo {
	t.Helper()
	var out []storage.ObjectInfo
	if err := s.List(context.Background(), prefix, func(oi storage.ObjectInfo) error {
		out = append(out, oi)
		return nil
	}); err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return out
}

func keys(ois []storage.ObjectInfo) []string {
	out := make([]string, 0, len(ois))
	for _, oi := range ois {
		out = append(out, oi.Key)
	}
	return out
}

func assertNotFound(t *testing.T, s storage.Store, key string) {
	t.Helper()
	ctx := context.Background()
	if rc, err := s.Get(ctx, key); !errors.Is(err, storage.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("get %s: got %v, want ErrNotFound", key, err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat %s: got %v, want ErrNotFound", key, err)
	}
}

func testRoundtrip(t *testing.T, s storage.Store) {
	ctx := context.Background()
	tests := []struct {
		name string
		key  string
		size int64
	}{
		{"empty", "empty", 0},
		{"one byte", "one", 1},
		{"small", "dir/small.bin", 4096},
		{"streamed 20MiB", "deep/er/large.bin", 20 * MiB},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, _ := digest(t, newStream(byte(i), tc.size))
			if err := s.Put(ctx, tc.key, newStream(byte(i), tc.size)); err != nil {
				t.Fatalf("put: %v", err)
			}
			oi, err := s.Stat(ctx, tc.key)
			if err != nil {
				t.Fatalf("stat: %v", err)
			}
			if oi.Key != tc.key || oi.Size != tc.size || oi.ModTime.IsZero() {
				t.Errorf("stat = %+v, want key %q size %d and a mod time", oi, tc.key, tc.size)
			}
			rc, err := s.Get(ctx, tc.key)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			got, n := digest(t, rc)
			if err := rc.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if n != tc.size || got != want {
				t.Errorf("got %d bytes (sha256 %x), want %d bytes (sha256 %x)", n, got[:8], tc.size, want[:8])
			}
		})
	}
}

func testOverwrite(t *testing.T, s storage.Store) {
	put(t, s, "k", bytes.Repeat([]byte("long old content "), 1000))
	put(t, s, "k", []byte("new"))
	if got := get(t, s, "k"); string(got) != "new" {
		t.Errorf("get after overwrite = %q, want %q", got, "new")
	}
	oi, err := s.Stat(context.Background(), "k")
	if err != nil || oi.Size != 3 {
		t.Errorf("stat after overwrite = %+v, %v; want size 3", oi, err)
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"k"}) {
		t.Errorf("list after overwrite = %q, want [k]", got)
	}
}

func testMissing(t *testing.T, s storage.Store) {
	put(t, s, "dir/sub/obj", []byte("x"))
	for _, key := range []string{"nothing", "dir/nothing", "dir", "dir/sub", "dir/su", "dir/sub/obj/below"} {
		assertNotFound(t, s, key)
	}
}

func testList(t *testing.T, s storage.Store) {
	// Byte order puts "-" < "/" < "0" < "b": a backend that walks folders
	// depth-first gets "a-b" and "a/..." in the wrong order.
	all := []string{"a-b", "a/1", "a/2", "a/b/c", "a/b/d/e", "a0", "ab", "b/1"}
	for i, k := range slices.Backward(all) {
		put(t, s, k, bytes.Repeat([]byte{'x'}, i+1))
	}
	sizes := map[string]int64{}
	for i, k := range all {
		sizes[k] = int64(i + 1)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", all},
		{"a", []string{"a-b", "a/1", "a/2", "a/b/c", "a/b/d/e", "a0", "ab"}},
		{"a/", []string{"a/1", "a/2", "a/b/c", "a/b/d/e"}},
		{"a/b", []string{"a/b/c", "a/b/d/e"}},
		{"a/b/", []string{"a/b/c", "a/b/d/e"}},
		{"a/1", []string{"a/1"}},
		{"b", []string{"b/1"}},
		{"a/b/d/e", []string{"a/b/d/e"}},
		{"a/b/d/e/", nil},
		{"c", nil},
		{"zz/top/", nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("prefix %q", tc.prefix), func(t *testing.T) {
			got := list(t, s, tc.prefix)
			if !slices.Equal(keys(got), tc.want) {
				t.Fatalf("list %q = %q, want %q", tc.prefix, keys(got), tc.want)
			}
			for _, oi := range got {
				if oi.Size != sizes[oi.Key] {
					t.Errorf("list %q: %s size %d, want %d", tc.prefix, oi.Key, oi.Size, sizes[oi.Key])
				}
			}
		})
	}
}

func testListStopsOnError(t *testing.T, s storage.Store) {
	for _, k := range []string{"l/1", "l/2", "l/3"} {
		put(t, s, k, []byte(k))
	}
	stop := errors.New("stop here")
	var seen []string
	err := s.List(context.Background(), "l/", func(oi storage.ObjectInfo) error {
		seen = append(seen, oi.Key)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("list returned %v, want the callback's error", err)
	}
	if !slices.Equal(seen, []string{"l/1", "l/2"}) {
		t.Errorf("callback saw %q, want [l/1 l/2]", seen)
	}
}

// testInProgressPutInvisible holds a Put open mid-body and checks that
// nothing of it (no temp file, no part) shows before it completes.
func testInProgressPutInvisible(t *testing.T, s storage.Store) {
	ctx := context.Background()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.Put(ctx, "wip/obj", pr) }()
	// Writes to a pipe return once the Put has read them: 9 MiB is past the
	// first part of a multipart upload.
	first := bytes.Repeat([]byte{1}, 9*MiB)
	if _, err := pw.Write(first); err != nil {
		t.Fatalf("write: %v", err)
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("list during put = %q, want nothing", keys(got))
	}
	assertNotFound(t, s, "wip/obj")
	if _, err := pw.Write([]byte("tail")); err != nil {
		t.Fatalf("write: %v", err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("put: %v", err)
	}
	if got := get(t, s, "wip/obj"); !bytes.Equal(got, append(first, "tail"...)) {
		t.Errorf("get after put: %d bytes, want %d", len(got), len(first)+4)
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"wip/obj"}) {
		t.Errorf("list after put = %q, want [wip/obj]", got)
	}
}

func testDelete(t *testing.T, s storage.Store) {
	ctx := context.Background()
	put(t, s, "del/a", []byte("a"))
	put(t, s, "del/b", []byte("b"))
	if err := s.Delete(ctx, "del/a"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	assertNotFound(t, s, "del/a")
	if got := keys(list(t, s, "del/")); !slices.Equal(got, []string{"del/b"}) {
		t.Errorf("list after delete = %q, want [del/b]", got)
	}
	for _, key := range []string{"del/a", "never/was"} {
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("delete missing %s: %v, want nil", key, err)
		}
	}
	if got := get(t, s, "del/b"); string(got) != "b" {
		t.Errorf("other object = %q, want %q", got, "b")
	}
}

// failingReader yields n bytes of data and then fails.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func testFailingReader(t *testing.T, s storage.Store) {
	ctx := context.Background()
	tests := []struct {
		name   string
		failAt int64
	}{
		{"at start", 0},
		{"small", 1000},
		{"after multipart began", 12 * MiB},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			boom := errors.New("source broke")
			fresh, kept := fmt.Sprintf("fail/fresh%d", i), fmt.Sprintf("fail/kept%d", i)
			put(t, s, kept, []byte("old"))
			for _, key := range []string{fresh, kept} {
				err := s.Put(ctx, key, &failingReader{r: newStream(1, tc.failAt), err: boom})
				if !errors.Is(err, boom) {
					t.Errorf("put %s: got %v, want the reader's error", key, err)
				}
			}
			assertNotFound(t, s, fresh)
			if got := get(t, s, kept); string(got) != "old" {
				t.Errorf("earlier object = %q, want %q", got, "old")
			}
			if got := keys(list(t, s, "fail/")); slices.Contains(got, fresh) {
				t.Errorf("list shows %s after a failed put", fresh)
			}
		})
	}
}

// cancellingReader cancels the Put's context after n bytes and then goes
// on producing data, as if the caller gave up mid-stream.
type cancellingReader struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func testCancelledPut(t *testing.T, s storage.Store) {
	tests := []struct {
		name     string
		cancelAt int64 // -1: cancelled before Put
	}{
		{"before", -1},
		{"small", 1000},
		{"after multipart began", 12 * MiB},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			key := fmt.Sprintf("cancel/%d", i)
			var r io.Reader = newStream(2, 16*MiB)
			if tc.cancelAt < 0 {
				cancel()
			} else {
				r = &cancellingReader{r: r, n: tc.cancelAt, cancel: cancel}
			}
			if err := s.Put(ctx, key, r); err == nil {
				t.Fatalf("put with cancelled context succeeded")
			}
			assertNotFound(t, s, key)
			if got := list(t, s, "cancel/"); len(got) != 0 {
				t.Errorf("list after cancelled put = %q, want nothing", keys(got))
			}
		})
	}
}

func testConcurrentPuts(t *testing.T, s storage.Store) {
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Put(context.Background(), fmt.Sprintf("conc/%02d", i), newStream(byte(i), int64(1000*(i+1))))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("put %d: %v", i, err)
		}
	}
	got := list(t, s, "conc/")
	if len(got) != n {
		t.Fatalf("list = %q, want %d objects", keys(got), n)
	}
	for i := range n {
		key := fmt.Sprintf("conc/%02d", i)
		want, _ := digest(t, newStream(byte(i), int64(1000*(i+1))))
		rc, err := s.Get(context.Background(), key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		sum, _ := digest(t, rc)
		rc.Close()
		if sum != want {
			t.Errorf("%s: content differs from what was put", key)
		}
	}
}

func testInvalidKeys(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for _, key := range []string{"", "/abs", "/", "a//b", "a/", ".", "..", "../up", "a/../b", "a/./b"} {
		t.Run(fmt.Sprintf("%q", key), func(t *testing.T) {
			if err := s.Put(ctx, key, bytes.NewReader([]byte("x"))); !errors.Is(err, storage.ErrPermanent) {
				t.Errorf("put: got %v, want ErrPermanent", err)
			}
			if rc, err := s.Get(ctx, key); !errors.Is(err, storage.ErrPermanent) {
				if err == nil {
					rc.Close()
				}
				t.Errorf("get: got %v, want ErrPermanent", err)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrPermanent) {
				t.Errorf("stat: got %v, want ErrPermanent", err)
			}
			if err := s.Delete(ctx, key); !errors.Is(err, storage.ErrPermanent) {
				t.Errorf("delete: got %v, want ErrPermanent", err)
			}
		})
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Errorf("list after invalid puts = %q, want nothing", keys(got))
	}
}

func create(t *testing.T, s storage.Store, key string, data []byte, meta storage.Metadata) {
	t.Helper()
	if err := s.Create(context.Background(), key, bytes.NewReader(data), meta); err != nil {
		t.Fatalf("create %s: %v", key, err)
	}
}

func stat(t *testing.T, s storage.Store, key string) storage.ObjectInfo {
	t.Helper()
	oi, err := s.Stat(context.Background(), key)
	if err != nil {
		t.Fatalf("stat %s: %v", key, err)
	}
	return oi
}

func sameMeta(a, b storage.Metadata) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// testCreate: a Create of a free key stores the object and its metadata,
// small (one request) and streamed (a multipart upload).
func testCreate(t *testing.T, s storage.Store) {
	ctx := context.Background()
	for i, size := range []int64{0, 5000, 20 * MiB} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			key := fmt.Sprintf("new/%d", i)
			meta := storage.Metadata{"plain-sha256": fmt.Sprintf("%064x", i), "n": fmt.Sprint(size)}
			want, _ := digest(t, newStream(byte(i), size))
			if err := s.Create(ctx, key, newStream(byte(i), size), meta); err != nil {
				t.Fatalf("create: %v", err)
			}
			oi := stat(t, s, key)
			if oi.Size != size || !sameMeta(oi.Metadata, meta) {
				t.Errorf("stat = size %d metadata %v, want %d and %v", oi.Size, oi.Metadata, size, meta)
			}
			rc, err := s.Get(ctx, key)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			got, n := digest(t, rc)
			rc.Close()
			if n != size || got != want {
				t.Errorf("got %d bytes, want %d of what was created", n, size)
			}
		})
	}
	if got := keys(list(t, s, "new/")); !slices.Equal(got, []string{"new/0", "new/1", "new/2"}) {
		t.Errorf("list = %q", got)
	}
	// A key freed by Delete can be created again.
	if err := s.Delete(ctx, "new/1"); err != nil {
		t.Fatal(err)
	}
	create(t, s, "new/1", []byte("again"), nil)
	if got := get(t, s, "new/1"); string(got) != "again" {
		t.Errorf("create after delete: %q", got)
	}
}

// testCreateExisting: a Create of a taken key, whoever wrote it, fails with
// ErrExists and leaves the object and its metadata as they were.
func testCreateExisting(t *testing.T, s storage.Store) {
	ctx := context.Background()
	put(t, s, "ex/put", []byte("by put"))
	create(t, s, "ex/created", []byte("by create"), storage.Metadata{"who": "first"})
	tests := []struct {
		name string
		key  string
		body func() io.Reader
		want string
	}{
		{"over put, small", "ex/put", func() io.Reader { return bytes.NewReader([]byte("other")) }, "by put"},
		{"over create, small", "ex/created", func() io.Reader { return bytes.NewReader([]byte("other")) }, "by create"},
		{"over create, empty", "ex/created", func() io.Reader { return bytes.NewReader(nil) }, "by create"},
		{"over create, streamed", "ex/created", func() io.Reader { return newStream(9, 12*MiB) }, "by create"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Create(ctx, tc.key, tc.body(), storage.Metadata{"who": "second"})
			if !errors.Is(err, storage.ErrExists) {
				t.Fatalf("create: got %v, want ErrExists", err)
			}
			if got := get(t, s, tc.key); string(got) != tc.want {
				t.Errorf("object is now %.20q, want %q", got, tc.want)
			}
		})
	}
	if m := stat(t, s, "ex/created").Metadata; m["who"] != "first" {
		t.Errorf("metadata = %v, want who=first", m)
	}
	if got := keys(list(t, s, "ex/")); !slices.Equal(got, []string{"ex/created", "ex/put"}) {
		t.Errorf("list = %q", got)
	}
}

// testCreateRace: writers racing to create one key with different
// content: exactly one wins, every other gets ErrExists, and the object is
// the winner's, whole.
func testCreateRace(t *testing.T, s storage.Store) {
	ctx := context.Background()
	const writers, rounds = 6, 8
	for round := range rounds + 1 {
		key := fmt.Sprintf("race/%d", round)
		size := int64(3000)
		if round == rounds {
			size = 6 * MiB // past a multipart upload's first part
		}
		errs := make([]error, writers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				<-start
				meta := storage.Metadata{"writer": fmt.Sprint(w)}
				errs[w] = s.Create(ctx, key, newStream(byte(10+w), size), meta)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("%s: writers %d and %d both won", key, winner, w)
			case err == nil:
				winner = w
			case !errors.Is(err, storage.ErrExists):
				t.Errorf("%s: writer %d: %v, want ErrExists", key, w, err)
			}
		}
		if winner < 0 {
			t.Errorf("%s: nobody won", key)
			continue
		}
		oi := stat(t, s, key)
		if oi.Metadata["writer"] != fmt.Sprint(winner) {
			t.Errorf("%s: metadata names writer %q, winner was %d", key, oi.Metadata["writer"], winner)
		}
		want, _ := digest(t, newStream(byte(10+winner), size))
		rc, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := digest(t, rc)
		rc.Close()
		if got != want {
			t.Errorf("%s: content is not the winner's", key)
		}
	}
}

// testCreateFails: a Create whose body fails or whose ctx ends leaves
// nothing, and the key can be created afterwards.
func testCreateFails(t *testing.T, s storage.Store) {
	boom := errors.New("source broke")
	for i, at := range []int64{0, 1000, 12 * MiB} {
		key := fmt.Sprintf("cfail/%d", i)
		err := s.Create(context.Background(), key, &failingReader{r: newStream(1, at), err: boom}, storage.Metadata{"a": "b"})
		if !errors.Is(err, boom) {
			t.Errorf("create %s: got %v, want the reader's error", key, err)
		}
		assertNotFound(t, s, key)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Create(ctx, key, bytes.NewReader([]byte("x")), nil); err == nil {
			t.Errorf("create %s with a cancelled context succeeded", key)
		}
		assertNotFound(t, s, key)
		create(t, s, key, []byte("fine"), nil)
	}
	for _, meta := range []storage.Metadata{{"Upper": "x"}, {"a b": "x"}, {"": "x"}, {"a": "line\nbreak"}, {"a": string(make([]byte, storage.MaxMetadata+1))}} {
		err := s.Create(context.Background(), "cfail/meta", bytes.NewReader([]byte("x")), meta)
		if !errors.Is(err, storage.ErrPermanent) {
			t.Errorf("create with metadata %q: got %v, want ErrPermanent", meta, err)
		}
	}
	assertNotFound(t, s, "cfail/meta")
}

// testMetadata: objects written by Put have none; Create's round-trips
// exactly, up to MaxMetadata bytes.
func testMetadata(t *testing.T, s storage.Store) {
	put(t, s, "meta/put", []byte("x"))
	if m := stat(t, s, "meta/put").Metadata; len(m) != 0 {
		t.Errorf("object written by Put has metadata %v", m)
	}
	create(t, s, "meta/none", []byte("x"), nil)
	if m := stat(t, s, "meta/none").Metadata; len(m) != 0 {
		t.Errorf("object created without metadata has %v", m)
	}
	big := storage.Metadata{"plain-sha256": strings.Repeat("ab", 32), "x-1": "", "long": strings.Repeat("~ -", (storage.MaxMetadata-100)/3)}
	create(t, s, "meta/full", []byte("x"), big)
	if m := stat(t, s, "meta/full").Metadata; !sameMeta(m, big) {
		t.Errorf("metadata round trip: got %v, want %v", m, big)
	}
}

// testBatchDelete: a store that is a BatchDeleter (through its wrappers)
// removes a full batch in one call, missing keys included; any other says
// ErrUnsupported and deletes nothing.
func testBatchDelete(t *testing.T, s storage.Store) {
	ctx := context.Background()
	n := storage.MaxBatchDelete
	all := make([]string, n)
	for i := range all {
		all[i] = fmt.Sprintf("bd/%02d/%04d", i%7, i)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, k := range all {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.Put(ctx, k, bytes.NewReader([]byte(k))); err != nil {
				t.Errorf("put %s: %v", k, err)
			}
		})
	}
	wg.Wait()
	del := append(slices.Clone(all[:n-2]), "bd/never/was")
	err := storage.BatchDelete(ctx, s, del)
	if _, ok := storage.As[storage.BatchDeleter](s); !ok {
		if !errors.Is(err, storage.ErrUnsupported) {
			t.Errorf("store without batch deletes: got %v, want ErrUnsupported", err)
		}
		if got := len(list(t, s, "bd/")); got != n {
			t.Errorf("%d of %d objects left after an unsupported batch", got, n)
		}
		return
	}
	if err != nil {
		t.Fatalf("batch delete: %v", err)
	}
	kept := slices.Sorted(slices.Values(all[n-2:]))
	if got := keys(list(t, s, "bd/")); !slices.Equal(got, kept) {
		t.Errorf("left after the batch: %q, want %q, the keys not in it", got, kept)
	}
	if err := storage.BatchDelete(ctx, s, make([]string, n+1)); !errors.Is(err, storage.ErrPermanent) {
		t.Errorf("batch of %d: got %v, want ErrPermanent", n+1, err)
	}
}

// Wrap puts s under every wrapper walgo uses (rate limit, logging, checked
// create, retries with short backoff), for a backend's TestConformanceWrapped.
func Wrap(t *testing.T, s storage.Store) storage.Store {
	log := zaptest.NewLogger(t)
	s = storage.WithRateLimit(s, ratelimit.New(1<<30))
	s = storage.WithLogging(s, log)
	s = storage.WithCheckedCreate(s, log)
	return storage.WithRetry(s, storage.RetryOptions{Attempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}, log)
}
