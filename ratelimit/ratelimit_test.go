package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"testing"
	"time"
)

// fakeClock advances only when the limiter sleeps, to the latest wake-up
// time asked for, so the test measures the limiter's arithmetic, not the
// machine's timing, even with several streams sleeping at once.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if until.After(c.t) {
		c.t = until
	}
	c.mu.Unlock()
	return nil
}

func TestRateAccuracy(t *testing.T) {
	tests := []struct {
		rate  int64
		bytes int64
		read  int // caller's buffer size
	}{
		{10_000_000, 100 << 20, 32 << 10},
		{10_000_000, 50 << 20, 1 << 20},
		{512 << 10, 8 << 20, 4096},
		{1000, 20_000, 100}, // slower than one chunk per second
	}
	for _, tt := range tests {
		clk := &fakeClock{t: time.Unix(1e9, 0)}
		l := newWithClock(tt.rate, clk.now, clk.sleep)
		start := clk.now()
		src := l.Reader(context.Background(), io.LimitReader(zeroReader{}, tt.bytes))
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{src}, make([]byte, tt.read))
		if err != nil || n != tt.bytes {
			t.Fatalf("copy: %d, %v", n, err)
		}
		got := float64(n) / clk.now().Sub(start).Seconds()
		if math.Abs(got-float64(tt.rate))/float64(tt.rate) > 0.01 {
			t.Errorf("rate %d, read %d: measured %.0f B/s (more than 1%% off)", tt.rate, tt.read, got)
		}

		clk2 := &fakeClock{t: time.Unix(1e9, 0)}
		lw := newWithClock(tt.rate, clk2.now, clk2.sleep)
		var buf bytes.Buffer
		w := lw.Writer(context.Background(), &buf)
		if _, err := io.CopyN(w, zeroReader{}, tt.bytes); err != nil {
			t.Fatal(err)
		}
		got = float64(buf.Len()) / clk2.now().Sub(time.Unix(1e9, 0)).Seconds()
		if math.Abs(got-float64(tt.rate))/float64(tt.rate) > 0.01 {
			t.Errorf("writer rate %d: measured %.0f B/s", tt.rate, got)
		}
	}
}

// Two streams share one budget.
func TestSharedBudget(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	l := newWithClock(1_000_000, clk.now, clk.sleep)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			io.Copy(io.Discard, l.Reader(context.Background(), io.LimitReader(zeroReader{}, 5_000_000)))
		})
	}
	wg.Wait()
	if s := clk.now().Sub(time.Unix(1e9, 0)).Seconds(); s < 9.9 || s > 10.1 {
		t.Errorf("10 MB through a 1 MB/s limiter took %.2f fake seconds, want 10", s)
	}
}

func TestUnlimitedAndCancel(t *testing.T) {
	if New(0) != nil {
		t.Fatal("rate 0 must mean no limiter")
	}
	r := bytes.NewReader([]byte("abc"))
	if got := New(0).Reader(context.Background(), r); got != r {
		t.Fatal("nil limiter must return the reader unchanged")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := io.Copy(io.Discard, New(1000).Reader(ctx, io.LimitReader(zeroReader{}, 10_000)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: err = %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
