package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// syncBuffer is a bytes.Buffer safe for the ticker goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressTerminal(t *testing.T) {
	var out syncBuffer
	p := newProgressTo("restore-test", zap.NewNop(), &out, true)
	p.every = time.Millisecond
	p.phase("download")
	for i := int64(1); i <= 4; i++ {
		time.Sleep(2 * time.Millisecond)
		p.update(i<<20, 4<<20)
	}
	p.phase("replay")
	time.Sleep(20 * time.Millisecond) // the ticker shows the elapsed time
	p.done()
	s := out.String()
	for _, want := range []string{
		"restore-test download [", "4.0 MiB / 4.0 MiB", "ETA 0s", "ETA 0s\x1b[K  done in",
		"restore-test replay  0s\x1b[K  done in",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, s)
		}
	}
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 2 {
		t.Errorf("want one closed line per phase:\n%q", s)
	}
}

func TestProgressLog(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var out syncBuffer
	p := newProgressTo("backup-fetch", zap.New(core), &out, false)
	p.every = time.Millisecond
	time.Sleep(2 * time.Millisecond)
	p.update(1<<20, 2<<20)
	p.phase("check")
	time.Sleep(20 * time.Millisecond)
	p.done()
	if out.String() != "" {
		t.Errorf("wrote to the output without a terminal: %q", out.String())
	}
	var bytesLine, phaseLine, elapsedLine bool
	for _, e := range logs.All() {
		f := e.ContextMap()
		switch {
		case e.Message == "progress" && f["op"] == "backup-fetch" && f["bytes"] == int64(1<<20) && f["total_bytes"] == int64(2<<20) && f["eta"] != nil:
			bytesLine = true
		case e.Message == "phase" && f["phase"] == "check":
			phaseLine = true
		case e.Message == "progress" && f["phase"] == "check" && f["elapsed"] != nil:
			elapsedLine = true
		}
	}
	if !bytesLine || !phaseLine || !elapsedLine {
		t.Errorf("log lines (bytes %v, phase %v, elapsed %v): %v", bytesLine, phaseLine, elapsedLine, logs.All())
	}
}
