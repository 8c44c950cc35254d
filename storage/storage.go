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
	// ErrExists: Create found an object under its key and wrote nothing.
	ErrExists = errors.New("object already exists")
	// ErrUnsupported: the store (or the server behind it) does not offer an
	// optional operation; the caller does without it.
	ErrUnsupported = errors.New("not supported by this storage")
)

// MarkFull wraps err in ErrFull when the operating system said the disk or
// the user's quota is full (ENOSPC, EDQUOT), for backends that write files.
func MarkFull(err error) error {
	if err == nil || errors.Is(err, ErrFull) || !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrFull, err)
}

// Metadata is a few short strings stored with an object when Create writes
// it, and returned by Stat: S3 user metadata, extended attributes on the
// file backend. Names are lowercase ASCII letters, digits and '-' (S3
// lowercases them anyway); values are printable ASCII. At most MaxMetadata
// bytes of names and values in all.
type Metadata map[string]string

// MaxMetadata bounds the total size of an object's Metadata (S3 allows 2 KiB
// of user metadata, ext4 one 4 KiB block of extended attributes).
const MaxMetadata = 1024

// Check reports metadata a backend must refuse, wrapping ErrPermanent.
func (m Metadata) Check() error {
	total := 0
	for k, v := range m {
		total += len(k) + len(v)
		if k == "" {
			return fmt.Errorf("%w: empty metadata name", ErrPermanent)
		}
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w: metadata name %q: want lowercase letters, digits and '-'", ErrPermanent, k)
			}
		}
		for _, c := range v {
			if c < ' ' || c > '~' {
				return fmt.Errorf("%w: metadata %s: value is not printable ASCII", ErrPermanent, k)
			}
		}
	}
	if total > MaxMetadata {
		return fmt.Errorf("%w: metadata of %d bytes, at most %d", ErrPermanent, total, MaxMetadata)
	}
	return nil
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	// Metadata is what Create stored with the object. Stat fills it in
	// (nil when there is none: an object written by Put, by an older
	// walgo, by another tool); List leaves it nil.
	Metadata Metadata
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

	// Create stores everything r yields under key, with meta (may be nil),
	// only if no object is there: the one way to write a key that must
	// never be overwritten (WAL, locks, sentinels). It is atomic and
	// durable as Put. If an object exists under key, Create returns an
	// error wrapping ErrExists and leaves that object untouched; r may have
	// been read in part or not at all. Of two Creates of one key at the same
	// time exactly one succeeds, the other gets ErrExists. A retried Create
	// whose earlier attempt went through also gets ErrExists: callers that
	// retry compare what is stored (Stat's Metadata) with what they meant to
	// write. Bad metadata (see Metadata) fails with ErrPermanent.
	//
	// S3 servers that ignore the If-None-Match condition overwrite instead;
	// see WithCheckedCreate for the fallback once that is known.
	Create(ctx context.Context, key string, r io.Reader, meta Metadata) error

	// Get opens the object for reading. It returns an error wrapping
	// ErrNotFound if there is no such key. The caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, error)

	// Stat returns the object's size, time and metadata, or ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Delete removes the object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// String names the store for logs and messages (no secrets).
	String() string
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
