package codec

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"hash/crc32"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/ulikunitz/xz/lzma"
)

// Formats walgo reads but never writes: what WAL-G and WAL-E store in the
// same folders (see the README, "Sharing a repository with WAL-G").
//
//   - .br: a raw brotli stream, as WAL-G's brotli compression writes it
//     (cbrotli, quality 3). Decoded by github.com/andybalholm/brotli, the
//     pure Go translation of Google's C decoder.
//   - .lzma: the classic LZMA ("LZMA alone") format with its 13-byte header,
//     unknown size and end marker, as WAL-G's lzma compression writes it
//     with github.com/ulikunitz/xz/lzma, which decodes it here too.
//   - .lzo: an lzop file (`lzop --stdout`, what WAL-E wrote; WAL-G reads it
//     with the cgo lzop reader github.com/cyberdelia/lzo). Decoded here: the
//     lzop framing below, the LZO1X blocks in lzo1x.go.
//   - no extension: WAL-G's compression "none" stores the plain file under
//     its bare name.
//
// None of these carries a checksum over the whole stream but lzop (per
// block); WAL-G's own encryption (libsodium, OpenPGP) keeps the extension
// and is not readable by walgo: such an object fails as corrupt.

// Decompressor is a format walgo can read. Every Compression is one.
type Decompressor interface {
	// Name says what the format is, for messages.
	Name() string
	// Ext is the extension that names it in object keys, without the dot.
	Ext() string
	// NewReader decompresses r. Decoding errors wrap ErrCorrupt.
	NewReader(r io.Reader) (io.ReadCloser, error)
}

var foreign = []Decompressor{Brotli{}, LZMA{}, LZO{}, NoExt{}}

// ForeignExts lists the extensions of the formats walgo reads but does not
// write (brotli, lzma, lzop), without the empty one of NoExt.
func ForeignExts() []string {
	var out []string
	for _, d := range foreign {
		if d.Ext() != "" {
			out = append(out, d.Ext())
		}
	}
	return out
}

// Brotli reads WAL-G's brotli objects.
type Brotli struct{}

func (Brotli) Name() string { return "brotli" }
func (Brotli) Ext() string  { return "br" }
func (Brotli) NewReader(r io.Reader) (io.ReadCloser, error) {
	return errReader{rc: io.NopCloser(brotli.NewReader(r)), name: "brotli"}, nil
}

// LZMA reads WAL-G's lzma objects (classic .lzma format).
type LZMA struct{}

// lzmaMaxDict bounds the dictionary a header may ask for: the decoder
// allocates it up front, and no WAL file is larger than a 1 GiB segment.
const lzmaMaxDict = 1 << 30

func (LZMA) Name() string { return "lzma" }
func (LZMA) Ext() string  { return "lzma" }
func (LZMA) NewReader(r io.Reader) (io.ReadCloser, error) {
	zr, err := lzma.ReaderConfig{DictCap: lzmaMaxDict}.NewReader(r)
	if err != nil {
		var se sourceError
		if errors.As(err, &se) {
			return nil, se.err
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: lzma: truncated header", ErrCorrupt)
		}
		return nil, fmt.Errorf("%w: lzma: %v", ErrCorrupt, err)
	}
	return errReader{rc: io.NopCloser(zr), name: "lzma"}, nil
}

// NoExt reads a plain file stored under its bare name (WAL-G's "none").
type NoExt struct{}

func (NoExt) Name() string { return "none (no extension)" }
func (NoExt) Ext() string  { return "" }
func (NoExt) NewReader(r io.Reader) (io.ReadCloser, error) {
	return errReader{rc: io.NopCloser(r), name: "none"}, nil
}

// LZO reads lzop files (WAL-E's .lzo objects).
type LZO struct{}

func (LZO) Name() string { return "lzo" }
func (LZO) Ext() string  { return "lzo" }
func (LZO) NewReader(r io.Reader) (io.ReadCloser, error) {
	lr := &lzopReader{r: bufio.NewReaderSize(r, 64<<10)}
	if err := lr.header(); err != nil {
		return nil, lr.fail(err)
	}
	return lr, nil
}

// lzop file format (lzop 1.0x, src/lzop.c): a 9-byte magic, a header whose
// fields depend on its version, then blocks of at most 64 MiB, each
// compressed on its own, and a zero length to end. All numbers are
// big-endian.
var lzopMagic = []byte{0x89, 'L', 'Z', 'O', 0x00, '\r', '\n', 0x1a, '\n'}

const (
	lzopAdler32D    = 0x00000001 // adler32 of each decompressed block
	lzopAdler32C    = 0x00000002 // adler32 of each compressed block
	lzopExtraField  = 0x00000040
	lzopCRC32D      = 0x00000100
	lzopCRC32C      = 0x00000200
	lzopMultipart   = 0x00000400
	lzopFilter      = 0x00000800
	lzopHeaderCRC32 = 0x00001000 // the header checksum is CRC-32, not adler32
	lzopMaxBlock    = 64 << 20
	// lzop methods: all three write LZO1X blocks.
	lzopLZO1X1   = 1
	lzopLZO1X115 = 2
	lzopLZO1X999 = 3
)

type lzopReader struct {
	r     *bufio.Reader
	flags uint32
	sum   io.Writer // the header checksums, while the header is read
	in    []byte    // one compressed block
	out   []byte    // one decompressed block
	rest  []byte    // what Read has not returned of out
	err   error
	done  bool
}

// fail marks a decoding error as corruption; errors of the source pass
// through as they are, and a short stream is truncation.
func (l *lzopReader) fail(err error) error {
	var se sourceError
	switch {
	case errors.As(err, &se):
		return se.err
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%w: lzo: truncated stream", ErrCorrupt)
	case errors.Is(err, ErrCorrupt):
		return err
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

func (l *lzopReader) read(p []byte) error {
	if _, err := io.ReadFull(l.r, p); err != nil {
		return err
	}
	if l.sum != nil {
		l.sum.Write(p)
	}
	return nil
}

func (l *lzopReader) u8() (uint8, error) {
	var b [1]byte
	err := l.read(b[:])
	return b[0], err
}

func (l *lzopReader) u16() (uint16, error) {
	var b [2]byte
	err := l.read(b[:])
	return binary.BigEndian.Uint16(b[:]), err
}

func (l *lzopReader) u32() (uint32, error) {
	var b [4]byte
	err := l.read(b[:])
	return binary.BigEndian.Uint32(b[:]), err
}

func (l *lzopReader) header() error {
	magic := make([]byte, len(lzopMagic))
	if _, err := io.ReadFull(l.r, magic); err != nil {
		return err
	}
	if !bytes.Equal(magic, lzopMagic) {
		return errors.New("lzo: not an lzop file (bad magic; a WAL-E object encrypted with GPG looks like this too)")
	}
	// The checksum covers the header from the version to the name. It is
	// adler32 or CRC-32 as a flag further on says, so both are kept.
	ad, cr := adler32.New(), crc32.NewIEEE()
	l.sum = io.MultiWriter(ad, cr)
	version, err := l.u16()
	if err != nil {
		return err
	}
	if version < 0x0900 {
		return fmt.Errorf("lzo: lzop format version %#x is too old", version)
	}
	if _, err := l.u16(); err != nil { // library version
		return err
	}
	if version >= 0x0940 {
		need, err := l.u16()
		if err != nil {
			return err
		}
		if need > 0x1040 {
			return fmt.Errorf("lzo: needs lzop %#x to extract", need)
		}
	}
	method, err := l.u8()
	if err != nil {
		return err
	}
	if method != lzopLZO1X1 && method != lzopLZO1X115 && method != lzopLZO1X999 {
		return fmt.Errorf("lzo: compression method %d is not LZO1X", method)
	}
	if version >= 0x0940 {
		if _, err := l.u8(); err != nil { // level
			return err
		}
	}
	if l.flags, err = l.u32(); err != nil {
		return err
	}
	if l.flags&(lzopMultipart|lzopFilter) != 0 {
		return fmt.Errorf("lzo: multipart or filtered lzop files are not supported (flags %#x)", l.flags)
	}
	// mode, mtime (and its high half from 0x0940 on)
	fields := 2
	if version >= 0x0940 {
		fields = 3
	}
	for range fields {
		if _, err := l.u32(); err != nil {
			return err
		}
	}
	n, err := l.u8()
	if err != nil {
		return err
	}
	if err := l.read(make([]byte, n)); err != nil { // file name
		return err
	}
	want := ad.Sum32()
	if l.flags&lzopHeaderCRC32 != 0 {
		want = cr.Sum32()
	}
	l.sum = nil
	got, err := l.u32()
	if err != nil {
		return err
	}
	if got != want {
		return errors.New("lzo: header checksum mismatch")
	}
	if l.flags&lzopExtraField != 0 {
		size, err := l.u32()
		if err != nil {
			return err
		}
		// The extra field is skipped with its checksum; nothing in it
		// matters for the data.
		if _, err := io.CopyN(io.Discard, l.r, int64(size)+4); err != nil {
			return err
		}
	}
	return nil
}

// block reads and decodes the next block into l.out; done at the end.
func (l *lzopReader) block() error {
	dlen, err := l.u32()
	if err != nil {
		return err
	}
	if dlen == 0 {
		l.done = true
		return nil
	}
	if dlen > lzopMaxBlock {
		return fmt.Errorf("lzo: block of %d bytes is larger than lzop writes", dlen)
	}
	clen, err := l.u32()
	if err != nil {
		return err
	}
	if clen == 0 || clen > dlen {
		return fmt.Errorf("lzo: block of %d compressed bytes for %d", clen, dlen)
	}
	var sums [4]uint32 // adler32 d, crc32 d, adler32 c, crc32 c
	want := [4]bool{l.flags&lzopAdler32D != 0, l.flags&lzopCRC32D != 0,
		clen < dlen && l.flags&lzopAdler32C != 0, clen < dlen && l.flags&lzopCRC32C != 0}
	for i := range sums {
		if want[i] {
			if sums[i], err = l.u32(); err != nil {
				return err
			}
		}
	}
	l.in = grow(l.in, int(clen))
	if _, err := io.ReadFull(l.r, l.in); err != nil {
		return err
	}
	if (want[2] && adler32.Checksum(l.in) != sums[2]) || (want[3] && crc32.ChecksumIEEE(l.in) != sums[3]) {
		return errors.New("lzo: compressed block checksum mismatch")
	}
	l.out = grow(l.out, int(dlen))
	if clen == dlen { // stored as is
		copy(l.out, l.in)
	} else if err := lzo1xDecode(l.in, l.out); err != nil {
		return err
	}
	if (want[0] && adler32.Checksum(l.out) != sums[0]) || (want[1] && crc32.ChecksumIEEE(l.out) != sums[1]) {
		return errors.New("lzo: block checksum mismatch")
	}
	l.rest = l.out
	return nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

func (l *lzopReader) Read(p []byte) (int, error) {
	for len(l.rest) == 0 {
		if l.err != nil {
			return 0, l.err
		}
		if l.done {
			return 0, io.EOF
		}
		if err := l.block(); err != nil {
			l.err = l.fail(err)
		}
	}
	n := copy(p, l.rest)
	l.rest = l.rest[n:]
	return n, nil
}

func (l *lzopReader) Close() error { return nil }
