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
	"sync"
	"testing"

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
