package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/walgo/walgo/ratelimit"
	"github.com/walgo/walgo/storage"
)

// capable is a fake with the optional capabilities: a Sweeper and a
// BatchDeleter whose failures the test scripts.
type capable struct {
	fake
	batches   [][]string
	batchErrs []error // error of the n-th DeleteBatch call (nil: success)
	leftovers []storage.Leftover
	listErrs  []error // error after the n-th Leftovers call listed everything
	removed   []string
	mu        sync.Mutex
	lcalls    int
}

func (c *capable) DeleteBatch(ctx context.Context, keys []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.batches)
	c.batches = append(c.batches, slices.Clone(keys))
	if n < len(c.batchErrs) {
		return c.batchErrs[n]
	}
	return nil
}

func (c *capable) Leftovers(ctx context.Context, prefix string, fn func(storage.Leftover) error) error {
	c.mu.Lock()
	n := c.lcalls
	c.lcalls++
	c.mu.Unlock()
	for _, l := range c.leftovers {
		if err := fn(l); err != nil {
			return err
		}
	}
	if n < len(c.listErrs) {
		return c.listErrs[n]
	}
	return nil
}

func (c *capable) RemoveLeftover(ctx context.Context, l storage.Leftover) error {
	c.removed = append(c.removed, l.ID)
	return nil
}

// wrapped is c under every wrapper, as cmd/walgo builds it.
func wrapped(c storage.Store, log *zap.Logger) storage.Store {
	s := storage.WithRateLimit(c, ratelimit.New(1<<30))
	s = storage.WithLogging(s, log)
	s = storage.WithCheckedCreate(s, log)
	return storage.WithRetry(s, fastOpts(), log)
}

func TestAsFindsCapabilityUnderWrappers(t *testing.T) {
	c := &capable{}
	s := wrapped(c, zap.NewNop())
	if bd, ok := storage.As[storage.BatchDeleter](s); !ok || bd != storage.BatchDeleter(c) {
		t.Errorf("As[BatchDeleter] = %v, %v; want the backend", bd, ok)
	}
	if _, ok := storage.As[storage.BatchDeleter](wrapped(&fake{}, zap.NewNop())); ok {
		t.Errorf("As[BatchDeleter] found one in a chain without any")
	}
}

func TestBatchDeleteRetriedAndLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	c := &capable{batchErrs: []error{errTransient, fmt.Errorf("delete batch: %w: 503", storage.ErrUnreachable)}}
	keys := []string{"a", "b", "c"}
	if err := storage.BatchDelete(context.Background(), wrapped(c, zap.New(core)), keys); err != nil {
		t.Fatalf("BatchDelete: %v", err)
	}
	if len(c.batches) != 3 || !slices.Equal(c.batches[2], keys) {
		t.Errorf("batches = %q, want the same three keys tried 3 times", c.batches)
	}
	if n := logs.FilterMessage("storage delete batch").Len(); n != 3 {
		t.Errorf("logging wrapper logged %d batch deletes, want 3 (one per attempt)", n)
	}
	if n := logs.FilterMessage("storage operation failed, retrying").Len(); n != 2 {
		t.Errorf("retry wrapper logged %d retries, want 2", n)
	}
}

func TestBatchDeleteUnsupported(t *testing.T) {
	ctx := context.Background()
	if err := storage.BatchDelete(ctx, wrapped(&fake{}, zap.NewNop()), []string{"a"}); !errors.Is(err, storage.ErrUnsupported) {
		t.Errorf("no BatchDeleter: got %v, want ErrUnsupported", err)
	}
	c := &capable{batchErrs: []error{fmt.Errorf("delete batch: %w: NotImplemented", storage.ErrUnsupported)}}
	if err := storage.BatchDelete(ctx, wrapped(c, zap.NewNop()), []string{"a"}); !errors.Is(err, storage.ErrUnsupported) {
		t.Errorf("refused by the server: got %v, want ErrUnsupported", err)
	}
	if len(c.batches) != 1 {
		t.Errorf("a refusal was tried %d times, want once", len(c.batches))
	}
	if err := storage.BatchDelete(ctx, c, make([]string, storage.MaxBatchDelete+1)); !errors.Is(err, storage.ErrPermanent) {
		t.Errorf("%d keys: got %v, want ErrPermanent", storage.MaxBatchDelete+1, err)
	}
}

func TestLeftoversRetriedWithoutRepeats(t *testing.T) {
	c := &capable{
		leftovers: []storage.Leftover{{Key: "a", ID: "1"}, {Key: "b", ID: "2"}},
		listErrs:  []error{errTransient},
	}
	var seen []string
	err := storage.LeftoversOf(context.Background(), wrapped(c, zap.NewNop()), "", func(l storage.Leftover) error {
		seen = append(seen, l.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("LeftoversOf: %v", err)
	}
	if !slices.Equal(seen, []string{"1", "2"}) || c.lcalls != 2 {
		t.Errorf("fn saw %q over %d listings, want [1 2] over 2", seen, c.lcalls)
	}
	stop := errors.New("caller stops")
	c.lcalls = 0
	err = storage.LeftoversOf(context.Background(), wrapped(c, zap.NewNop()), "", func(storage.Leftover) error { return stop })
	if err != stop || c.lcalls != 1 {
		t.Errorf("callback error: got %v after %d listings, want it as is after 1", err, c.lcalls)
	}
	if err := storage.RemoveLeftover(context.Background(), wrapped(c, zap.NewNop()), storage.Leftover{ID: "1"}); err != nil || !slices.Equal(c.removed, []string{"1"}) {
		t.Errorf("RemoveLeftover: %v, removed %q", err, c.removed)
	}
}

// TestCheckedCreate: on a server known to ignore conditional writes, a
// Create of a taken key fails with ErrExists without writing.
func TestCheckedCreate(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	f := &fake{stat: func(_ context.Context, _ int, key string) (storage.ObjectInfo, error) {
		if key == "taken" {
			return storage.ObjectInfo{Key: key}, nil
		}
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}}
	s := storage.WithCheckedCreate(f, zap.New(core))
	ctx := context.Background()
	if err := s.Create(ctx, "taken", bytes.NewReader([]byte("x")), nil); !errors.Is(err, storage.ErrExists) {
		t.Errorf("create of a taken key: got %v, want ErrExists", err)
	}
	if err := s.Create(ctx, "free", bytes.NewReader([]byte("x")), nil); err != nil {
		t.Errorf("create of a free key: %v", err)
	}
	if f.n("create") != 1 || f.n("stat") != 2 {
		t.Errorf("calls: %d create, %d stat; want 1 and 2", f.n("create"), f.n("stat"))
	}
	if logs.Len() != 1 {
		t.Errorf("%d warnings, want one, the first time", logs.Len())
	}
}

// TestCheckedPut: on a server that refuses conditional writes, a Create
// of a free key is a Put (no condition, no metadata), of a taken key
// ErrExists.
func TestCheckedPut(t *testing.T) {
	f := &fake{stat: func(_ context.Context, _ int, key string) (storage.ObjectInfo, error) {
		if key == "taken" {
			return storage.ObjectInfo{Key: key}, nil
		}
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}}
	s := storage.WithCheckedPut(f, nil)
	ctx := context.Background()
	if err := s.Create(ctx, "taken", bytes.NewReader([]byte("x")), nil); !errors.Is(err, storage.ErrExists) {
		t.Errorf("create of a taken key: got %v, want ErrExists", err)
	}
	if err := s.Create(ctx, "free", bytes.NewReader([]byte("x")), storage.Metadata{"a": "b"}); err != nil {
		t.Errorf("create of a free key: %v", err)
	}
	if f.n("create") != 0 || f.n("put") != 1 || f.n("stat") != 2 {
		t.Errorf("calls: %d create, %d put, %d stat; want 0, 1 and 2", f.n("create"), f.n("put"), f.n("stat"))
	}
}

// TestRateLimitEveryUpload: Put and Create bodies pass through the
// limiter, Get bodies do not. At 1 byte/s, 100 bytes cannot pass before a
// short deadline; without the limiter they would at once.
func TestRateLimitEveryUpload(t *testing.T) {
	for _, op := range []string{"put", "create"} {
		t.Run(op, func(t *testing.T) {
			s := storage.WithRateLimit(&fake{}, ratelimit.New(1))
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			body := bytes.NewReader(make([]byte, 100))
			var err error
			if op == "put" {
				err = s.Put(ctx, "k", body)
			} else {
				err = s.Create(ctx, "k", body, nil)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s of 100 bytes at 1 B/s: got %v, want the deadline", op, err)
			}
		})
	}
	if s := storage.WithRateLimit(&fake{}, nil); s == nil {
		t.Fatal("nil limiter")
	} else if _, ok := s.(*fake); !ok {
		t.Errorf("no limit should return the store itself, got %T", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc, err := storage.WithRateLimit(&fake{}, ratelimit.New(1)).Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || string(b) != "data" {
		t.Errorf("get at 1 B/s: %q, %v; want it unlimited", b, err)
	}
}
