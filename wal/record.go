package wal

// WAL pages and records, as Postgres writes them (xlog_internal.h,
// xlogrecord.h) and reads them back (xlogreader.c).
//
// A segment is a run of XLOG_BLCKSZ pages. Each page starts with a header
// (XLogPageHeaderData, 24 bytes after alignment); the first page of a
// segment has the long form (XLogLongPageHeaderData, 40 bytes) that also
// holds the system identifier, segment size and page size. Records follow
// the header, each starting on an 8-byte boundary with a 24-byte
// XLogRecord header whose xl_tot_len counts the whole record. A record
// that does not fit on the rest of a page continues on the next ones,
// after their headers; such a page has XLP_FIRST_IS_CONTRECORD set and
// xlp_rem_len saying how many bytes of the record are still to come. A
// record may cross a segment boundary like any page boundary. The WAL
// ends where the next record is not valid: a zero or too small length, a
// CRC-32C that does not match, an xl_prev that does not point at the
// previous record, or a page whose header does not belong at its place
// (a recycled segment's old pages). An XLOG_SWITCH record ends its
// segment: the next record starts the next segment.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Page header flags (xlp_info).
const (
	XLPFirstIsContRecord          = 0x0001
	XLPLongHeader                 = 0x0002
	XLPBkpRemovable               = 0x0004
	XLPFirstIsOverwriteContRecord = 0x0008
	xlpAllFlags                   = 0x000F
)

// Sizes of the page and record headers.
const (
	ShortPageHeaderSize = 24
	LongPageHeaderSize  = HeaderSize
	RecordHeaderSize    = 24
)

// MaxRecordSize bounds a record's xl_tot_len (XLogRecordMaxSize, 1020 MiB).
const MaxRecordSize = 1020 << 20

// DefaultMaxBuffered is how much of one record a Reader keeps in memory by
// default: a longer record is delivered with its header only (Truncated).
const DefaultMaxBuffered = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// PageHeader is the header of one WAL page.
type PageHeader struct {
	Magic    uint16 // XLOG_PAGE_MAGIC: the WAL format version
	Info     uint16 // xlp_info flags
	Timeline uint32
	PageAddr LSN
	// RemLen is, on a page that starts with the rest of a record
	// (ContRecord), how many bytes of that record remain.
	RemLen uint32
	// Long header fields (the first page of a segment).
	Long        bool
	SystemID    uint64
	SegmentSize uint32
	BlockSize   uint32
}

// Size is the header's size on its page.
func (h PageHeader) Size() int {
	if h.Long {
		return LongPageHeaderSize
	}
	return ShortPageHeaderSize
}

// ContRecord reports whether the page starts with the rest of a record.
func (h PageHeader) ContRecord() bool { return h.Info&XLPFirstIsContRecord != 0 }

// ParsePageHeader decodes a page header: the long form when xlp_info says
// so. It checks the magic looks like Postgres' (0xD0xx or later) and that
// no unknown flag is set; where the page belongs is for the caller.
func ParsePageHeader(b []byte) (PageHeader, error) {
	if len(b) < ShortPageHeaderSize {
		return PageHeader{}, fmt.Errorf("%w: shorter than a page header", ErrBadHeader)
	}
	le := binary.LittleEndian
	h := PageHeader{
		Magic:    le.Uint16(b[0:]),
		Info:     le.Uint16(b[2:]),
		Timeline: le.Uint32(b[4:]),
		PageAddr: LSN(le.Uint64(b[8:])),
		RemLen:   le.Uint32(b[16:]),
	}
	if h.Magic < 0xD000 || h.Info&^xlpAllFlags != 0 {
		return PageHeader{}, fmt.Errorf("%w: magic %04X, flags %04X", ErrBadHeader, h.Magic, h.Info)
	}
	if h.Info&XLPLongHeader != 0 {
		if len(b) < LongPageHeaderSize {
			return PageHeader{}, fmt.Errorf("%w: shorter than a long page header", ErrBadHeader)
		}
		h.Long = true
		h.SystemID = le.Uint64(b[24:])
		h.SegmentSize = le.Uint32(b[32:])
		h.BlockSize = le.Uint32(b[36:])
	}
	return h, nil
}

// Record is one WAL record.
type Record struct {
	LSN LSN // where it starts (ReadRecPtr)
	// End is where the next record may start (EndRecPtr): just past its
	// last byte, rounded up to 8 bytes. XLogInsert and so
	// pg_create_restore_point return it.
	End LSN
	// Magic is the page magic of the page it starts on: the WAL format,
	// which tells the Postgres major version.
	Magic    uint16
	Timeline uint32 // of the page it starts on
	TotalLen uint32
	XID      uint32
	Prev     LSN
	Info     uint8
	RMID     uint8
	// Data is the whole record, its header included; it is only valid
	// during the callback that received the record. Nil when Truncated.
	Data []byte
	// Truncated: the record is longer than the Reader keeps in memory; it
	// was skipped without checking its CRC.
	Truncated bool
}

// Reader decodes the records of consecutive WAL segments of one history.
// Feed it segments in order with ReadSegment; a record that crosses from
// one segment into the next is delivered by the call for the segment it
// ends in. Memory is bounded by one page plus the longest record kept
// (MaxBuffered).
type Reader struct {
	segSize int64
	// MaxBuffered is the longest record kept whole (DefaultMaxBuffered if
	// zero); longer ones are delivered Truncated.
	MaxBuffered int

	blockSize int
	magic     uint16
	sysID     uint64
	tli       uint32 // of the last page read

	lastSeg  Segment
	haveSeg  bool
	expected LSN // where the next record starts, when known (0: resync)
	prev     LSN // the previous record's start, when known

	// A record being assembled across pages.
	rec      []byte
	recStart LSN
	recMagic uint16
	recTLI   uint32
	recTotal uint32
	recGot   uint32
	skipping bool // a record whose start was not read (resync)

	last    LSN // end of the last valid record
	lastRec LSN // start of the last valid record
	ended   bool
	why     string
	records int64
}

// NewReader returns a Reader for segments of segSize bytes.
func NewReader(segSize int64) *Reader { return &Reader{segSize: segSize} }

// ReaderState says how far a Reader got.
type ReaderState struct {
	// LastStart and LastEnd are the start and end of the last valid record
	// read (0 if none).
	LastStart, LastEnd LSN
	// Ended: the WAL ended inside the last segment read: invalid data
	// where a record should start or continue. Why says what.
	Ended bool
	Why   string
	// Records counts the records delivered.
	Records int64
	// Magic and SystemID are from the segments' long page headers.
	Magic    uint16
	SystemID uint64
}

// State returns how far the reader got.
func (r *Reader) State() ReaderState {
	return ReaderState{LastStart: r.lastRec, LastEnd: r.last, Ended: r.ended, Why: r.why, Records: r.records, Magic: r.magic, SystemID: r.sysID}
}

// ErrStop, returned by a ReadSegment callback, stops reading without error.
var ErrStop = errors.New("stop reading WAL")

// ReadSegment reads segment seg's bytes from src and calls fn for every
// record that ends in it, in order. If seg does not directly follow the
// segment read before, the reader starts over at the first record that
// begins in seg. Invalid data is the end of the WAL (see State), not an
// error: ReadSegment then stops reading src and returns nil. It returns
// an error for a segment whose first page is not its own (ErrBadHeader),
// for src's errors, and for fn's (ErrStop stops quietly, and is returned
// so the caller knows).
func (r *Reader) ReadSegment(seg Segment, src io.Reader, fn func(*Record) error) error {
	if r.haveSeg && (seg.Timeline < r.lastSeg.Timeline || seg.No(r.segSize) != r.lastSeg.No(r.segSize)+1) {
		r.resync()
	} else if r.ended {
		r.resync() // what follows the end of WAL starts over
	}
	r.lastSeg, r.haveSeg = seg, true
	r.ended, r.why = false, ""
	segStart := seg.StartLSN(r.segSize)

	first := make([]byte, LongPageHeaderSize)
	if _, err := io.ReadFull(src, first); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadHeader, seg.Name(), err)
	}
	h, err := ParsePageHeader(first)
	if err != nil || !h.Long {
		return fmt.Errorf("%w: %s does not start with a long page header", ErrBadHeader, seg.Name())
	}
	if int64(h.SegmentSize) != r.segSize || h.PageAddr != segStart {
		return fmt.Errorf("%w: %s: header says segment size %d at %s", ErrBadHeader, seg.Name(), h.SegmentSize, h.PageAddr)
	}
	if h.BlockSize < 1024 || h.BlockSize > 1<<16 || h.BlockSize&(h.BlockSize-1) != 0 || int64(h.BlockSize) > r.segSize {
		return fmt.Errorf("%w: %s: page size %d", ErrBadHeader, seg.Name(), h.BlockSize)
	}
	if r.blockSize == 0 {
		r.blockSize, r.magic, r.sysID = int(h.BlockSize), h.Magic, h.SystemID
	} else if int(h.BlockSize) != r.blockSize || h.Magic != r.magic || h.SystemID != r.sysID {
		return fmt.Errorf("%w: %s: page size %d, magic %04X, system id %d; earlier segments had %d, %04X, %d",
			ErrBadHeader, seg.Name(), h.BlockSize, h.Magic, h.SystemID, r.blockSize, r.magic, r.sysID)
	}
	page := make([]byte, r.blockSize)
	copy(page, first)
	if _, err := io.ReadFull(src, page[LongPageHeaderSize:]); err != nil {
		return fmt.Errorf("read %s: %w", seg.Name(), err)
	}
	pages := r.segSize / int64(r.blockSize)
	for i := int64(0); i < pages; i++ {
		if i > 0 {
			if _, err := io.ReadFull(src, page); err != nil {
				return fmt.Errorf("read %s: %w", seg.Name(), err)
			}
		}
		done, err := r.page(page, segStart+LSN(i*int64(r.blockSize)), i == 0, fn)
		if err != nil {
			return err
		}
		if done {
			// No more records here; read the rest all the same, so a short
			// file (and the codec's own end checks) still fail.
			rest := r.segSize - (i+1)*int64(r.blockSize)
			if n, err := io.CopyN(io.Discard, src, rest); err != nil {
				return fmt.Errorf("read %s: %w after %d of the last %d bytes", seg.Name(), err, n, rest)
			}
			return nil
		}
	}
	return nil
}

// resync forgets where the next record starts: the reader will skip what
// continues a record it did not see begin.
func (r *Reader) resync() {
	r.expected, r.prev = 0, 0
	r.rec, r.recGot, r.recTotal = r.rec[:0], 0, 0
	r.skipping = false
}

// end marks the end of WAL at lsn.
func (r *Reader) end(lsn LSN, format string, args ...any) {
	r.ended = true
	r.why = fmt.Sprintf("at %s: %s", lsn, fmt.Sprintf(format, args...))
	r.resync()
}

// page processes one page at pageLSN. done means the rest of the segment
// holds no records (end of WAL or an XLOG_SWITCH).
func (r *Reader) page(p []byte, pageLSN LSN, firstOfSeg bool, fn func(*Record) error) (done bool, err error) {
	h, err := ParsePageHeader(p)
	switch {
	case err != nil:
		r.end(pageLSN, "invalid page header: %v", err)
		return true, nil
	case h.PageAddr != pageLSN:
		r.end(pageLSN, "page address %s in the page header", h.PageAddr)
		return true, nil
	case h.Magic != r.magic:
		r.end(pageLSN, "page magic %04X, not %04X", h.Magic, r.magic)
		return true, nil
	case h.Long != firstOfSeg:
		r.end(pageLSN, "unexpected page header form")
		return true, nil
	case h.Timeline < r.tli && !firstOfSeg:
		r.end(pageLSN, "timeline %d after timeline %d", h.Timeline, r.tli)
		return true, nil
	}
	r.tli = h.Timeline
	off := h.Size()
	bs := len(p)

	// The rest of a record that began on an earlier page.
	if r.recTotal > 0 || r.skipping {
		if !h.ContRecord() {
			if h.Info&XLPFirstIsOverwriteContRecord != 0 {
				// The record was never finished (a crash) and was
				// overwritten: records start afresh on this page.
				r.rec, r.recGot, r.recTotal, r.skipping = r.rec[:0], 0, 0, false
				r.expected = pageLSN + LSN(off)
			} else if r.skipping {
				r.skipping = false
				r.expected = pageLSN + LSN(off)
			} else {
				r.end(pageLSN, "no continuation of the record that started at %s", r.recStart)
				return true, nil
			}
		} else if r.skipping {
			n := int(h.RemLen)
			if n > bs-off {
				return false, nil // the whole page continues it
			}
			r.skipping = false
			r.expected = pageLSN + LSN(maxAlign(off+n))
		} else {
			want := r.recTotal - r.recGot
			if h.RemLen != want {
				r.end(pageLSN, "the page says %d bytes of the record at %s remain, not %d", h.RemLen, r.recStart, want)
				return true, nil
			}
			n := min(int(want), bs-off)
			r.take(p[off : off+n])
			if r.recGot < r.recTotal {
				return false, nil
			}
			end := pageLSN + LSN(maxAlign(off+n))
			stop, err := r.finish(end, fn)
			if err != nil || stop {
				return true, err
			}
			r.expected = pageLSN + LSN(maxAlign(off+n))
		}
	} else if r.expected == 0 {
		// Resync: skip the tail of a record that began before.
		if h.ContRecord() {
			n := int(h.RemLen)
			if n > bs-off {
				r.skipping = true
				return false, nil
			}
			r.expected = pageLSN + LSN(maxAlign(off+n))
		} else {
			r.expected = pageLSN + LSN(off)
		}
	} else if r.expected == pageLSN {
		// A record ended exactly at the end of the previous page.
		if h.ContRecord() {
			r.end(pageLSN, "a continuation where a new record should start")
			return true, nil
		}
		r.expected = pageLSN + LSN(off)
	}

	// New records on this page.
	for {
		pos := int(r.expected - pageLSN)
		if pos < off || pos > bs {
			r.end(r.expected, "record position outside its page")
			return true, nil
		}
		if pos == bs {
			return false, nil
		}
		if bs-pos < 4 {
			r.end(r.expected, "no room for a record length")
			return true, nil
		}
		total := binary.LittleEndian.Uint32(p[pos:])
		if total < RecordHeaderSize || total > MaxRecordSize {
			r.end(r.expected, "invalid record length %d", total)
			return true, nil
		}
		r.recStart, r.recMagic, r.recTLI, r.recTotal, r.recGot = r.expected, h.Magic, h.Timeline, total, 0
		r.rec = r.rec[:0]
		n := min(int(total), bs-pos)
		r.take(p[pos : pos+n])
		if r.recGot < r.recTotal {
			return false, nil
		}
		stop, err := r.finish(r.expected+LSN(maxAlign(n)), fn)
		if err != nil || stop {
			return true, err
		}
		r.expected += LSN(maxAlign(n))
		if int(r.expected-pageLSN) >= bs {
			return false, nil
		}
	}
}

// take appends part of the record being assembled, keeping at most
// MaxBuffered bytes (and always the header).
func (r *Reader) take(b []byte) {
	limit := r.MaxBuffered
	if limit <= 0 {
		limit = DefaultMaxBuffered
	}
	limit = max(limit, RecordHeaderSize)
	if r.recTotal <= uint32(limit) || len(r.rec) < RecordHeaderSize {
		keep := b
		if r.recTotal > uint32(limit) {
			keep = b[:min(len(b), RecordHeaderSize-len(r.rec))]
		}
		r.rec = append(r.rec, keep...)
	}
	r.recGot += uint32(len(b))
}

// finish validates the assembled record, which ends at end, and delivers
// it. stop means no more records in this segment (end of WAL, a switch
// record, or the callback's ErrStop, returned as err).
func (r *Reader) finish(end LSN, fn func(*Record) error) (stop bool, err error) {
	b := r.rec
	total := r.recTotal
	r.recTotal, r.recGot = 0, 0
	le := binary.LittleEndian
	rec := &Record{
		LSN: r.recStart, End: end, Magic: r.recMagic, Timeline: r.recTLI, TotalLen: total,
		XID: le.Uint32(b[4:]), Prev: LSN(le.Uint64(b[8:])), Info: b[16], RMID: b[17],
	}
	if r.prev != 0 && rec.Prev != r.prev {
		r.end(rec.LSN, "record points back to %s, not to the previous record at %s", rec.Prev, r.prev)
		return true, nil
	}
	if uint32(len(b)) == total {
		if RecordCRC(b) != le.Uint32(b[20:]) {
			r.end(rec.LSN, "record CRC mismatch")
			return true, nil
		}
		rec.Data = b
	} else {
		rec.Truncated = true
	}
	r.prev, r.lastRec, r.last = rec.LSN, rec.LSN, rec.End
	r.records++
	if err := fn(rec); err != nil {
		return true, err
	}
	if rec.RMID == RMXLog && rec.Info&^xlrInfoMask == XLogSwitch {
		// The rest of the segment is padding; the next record starts the
		// next segment.
		r.expected = LSN((uint64(rec.End) + uint64(r.segSize) - 1) / uint64(r.segSize) * uint64(r.segSize))
		if uint64(rec.End)%uint64(r.segSize) == 0 {
			r.expected = rec.End
		}
		return true, nil
	}
	return false, nil
}

func maxAlign(n int) int { return (n + 7) &^ 7 }
