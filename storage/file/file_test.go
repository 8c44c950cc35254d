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
	"syscall"
	"testing"

	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
)

func newFile(t *testing.T) *file.Store {
	t.Helper()
	s, err := file.Init(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return newFile(t) })
}

// TestConformanceWrapped runs the suite through every wrapper, as walgo
// uses the store.
func TestConformanceWrapped(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return storagetest.Wrap(t, newFile(t)) })
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
	s, err := file.Init(root)
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
	s, err := file.Init(root)
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
	s, err := file.Init(root)
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
	s, err := file.Init(root)
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

// TestConformanceCounted runs the suite through storagetest.Counter, which
// must pass everything on, optional capabilities included.
func TestConformanceCounted(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return &storagetest.Counter{Store: newFile(t)} })
}

// TestModes: objects are 0600 and folders 0700 whatever the umask lets
// through, so unencrypted WAL is readable by the repository's owner only.
func TestModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	root := filepath.Join(t.TempDir(), "repo")
	s, err := file.Init(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "a/b/put", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "a/c/created", strings.NewReader("x"), storage.Metadata{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]fs.FileMode{
		".": fs.ModeDir | 0o700, "a": fs.ModeDir | 0o700, "a/b": fs.ModeDir | 0o700, "a/c": fs.ModeDir | 0o700,
		"a/b/put": 0o600, "a/c/created": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %s, want %s", rel, fi.Mode(), want)
		}
	}
}

// TestFsyncs: every folder a write creates is fsynced in its parent, the
// object's folder after the object is published, and the folder of a
// deleted object after the delete (once per folder for a batch).
func TestFsyncs(t *testing.T) {
	synced := file.RecordSyncs(t)
	root := filepath.Join(t.TempDir(), "repo")
	s, err := file.Init(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	j := func(p ...string) string { return filepath.Join(append([]string{root}, p...)...) }
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"put in new folders", func() error { return s.Put(ctx, "a/b/obj", strings.NewReader("x")) }, []string{j(), j("a"), j("a", "b")}},
		{"create in a new folder", func() error { return s.Create(ctx, "a/c/obj", strings.NewReader("x"), nil) }, []string{j("a"), j("a", "c")}},
		{"put in an existing folder", func() error { return s.Put(ctx, "a/b/obj2", strings.NewReader("x")) }, []string{j("a", "b")}},
		{"delete", func() error { return s.Delete(ctx, "a/b/obj") }, []string{j("a", "b")}},
		{"delete a missing key", func() error { return s.Delete(ctx, "a/b/obj") }, nil},
		{"batch delete", func() error {
			return storage.BatchDelete(ctx, s, []string{"a/b/obj2", "a/c/obj", "a/c/none"})
		}, []string{j("a", "b"), j("a", "c")}},
	}
	before := len(synced())
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		all := synced()
		got := all[before:]
		before = len(all)
		slices.Sort(got)
		if !slices.Equal(got, st.want) {
			t.Errorf("%s: fsynced %q, want %q", st.name, got, st.want)
		}
	}
}

// TestNewRefusesMissingFolder: New never creates its folder (an unmounted
// volume must not become an empty store on the local disk); Init does,
// fsyncing each new folder into its parent.
func TestNewRefusesMissingFolder(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "mnt", "backup")
	if _, err := file.New(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("New of a missing folder: got %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join(base, "mnt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("New created something: %v", err)
	}
	if err := os.WriteFile(filepath.Join(base, "plain"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := file.New(filepath.Join(base, "plain")); err == nil {
		t.Errorf("New of a file succeeded")
	}
	synced := file.RecordSyncs(t)
	if _, err := file.Init(root); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if got, want := synced(), []string{base, filepath.Join(base, "mnt")}; !slices.Equal(got, want) {
		t.Errorf("Init fsynced %q, want %q", got, want)
	}
	if fi, err := os.Stat(root); err != nil || fi.Mode() != fs.ModeDir|0o700 {
		t.Errorf("Init made %v (%v), want a 0700 folder", fi.Mode(), err)
	}
	if _, err := file.New(root); err != nil {
		t.Errorf("New after Init: %v", err)
	}
}
