package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/storagetest"
)

// TestBackupFetchStartsPartitionsOver: partitions cut off mid-transfer
// are fetched again, whole files and page deltas alike, and the restore
// comes out exact; when the storage keeps failing, the restore fails as
// unreachable storage (not as corrupt data) and leaves nothing behind.
func TestBackupFetchStartsPartitionsOver(t *testing.T) {
	defer func(w time.Duration) { transferRetryWait = w }(transferRetryWait)
	transferRetryWait = time.Millisecond
	ctx := context.Background()
	p := func(seed uint64) []byte { return randBytes(seed, pgdata.PageSize) }
	a0, a1, a1b := p(40), p(41), p(42)
	big := randBytes(43, 1<<20)

	tests := []struct {
		name    string
		cuts    int
		wantErr error
	}{
		{"cut twice", 2, nil},
		{"cut every time", storage.TransferAttempts, storage.ErrUnreachable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := newStore(t)
			full := putBackup(t, base, spec{no: 2, parts: 2, ents: []ent{
				{path: "base/", typ: tar.TypeDir},
				{path: "base/a", body: pages(a0, a1)},
				{path: "base/big", body: big, part: 1},
				{path: "global/", typ: tar.TypeDir},
				{path: "global/pg_control", body: p(44), part: 1},
			}})
			last := putBackup(t, base, spec{no: 4, parent: full, ents: []ent{
				{path: "base/", typ: tar.TypeDir},
				{path: "base/a", body: a1b, final: pages(a0, a1b), delta: "pages", pages: []uint32{1}, noSHA: true},
				{path: "base/big", final: big, delta: "unchanged", noTar: true},
				{path: "global/", typ: tar.TypeDir},
				{path: "global/pg_control", body: p(45)},
			}})
			s := &storagetest.CutStore{Store: base, Cuts: tc.cuts, Match: func(k string) bool { return strings.Contains(k, "/part_") }}
			dir := filepath.Join(t.TempDir(), "data")
			_, err := BackupFetch(ctx, s, opts(dir))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || errors.Is(err, codec.ErrCorrupt) {
					t.Fatalf("err = %v, want %v and not corrupt", err, tc.wantErr)
				}
				if got := tree(t, filepath.Dir(dir)); len(got) != 0 {
					t.Errorf("left behind: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string][]byte{"base/a": pages(a0, a1b), "base/big": big} {
				if got := readFile(t, filepath.Join(dir, name)); !bytes.Equal(got, want) {
					t.Errorf("%s differs after the partitions were fetched again", name)
				}
			}
			for _, sn := range []*catalog.Sentinel{full, last} {
				for _, part := range sn.Parts {
					if got := s.Gets(part.Key); got != tc.cuts+1 {
						t.Errorf("%s fetched %d times, want %d", part.Key, got, tc.cuts+1)
					}
				}
			}
		})
	}
}
