package drill

// Fork and Run with a real backup and a real Postgres are tested through
// the walgo binary, run as the postgres OS user (integration/drill_test.go):
// Postgres refuses root, and `go test` runs as root in CI.

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/walgo/walgo/pgserver"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage/file"
)

func TestAmcheckArgs(t *testing.T) {
	tests := []struct {
		name string
		jobs int
		heap bool
		want []string
	}{
		{"defaults", 0, false, []string{"--all", "--install-missing", "--host", "/s", "--port", "5432", "--username", "pg", "--no-password", "--jobs", "1"}},
		{"heapallindexed", 4, true, []string{"--all", "--install-missing", "--host", "/s", "--port", "5432", "--username", "pg", "--no-password", "--jobs", "4", "--heapallindexed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := amcheckArgs("/s", 5432, "pg", tt.jobs, tt.heap); !slices.Equal(got, tt.want) {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestClientEnv(t *testing.T) {
	in := []string{"HOME=/h", "PGHOST=db0", "PGSERVICE=prod", "WALGO_STORAGE=s3://b", "PATH=/bin", "PGDATABASE=x"}
	want := []string{"HOME=/h", "WALGO_STORAGE=s3://b", "PATH=/bin"}
	if got := clientEnv(in); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		max    int
		want   string
	}{
		{"fits", []string{"a\n", "b\n"}, 10, "a\nb"},
		{"keeps the end", []string{"0123456789", "abcdef"}, 8, "...\n89abcdef"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &tailBuffer{max: tt.max}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("write: %d, %v", n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestForkRefusals: refusals come before any download and leave the work
// folder as it was.
func TestForkRefusals(t *testing.T) {
	store, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	asRoot := os.Geteuid() == 0
	tests := []struct {
		name    string
		opts    Options
		wantErr error
	}{
		{"no restore_command", Options{}, restore.ErrInvalid},
		{"no backups", Options{RestoreCommand: "walgo wal-fetch %f %p"}, nil}, // storage.ErrNotFound unless root
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := t.TempDir()
			tt.opts.WorkDir = work
			inst, err := Fork(context.Background(), store, tt.opts)
			if inst != nil || err == nil {
				t.Fatalf("Fork: %v, %v; want an error", inst, err)
			}
			switch {
			case asRoot:
				if !errors.Is(err, pgserver.ErrRoot) {
					t.Errorf("as root: %v; want pgserver.ErrRoot", err)
				}
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("%v; want %v", err, tt.wantErr)
			case tt.wantErr == nil && !strings.Contains(err.Error(), "no backups"):
				t.Errorf("%v; want no backups", err)
			}
			rep, err := Run(context.Background(), store, tt.opts)
			if err == nil || rep == nil || rep.Download != 0 {
				t.Errorf("Run: %+v, %v", rep, err)
			}
			if ents, _ := os.ReadDir(work); len(ents) != 0 {
				t.Errorf("the work folder holds %d entries", len(ents))
			}
		})
	}
}
