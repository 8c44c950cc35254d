// Package codec turns plain streams into stored ones and back: compression
// (zstd, lz4, gzip, none), named by the extension it gives an object key,
// and reading what other tools store (brotli, lzma, lzop: foreign.go).
// It knows nothing of storage or WAL.
package codec

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// ErrUnknown is returned for a codec name or extension walgo does not know.
var ErrUnknown = errors.New("unknown codec")

// ErrCorrupt wraps any failure to decode a stream: bad magic, checksum
// mismatch, truncation.
var ErrCorrupt = errors.New("corrupt data")

// Compression is one compression format walgo writes (and reads). Its
// Name is the setting's value: "zstd", "lz4", "gzip", "none".
type Compression interface {
	Decompressor
	// NewWriter compresses into w; Close flushes but does not close w.
	NewWriter(w io.Writer) (io.WriteCloser, error)
}

var all = []Compression{Zstd{}, LZ4{}, Gzip{}, None{}}

// ByName returns the compression a setting names.
func ByName(name string) (Compression, error) {
	for _, c := range all {
		if c.Name() == strings.ToLower(name) {
			return c, nil
		}
	}
	for _, d := range foreign {
		if d.Name() == strings.ToLower(name) {
			return nil, fmt.Errorf("%w %q: walgo reads %s objects other tools wrote, but writes only %s", ErrUnknown, name, name, strings.Join(Names(), ", "))
		}
	}
	return nil, fmt.Errorf("%w %q: want one of %s", ErrUnknown, name, strings.Join(Names(), ", "))
}

// ByExt returns the format an object key's extension names: one walgo
// writes, or one it only reads (ForeignExts, and "" for a bare name).
func ByExt(ext string) (Decompressor, error) {
	for _, c := range all {
		if c.Ext() == ext {
			return c, nil
		}
	}
	for _, d := range foreign {
		if d.Ext() == ext {
			return d, nil
		}
	}
	return nil, fmt.Errorf("%w: extension %q", ErrUnknown, ext)
}

// Names lists the known compression names.
func Names() []string {
	var n []string
	for _, c := range all {
		n = append(n, c.Name())
	}
	sort.Strings(n)
	return n
}

// Exts lists the extensions walgo writes, the default (zstd) first.
func Exts() []string {
	var e []string
	for _, c := range all {
		e = append(e, c.Ext())
	}
	return e
}

// Zstd is zstd at the fastest level, using every core for one stream.
type Zstd struct{}

func (Zstd) Name() string { return "zstd" }
func (Zstd) Ext() string  { return "zst" }
func (Zstd) NewWriter(w io.Writer) (io.WriteCloser, error) {
	enc, err := zstdEncoder()
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	return newParallelWriter(w, enc, runtime.GOMAXPROCS(0)), nil
}

// zstdEncoder is the one encoder of the process, shared by every stream:
// its per-core state (hash tables, history) is made once, not per file,
// and the streams together compress on as many blocks at once as there
// are cores. A process pushing many files (the background pusher, a
// backup) would otherwise make and drop megabytes of it per file.
var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(blockSize),
	)
})

func (Zstd) NewReader(r io.Reader) (io.ReadCloser, error) {
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
	}
	return errReader{rc: d.IOReadCloser(), name: "zstd"}, nil
}

// LZ4 is the lz4 frame format, with a content checksum.
type LZ4 struct{}

func (LZ4) Name() string { return "lz4" }
func (LZ4) Ext() string  { return "lz4" }
func (LZ4) NewWriter(w io.Writer) (io.WriteCloser, error) {
	lw := lz4.NewWriter(w)
	if err := lw.Apply(lz4.ChecksumOption(true), lz4.ConcurrencyOption(-1)); err != nil {
		return nil, fmt.Errorf("lz4: %w", err)
	}
	return lw, nil
}
func (LZ4) NewReader(r io.Reader) (io.ReadCloser, error) {
	return errReader{rc: io.NopCloser(lz4.NewReader(r)), name: "lz4"}, nil
}

// Gzip is gzip at the fastest level.
type Gzip struct{}

func (Gzip) Name() string { return "gzip" }
func (Gzip) Ext() string  { return "gz" }
func (Gzip) NewWriter(w io.Writer) (io.WriteCloser, error) {
	return gzip.NewWriterLevel(w, gzip.BestSpeed)
}
func (Gzip) NewReader(r io.Reader) (io.ReadCloser, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
	}
	return errReader{rc: zr, name: "gzip"}, nil
}

// None stores data as is. It detects nothing: prefer a real codec.
type None struct{}

func (None) Name() string { return "none" }
func (None) Ext() string  { return "none" }
func (None) NewWriter(w io.Writer) (io.WriteCloser, error) {
	return nopWriteCloser{w}, nil
}
func (None) NewReader(r io.Reader) (io.ReadCloser, error) {
	return errReader{rc: io.NopCloser(r), name: "none"}, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// errReader marks decoder failures as ErrCorrupt, so callers can tell a
// damaged object from a failing network read (which the decoders pass on
// unchanged and this keeps as it is).
type errReader struct {
	rc   io.ReadCloser
	name string
}

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.rc.Read(p)
	if err != nil && err != io.EOF {
		var se sourceError
		if errors.As(err, &se) {
			return n, se.err
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return n, fmt.Errorf("%w: %s: truncated stream", ErrCorrupt, e.name)
		}
		return n, fmt.Errorf("%w: %s: %v", ErrCorrupt, e.name, err)
	}
	return n, err
}

func (e errReader) Close() error { return e.rc.Close() }

// sourceError carries an error of the underlying reader through a decoder
// unchanged, so it is not mistaken for corruption.
type sourceError struct{ err error }

func (s sourceError) Error() string { return s.err.Error() }
func (s sourceError) Unwrap() error { return s.err }

// markSource wraps r so its own errors (other than EOF) pass through
// NewReader's decoder marked as source errors, not corruption.
type markSource struct{ r io.Reader }

func (m markSource) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err != nil && err != io.EOF {
		err = sourceError{err}
	}
	return n, err
}

// Decode opens a decompressing reader on r for format c, keeping read
// errors of r apart from corruption of the data.
func Decode(c Decompressor, r io.Reader) (io.ReadCloser, error) {
	return c.NewReader(markSource{r})
}
