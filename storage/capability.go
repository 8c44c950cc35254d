package storage

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Optional capabilities. A backend offers one by implementing its
// interface; wrappers (retries, logging, rate limiting) implement only
// Store and Unwrap, and callers reach a capability through the functions
// below (LeftoversOf, RemoveLeftover, BatchDelete), which find it under the
// wrappers and still run each call through every wrapper that is an
// Interceptor: a batch delete is retried and logged like a Delete.

// Wrapper is a Store that adds behaviour around another.
type Wrapper interface {
	Store
	// Unwrap returns the store this one wraps.
	Unwrap() Store
}

// Interceptor is a Wrapper that runs the calls of optional capabilities of
// the stores below it the way it runs its own methods.
type Interceptor interface {
	Wrapper
	// Intercept runs call, one call of an optional capability (op names
	// it, key is its key or prefix), with the wrapper's behaviour around
	// it. call may run more than once (retries) and must be safe to repeat.
	// An error wrapping a CallerError is the caller's own and is returned
	// at once.
	Intercept(ctx context.Context, op, key string, call func(ctx context.Context) error) error
}

// CallerError marks an error of the caller's own callback (a listing's fn),
// so that no wrapper retries the call it broke off.
type CallerError struct{ Err error }

func (e CallerError) Error() string { return e.Err.Error() }
func (e CallerError) Unwrap() error { return e.Err }

// As returns the first store in s's chain (s, then what each Unwrap
// returns) that implements T.
func As[T any](s Store) (T, bool) {
	for s != nil {
		if t, ok := s.(T); ok {
			return t, true
		}
		w, ok := s.(Wrapper)
		if !ok {
			break
		}
		s = w.Unwrap()
	}
	var zero T
	return zero, false
}

// via runs call on the first store in s's chain that implements T, through
// the Interceptors above it (the outermost first). ok is false, and call
// does not run, when no store implements T.
func via[T any](ctx context.Context, s Store, op, key string, call func(ctx context.Context, t T) error) (err error, ok bool) {
	var around []Interceptor
	for s != nil {
		if t, ok := s.(T); ok {
			run := func(ctx context.Context) error { return call(ctx, t) }
			for i := len(around) - 1; i >= 0; i-- {
				ic, inner := around[i], run
				run = func(ctx context.Context) error { return ic.Intercept(ctx, op, key, inner) }
			}
			return run(ctx), true
		}
		if ic, ok := s.(Interceptor); ok {
			around = append(around, ic)
		}
		w, ok := s.(Wrapper)
		if !ok {
			break
		}
		s = w.Unwrap()
	}
	return nil, false
}

// Leftover is what an interrupted Put can leave behind where List does not
// show it: a file backend's temp file, an S3 multipart upload that was
// never completed or aborted (its parts are stored, and billed).
type Leftover struct {
	Key     string    // the key the Put was writing
	ID      string    // what names it to the backend: a temp file, an upload ID
	Size    int64     // bytes it holds, if known
	ModTime time.Time // its last write (temp file) or start (upload)
}

// Sweeper is implemented by stores whose interrupted Puts can leave
// Leftovers behind, so that delete garbage can remove them.
type Sweeper interface {
	// Leftovers calls fn for every leftover whose key starts with prefix.
	// A Put still running shows too: judge by ModTime.
	Leftovers(ctx context.Context, prefix string, fn func(Leftover) error) error
	// RemoveLeftover removes one; one already gone is not an error.
	RemoveLeftover(ctx context.Context, l Leftover) error
}

// LeftoversOf lists s's leftovers under prefix; a store with no Sweeper in
// its chain has none. A listing retried by a wrapper calls fn once per
// leftover.
func LeftoversOf(ctx context.Context, s Store, prefix string, fn func(Leftover) error) error {
	seen := map[string]bool{}
	err, _ := via(ctx, s, "leftovers", prefix, func(ctx context.Context, sw Sweeper) error {
		return sw.Leftovers(ctx, prefix, func(l Leftover) error {
			if seen[l.ID] {
				return nil
			}
			if err := fn(l); err != nil {
				return CallerError{err}
			}
			seen[l.ID] = true
			return nil
		})
	})
	var ce CallerError
	if errors.As(err, &ce) {
		return ce.Err
	}
	return err
}

// RemoveLeftover removes l from s, if s has a Sweeper in its chain.
func RemoveLeftover(ctx context.Context, s Store, l Leftover) error {
	err, _ := via(ctx, s, "remove leftover", l.Key, func(ctx context.Context, sw Sweeper) error {
		return sw.RemoveLeftover(ctx, l)
	})
	return err
}

// MaxBatchDelete is the most keys one BatchDeleter call takes (S3's
// DeleteObjects limit).
const MaxBatchDelete = 1000

// BatchDeleter is implemented by stores that delete many keys in one
// request.
type BatchDeleter interface {
	// DeleteBatch removes the objects under keys (at most MaxBatchDelete).
	// A missing key is not an error. On failure any subset of the keys may
	// be gone, and calling again is safe. A server that refuses batch
	// deletes gives an error wrapping ErrUnsupported, having deleted
	// nothing: delete one key at a time instead.
	DeleteBatch(ctx context.Context, keys []string) error
}

// BatchDelete removes keys (at most MaxBatchDelete) from s in one call of
// the BatchDeleter in s's chain. Without one, or when the server refuses,
// it returns an error wrapping ErrUnsupported and deletes nothing.
func BatchDelete(ctx context.Context, s Store, keys []string) error {
	if len(keys) > MaxBatchDelete {
		return fmt.Errorf("%w: batch of %d keys, at most %d", ErrPermanent, len(keys), MaxBatchDelete)
	}
	if len(keys) == 0 {
		return nil
	}
	err, ok := via(ctx, s, "delete batch", keys[0], func(ctx context.Context, bd BatchDeleter) error {
		return bd.DeleteBatch(ctx, keys)
	})
	if !ok {
		return fmt.Errorf("batch delete: %w", ErrUnsupported)
	}
	return err
}
