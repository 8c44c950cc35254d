// Package ratelimit slows io.Readers and io.Writers to a byte rate, over
// golang.org/x/time/rate. A rate of 0 means unlimited.
package ratelimit

import (
	"context"
	"io"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// chunk bounds one wait: a limiter's burst must cover every reservation.
const chunk = 64 << 10

// Limiter shares one byte budget between any number of streams.
type Limiter struct {
	l *rate.Limiter
	// mu orders clock reads with reservations: a reservation made with an
	// older time than the one before it would hand out tokens twice.
	mu    sync.Mutex
	now   func() time.Time
	sleep func(ctx context.Context, until time.Time) error
}

// New returns a limiter of bytesPerSec, or nil (no limit) when it is 0.
func New(bytesPerSec int64) *Limiter {
	return newWithClock(bytesPerSec, time.Now, sleepCtx)
}

func newWithClock(bytesPerSec int64, now func() time.Time, sleep func(context.Context, time.Time) error) *Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := min(chunk, int(bytesPerSec))
	l := rate.NewLimiter(rate.Limit(bytesPerSec), burst)
	// Start empty, so the first burst does not overshoot short transfers.
	l.AllowN(now(), burst)
	return &Limiter{l: l, now: now, sleep: sleep}
}

func sleepCtx(ctx context.Context, until time.Time) error {
	d := time.Until(until)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait blocks until n bytes may pass.
func (l *Limiter) wait(ctx context.Context, n int) error {
	for n > 0 {
		k := min(n, l.l.Burst())
		l.mu.Lock()
		now := l.now()
		r := l.l.ReserveN(now, k)
		l.mu.Unlock()
		if err := l.sleep(ctx, now.Add(r.DelayFrom(now))); err != nil {
			l.mu.Lock()
			r.CancelAt(l.now())
			l.mu.Unlock()
			return err
		}
		n -= k
	}
	return nil
}

// Reader returns r limited by l; a nil limiter returns r unchanged.
func (l *Limiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return &reader{ctx: ctx, r: r, l: l}
}

// Writer returns w limited by l; a nil limiter returns w unchanged.
func (l *Limiter) Writer(ctx context.Context, w io.Writer) io.Writer {
	if l == nil {
		return w
	}
	return &writer{ctx: ctx, w: w, l: l}
}

type reader struct {
	ctx context.Context
	r   io.Reader
	l   *Limiter
}

func (r *reader) Read(p []byte) (int, error) {
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.wait(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

type writer struct {
	ctx context.Context
	w   io.Writer
	l   *Limiter
}

func (w *writer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), chunk)
		if err := w.l.wait(w.ctx, k); err != nil {
			return written, err
		}
		n, err := w.w.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}
