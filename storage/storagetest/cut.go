package storagetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/walgo/walgo/storage"
)

// CutStore cuts the first Cuts transfers of each key Match accepts (every
// key when Match is nil) off halfway, with the error the retry wrapper
// gives for a dropped connection (wrapping storage.ErrUnreachable), so
// tests can check that callers start a transfer over.
type CutStore struct {
	storage.Store
	Cuts  int
	Match func(key string) bool

	mu   sync.Mutex
	gets map[string]int
}

// Unwrap returns the wrapped store, so optional capabilities show through.
func (s *CutStore) Unwrap() storage.Store { return s.Store }

func (s *CutStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, key)
	if err != nil || s.Match != nil && !s.Match(key) {
		return rc, err
	}
	s.mu.Lock()
	if s.gets == nil {
		s.gets = map[string]int{}
	}
	s.gets[key]++
	n := s.gets[key]
	s.mu.Unlock()
	if n > s.Cuts {
		return rc, nil
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	cut := fmt.Errorf("get %s: %w: connection reset by peer", key, storage.ErrUnreachable)
	return io.NopCloser(io.MultiReader(bytes.NewReader(b[:len(b)/2]), errorReader{cut})), nil
}

// Gets is how many times key was opened (keys Match accepts only).
func (s *CutStore) Gets(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[key]
}

type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }
