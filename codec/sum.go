package codec

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"sync"
)

// SumWriter passes writes on to W, counting them in N and hashing them
// with sha256: the sizes and sums walgo records in sentinels. One made
// without NewSumWriter only counts.
type SumWriter struct {
	W io.Writer
	N int64
	// Progress, if set, is called with N after each write.
	Progress func(n int64)
	h        hash.Hash
}

// NewSumWriter returns a SumWriter onto w.
func NewSumWriter(w io.Writer) *SumWriter { return &SumWriter{W: w, h: sha256.New()} }

func (s *SumWriter) Write(p []byte) (int, error) {
	n, err := s.W.Write(p)
	if s.h != nil {
		s.h.Write(p[:n])
	}
	s.N += int64(n)
	if s.Progress != nil && n > 0 {
		s.Progress(s.N)
	}
	return n, err
}

// SHA256 is the hex sha256 of everything written so far.
func (s *SumWriter) SHA256() string { return hex.EncodeToString(s.h.Sum(nil)) }

// SumReader counts in N and hashes with sha256 what is read through R.
type SumReader struct {
	R io.Reader
	N int64
	h hash.Hash
}

// NewSumReader returns a SumReader over r.
func NewSumReader(r io.Reader) *SumReader { return &SumReader{R: r, h: sha256.New()} }

func (s *SumReader) Read(p []byte) (int, error) {
	n, err := s.R.Read(p)
	s.h.Write(p[:n])
	s.N += int64(n)
	return n, err
}

// SHA256 is the hex sha256 of everything read so far.
func (s *SumReader) SHA256() string { return hex.EncodeToString(s.h.Sum(nil)) }

// asyncChunk is how much AsyncSHA256 gathers before handing it to its
// goroutine: large enough that the hand-off costs nothing next to hashing.
const asyncChunk = 256 << 10

var asyncBufs = sync.Pool{New: func() any { b := make([]byte, 0, asyncChunk); return &b }}

// AsyncSHA256 hashes what is written to it with sha256 on a goroutine of
// its own, so that hashing a file overlaps reading and writing it: a
// restore or backup of one partition is otherwise one goroutine doing
// both. Writes are copied, so the caller may reuse its buffer at once. A
// small input (under one chunk) is hashed in Sum without a goroutine.
// Sum or Close must be called once the writes are done; then no more.
type AsyncSHA256 struct {
	h    hash.Hash
	cur  []byte
	work chan []byte // nil until the first chunk is handed off
	done chan struct{}
	sum  string
	end  bool
}

// NewAsyncSHA256 returns an AsyncSHA256 with nothing written.
func NewAsyncSHA256() *AsyncSHA256 { return &AsyncSHA256{h: sha256.New()} }

func (a *AsyncSHA256) Write(p []byte) (int, error) {
	if a.end {
		return 0, errors.New("sha256: write after Sum")
	}
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = (*asyncBufs.Get().(*[]byte))[:0]
		}
		k := min(len(p), cap(a.cur)-len(a.cur))
		a.cur = append(a.cur, p[:k]...)
		p = p[k:]
		if len(a.cur) == cap(a.cur) {
			a.handOff()
		}
	}
	return n, nil
}

func (a *AsyncSHA256) handOff() {
	if a.work == nil {
		a.work, a.done = make(chan []byte, 1), make(chan struct{})
		go func() {
			defer close(a.done)
			for b := range a.work {
				a.h.Write(b)
				b = b[:0]
				asyncBufs.Put(&b)
			}
		}()
	}
	a.work <- a.cur
	a.cur = nil
}

// Sum waits for the hashing to finish and returns the hex sha256 of
// everything written.
func (a *AsyncSHA256) Sum() string {
	if a.end {
		return a.sum
	}
	a.end = true
	if a.work != nil {
		close(a.work)
		<-a.done
	}
	if a.cur != nil {
		a.h.Write(a.cur)
		b := a.cur[:0]
		asyncBufs.Put(&b)
		a.cur = nil
	}
	a.sum = hex.EncodeToString(a.h.Sum(nil))
	return a.sum
}

// Close ends the hashing (for paths that give up before Sum).
func (a *AsyncSHA256) Close() error {
	a.Sum()
	return nil
}
