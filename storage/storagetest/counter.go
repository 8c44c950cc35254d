package storagetest

import (
	"context"
	"io"
	"maps"
	"sync"

	"github.com/walgo/walgo/storage"
)

// Counter counts the calls made to the store it wraps, by operation:
// "put", "create", "get", "stat", "list", "delete", and the optional
// capabilities' ("delete batch", "leftovers", ...), for tests that assert
// how many requests an operation costs.
type Counter struct {
	storage.Store

	mu     sync.Mutex
	counts map[string]int
}

var _ storage.Interceptor = (*Counter)(nil)

func (c *Counter) add(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[op]++
}

// Counts returns the calls so far, by operation.
func (c *Counter) Counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

// Reset forgets the calls so far.
func (c *Counter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = nil
}

// Writes is the number of Put and Create calls.
func (c *Counter) Writes() int {
	n := c.Counts()
	return n["put"] + n["create"]
}

// Reads is the number of Get, Stat and List calls.
func (c *Counter) Reads() int {
	n := c.Counts()
	return n["get"] + n["stat"] + n["list"]
}

func (c *Counter) Unwrap() storage.Store { return c.Store }

func (c *Counter) Intercept(ctx context.Context, op, key string, call func(context.Context) error) error {
	c.add(op)
	return call(ctx)
}

func (c *Counter) Put(ctx context.Context, key string, r io.Reader) error {
	c.add("put")
	return c.Store.Put(ctx, key, r)
}

func (c *Counter) Create(ctx context.Context, key string, r io.Reader, meta storage.Metadata) error {
	c.add("create")
	return c.Store.Create(ctx, key, r, meta)
}

func (c *Counter) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.add("get")
	return c.Store.Get(ctx, key)
}

func (c *Counter) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	c.add("stat")
	return c.Store.Stat(ctx, key)
}

func (c *Counter) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	c.add("list")
	return c.Store.List(ctx, prefix, fn)
}

func (c *Counter) Delete(ctx context.Context, key string) error {
	c.add("delete")
	return c.Store.Delete(ctx, key)
}
