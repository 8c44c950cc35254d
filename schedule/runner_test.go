package schedule

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// fakeClock is a wall clock the test moves: sleeping advances it, and a
// test may make it overshoot or jump.
type fakeClock struct {
	now time.Time
	// overshoot, if set, is added to a sleep that would wake at wake (a
	// late wake-up).
	overshoot func(wake time.Time) time.Duration
	// stopAt cancels the run once the clock reaches it.
	stopAt time.Time
	cancel context.CancelFunc
	sleeps int
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		panic(fmt.Sprintf("sleep of %v", d))
	}
	c.sleeps++
	c.now = c.now.Add(d)
	if c.overshoot != nil {
		c.now = c.now.Add(c.overshoot(c.now))
	}
	if !c.stopAt.IsZero() && !c.now.Before(c.stopAt) {
		c.cancel()
	}
	return ctx.Err()
}

// runFake drives a Runner over [from, to) with the fake clock; job runs
// at each run (with the clock at the run's start) and may move the clock.
func runFake(t *testing.T, sp Spec, clk *fakeClock, to time.Time, job func(now time.Time) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk.stopAt, clk.cancel = to, cancel
	r := &Runner{Spec: sp, Now: clk.Now, Sleep: clk.Sleep,
		Job: func(context.Context) error { return job(clk.now) }}
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run returned %v after a cancel, want nil", err)
	}
}

// expectedRuns is the oracle, independent of Spec.Next: stepping through
// every UTC minute of [from, to), each local date's run is the first
// instant whose local time of day is at or after the asked one. That is
// the asked time itself, its first occurrence when it repeats, and the end
// of the gap when it is skipped. Zone offsets and changes are whole
// minutes, so the grid is shifted by the asked seconds (a spec with
// seconds must then not fall in a gap, which ends on a whole minute).
func expectedRuns(sp Spec, from, to time.Time) map[string]time.Time {
	want := map[string]time.Time{}
	asked := sp.Hour*3600 + sp.Minute*60 + sp.Second
	for t := from.Add(time.Duration(sp.Second) * time.Second); t.Before(to); t = t.Add(time.Minute) {
		l := t.In(sp.Location)
		date := l.Format("2006-01-02")
		if _, done := want[date]; done {
			continue
		}
		if h, m, s := l.Clock(); h*3600+m*60+s >= asked {
			want[date] = t
		}
	}
	return want
}

// TestRunnerOverAYear drives the Runner through 2026 in several zones,
// each at a time that the spring change skips or the autumn change
// repeats: exactly one run per local day, at the asked wall time, its
// first occurrence when repeated, the end of the gap when skipped.
func TestRunnerOverAYear(t *testing.T) {
	tests := []struct {
		at       string
		gapDay   string // the local date whose asked time does not exist
		gapRun   string // the local time of that day's run
		twiceDay string // the local date whose asked time happens twice
	}{
		{at: "02:30 America/Los_Angeles", gapDay: "2026-03-08", gapRun: "03:00:00 PDT"},
		{at: "01:30 America/Los_Angeles", twiceDay: "2026-11-01"},
		{at: "02:30 PDT", gapDay: "2026-03-08", gapRun: "03:00:00 PDT"},
		{at: "01:30 EST", twiceDay: "2026-11-01"},
		{at: "02:30 Europe/Berlin", gapDay: "2026-03-29", gapRun: "03:00:00 CEST", twiceDay: "2026-10-25"},
		{at: "02:00 CET", gapDay: "2026-03-29", gapRun: "03:00:00 CEST", twiceDay: "2026-10-25"},
		{at: "02:30 Australia/Sydney", gapDay: "2026-10-04", gapRun: "03:00:00 AEDT", twiceDay: "2026-04-05"},
		// Chile changes at midnight: 00:30 is skipped on 2026-09-06, and
		// 23:30 repeats on 2026-04-04, the hour before a midnight.
		{at: "00:30 America/Santiago", gapDay: "2026-09-06", gapRun: "01:00:00 -03"},
		{at: "23:30 America/Santiago", twiceDay: "2026-04-04"},
		{at: "00:00:00 UTC"},
		{at: "23:59:59 Asia/Tokyo"},
	}
	for _, tt := range tests {
		t.Run(tt.at, func(t *testing.T) {
			sp, err := ParseAt(tt.at)
			if err != nil {
				t.Fatal(err)
			}
			loc := sp.Location
			from := time.Date(2026, 1, 1, 0, 0, 0, 0, loc)
			to := time.Date(2027, 1, 1, 0, 0, 0, 0, loc)
			want := expectedRuns(sp, from, to)
			if len(want) != 365 {
				t.Fatalf("oracle found %d days with a run in 2026, want 365", len(want))
			}
			if tt.gapDay != "" {
				if got := want[tt.gapDay].In(loc).Format("15:04:05 MST"); got != tt.gapRun {
					t.Fatalf("oracle: run on the gap day %s at %s, want %s", tt.gapDay, got, tt.gapRun)
				}
			}
			if tt.twiceDay != "" {
				first := want[tt.twiceDay]
				if again := first.Add(time.Hour).In(loc); again.Hour() != sp.Hour || again.Minute() != sp.Minute {
					t.Fatalf("oracle: %s is not repeated an hour later on %s", tt.at, tt.twiceDay)
				}
			}

			clk := &fakeClock{now: from.Add(-time.Second)} // Next is strictly after
			got := map[string]time.Time{}
			runFake(t, sp, clk, to, func(now time.Time) error {
				date := now.In(loc).Format("2006-01-02")
				if prev, dup := got[date]; dup {
					t.Fatalf("second run on %s: at %s, first at %s", date, now, prev)
				}
				got[date] = now
				clk.now = now.Add(17 * time.Minute) // the backup takes a while
				return nil
			})
			if len(got) != len(want) {
				t.Errorf("%d runs, want %d", len(got), len(want))
			}
			for date, w := range want {
				if g, ok := got[date]; !ok {
					t.Errorf("no run on %s, want one at %s", date, w.In(loc))
				} else if !g.Equal(w) {
					t.Errorf("run on %s at %s, want %s", date, g.In(loc), w.In(loc))
				}
			}
			if t.Failed() {
				return
			}
			if tt.gapDay != "" {
				t.Logf("%s: gap day %s ran at %s", tt.at, tt.gapDay, got[tt.gapDay].In(loc).Format("15:04:05 MST"))
			}
			if tt.twiceDay != "" {
				t.Logf("%s: repeat day %s ran once, at %s", tt.at, tt.twiceDay, got[tt.twiceDay].In(loc).Format("15:04:05 MST"))
			}
		})
	}
}

// TestRunnerClockTrouble: clocks that jump or wake late never give a day
// two runs; a wake-up later than MaxLate skips that day's run, one within
// it still runs; a failed job does not stop the loop.
func TestRunnerClockTrouble(t *testing.T) {
	sp, err := ParseAt("02:00 Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	loc := sp.Location
	from := time.Date(2026, 6, 1, 0, 0, 0, 0, loc)
	to := time.Date(2026, 6, 11, 0, 0, 0, 0, loc) // ten days
	day := func(tm time.Time) string { return tm.In(loc).Format("01-02") }
	tests := []struct {
		name      string
		overshoot func(wake time.Time) time.Duration
		// after runs job with the clock at the run's start and returns
		// where the clock is afterwards, and the job's error.
		after    func(run int, now time.Time) (time.Time, error)
		wantRuns int
		wantLate time.Duration // most a run may be late
	}{
		{name: "on time", after: func(_ int, now time.Time) (time.Time, error) { return now.Add(time.Minute), nil },
			wantRuns: 10},
		{name: "clock set back an hour after each run",
			after:    func(_ int, now time.Time) (time.Time, error) { return now.Add(5 * time.Minute).Add(-time.Hour), nil },
			wantRuns: 10},
		{name: "clock set back to the day before, before its run",
			after: func(run int, now time.Time) (time.Time, error) {
				if run == 1 {
					return now.Add(-25 * time.Hour), nil // 01:00 on the day that ran first
				}
				return now, nil
			},
			wantRuns: 10},
		{name: "clock jumps forward past a run",
			after: func(run int, now time.Time) (time.Time, error) {
				if run == 2 {
					return now.Add(36 * time.Hour), nil // lands at 14:00 next day
				}
				return now, nil
			},
			wantRuns: 9},
		{name: "every wake-up 10 minutes late", overshoot: func(time.Time) time.Duration { return 10 * time.Minute },
			after: func(_ int, now time.Time) (time.Time, error) { return now, nil }, wantRuns: 10, wantLate: 10 * time.Minute},
		{name: "woken 50 minutes late for the run", overshoot: atRun(loc, 50*time.Minute),
			after: func(_ int, now time.Time) (time.Time, error) { return now, nil }, wantRuns: 10, wantLate: 50 * time.Minute},
		{name: "asleep two hours over the run", overshoot: atRun(loc, 2*time.Hour),
			after: func(_ int, now time.Time) (time.Time, error) { return now, nil }, wantRuns: 0},
		{name: "asleep two hours over every other run", overshoot: func(wake time.Time) time.Duration {
			if wake.In(loc).Day()%2 == 0 {
				return atRun(loc, 2*time.Hour)(wake)
			}
			return 0
		}, after: func(_ int, now time.Time) (time.Time, error) { return now, nil }, wantRuns: 5},
		{name: "failing job", after: func(_ int, now time.Time) (time.Time, error) { return now, errors.New("backup failed") },
			wantRuns: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{now: from, overshoot: tt.overshoot}
			seen := map[string]bool{}
			runs := 0
			runFake(t, sp, clk, to, func(now time.Time) error {
				if seen[day(now)] {
					t.Fatalf("second run on %s", day(now))
				}
				seen[day(now)] = true
				h, m, _ := now.In(loc).Clock()
				late := time.Duration(h-2)*time.Hour + time.Duration(m)*time.Minute
				if late < 0 || late > tt.wantLate {
					t.Errorf("run at %s: %v late, want at most %v", now.In(loc), late, tt.wantLate)
				}
				var err error
				clk.now, err = tt.after(runs, now)
				runs++
				return err
			})
			if runs != tt.wantRuns {
				t.Fatalf("%d runs, want %d", runs, tt.wantRuns)
			}
		})
	}
}

// atRun makes the sleep that would wake at 02:00 local wake by late later.
func atRun(loc *time.Location, late time.Duration) func(time.Time) time.Duration {
	return func(wake time.Time) time.Duration {
		if h, m, s := wake.In(loc).Clock(); h == 2 && m == 0 && s == 0 {
			return late
		}
		return 0
	}
}

// TestRunnerStops: a cancel while sleeping or during the job ends Run with
// nil, and the job's context is the one cancelled.
func TestRunnerStops(t *testing.T) {
	sp, _ := ParseAt("02:00 UTC")
	t.Run("while sleeping", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := &Runner{Spec: sp, Job: func(context.Context) error { t.Fatal("job ran"); return nil },
			Sleep: func(ctx context.Context, d time.Duration) error { cancel(); return SleepContext(ctx, d) }}
		if err := r.Run(ctx); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	})
	t.Run("during the job", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		jobs := 0
		r := &Runner{Spec: sp, Now: clk.Now, Sleep: clk.Sleep, Job: func(jctx context.Context) error {
			jobs++
			cancel()
			<-jctx.Done()
			return jctx.Err()
		}}
		if err := r.Run(ctx); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if jobs != 1 {
			t.Fatalf("%d jobs, want 1", jobs)
		}
	})
	t.Run("planned times", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		clk := &fakeClock{now: time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC), stopAt: time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC), cancel: cancel}
		var planned []time.Time
		r := &Runner{Spec: sp, Now: clk.Now, Sleep: clk.Sleep, Job: func(context.Context) error { return nil },
			Planned: func(next time.Time) { planned = append(planned, next) }}
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		want := []time.Time{time.Date(2026, 1, 2, 2, 0, 0, 0, time.UTC), time.Date(2026, 1, 3, 2, 0, 0, 0, time.UTC)}
		if len(planned) != len(want) || !planned[0].Equal(want[0]) || !planned[1].Equal(want[1]) {
			t.Fatalf("planned %v, want %v", planned, want)
		}
	})
}
