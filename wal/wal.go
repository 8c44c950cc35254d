// Package wal holds Postgres' WAL vocabulary: LSNs, timelines, segment file
// names and the other files Postgres archives (.history, .backup, .partial).
// It knows nothing of storage or compression.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultSegmentSize is Postgres' default wal_segment_size (16 MiB).
const DefaultSegmentSize = 16 << 20

// Segment sizes Postgres accepts: a power of two from 1 MiB to 1 GiB.
const (
	MinSegmentSize = 1 << 20
	MaxSegmentSize = 1 << 30
)

// ValidSegmentSize reports whether n is a wal_segment_size Postgres allows.
func ValidSegmentSize(n int64) bool {
	return n >= MinSegmentSize && n <= MaxSegmentSize && n&(n-1) == 0
}

// LSN is a WAL location (XLogRecPtr).
type LSN uint64

// String formats the LSN the way Postgres prints it: "16/B374D848".
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("invalid LSN %q: want XXXXXXXX/XXXXXXXX", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// Kind says what an archived file is.
type Kind int

const (
	KindUnknown Kind = iota
	KindSegment      // 000000010000000000000001
	KindHistory      // 00000002.history
	KindBackup       // 000000010000000000000002.00000028.backup
	KindPartial      // 000000010000000000000003.partial
)

func (k Kind) String() string {
	switch k {
	case KindSegment:
		return "segment"
	case KindHistory:
		return "history"
	case KindBackup:
		return "backup"
	case KindPartial:
		return "partial"
	}
	return "unknown"
}

// ErrBadName is returned for a file name that is not one Postgres archives.
var ErrBadName = errors.New("not a WAL file name")

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// Classify returns the kind of an archived file name (no directory). Postgres
// writes hex digits in upper case; anything else is KindUnknown.
func Classify(name string) Kind {
	switch {
	case len(name) == 24 && isHex(name):
		return KindSegment
	case len(name) == 16 && strings.HasSuffix(name, ".history") && isHex(name[:8]):
		return KindHistory
	case len(name) == 40 && strings.HasSuffix(name, ".backup") && isHex(name[:24]) && name[24] == '.' && isHex(name[25:33]):
		return KindBackup
	case len(name) == 32 && strings.HasSuffix(name, ".partial") && isHex(name[:24]):
		return KindPartial
	}
	return KindUnknown
}

// Segment names one WAL segment file: timeline, log id and segment within it,
// exactly the three 8-hex-digit fields of its name.
type Segment struct {
	Timeline uint32
	Log      uint32
	Seg      uint32
}

// ParseSegment parses a 24-hex-digit segment name.
func ParseSegment(name string) (Segment, error) {
	if len(name) != 24 || !isHex(name) {
		return Segment{}, fmt.Errorf("%w: %q is not a segment name", ErrBadName, name)
	}
	var f [3]uint32
	for i := range f {
		v, _ := strconv.ParseUint(name[i*8:i*8+8], 16, 32)
		f[i] = uint32(v)
	}
	return Segment{Timeline: f[0], Log: f[1], Seg: f[2]}, nil
}

// SegmentsPerLog is how many segments of this size one log id holds.
func SegmentsPerLog(segSize int64) uint32 { return uint32((1 << 32) / segSize) }

// SegmentAt returns the segment holding lsn on a timeline.
func SegmentAt(tli uint32, lsn LSN, segSize int64) Segment {
	return SegmentFromNo(tli, uint64(lsn)/uint64(segSize), segSize)
}

// SegmentFromNo returns segment number no of a timeline.
func SegmentFromNo(tli uint32, no uint64, segSize int64) Segment {
	per := uint64(SegmentsPerLog(segSize))
	return Segment{Timeline: tli, Log: uint32(no / per), Seg: uint32(no % per)}
}

// Name is the segment's file name.
func (s Segment) Name() string { return fmt.Sprintf("%08X%08X%08X", s.Timeline, s.Log, s.Seg) }

func (s Segment) String() string { return s.Name() }

// No is the segment's number on its timeline (XLogSegNo).
func (s Segment) No(segSize int64) uint64 {
	return uint64(s.Log)*uint64(SegmentsPerLog(segSize)) + uint64(s.Seg)
}

// StartLSN is the LSN of the segment's first byte.
func (s Segment) StartLSN(segSize int64) LSN { return LSN(s.No(segSize) * uint64(segSize)) }

// Next is the following segment on the same timeline.
func (s Segment) Next(segSize int64) Segment {
	s.Seg++
	if s.Seg >= SegmentsPerLog(segSize) {
		s.Seg = 0
		s.Log++
	}
	return s
}

// Valid reports whether the segment can exist with this segment size.
func (s Segment) Valid(segSize int64) bool { return s.Seg < SegmentsPerLog(segSize) }

// HistoryName is the name of a timeline's history file.
func HistoryName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// HeaderSize is how many bytes of a segment ParseHeader needs.
const HeaderSize = 40

// Header is the long page header that starts every WAL segment
// (XLogLongPageHeaderData).
type Header struct {
	Magic       uint16
	Timeline    uint32
	PageAddr    LSN
	SystemID    uint64
	SegmentSize uint32
	BlockSize   uint32
}

// ErrBadHeader is returned when a file does not start with a WAL segment's
// long page header.
var ErrBadHeader = errors.New("not a WAL segment")

// ParseHeader decodes the long page header at the start of a segment.
// Postgres writes it in the machine's byte order; every platform walgo
// targets is little-endian.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: shorter than a page header", ErrBadHeader)
	}
	le := binary.LittleEndian
	h := Header{
		Magic:       le.Uint16(b[0:]),
		Timeline:    le.Uint32(b[4:]),
		PageAddr:    LSN(le.Uint64(b[8:])),
		SystemID:    le.Uint64(b[24:]),
		SegmentSize: le.Uint32(b[32:]),
		BlockSize:   le.Uint32(b[36:]),
	}
	info := le.Uint16(b[2:])
	if info&XLPLongHeader == 0 || h.Magic < 0xD000 || !ValidSegmentSize(int64(h.SegmentSize)) || h.BlockSize == 0 {
		return Header{}, fmt.Errorf("%w: no long page header", ErrBadHeader)
	}
	return h, nil
}

// Check verifies that a segment file's header matches its name and size: the
// page address is the segment's start, the header's segment size is the
// file's size, and its timeline is the name's or an older one. It catches a
// renamed or truncated file; another cluster's is told by SystemID.
func (h Header) Check(s Segment, fileSize int64) error {
	if int64(h.SegmentSize) != fileSize {
		return fmt.Errorf("%w: %s is %d bytes, but its header says the segment size is %d", ErrBadHeader, s.Name(), fileSize, h.SegmentSize)
	}
	if !s.Valid(int64(h.SegmentSize)) || h.PageAddr != s.StartLSN(int64(h.SegmentSize)) {
		return fmt.Errorf("%w: %s starts at %s, but its header says %s", ErrBadHeader, s.Name(), s.StartLSN(int64(h.SegmentSize)), h.PageAddr)
	}
	// The first segment of a new timeline starts with pages of its parent
	// (Postgres copies them at the switch), so an older timeline is fine.
	if h.Timeline == 0 || h.Timeline > s.Timeline {
		return fmt.Errorf("%w: %s is on timeline %d, but its header says timeline %d", ErrBadHeader, s.Name(), s.Timeline, h.Timeline)
	}
	return nil
}

// MarshalText writes the LSN as Postgres prints it, so JSON shows "0/3000028".
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads "0/3000028".
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
