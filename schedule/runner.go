package schedule

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Defaults for the Runner's zero fields.
const (
	// DefaultMaxLate is how late a run may still start.
	DefaultMaxLate = time.Hour
	// DefaultMaxSleep bounds one sleep, so a wall clock that jumps, or a
	// machine that was suspended (the monotonic clock timers use stops
	// then), is noticed within this.
	DefaultMaxSleep = time.Minute
)

// Runner runs Job once a day at Spec's time until its context ends.
type Runner struct {
	Spec Spec
	// Job is one run; its error is logged and the loop goes on.
	Job func(ctx context.Context) error
	// Now reads the wall clock (time.Now if nil).
	Now func() time.Time
	// Sleep waits d or until ctx ends (SleepContext if nil).
	Sleep func(ctx context.Context, d time.Duration) error
	// MaxLate: a run that cannot start within this after its time (the
	// machine slept through it, the clock jumped forward) is skipped and
	// logged; the next day's run goes on. DefaultMaxLate if zero.
	MaxLate time.Duration
	// MaxSleep bounds one Sleep; DefaultMaxSleep if zero.
	MaxSleep time.Duration
	// Planned, if set, is told each next run's time as soon as it is known.
	Planned func(next time.Time)
	Log     *zap.Logger
}

// SleepContext waits d, or until ctx ends and then returns its error.
func SleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Run loops until ctx ends, then returns nil: stopping is not a failure.
// A day whose run already happened never runs again, whatever the clock
// does afterwards.
func (r *Runner) Run(ctx context.Context) error {
	now, sleep := r.Now, r.Sleep
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = SleepContext
	}
	maxLate, maxSleep := r.MaxLate, r.MaxSleep
	if maxLate <= 0 {
		maxLate = DefaultMaxLate
	}
	if maxSleep <= 0 {
		maxSleep = DefaultMaxSleep
	}
	log := r.Log
	if log == nil {
		log = zap.NewNop()
	}
	loc := r.Spec.loc()
	var lastDay wall // the local date of the last run (time of day zero)
	// Round(0) drops the monotonic reading: the schedule follows the wall
	// clock, which is what jumps and what the operator means.
	next := r.Spec.Next(now().Round(0))
	plan := func(t time.Time) {
		next = t
		log.Info("next backup", zap.Time("at", next), zap.String("local", next.In(loc).Format("2006-01-02 15:04:05 MST")))
		if r.Planned != nil {
			r.Planned(next)
		}
	}
	plan(next)
	for {
		for t := now().Round(0); t.Before(next); t = now().Round(0) {
			if err := sleep(ctx, min(next.Sub(t), maxSleep)); err != nil || ctx.Err() != nil {
				return nil
			}
		}
		t := now().Round(0)
		y, m, d := next.In(loc).Date()
		day := wall{y: y, m: m, d: d}
		late := t.Sub(next)
		switch {
		case day == lastDay:
			// Unreachable as next only moves forward; kept as the rule's guard.
			log.Warn("run skipped: this day already ran", zap.Time("at", next))
		case late > maxLate:
			log.Warn("run skipped: too late", zap.Time("at", next), zap.Duration("late", late), zap.Duration("max_late", maxLate))
		default:
			lastDay = day
			log.Info("run started", zap.Time("at", next), zap.Duration("late", late))
			start := time.Now()
			err := r.Job(ctx)
			took := time.Since(start)
			if ctx.Err() != nil {
				log.Info("run abandoned: stopping", zap.Duration("took", took), zap.Error(err))
				return nil
			}
			if err != nil {
				log.Error("run failed", zap.Duration("took", took), zap.Error(err))
			} else {
				log.Info("run finished", zap.Duration("took", took))
			}
		}
		// From the later of now and the run just due: a clock set back
		// after a run cannot bring the same day round again.
		from := now().Round(0)
		if from.Before(next) {
			from = next
		}
		plan(r.Spec.Next(from))
	}
}
