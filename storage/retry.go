package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// RetryOptions tune WithRetry. A zero field takes its default.
type RetryOptions struct {
	// Attempts is the number of tries per operation, the first included
	// (default 5). 1 disables retries but keeps the timeouts.
	Attempts int
	// MinBackoff is the wait before the first retry; each further retry
	// doubles it, up to MaxBackoff, with jitter (defaults 500ms and 15s).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// OpTimeout bounds one attempt of Stat, Delete and of opening a Get, and
	// how long List may wait for its next object (default 30s).
	OpTimeout time.Duration
	// IdleTimeout cancels a Put, or a Get body read, once no byte has moved
	// for that long (default 60s). Time spent in the caller's own reader
	// (Put) or between the caller's reads (Get) does not count: only a store
	// that stops moving data does.
	IdleTimeout time.Duration
}

func (o RetryOptions) withDefaults() RetryOptions {
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 15 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	return o
}

type progressKey struct{}

// WithProgress returns a context carrying fn. A backend that moves data on
// its own schedule (an uploader sending buffered parts) calls the function
// from ProgressFunc as bytes reach the network, so WithRetry's idle timeout
// sees real progress rather than only the reads of the Put body.
func WithProgress(ctx context.Context, fn func(n int64)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// ProgressFunc returns the function set by WithProgress, or nil. It is safe
// to call the function from several goroutines.
func ProgressFunc(ctx context.Context) func(n int64) {
	fn, _ := ctx.Value(progressKey{}).(func(int64))
	return fn
}

// TransferAttempts is how many times a caller starts a transfer over when
// its body is cut off after the open: the wrapper retries opening an
// object, not reading it (see Get), and a cut transfer must not fail a
// restore on its own.
const TransferAttempts = 5

// WithRetry wraps s so that transient failures are retried with exponential
// backoff and jitter, and every attempt runs under a timeout (see
// RetryOptions). An error wrapping ErrNotFound, ErrPermanent, ErrFull,
// ErrExists or ErrUnsupported, a failure of the caller's Put body and the
// cancellation of the caller's ctx are never retried. Once the attempts are
// used up the error wraps ErrUnreachable and says how many attempts were
// made. Each retry is logged at warn level. Calls of optional capabilities
// below it (an Interceptor) are retried the same way, under OpTimeout per
// attempt.
func WithRetry(s Store, opts RetryOptions, log *zap.Logger) Store {
	if log == nil {
		log = zap.NewNop()
	}
	return &retryStore{s: s, opts: opts.withDefaults(), log: log}
}

type retryStore struct {
	s    Store
	opts RetryOptions
	log  *zap.Logger
}

// String names the wrapped store.
func (r *retryStore) String() string { return r.s.String() }

// Unwrap returns the wrapped store.
func (r *retryStore) Unwrap() Store { return r.s }

// Intercept retries call under OpTimeout per attempt.
func (r *retryStore) Intercept(ctx context.Context, op, key string, call func(ctx context.Context) error) error {
	return r.do(ctx, op, key, true, nil, func(ctx context.Context) error {
		actx, cancel := context.WithTimeoutCause(ctx, r.opts.OpTimeout, r.opCause(op))
		defer cancel()
		err := call(actx)
		var ce CallerError
		if errors.As(err, &ce) {
			return errNoRetry{err}
		}
		return timedOut(ctx, actx, err)
	})
}

// errNoRetry marks an attempt error that must be returned as it is.
type errNoRetry struct{ err error }

func (e errNoRetry) Error() string { return e.err.Error() }
func (e errNoRetry) Unwrap() error { return e.err }

// do runs attempt until it succeeds, fails for good, or the attempts are
// used up. rewind, if not nil, runs before every retry; a nil rewind with
// canRetry false means a single attempt.
func (r *retryStore) do(ctx context.Context, op, key string, canRetry bool, rewind func() error, attempt func(ctx context.Context) error) error {
	limit := r.opts.Attempts
	if !canRetry {
		limit = 1
	}
	for n := 1; ; n++ {
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		var nr errNoRetry
		if errors.As(err, &nr) {
			return nr.err
		}
		if ctx.Err() != nil {
			// The caller gave up: report that, whatever the store said.
			if !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w: %w", err, ctx.Err())
			}
			return err
		}
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrPermanent) || errors.Is(err, ErrFull) ||
			errors.Is(err, ErrExists) || errors.Is(err, ErrUnsupported) {
			return err
		}
		if n >= limit {
			return giveUp(n, canRetry, err)
		}
		wait := r.backoff(n)
		r.log.Warn("storage operation failed, retrying",
			zap.String("store", r.s.String()),
			zap.String("op", op),
			zap.String("key", key),
			zap.Int("attempt", n),
			zap.Int("attempts", limit),
			zap.Duration("backoff", wait),
			zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", err, ctx.Err())
		case <-t.C:
		}
		if rewind != nil {
			if rerr := rewind(); rerr != nil {
				return fmt.Errorf("%s %s: rewind body for retry: %w (after: %w)", op, key, rerr, err)
			}
		}
	}
}

// giveUp builds the final error: it always wraps ErrUnreachable and names
// the number of attempts.
func giveUp(n int, canRetry bool, err error) error {
	what := fmt.Sprintf("gave up after %d attempts", n)
	if n == 1 {
		what = "gave up after 1 attempt"
		if !canRetry {
			what += " (body cannot be rewound)"
		}
	}
	if errors.Is(err, ErrUnreachable) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrUnreachable, err)
}

// backoff returns the wait after failed attempt n (1-based): exponential
// from MinBackoff, capped at MaxBackoff, with "equal jitter" so concurrent
// clients spread out yet never retry immediately.
func (r *retryStore) backoff(n int) time.Duration {
	d := r.opts.MinBackoff
	for i := 1; i < n && d < r.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.opts.MaxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

// timedOut adds the reason an attempt's own context ended (timeout, idle)
// to err, when the caller's ctx is still alive.
func timedOut(ctx, actx context.Context, err error) error {
	if ctx.Err() == nil && actx.Err() != nil {
		if cause := context.Cause(actx); cause != nil && !errors.Is(err, cause) {
			return fmt.Errorf("%w: %w", cause, err)
		}
	}
	return err
}

func (r *retryStore) opCause(op string) error {
	return fmt.Errorf("%w: %s attempt timed out after %s", ErrUnreachable, op, r.opts.OpTimeout)
}

func (r *retryStore) idleCause() error {
	return fmt.Errorf("%w: no data moved for %s", ErrUnreachable, r.opts.IdleTimeout)
}

// Put stores the body, retrying only when it implements Rewinder or
// io.Seeker: it is rewound to where it started before each retry. Each
// attempt is cancelled once no data has moved for IdleTimeout.
func (r *retryStore) Put(ctx context.Context, key string, body io.Reader) error {
	return r.write(ctx, "put", key, body, func(ctx context.Context, body io.Reader) error {
		return r.s.Put(ctx, key, body)
	})
}

// Create retries like Put. An attempt that went through although its
// answer was lost makes the next one fail with ErrExists, as Create's
// contract says.
func (r *retryStore) Create(ctx context.Context, key string, body io.Reader, meta Metadata) error {
	return r.write(ctx, "create", key, body, func(ctx context.Context, body io.Reader) error {
		return r.s.Create(ctx, key, body, meta)
	})
}

func (r *retryStore) write(ctx context.Context, op, key string, body io.Reader, send func(ctx context.Context, body io.Reader) error) error {
	var rewind func() error
	switch b := body.(type) {
	case Rewinder:
		rewind = b.Rewind
	case io.Seeker:
		if off, err := b.Seek(0, io.SeekCurrent); err == nil {
			rewind = func() error {
				_, err := b.Seek(off, io.SeekStart)
				return err
			}
		}
	}
	return r.do(ctx, op, key, rewind != nil, rewind, func(ctx context.Context) error {
		actx, w := newWatchdog(ctx, r.opts.IdleTimeout, r.idleCause(), false)
		defer w.stop()
		pb := &putBody{body: BodyReader{R: body}, w: w}
		err := send(WithProgress(actx, w.kick), pb)
		if err == nil {
			return nil
		}
		if rerr := pb.body.Err(); rerr != nil {
			// The caller's reader failed: retrying would fail the same way.
			return errNoRetry{err}
		}
		return timedOut(ctx, actx, err)
	})
}

// putBody feeds a Put and pauses the idle clock while the caller's reader
// is producing data, so a slow producer is not taken for a stalled store.
type putBody struct {
	body BodyReader
	w    *watchdog
}

func (b *putBody) Read(p []byte) (int, error) {
	b.w.pause()
	defer b.w.resume()
	return b.body.Read(p)
}

// Get opens the object, retrying the open. The returned body keeps the
// attempt's context alive until Close; a Read that waits IdleTimeout
// without data fails with an error wrapping ErrUnreachable. Reads are not
// retried: the caller starts over.
func (r *retryStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	var body io.ReadCloser
	err := r.do(ctx, "get", key, true, nil, func(ctx context.Context) error {
		actx, w := newWatchdog(ctx, r.opts.OpTimeout, r.opCause("get"), false)
		rc, err := r.s.Get(actx, key)
		if err != nil {
			err = timedOut(ctx, actx, err)
			w.stop()
			return err
		}
		// From now on the clock runs only while the caller waits in Read.
		w.reset(r.opts.IdleTimeout, r.idleCause(), true)
		body = &getBody{rc: rc, w: w, ctx: ctx, actx: actx, key: key}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return body, nil
}

type getBody struct {
	rc        io.ReadCloser
	w         *watchdog
	ctx, actx context.Context
	key       string
	closeOnce sync.Once
	closeErr  error
}

func (b *getBody) Read(p []byte) (int, error) {
	b.w.resume()
	n, err := b.rc.Read(p)
	b.w.pause()
	if err != nil && err != io.EOF {
		if terr := timedOut(b.ctx, b.actx, err); terr != err {
			return n, fmt.Errorf("get %s: %w", b.key, terr)
		}
		// A transfer cut off after the open (a reset, a body shorter than
		// its Content-Length) is the network failing, not bad data: say
		// so, so callers start the transfer over instead of giving up.
		if b.ctx.Err() == nil && !errors.Is(err, ErrUnreachable) {
			return n, fmt.Errorf("get %s: %w: %w", b.key, ErrUnreachable, err)
		}
	}
	return n, err
}

// Close closes the store's body and releases the attempt's context.
func (b *getBody) Close() error {
	b.closeOnce.Do(func() {
		b.closeErr = b.rc.Close()
		b.w.stop()
	})
	return b.closeErr
}

// Stat retries under OpTimeout per attempt.
func (r *retryStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	var oi ObjectInfo
	err := r.do(ctx, "stat", key, true, nil, func(ctx context.Context) error {
		actx, cancel := context.WithTimeoutCause(ctx, r.opts.OpTimeout, r.opCause("stat"))
		defer cancel()
		var err error
		oi, err = r.s.Stat(actx, key)
		return timedOut(ctx, actx, err)
	})
	if err != nil {
		return ObjectInfo{}, err
	}
	return oi, nil
}

// List retries a failed listing without repeating objects fn has already
// seen (the order is lexical, so it skips keys up to the last one). An
// error from fn is returned as it is, never retried. Each attempt fails
// when the store delivers no object for OpTimeout; time spent in fn does
// not count.
func (r *retryStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	var last string
	seen := false
	return r.do(ctx, "list", prefix, true, nil, func(ctx context.Context) error {
		actx, w := newWatchdog(ctx, r.opts.OpTimeout, r.opCause("list"), false)
		defer w.stop()
		var fnErr error
		err := r.s.List(WithProgress(actx, w.kick), prefix, func(oi ObjectInfo) error {
			if seen && oi.Key <= last {
				return nil
			}
			w.pause()
			defer w.resume()
			if err := fn(oi); err != nil {
				fnErr = err
				return err
			}
			last, seen = oi.Key, true
			return nil
		})
		if err != nil && fnErr != nil {
			return errNoRetry{err}
		}
		return timedOut(ctx, actx, err)
	})
}

// Delete retries under OpTimeout per attempt.
func (r *retryStore) Delete(ctx context.Context, key string) error {
	return r.do(ctx, "delete", key, true, nil, func(ctx context.Context) error {
		actx, cancel := context.WithTimeoutCause(ctx, r.opts.OpTimeout, r.opCause("delete"))
		defer cancel()
		return timedOut(ctx, actx, r.s.Delete(actx, key))
	})
}

// watchdog cancels a context once it has gone limit without progress.
// While paused (nested pause/resume pairs) the clock does not run; resume
// restarts it from zero. kick records progress and may be called from any
// goroutine. Progress only stores a time; the timer re-arms itself when it
// expires early, so the hot path (every Read) never touches the timer.
type watchdog struct {
	start  time.Time
	last   atomic.Int64 // nanoseconds after start of the latest progress
	cancel context.CancelCauseFunc

	mu     sync.Mutex
	limit  time.Duration
	cause  error
	paused int
	armed  bool
	done   bool
	timer  *time.Timer
}

func newWatchdog(parent context.Context, limit time.Duration, cause error, paused bool) (context.Context, *watchdog) {
	ctx, cancel := context.WithCancelCause(parent)
	w := &watchdog{start: time.Now(), cancel: cancel, limit: limit, cause: cause, armed: true}
	if paused {
		w.paused = 1
	}
	w.timer = time.AfterFunc(limit, w.check)
	return ctx, w
}

func (w *watchdog) now() int64 { return int64(time.Since(w.start)) }

func (w *watchdog) kick(int64) { w.last.Store(w.now()) }

// check runs when the timer expires: it fires if the clock really ran for
// limit since the last progress, and re-arms otherwise.
func (w *watchdog) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	if w.paused > 0 {
		w.armed = false // resume re-arms
		return
	}
	idle := time.Duration(w.now() - w.last.Load())
	if idle < w.limit {
		w.timer.Reset(w.limit - idle)
		return
	}
	w.done = true
	w.cancel(w.cause)
}

func (w *watchdog) pause() {
	w.mu.Lock()
	w.paused++
	w.mu.Unlock()
}

func (w *watchdog) resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.paused > 0 {
		w.paused--
	}
	w.last.Store(w.now())
	if w.paused == 0 && !w.armed && !w.done {
		w.armed = true
		w.timer.Reset(w.limit)
	}
}

// reset changes the limit and the cause, optionally leaving the clock paused.
func (w *watchdog) reset(limit time.Duration, cause error, paused bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.limit, w.cause = limit, cause
	w.paused = 0
	if paused {
		w.paused = 1
	}
	w.last.Store(w.now())
	if !w.done {
		w.armed = true
		w.timer.Reset(limit)
	}
}

// stop disarms the watchdog and releases its context.
func (w *watchdog) stop() {
	w.mu.Lock()
	w.done = true
	w.timer.Stop()
	w.mu.Unlock()
	w.cancel(context.Canceled)
}

// WithLogging wraps s so that every call is logged at debug level with its
// key, duration and error; a Get is logged again on Close with the bytes
// read. Put bodies are passed through untouched so a retry wrapper below
// can still rewind them.
func WithLogging(s Store, log *zap.Logger) Store {
	if log == nil {
		log = zap.NewNop()
	}
	return &logStore{s: s, log: log}
}

type logStore struct {
	s   Store
	log *zap.Logger
}

// String names the wrapped store.
func (l *logStore) String() string { return l.s.String() }

// Unwrap returns the wrapped store.
func (l *logStore) Unwrap() Store { return l.s }

// Intercept logs the call of an optional capability like the Store's own.
func (l *logStore) Intercept(ctx context.Context, op, key string, call func(ctx context.Context) error) error {
	start := time.Now()
	err := call(ctx)
	l.done("storage "+op, key, start, err)
	return err
}

func (l *logStore) done(msg, key string, start time.Time, err error, extra ...zap.Field) {
	ce := l.log.Check(zap.DebugLevel, msg)
	if ce == nil {
		return
	}
	fields := append([]zap.Field{
		zap.String("store", l.s.String()),
		zap.String("key", key),
		zap.Duration("duration", time.Since(start)),
	}, extra...)
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	ce.Write(fields...)
}

// Put logs the call and passes it on.
func (l *logStore) Put(ctx context.Context, key string, r io.Reader) error {
	start := time.Now()
	err := l.s.Put(ctx, key, r)
	l.done("storage put", key, start, err)
	return err
}

// Create logs the call and passes it on.
func (l *logStore) Create(ctx context.Context, key string, r io.Reader, meta Metadata) error {
	start := time.Now()
	err := l.s.Create(ctx, key, r, meta)
	l.done("storage create", key, start, err)
	return err
}

// Get logs the open, and on Close the bytes read and the total time.
func (l *logStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := l.s.Get(ctx, key)
	l.done("storage get", key, start, err)
	if err != nil {
		return nil, err
	}
	return &logBody{ReadCloser: rc, l: l, key: key, start: start}, nil
}

type logBody struct {
	io.ReadCloser
	l     *logStore
	key   string
	start time.Time
	n     int64
	once  sync.Once
}

func (b *logBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *logBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.l.done("storage get closed", b.key, b.start, err, zap.Int64("bytes", b.n)) })
	return err
}

// Stat logs the call and passes it on.
func (l *logStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	start := time.Now()
	oi, err := l.s.Stat(ctx, key)
	l.done("storage stat", key, start, err)
	return oi, err
}

// List logs the call with the number of objects listed.
func (l *logStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	start := time.Now()
	n := 0
	err := l.s.List(ctx, prefix, func(oi ObjectInfo) error {
		n++
		return fn(oi)
	})
	l.done("storage list", prefix, start, err, zap.Int("objects", n))
	return err
}

// Delete logs the call and passes it on.
func (l *logStore) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := l.s.Delete(ctx, key)
	l.done("storage delete", key, start, err)
	return err
}

var (
	_ Interceptor = (*retryStore)(nil)
	_ Interceptor = (*logStore)(nil)
)
