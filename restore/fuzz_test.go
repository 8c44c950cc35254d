package restore_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/restore"
)

// tarOf builds a tar from entries: "name" (folder if it ends in "/"),
// "name=content" (file), "name->target" (symlink), "name=>target" (hard
// link, which restores refuse).
func tarOf(entries ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	for _, e := range entries {
		h := &tar.Header{Mode: 0o600, ModTime: mt, Format: tar.FormatPAX}
		var body string
		switch {
		case strings.Contains(e, "=>"):
			h.Name, h.Linkname, _ = strings.Cut(e, "=>")
			h.Typeflag = tar.TypeLink
		case strings.Contains(e, "->"):
			h.Name, h.Linkname, _ = strings.Cut(e, "->")
			h.Typeflag = tar.TypeSymlink
			h.Mode = 0o777
		case strings.Contains(e, "="):
			h.Name, body, _ = strings.Cut(e, "=")
			h.Typeflag, h.Size = tar.TypeReg, int64(len(body))
		case strings.HasSuffix(e, "/"):
			h.Name, h.Typeflag, h.Mode = e, tar.TypeDir, 0o700
		default:
			h.Name, h.Typeflag = e, tar.TypeReg
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

// node is what the fuzz target remembers of one path outside the restore
// folder.
type node struct {
	mode fs.FileMode
	size int64
	link string
	sum  [32]byte
}

// snapshot records everything under root except skip (and below it).
func snapshot(t *testing.T, root, skip string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return fs.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{mode: fi.Mode(), size: fi.Size()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			n.size = 0
			n.link, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.sum = sha256.Sum256(b)
		case fi.IsDir():
			n.size = 0
		}
		out[p] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzExtract: whatever the tar bytes of a full backup and of a delta on
// it, restoring them writes nothing outside the restore folder: every file,
// folder and link around it is still there, unchanged, nothing new has
// appeared, and the restore folder is still a folder. (Links inside the
// folder may point anywhere: a data directory can hold links to elsewhere,
// and restoring never follows them.)
func FuzzExtract(f *testing.F) {
	f.Add(tarOf("PG_VERSION=17\n", "base/", "base/1/", "base/1/1234=data", "global/", "global/pg_control=ctl"), []byte{})
	f.Add(tarOf("PG_VERSION=17\n", "../escaped=x"), []byte{})
	f.Add(tarOf("/etc/evil=x"), []byte{})
	f.Add(tarOf("a/../../escaped=x"), []byte{})
	f.Add(tarOf("link->..", "link/escaped=x"), []byte{})
	f.Add(tarOf("link->/tmp", "link/escaped=x"), []byte{})
	f.Add(tarOf("link->../outside.txt", "link=overwrite"), []byte{})
	f.Add(tarOf("d/", "d/link->../../sibling", "d/link/f=x"), []byte{})
	f.Add(tarOf("hard=>../outside.txt"), []byte{})
	f.Add(tarOf("postgresql.auto.conf->../outside.txt"), []byte{})
	f.Add(tarOf("backup_label->../outside.txt"), []byte{})
	f.Add(tarOf("recovery.signal->../outside.txt", "standby.signal->../sibling/f"), []byte{})
	f.Add(tarOf("global/", "global/pg_control.walgo-restore=x"), []byte{})
	f.Add(tarOf("global->../sibling", "global/pg_control=x"), []byte{})
	f.Add(tarOf("pg_wal->../sibling", "dir/"), []byte{})
	f.Add(tarOf("f=x", "f=y"), []byte{})
	f.Add(tarOf("./", "./x=1", "x/"), []byte{})
	// Deltas: a file replaced by a link out, a folder by a link, pages.
	f.Add(tarOf("base/", "base/f="+strings.Repeat("a", 8192)), tarOf("base->../sibling"))
	f.Add(tarOf("base/", "base/f="+strings.Repeat("a", 8192)), tarOf("base/f->../../outside.txt"))
	f.Add(tarOf("base/", "base/f="+strings.Repeat("a", 8192)), tarOf("base/f="+strings.Repeat("b", 8192)))
	f.Add(tarOf("f=x", "d/"), tarOf("d->..", "d/escaped=x"))
	f.Add(tarOf("pg_tblspc/", "pg_tblspc/16384->/tmp"), tarOf("pg_tblspc/16384/PG_17/x=1"))
	f.Add([]byte("not a tar"), []byte{})
	f.Fuzz(func(t *testing.T, full, delta []byte) {
		if len(full)+len(delta) > 1<<20 {
			return
		}
		base := t.TempDir()
		root := filepath.Join(base, "root")
		dir := filepath.Join(root, "dir")
		for _, d := range []string{dir, filepath.Join(root, "sibling")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for p, content := range map[string]string{
			filepath.Join(root, "outside.txt"):        "outside",
			filepath.Join(root, "sibling", "f"):       "sibling",
			filepath.Join(base, "next-to-root.txt"):   "next",
			filepath.Join(root, "sibling", "escaped"): "already here",
		} {
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("sibling", filepath.Join(root, "link")); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, base, dir)

		tars := [][]byte{full}
		if len(delta) > 0 {
			tars = append(tars, delta)
		}
		// A hang is a finding too: the fuzzer cannot see one by itself.
		var err error
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			err = restore.ExtractChainForTest(context.Background(), dir, tars...)
		}()
		select {
		case <-finished:
		case <-time.After(20 * time.Second):
			buf := make([]byte, 1<<20)
			panic("restore hangs:\n" + string(buf[:runtime.Stack(buf, true)]))
		}
		t.Logf("restore: %v", err)

		after := snapshot(t, base, dir)
		for p, n := range before {
			if a, ok := after[p]; !ok {
				t.Errorf("%s, outside the restore folder, was removed (restore error: %v)", p, err)
			} else if a != n {
				t.Errorf("%s, outside the restore folder, changed: %+v -> %+v (restore error: %v)", p, n, a, err)
			}
		}
		for p := range after {
			if _, ok := before[p]; !ok {
				t.Errorf("%s appeared outside the restore folder (restore error: %v)", p, err)
			}
		}
		if fi, lerr := os.Lstat(dir); lerr != nil || !fi.IsDir() {
			t.Errorf("the restore folder is no longer a folder: %v %v", fi, lerr)
		}
		if t.Failed() {
			t.Logf("full: %s\ndelta: %s", describe(full), describe(delta))
		}
	})
}

// describe lists a tar's entries for a failure message.
func describe(b []byte) string {
	var sb strings.Builder
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			fmt.Fprintf(&sb, "[%v]", err)
			return sb.String()
		}
		fmt.Fprintf(&sb, "%q type %q link %q size %d; ", h.Name, h.Typeflag, h.Linkname, h.Size)
	}
}

// TestExtractChainSeam: the fuzz target's seam really restores: a full
// backup and a delta with a page change, a link and a removed file.
func TestExtractChainSeam(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	full := tarOf("PG_VERSION=17\n", "base/", "base/f="+strings.Repeat("a", 8192), "gone=x", "global/", "global/pg_control=ctl")
	delta := tarOf("base/f="+strings.Repeat("b", 8192), "conf->/etc/elsewhere.conf")
	if err := restore.ExtractChainForTest(context.Background(), dir, full, delta); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"PG_VERSION":        "17\n",
		"base/f":            strings.Repeat("b", 8192),
		"global/pg_control": "ctl",
	} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != want {
			t.Errorf("%s: %.20q, %v; want %.20q", p, b, err, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "conf")); err != nil || l != "/etc/elsewhere.conf" {
		t.Errorf("conf: %q %v", l, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "gone")); err != nil {
		t.Errorf("a file the delta keeps unchanged is gone: %v", err)
	}
	for _, f := range []string{"backup_label", "recovery.signal", "postgresql.auto.conf"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	// A refused chain leaves the folder empty.
	dir2 := filepath.Join(t.TempDir(), "data")
	os.Mkdir(dir2, 0o700)
	if err := restore.ExtractChainForTest(context.Background(), dir2, tarOf("ok=1", "../escaped=x")); err == nil {
		t.Fatal("a tar entry with .. was accepted")
	}
	if ents, _ := os.ReadDir(dir2); len(ents) != 0 {
		t.Errorf("a refused restore left %d entries", len(ents))
	}
}
