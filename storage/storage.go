// Package storage is walgo's view of object storage: one small Store
// interface, backends that translate it to a service's API (file, s3), and
// wrappers that add retries, timeouts and logging around any Store.
// It knows nothing of WAL or backups: keys are opaque slash-separated paths.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// Sentinel errors. Backends wrap them so callers can test with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrUnreachable: the store could not be reached or kept failing after
	// retries (network, timeouts, 5xx).
	ErrUnreachable = errors.New("storage unreachable")
	// ErrPermanent marks a failure that retrying cannot fix (access denied,
	// bad bucket, invalid key).
	ErrPermanent = errors.New("storage refused the request")
	// ErrFull: the repository has no room left (a full disk or quota on
	// the file backend, a full server or a bucket quota on S3). Not retried:
	// someone must make room.
	ErrFull = errors.New("storage full")
)

// MarkFull wraps err in ErrFull when the operating system said the disk or
// the user's quota is full (ENOSPC, EDQUOT), for backends that write files.
func MarkFull(err error) error {
	if err == nil || errors.Is(err, ErrFull) || !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrFull, err)
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store is an object store holding immutable blobs under slash-separated
// keys. Every method takes ctx first and honours its cancellation and
// deadline.
type Store interface {
	// Put stores everything r yields under key, replacing any object there.
	// The write is atomic: readers see the old object or the whole new one,
	// never a part, and a crash or a failed Put leaves no partial object
	// under key. Put returns only once the object is durable.
	Put(ctx context.Context, key string, r io.Reader) error

	// Get opens the object for reading. It returns an error wrapping
	// ErrNotFound if there is no such key. The caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, error)

	// Stat returns the object's size and time, or ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Delete removes the object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// String names the store for logs and messages (no secrets).
	String() string
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

// LeftoversOf lists s's leftovers under prefix; a store that is no
// Sweeper has none.
func LeftoversOf(ctx context.Context, s Store, prefix string, fn func(Leftover) error) error {
	if sw, ok := s.(Sweeper); ok {
		return sw.Leftovers(ctx, prefix, fn)
	}
	return nil
}

// RemoveLeftover removes l from s, if s is a Sweeper.
func RemoveLeftover(ctx context.Context, s Store, l Leftover) error {
	if sw, ok := s.(Sweeper); ok {
		return sw.RemoveLeftover(ctx, l)
	}
	return nil
}

// Rewinder is implemented by Put bodies that can start over from their first
// byte. The retry wrapper retries a failed Put only when its body is a
// Rewinder or an io.Seeker; any other body is sent once.
type Rewinder interface {
	Rewind() error
}

// BodyReader wraps a Put body and remembers the first error (other than
// EOF) of the caller's own reader, so a backend or wrapper can tell a
// failing producer from a failing store: the first is not worth a retry.
type BodyReader struct {
	R   io.Reader
	mu  sync.Mutex
	err error
}

func (b *BodyReader) Read(p []byte) (int, error) {
	n, err := b.R.Read(p)
	if err != nil && err != io.EOF {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// Err is the first error the wrapped reader returned, or nil.
func (b *BodyReader) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
