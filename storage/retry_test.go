package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/walgo/walgo/storage"
)

// fake is a Store whose every method is a replaceable function, so each
// test scripts the failures it needs. n is the 1-based number of the call
// to that method. A nil function succeeds.
type fake struct {
	put  func(ctx context.Context, n int, key string, r io.Reader) error
	crt  func(ctx context.Context, n int, key string, r io.Reader, meta storage.Metadata) error
	get  func(ctx context.Context, n int, key string) (io.ReadCloser, error)
	stat func(ctx context.Context, n int, key string) (storage.ObjectInfo, error)
	list func(ctx context.Context, n int, prefix string, fn func(storage.ObjectInfo) error) error
	del  func(ctx context.Context, n int, key string) error

	mu    sync.Mutex
	calls map[string]int
}

func (f *fake) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[op]++
	return f.calls[op]
}

func (f *fake) n(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fake) Put(ctx context.Context, key string, r io.Reader) error {
	n := f.count("put")
	if f.put == nil {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	return f.put(ctx, n, key, r)
}

func (f *fake) Create(ctx context.Context, key string, r io.Reader, meta storage.Metadata) error {
	n := f.count("create")
	if f.crt == nil {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	return f.crt(ctx, n, key, r, meta)
}

func (f *fake) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	n := f.count("get")
	if f.get == nil {
		return io.NopCloser(strings.NewReader("data")), nil
	}
	return f.get(ctx, n, key)
}

func (f *fake) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	n := f.count("stat")
	if f.stat == nil {
		return storage.ObjectInfo{Key: key, Size: 4}, nil
	}
	return f.stat(ctx, n, key)
}

func (f *fake) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	n := f.count("list")
	if f.list == nil {
		return nil
	}
	return f.list(ctx, n, prefix, fn)
}

func (f *fake) Delete(ctx context.Context, key string) error {
	n := f.count("delete")
	if f.del == nil {
		return nil
	}
	return f.del(ctx, n, key)
}

func (f *fake) String() string { return "fake://" }

// failing returns a fake whose every method fails with errFor(n) (nil:
// success) on its n-th call.
func failing(errFor func(n int) error) *fake {
	return &fake{
		put: func(_ context.Context, n int, _ string, r io.Reader) error {
			if err := errFor(n); err != nil {
				return err
			}
			_, err := io.Copy(io.Discard, r)
			return err
		},
		crt: func(_ context.Context, n int, _ string, r io.Reader, _ storage.Metadata) error {
			if err := errFor(n); err != nil {
				return err
			}
			_, err := io.Copy(io.Discard, r)
			return err
		},
		get: func(_ context.Context, n int, _ string) (io.ReadCloser, error) {
			if err := errFor(n); err != nil {
				return nil, err
			}
			return io.NopCloser(strings.NewReader("data")), nil
		},
		stat: func(_ context.Context, n int, key string) (storage.ObjectInfo, error) {
			return storage.ObjectInfo{Key: key, Size: 4}, errFor(n)
		},
		list: func(_ context.Context, n int, _ string, _ func(storage.ObjectInfo) error) error {
			return errFor(n)
		},
		del: func(_ context.Context, n int, _ string) error { return errFor(n) },
	}
}

var errTransient = errors.New("connection reset by peer")

// call runs op against s the way a caller would.
func call(ctx context.Context, s storage.Store, op string) error {
	switch op {
	case "put":
		return s.Put(ctx, "k", bytes.NewReader([]byte("data")))
	case "create":
		return s.Create(ctx, "k", bytes.NewReader([]byte("data")), storage.Metadata{"a": "b"})
	case "get":
		rc, err := s.Get(ctx, "k")
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.ReadAll(rc)
		return err
	case "stat":
		_, err := s.Stat(ctx, "k")
		return err
	case "list":
		return s.List(ctx, "", func(storage.ObjectInfo) error { return nil })
	case "delete":
		return s.Delete(ctx, "k")
	}
	panic("unknown op " + op)
}

var ops = []string{"put", "create", "get", "stat", "list", "delete"}

func fastOpts() storage.RetryOptions {
	return storage.RetryOptions{
		Attempts:    4,
		MinBackoff:  time.Millisecond,
		MaxBackoff:  4 * time.Millisecond,
		OpTimeout:   5 * time.Second,
		IdleTimeout: 5 * time.Second,
	}
}

func TestRetryOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		errFor    func(n int) error
		wantIs    error // nil: success
		wantCalls int
		wantMsg   string
	}{
		{
			name: "transient then success",
			errFor: func(n int) error {
				if n <= 2 {
					return errTransient
				}
				return nil
			},
			wantCalls: 3,
		},
		{
			name: "unreachable then success",
			errFor: func(n int) error {
				if n == 1 {
					return fmt.Errorf("op: %w: 503", storage.ErrUnreachable)
				}
				return nil
			},
			wantCalls: 2,
		},
		{
			name:      "permanent not retried",
			errFor:    func(int) error { return fmt.Errorf("op k: %w: access denied", storage.ErrPermanent) },
			wantIs:    storage.ErrPermanent,
			wantCalls: 1,
		},
		{
			name:      "not found not retried",
			errFor:    func(int) error { return fmt.Errorf("op k: %w", storage.ErrNotFound) },
			wantIs:    storage.ErrNotFound,
			wantCalls: 1,
		},
		{
			name:      "exists not retried",
			errFor:    func(int) error { return fmt.Errorf("op k: %w", storage.ErrExists) },
			wantIs:    storage.ErrExists,
			wantCalls: 1,
		},
		{
			name:      "unsupported not retried",
			errFor:    func(int) error { return fmt.Errorf("op k: %w", storage.ErrUnsupported) },
			wantIs:    storage.ErrUnsupported,
			wantCalls: 1,
		},
		{
			name:      "attempts exhausted",
			errFor:    func(int) error { return errTransient },
			wantIs:    storage.ErrUnreachable,
			wantCalls: 4,
			wantMsg:   "gave up after 4 attempts",
		},
	}
	for _, tc := range tests {
		for _, op := range ops {
			t.Run(tc.name+"/"+op, func(t *testing.T) {
				f := failing(tc.errFor)
				err := call(context.Background(), storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)), op)
				if tc.wantIs == nil && err != nil {
					t.Fatalf("got %v, want success", err)
				}
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Fatalf("got %v, want %v", err, tc.wantIs)
				}
				if got := f.n(op); got != tc.wantCalls {
					t.Errorf("store called %d times, want %d", got, tc.wantCalls)
				}
				if tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("error %q does not say %q", err, tc.wantMsg)
				}
				if tc.wantIs == storage.ErrUnreachable && !errors.Is(err, errTransient) {
					t.Errorf("error %q lost the cause", err)
				}
			})
		}
	}
}

// rewinder is a Put body that is not an io.Seeker but can start over.
type rewinder struct {
	data    []byte
	off     int
	rewinds int
}

func (r *rewinder) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

func (r *rewinder) Rewind() error {
	r.off = 0
	r.rewinds++
	return nil
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestRetryPutBody(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 10000)
	offsetReader := bytes.NewReader(data)
	offsetReader.Seek(5, io.SeekStart) // a Put sends from where the body stands

	tests := []struct {
		name      string
		body      io.Reader
		want      []byte // stored content; nil: the Put fails
		wantCalls int
	}{
		{"seeker retried", bytes.NewReader(data), data, 3},
		{"rewinder retried", &rewinder{data: data}, data, 3},
		{"seeker from its offset", offsetReader, data[5:], 3},
		{"plain reader not retried", onlyReader{bytes.NewReader(data)}, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stored []byte
			f := &fake{put: func(_ context.Context, n int, _ string, r io.Reader) error {
				if n <= 2 {
					// Fail after reading part of the body, as a broken
					// connection would.
					io.CopyN(io.Discard, r, 1000*int64(n))
					return errTransient
				}
				var err error
				stored, err = io.ReadAll(r)
				return err
			}}
			err := storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)).Put(context.Background(), "k", tc.body)
			if got := f.n("put"); got != tc.wantCalls {
				t.Errorf("store called %d times, want %d", got, tc.wantCalls)
			}
			if tc.want == nil {
				if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), "cannot be rewound") {
					t.Errorf("got %v, want ErrUnreachable saying the body cannot be rewound", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if !bytes.Equal(stored, tc.want) {
				t.Errorf("stored %d bytes, want the whole body of %d", len(stored), len(tc.want))
			}
		})
	}
}

// TestRetryPutReaderError: a failure of the caller's own reader is not
// the store's fault and is not retried, even with a rewindable body.
func TestRetryPutReaderError(t *testing.T) {
	boom := errors.New("disk read error")
	f := &fake{}
	body := &failAfter{r: &rewinder{data: []byte("some data")}, err: boom}
	err := storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)).Put(context.Background(), "k", body)
	if !errors.Is(err, boom) || errors.Is(err, storage.ErrUnreachable) {
		t.Errorf("got %v, want the reader's error alone", err)
	}
	if got := f.n("put"); got != 1 {
		t.Errorf("store called %d times, want 1", got)
	}
}

type failAfter struct {
	r   *rewinder
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func (f *failAfter) Rewind() error { return f.r.Rewind() }

func idleOpts() storage.RetryOptions {
	o := fastOpts()
	o.Attempts = 2
	o.OpTimeout = 50 * time.Millisecond
	o.IdleTimeout = 50 * time.Millisecond
	return o
}

// stalledBody yields its data, then blocks like a dead connection until
// its context ends.
type stalledBody struct {
	ctx  context.Context
	data []byte
}

func (b *stalledBody) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func (b *stalledBody) Close() error { return nil }

func TestIdleTimeoutGet(t *testing.T) {
	f := &fake{get: func(ctx context.Context, _ int, _ string) (io.ReadCloser, error) {
		return &stalledBody{ctx: ctx, data: []byte("abc")}, nil
	}}
	rc, err := storage.WithRetry(f, idleOpts(), zaptest.NewLogger(t)).Get(context.Background(), "k")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), "no data moved") {
		t.Errorf("read: got %v, want an idle timeout wrapping ErrUnreachable", err)
	}
	if string(got) != "abc" {
		t.Errorf("read %q before the stall, want %q", got, "abc")
	}
}

// brokenBody yields its data, then fails like a cut connection.
type brokenBody struct {
	r   io.Reader
	err error
}

func (b *brokenBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, b.err
	}
	return n, err
}

func (b *brokenBody) Close() error { return nil }

// TestGetBodyErrors: a body cut off after the open is the storage failing
// (ErrUnreachable, so callers start over), never confused with the end of
// the data; a clean end stays io.EOF.
func TestGetBodyErrors(t *testing.T) {
	reset := errors.New("read tcp: connection reset by peer")
	tests := []struct {
		name        string
		err         error
		unreachable bool
	}{
		{"clean end", io.EOF, false},
		{"short body", io.ErrUnexpectedEOF, true},
		{"reset", reset, true},
		{"already unreachable", fmt.Errorf("x: %w", storage.ErrUnreachable), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{get: func(context.Context, int, string) (io.ReadCloser, error) {
				return &brokenBody{r: strings.NewReader("abc"), err: tc.err}, nil
			}}
			rc, err := storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)).Get(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if string(got) != "abc" {
				t.Errorf("read %q, want abc", got)
			}
			if tc.err == io.EOF {
				if err != nil {
					t.Errorf("clean end: err = %v", err)
				}
				return
			}
			if errors.Is(err, storage.ErrUnreachable) != tc.unreachable || !errors.Is(err, tc.err) {
				t.Errorf("err = %v; want it to wrap %v (unreachable %v)", err, tc.err, tc.unreachable)
			}
		})
	}
	// A caller that gave up is told so, not that storage failed.
	ctx, cancel := context.WithCancel(context.Background())
	f := &fake{get: func(context.Context, int, string) (io.ReadCloser, error) {
		return &brokenBody{r: strings.NewReader(""), err: context.Canceled}, nil
	}}
	rc, err := storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)).Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(rc); errors.Is(err, storage.ErrUnreachable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: err = %v", err)
	}
	rc.Close()
}

// TestIdleTimeoutGetSlowCaller: time the caller spends between reads is
// not a stall, and the body stays usable until Close.
func TestIdleTimeoutGetSlowCaller(t *testing.T) {
	var bodyCtx context.Context
	f := &fake{get: func(ctx context.Context, _ int, _ string) (io.ReadCloser, error) {
		bodyCtx = ctx
		return io.NopCloser(strings.NewReader("abcdef")), nil
	}}
	o := idleOpts()
	rc, err := storage.WithRetry(f, o, zaptest.NewLogger(t)).Get(context.Background(), "k")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * o.IdleTimeout)
	if bodyCtx.Err() != nil {
		t.Fatalf("body context ended while the caller was busy: %v", context.Cause(bodyCtx))
	}
	rest, err := io.ReadAll(rc)
	if err != nil || string(rest) != "def" {
		t.Fatalf("read after pause = %q, %v; want %q", rest, err, "def")
	}
	rc.Close()
	if bodyCtx.Err() == nil {
		t.Error("Close did not release the body's context")
	}
}

func TestIdleTimeoutPut(t *testing.T) {
	// The store reads a little, then stops reading, like a dead network.
	stall := func(ctx context.Context, _ int, _ string, r io.Reader) error {
		io.CopyN(io.Discard, r, 10)
		<-ctx.Done()
		return fmt.Errorf("put k: %w", ctx.Err())
	}
	tests := []struct {
		name      string
		body      io.Reader
		wantCalls int
	}{
		{"plain body", onlyReader{strings.NewReader("0123456789abcdef")}, 1},
		{"rewindable body", strings.NewReader("0123456789abcdef"), 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fake{put: stall}
			err := storage.WithRetry(f, idleOpts(), zaptest.NewLogger(t)).Put(context.Background(), "k", tc.body)
			if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), "no data moved") {
				t.Errorf("got %v, want an idle timeout wrapping ErrUnreachable", err)
			}
			if got := f.n("put"); got != tc.wantCalls {
				t.Errorf("store called %d times, want %d", got, tc.wantCalls)
			}
		})
	}
}

// slowReader takes longer than the idle timeout to produce each chunk.
type slowReader struct {
	r     io.Reader
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), 4)])
}

// TestIdleTimeoutPutNotFooledBy covers progress that is not a stall: a
// slow producer, and a store that sends buffered data without reading the
// body and reports it through storage.ProgressFunc.
func TestIdleTimeoutPutNotFooledBy(t *testing.T) {
	o := idleOpts()
	t.Run("slow producer", func(t *testing.T) {
		var stored []byte
		f := &fake{put: func(ctx context.Context, _ int, _ string, r io.Reader) error {
			var err error
			stored, err = io.ReadAll(r)
			if err == nil {
				err = ctx.Err()
			}
			return err
		}}
		body := &slowReader{r: strings.NewReader("0123456789"), pause: 2 * o.IdleTimeout}
		if err := storage.WithRetry(f, o, zaptest.NewLogger(t)).Put(context.Background(), "k", onlyReader{body}); err != nil {
			t.Fatalf("put: %v", err)
		}
		if string(stored) != "0123456789" {
			t.Errorf("stored %q", stored)
		}
	})
	t.Run("reported progress", func(t *testing.T) {
		// A longer idle timeout than the other cases: each report must come
		// well within it even on a loaded machine.
		o := idleOpts()
		o.IdleTimeout = 200 * time.Millisecond
		f := &fake{put: func(ctx context.Context, _ int, _ string, r io.Reader) error {
			if _, err := io.ReadAll(r); err != nil {
				return err
			}
			progress := storage.ProgressFunc(ctx)
			if progress == nil {
				return errors.New("no progress func in context")
			}
			// Upload the buffered data for 5 idle periods, reporting bytes.
			for range 20 {
				time.Sleep(o.IdleTimeout / 4)
				progress(1 << 10)
			}
			return ctx.Err()
		}}
		if err := storage.WithRetry(f, o, zaptest.NewLogger(t)).Put(context.Background(), "k", onlyReader{strings.NewReader("x")}); err != nil {
			t.Fatalf("put: %v", err)
		}
	})
}

func TestOpTimeout(t *testing.T) {
	block := func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	f := &fake{
		stat: func(ctx context.Context, _ int, _ string) (storage.ObjectInfo, error) {
			return storage.ObjectInfo{}, block(ctx)
		},
		get: func(ctx context.Context, _ int, _ string) (io.ReadCloser, error) { return nil, block(ctx) },
		list: func(ctx context.Context, _ int, _ string, _ func(storage.ObjectInfo) error) error {
			return block(ctx)
		},
		del: func(ctx context.Context, _ int, _ string) error { return block(ctx) },
	}
	s := storage.WithRetry(f, idleOpts(), zaptest.NewLogger(t))
	for _, op := range []string{"get", "stat", "list", "delete"} {
		err := call(context.Background(), s, op)
		if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("%s: got %v, want a timeout wrapping ErrUnreachable", op, err)
		}
		if got := f.n(op); got != 2 {
			t.Errorf("%s: store called %d times, want 2", op, got)
		}
	}
}

func TestCallerCancellationStopsRetries(t *testing.T) {
	t.Run("during an attempt", func(t *testing.T) {
		for _, op := range ops {
			t.Run(op, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				f := failing(func(n int) error {
					if n == 2 {
						cancel()
					}
					return errTransient
				})
				err := call(ctx, storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)), op)
				if !errors.Is(err, context.Canceled) {
					t.Errorf("got %v, want context.Canceled", err)
				}
				if got := f.n(op); got != 2 {
					t.Errorf("store called %d times, want 2", got)
				}
			})
		}
	})
	t.Run("during backoff", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := failing(func(n int) error {
			time.AfterFunc(10*time.Millisecond, cancel)
			return errTransient
		})
		o := fastOpts()
		o.MinBackoff, o.MaxBackoff = time.Hour, time.Hour // only cancellation ends the wait
		_, err := storage.WithRetry(f, o, zaptest.NewLogger(t)).Stat(ctx, "k")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
		if got := f.n("stat"); got != 1 {
			t.Errorf("store called %d times, want 1", got)
		}
	})
}

func TestRetryListResumes(t *testing.T) {
	all := []string{"a", "b", "c", "d"}
	f := &fake{list: func(_ context.Context, n int, _ string, fn func(storage.ObjectInfo) error) error {
		for i, k := range all {
			if n == 1 && i == 2 {
				return errTransient // the first listing breaks after two objects
			}
			if err := fn(storage.ObjectInfo{Key: k}); err != nil {
				return err
			}
		}
		return nil
	}}
	var seen []string
	err := storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)).List(context.Background(), "", func(oi storage.ObjectInfo) error {
		seen = append(seen, oi.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if !slices.Equal(seen, all) {
		t.Errorf("callback saw %q, want each of %q once", seen, all)
	}
}

func TestRetryListCallbackErrorNotRetried(t *testing.T) {
	f := &fake{list: func(_ context.Context, _ int, _ string, fn func(storage.ObjectInfo) error) error {
		return fn(storage.ObjectInfo{Key: "a"})
	}}
	stop := errors.New("stop")
	err := storage.WithRetry(f, fastOpts(), zaptest.NewLogger(t)).List(context.Background(), "", func(storage.ObjectInfo) error {
		return stop
	})
	if !errors.Is(err, stop) || errors.Is(err, storage.ErrUnreachable) {
		t.Errorf("got %v, want the callback's error alone", err)
	}
	if got := f.n("list"); got != 1 {
		t.Errorf("store called %d times, want 1", got)
	}
}

func TestRetryLogsEachRetry(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	f := failing(func(n int) error {
		if n <= 2 {
			return errTransient
		}
		return nil
	})
	if _, err := storage.WithRetry(f, fastOpts(), zap.New(core)).Stat(context.Background(), "wal/seg"); err != nil {
		t.Fatal(err)
	}
	entries := logs.AllUntimed()
	if len(entries) != 2 {
		t.Fatalf("got %d warn entries, want 2", len(entries))
	}
	for i, e := range entries {
		fields := e.ContextMap()
		if fields["op"] != "stat" || fields["key"] != "wal/seg" || fields["attempt"] != int64(i+1) || fields["error"] != errTransient.Error() {
			t.Errorf("entry %d fields = %v", i, fields)
		}
	}
}

func TestWithLogging(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s := storage.WithLogging(&fake{}, zap.New(core))
	for _, op := range ops {
		if err := call(context.Background(), s, op); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
	var got []string
	for _, e := range logs.AllUntimed() {
		if e.Level != zapcore.DebugLevel {
			t.Errorf("%q logged at %s", e.Message, e.Level)
		}
		fields := e.ContextMap()
		if _, ok := fields["duration"]; !ok {
			t.Errorf("%q has no duration", e.Message)
		}
		got = append(got, fmt.Sprintf("%s %v", e.Message, fields["key"]))
	}
	want := []string{"storage put k", "storage create k", "storage get k", "storage get closed k", "storage stat k", "storage list ", "storage delete k"}
	if !slices.Equal(got, want) {
		t.Errorf("logged %q, want %q", got, want)
	}
	if n := logs.FilterMessage("storage get closed").AllUntimed()[0].ContextMap()["bytes"]; n != int64(4) {
		t.Errorf("get closed logged bytes=%v, want 4", n)
	}
}

// TestLoggingKeepsPutRewindable: logging above retry must not hide that a
// body can be rewound.
func TestLoggingKeepsPutRewindable(t *testing.T) {
	var stored []byte
	f := &fake{put: func(_ context.Context, n int, _ string, r io.Reader) error {
		if n == 1 {
			io.CopyN(io.Discard, r, 3)
			return errTransient
		}
		var err error
		stored, err = io.ReadAll(r)
		return err
	}}
	log := zaptest.NewLogger(t)
	s := storage.WithLogging(storage.WithRetry(f, fastOpts(), log), log)
	if err := s.Put(context.Background(), "k", strings.NewReader("whole body")); err != nil {
		t.Fatal(err)
	}
	if string(stored) != "whole body" {
		t.Errorf("stored %q", stored)
	}
}
