package catalog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/storagetest"
)

func newFileStore(t *testing.T) storage.Store {
	t.Helper()
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// overwriting is a server that ignores If-None-Match: Create overwrites.
type overwriting struct{ storage.Store }

func (o overwriting) Create(ctx context.Context, key string, r io.Reader, _ storage.Metadata) error {
	return o.Store.Put(ctx, key, r)
}

// forgetful keeps no metadata.
type forgetful struct{ storage.Store }

func (f forgetful) Create(ctx context.Context, key string, r io.Reader, _ storage.Metadata) error {
	return f.Store.Create(ctx, key, r, nil)
}

// refusing is a server that refuses If-None-Match (501 NotImplemented).
type refusing struct{ storage.Store }

func (r refusing) Create(ctx context.Context, key string, _ io.Reader, _ storage.Metadata) error {
	return fmt.Errorf("create %s: %w", key, storage.ErrUnsupported)
}

func TestInitRepository(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		wrap func(storage.Store) storage.Store
		want catalog.Capabilities
	}{
		{"create-only with metadata", func(s storage.Store) storage.Store { return s }, catalog.Capabilities{CreateOnly: true, Metadata: true}},
		{"ignores the condition", func(s storage.Store) storage.Store { return overwriting{s} }, catalog.Capabilities{Metadata: false}},
		{"keeps no metadata", func(s storage.Store) storage.Store { return forgetful{s} }, catalog.Capabilities{CreateOnly: true}},
		{"refuses the condition", func(s storage.Store) storage.Store { return refusing{s} }, catalog.Capabilities{CreateRefused: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.wrap(newFileStore(t))
			if _, err := catalog.ReadRepository(ctx, s); !errors.Is(err, catalog.ErrNoRepository) {
				t.Fatalf("read before init: got %v, want ErrNoRepository", err)
			}
			r, err := catalog.InitRepository(ctx, s, "v-test", now)
			if err != nil {
				t.Fatalf("init: %v", err)
			}
			if len(r.ID) != 32 || r.Format != catalog.RepositoryFormat || !r.Created.Equal(now) || r.WalgoVersion != "v-test" || r.Storage != tc.want {
				t.Errorf("init = %+v, want a 32-hex id, format %d, %s, capabilities %+v", r, catalog.RepositoryFormat, now, tc.want)
			}
			got, err := catalog.ReadRepository(ctx, s)
			if err != nil || got != r {
				t.Errorf("read = %+v, %v; want %+v", got, err, r)
			}
			again, err := catalog.InitRepository(ctx, s, "v-test", now.Add(time.Hour))
			if !errors.Is(err, catalog.ErrRepositoryExists) || again.ID != r.ID {
				t.Errorf("second init = %+v, %v; want the first one and ErrRepositoryExists", again, err)
			}
			var left []string
			if err := s.List(ctx, "", func(oi storage.ObjectInfo) error { left = append(left, oi.Key); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(left) != 1 || left[0] != catalog.RepositoryKey {
				t.Errorf("repository holds %q, want only %s (no probe left)", left, catalog.RepositoryKey)
			}
			// A server found to ignore the condition is used through a
			// check before each create.
			st := r.Store(s, nil)
			if err := st.Create(ctx, catalog.RepositoryKey, strings.NewReader("{}"), nil); !errors.Is(err, storage.ErrExists) {
				t.Errorf("create over the repository object through Store: got %v, want ErrExists", err)
			}
		})
	}
}

// TestInitRepositoryRace: inits racing on one empty storage agree on one
// repository.
func TestInitRepositoryRace(t *testing.T) {
	s := newFileStore(t)
	const n = 6
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := catalog.InitRepository(context.Background(), s, "v", time.Now())
			ids[i], errs[i] = r.ID, err
		})
	}
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] == nil {
			created++
		} else if !errors.Is(errs[i], catalog.ErrRepositoryExists) {
			t.Errorf("init %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("init %d got id %s, init 0 got %s", i, ids[i], ids[0])
		}
	}
	if created != 1 {
		t.Errorf("%d inits created a repository, want 1", created)
	}
}

func TestReadRepositoryRefuses(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, body, want string
	}{
		{"damaged", `{"id": "ab`, "not a walgo repository description"},
		{"no id", `{"format": 1}`, "no id or format"},
		{"newer", `{"id": "ab", "format": 99, "walgo_version": "v9"}`, "format 99, made by walgo v9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newFileStore(t)
			if err := s.Put(ctx, catalog.RepositoryKey, bytes.NewReader([]byte(tc.body))); err != nil {
				t.Fatal(err)
			}
			_, err := catalog.ReadRepository(ctx, s)
			if !errors.Is(err, storage.ErrPermanent) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrPermanent saying %q", err, tc.want)
			}
			if _, err := catalog.InitRepository(ctx, s, "v", time.Now()); err == nil || errors.Is(err, catalog.ErrRepositoryExists) {
				t.Errorf("init over it: got %v, want the read error", err)
			}
		})
	}
}

// TestRepositoryCache: the hooks' copy of the description saves the read
// for RepositoryCacheTTL, per store; fresh always reads.
func TestRepositoryCache(t *testing.T) {
	ctx := context.Background()
	fs := newFileStore(t)
	r, err := catalog.InitRepository(ctx, fs, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &storagetest.Counter{Store: fs}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cache := catalog.RepositoryCache{Path: filepath.Join(t.TempDir(), "walgo", "repository"), Now: func() time.Time { return now }}
	steps := []struct {
		name  string
		store storage.Store
		fresh bool
		after time.Duration
		reads int
	}{
		{"first", c, false, 0, 1},
		{"cached", c, false, time.Minute, 0},
		{"fresh", c, true, 0, 1},
		{"still cached", c, false, catalog.RepositoryCacheTTL - time.Second, 0},
		{"expired", c, false, catalog.RepositoryCacheTTL, 1},
		{"clock went back", c, false, -time.Hour, 1},
		{"another store", &storagetest.Counter{Store: newFileStore(t)}, false, 0, -1},
	}
	for _, st := range steps {
		now = now.Add(st.after)
		c.Reset()
		got, err := cache.Read(ctx, st.store, st.fresh, nil)
		if st.reads < 0 {
			if !errors.Is(err, catalog.ErrNoRepository) {
				t.Errorf("%s: got %+v, %v; want the other store read (it has no repository)", st.name, got, err)
			}
			continue
		}
		if err != nil || got.ID != r.ID {
			t.Fatalf("%s: %+v, %v", st.name, got, err)
		}
		if n := c.Reads(); n != st.reads {
			t.Errorf("%s: %d reads, want %d", st.name, n, st.reads)
		}
	}
}
