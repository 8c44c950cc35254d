package file_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
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

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }
