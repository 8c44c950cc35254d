package codec

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
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
