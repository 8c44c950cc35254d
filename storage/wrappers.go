package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"go.uber.org/zap"

	"github.com/walgo/walgo/ratelimit"
)

// WithRateLimit wraps s so that the bodies of Put and Create pass through
// l: every upload of every command shares one byte budget. A nil l (no
// limit) returns s. Put it below WithRetry, so that a retried attempt is
// limited like the first and the retry wrapper still sees the caller's
// rewindable body.
func WithRateLimit(s Store, l *ratelimit.Limiter) Store {
	if l == nil {
		return s
	}
	return &limitStore{Store: s, l: l}
}

type limitStore struct {
	Store
	l *ratelimit.Limiter
}

// Unwrap returns the wrapped store.
func (s *limitStore) Unwrap() Store { return s.Store }

// Put sends the body at the limiter's rate.
func (s *limitStore) Put(ctx context.Context, key string, r io.Reader) error {
	return s.Store.Put(ctx, key, s.l.Reader(ctx, r))
}

// Create sends the body at the limiter's rate.
func (s *limitStore) Create(ctx context.Context, key string, r io.Reader, meta Metadata) error {
	return s.Store.Create(ctx, key, s.l.Reader(ctx, r), meta)
}

// WithCheckedCreate wraps a store whose server ignores the If-None-Match
// condition (found when the repository was created): Create first checks
// with a Stat that the key is free. Two Creates racing for one key may
// then both succeed, the later one replacing the earlier: the warning,
// logged once, says so.
func WithCheckedCreate(s Store, log *zap.Logger) Store {
	return newChecked(s, log, false)
}

// WithCheckedPut is WithCheckedCreate for a server that refuses the
// condition outright (a create-only write fails with ErrUnsupported):
// after the Stat, Create writes with Put, so its metadata is not stored
// and readers compare by content instead.
func WithCheckedPut(s Store, log *zap.Logger) Store {
	return newChecked(s, log, true)
}

func newChecked(s Store, log *zap.Logger, put bool) Store {
	if log == nil {
		log = zap.NewNop()
	}
	return &checkedStore{Store: s, log: log, put: put}
}

type checkedStore struct {
	Store
	log  *zap.Logger
	put  bool // Put instead of Create
	once sync.Once
}

// Unwrap returns the wrapped store.
func (s *checkedStore) Unwrap() Store { return s.Store }

// Create fails with ErrExists if Stat finds the key, and writes otherwise.
func (s *checkedStore) Create(ctx context.Context, key string, r io.Reader, meta Metadata) error {
	s.once.Do(func() {
		what := "ignores"
		if s.put {
			what = "refuses"
		}
		s.log.Warn("this storage server "+what+" conditional writes (If-None-Match): checking before each write instead, so two writers racing for one name can still replace each other",
			zap.String("store", s.String()))
	})
	_, err := s.Store.Stat(ctx, key)
	switch {
	case err == nil:
		return fmt.Errorf("create %s: %w", key, ErrExists)
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("create %s: check: %w", key, err)
	}
	if s.put {
		return s.Store.Put(ctx, key, r)
	}
	return s.Store.Create(ctx, key, r, meta)
}
