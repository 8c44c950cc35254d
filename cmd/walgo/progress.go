package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// progress shows what a long command is doing: on a terminal a bar with
// bytes, rate and ETA (redrawn 5 times a second), otherwise a log line
// every 10 seconds (Postgres' log, cron mail). A command with several
// phases (restore-test: download, replay, check) names each with phase;
// a phase without byte counts shows its elapsed time.
type progress struct {
	what     string
	log      *zap.Logger
	out      io.Writer
	terminal bool
	every    time.Duration
	start    time.Time

	mu         sync.Mutex
	name       string    // the current phase, "" for none
	phaseStart time.Time // when it started
	bytes      bool      // the phase has reported bytes
	lastDone   int64     // and these were the last
	lastTotal  int64
	last       time.Time // last drawn or logged
	drawn      bool      // a bar line is open on the terminal
	stopTick   chan struct{}
	ticking    sync.WaitGroup
}

func newProgress(what string, log *zap.Logger) *progress {
	fi, err := os.Stderr.Stat()
	return newProgressTo(what, log, os.Stderr, err == nil && fi.Mode()&os.ModeCharDevice != 0)
}

// newProgressTo draws on out when terminal is set, and logs otherwise.
func newProgressTo(what string, log *zap.Logger, out io.Writer, terminal bool) *progress {
	now := time.Now()
	every := 10 * time.Second
	if terminal {
		every = 200 * time.Millisecond
	}
	return &progress{what: what, log: log, out: out, terminal: terminal, every: every, start: now, phaseStart: now, last: now}
}

// label is what a line starts with: the command and its phase.
func (p *progress) label() string {
	if p.name == "" {
		return p.what
	}
	return p.what + " " + p.name
}

// update shows done of total bytes; a negative total is unknown.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes, p.lastDone, p.lastTotal = true, done, total
	now := time.Now()
	if now.Sub(p.last) < p.every {
		return
	}
	p.show(now, done, total)
}

// show draws or logs done of total bytes at now.
func (p *progress) show(now time.Time, done, total int64) {
	p.last = now
	elapsed := now.Sub(p.phaseStart).Seconds()
	rate := float64(done) / max(elapsed, 0.001)
	if total < 0 { // unknown total (a pipe): bytes and rate only
		if !p.terminal {
			p.log.Info("progress", zap.String("op", p.what), p.phaseField(), zap.Int64("bytes", done), zap.String("rate", humanBytes(int64(rate))+"/s"))
			return
		}
		p.draw(fmt.Sprintf("%s %s  %s/s", p.label(), humanBytes(done), humanBytes(int64(rate))))
		return
	}
	eta := "?"
	if rate > 0 && total >= done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	if !p.terminal {
		p.log.Info("progress", zap.String("op", p.what), p.phaseField(), zap.Int64("bytes", done), zap.Int64("total_bytes", total),
			zap.String("rate", humanBytes(int64(rate))+"/s"), zap.String("eta", eta))
		return
	}
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	const width = 30
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if float64(i) < frac*width {
			bar[i] = '='
		}
	}
	p.draw(fmt.Sprintf("%s [%s] %s / %s  %s/s  ETA %s", p.label(), bar, humanBytes(done), humanBytes(total), humanBytes(int64(rate)), eta))
}

func (p *progress) phaseField() zap.Field {
	if p.name == "" {
		return zap.Skip()
	}
	return zap.String("phase", p.name)
}

// draw rewrites the terminal line (and erases what a longer one left).
func (p *progress) draw(line string) {
	fmt.Fprintf(p.out, "\r%s\x1b[K", line)
	p.drawn = true
}

// phase ends the current phase (its line stays on the terminal) and starts
// the next one. Until bytes are reported for it, a phase shows how long it
// has been running.
func (p *progress) phase(name string) {
	p.endPhase()
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.name, p.phaseStart, p.last, p.bytes = name, now, now, false
	if !p.terminal {
		p.log.Info("phase", zap.String("op", p.what), zap.String("phase", name))
	} else {
		p.draw(p.label())
	}
	stop := make(chan struct{})
	p.stopTick = stop
	p.ticking.Go(func() {
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p.tick()
			}
		}
	})
}

// tick shows a running phase's elapsed time while it reports no bytes.
func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes || time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	took := time.Since(p.phaseStart).Round(time.Second)
	if !p.terminal {
		p.log.Info("progress", zap.String("op", p.what), p.phaseField(), zap.Duration("elapsed", took))
		return
	}
	p.draw(fmt.Sprintf("%s  %s", p.label(), took))
}

// endPhase stops the current phase's ticker and closes its line.
func (p *progress) endPhase() {
	p.mu.Lock()
	stop := p.stopTick
	p.stopTick = nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		p.ticking.Wait()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal && p.bytes {
		p.show(time.Now(), p.lastDone, p.lastTotal) // the final count
	}
	if p.terminal && p.drawn {
		if p.name != "" {
			fmt.Fprintf(p.out, "  done in %s", time.Since(p.phaseStart).Round(100*time.Millisecond))
		}
		fmt.Fprintln(p.out)
		p.drawn = false
	}
}

// done ends the display: the terminal shows the final count, and its
// line is closed.
func (p *progress) done() { p.endPhase() }
