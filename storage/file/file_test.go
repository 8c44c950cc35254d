package file_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
)

func newFile(t *testing.T) *file.Store {
	t.Helper()
	s, err := file.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return newFile(t) })
}

// TestConformanceWrapped runs the suite through the retry and logging
// wrappers, as walgo uses the store.
func TestConformanceWrapped(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		log := zaptest.NewLogger(t)
		opts := storage.RetryOptions{Attempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
		return storage.WithLogging(storage.WithRetry(newFile(t), opts, log), log)
	})
}

func TestNewEmptyPath(t *testing.T) {
	if _, err := file.New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}

// files returns every file below dir, relative and slash-separated.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestKeysCannotLeaveRoot(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "repo")
	s, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{
		"../escape", "a/../../escape", "..", "/etc/passwd", "/" + filepath.ToSlash(filepath.Join(base, "abs")),
		`a\..\..\escape`, ".walgo-tmp-x", "a/.walgo-tmp-x",
	} {
		err := s.Put(ctx, key, strings.NewReader("x"))
		if !errors.Is(err, storage.ErrPermanent) {
			t.Errorf("put %q: got %v, want ErrPermanent", key, err)
		}
	}
	if got := files(t, base); len(got) != 0 {
		t.Errorf("files written: %q", got)
	}
}

func TestPutLeavesNoTempFiles(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	s, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "d/ok", strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := s.Put(ctx, "d/failed", io.MultiReader(strings.NewReader("part"), &errReader{boom})); !errors.Is(err, boom) {
		t.Fatalf("failing put: got %v, want %v", err, boom)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Put(cctx, "d/cancelled", strings.NewReader("data")); err == nil {
		t.Fatal("cancelled put succeeded")
	}
	if got := files(t, root); !slices.Equal(got, []string{"d/ok"}) {
		t.Errorf("files after puts = %q, want [d/ok]", got)
	}
}

// TestListHidesStrayTempFiles simulates a crash mid-Put: the temp file
// stays on disk but is never listed or readable as an object.
func TestListHidesStrayTempFiles(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	s, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "w/seg", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "w", ".walgo-tmp-0123-seg2"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := s.List(ctx, "", func(oi storage.ObjectInfo) error {
		got = append(got, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"w/seg"}) {
		t.Errorf("list = %q, want [w/seg]", got)
	}
}

// TestLeftovers: the temp files of unfinished Puts are listed with the
// key they were for, can be removed, and nothing else can be removed as a
// leftover.
func TestLeftovers(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	s, err := file.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "w/seg", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"w/.walgo-tmp-0123456789abcdef-seg2", "b/x/.walgo-tmp-00112233aabbccdd-part_001.tar.zst", ".walgo-tmp-ffeeddccbbaa9988-top"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	list := func(prefix string) []storage.Leftover {
		var got []storage.Leftover
		if err := s.Leftovers(ctx, prefix, func(l storage.Leftover) error {
			got = append(got, l)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	tests := []struct {
		prefix string
		keys   []string
	}{
		{"", []string{".walgo-tmp-ffeeddccbbaa9988-top", "b/x/.walgo-tmp-00112233aabbccdd-part_001.tar.zst", "w/.walgo-tmp-0123456789abcdef-seg2"}},
		{"w/", []string{"w/.walgo-tmp-0123456789abcdef-seg2"}},
		{"b/x/part_", []string{"b/x/.walgo-tmp-00112233aabbccdd-part_001.tar.zst"}},
		{"w/seg3", nil},
	}
	for _, tt := range tests {
		var ids []string
		for _, l := range list(tt.prefix) {
			ids = append(ids, l.ID)
			if !strings.HasSuffix(l.ID, "-"+path.Base(l.Key)) || path.Dir(l.Key) != path.Dir(l.ID) || l.Size != 7 || l.ModTime.IsZero() {
				t.Errorf("leftover %+v: want the key of its Put, 7 bytes, a time", l)
			}
		}
		if !slices.Equal(ids, tt.keys) {
			t.Errorf("leftovers under %q = %q, want %q", tt.prefix, ids, tt.keys)
		}
	}
	if got := list("w/")[0].Key; got != "w/seg2" {
		t.Errorf("key = %q, want w/seg2", got)
	}

	for _, bad := range []string{"w/seg", "../.walgo-tmp-x", "w/../../.walgo-tmp-x", "/etc/.walgo-tmp-x", "w/.walgo-tmp-x/../seg"} {
		err := s.RemoveLeftover(ctx, storage.Leftover{ID: bad})
		if !errors.Is(err, storage.ErrPermanent) {
			t.Errorf("RemoveLeftover(%q) = %v, want a refusal", bad, err)
		}
	}
	if _, err := s.Stat(ctx, "w/seg"); err != nil {
		t.Fatalf("an object went: %v", err)
	}
	for _, l := range list("") {
		if err := s.RemoveLeftover(ctx, l); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveLeftover(ctx, l); err != nil {
			t.Errorf("removing %s again: %v", l.ID, err)
		}
	}
	if got := list(""); len(got) != 0 {
		t.Errorf("left after removal: %v", got)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }
