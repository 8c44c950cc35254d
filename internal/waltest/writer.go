package waltest

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/walgo/walgo/wal"
)

// Writer writes synthetic WAL record by record, laid out the way Postgres
// lays it out: page headers (the long one at each segment's start),
// records on 8-byte boundaries with their CRC, continuation pages with
// XLP_FIRST_IS_CONTRECORD and xlp_rem_len, records crossing segments, and
// XLOG_SWITCH ending a segment. Any page and segment size.
type Writer struct {
	SegSize   int64
	BlockSize int
	Magic     uint16 // the page magic: 0xD110 (Postgres 15) unless set
	Timeline  uint32
	SystemID  uint64

	base    wal.LSN
	buf     []byte
	pos     wal.LSN
	prev    wal.LSN
	Records []Written // every record written, in order
}

// Written is one record a Writer wrote.
type Written struct {
	LSN, End wal.LSN // End is where the next record may start
	TotalLen uint32
	RMID     uint8
	Info     uint8
	XID      uint32
	Main     []byte
}

// NewWriter starts WAL at the beginning of segment first.
func NewWriter(segSize int64, blockSize int, first wal.Segment) *Writer {
	w := &Writer{SegSize: segSize, BlockSize: blockSize, Magic: 0xD110, Timeline: first.Timeline, SystemID: 7300000000000000001,
		base: first.StartLSN(segSize)}
	w.pos = w.base + wal.LSN(w.pageHeader(w.base, 0))
	return w
}

// Pos is where the next record goes.
func (w *Writer) Pos() wal.LSN { return w.pos }

func (w *Writer) grow(to wal.LSN) {
	if n := int(to - w.base); n > len(w.buf) {
		w.buf = append(w.buf, make([]byte, n-len(w.buf))...)
	}
}

// pageHeader writes the header of the page at p (a continuation page when
// remLen > 0) and returns its size.
func (w *Writer) pageHeader(p wal.LSN, remLen uint32) int {
	long := uint64(p)%uint64(w.SegSize) == 0
	size := wal.ShortPageHeaderSize
	info := uint16(wal.XLPBkpRemovable)
	if long {
		size = wal.LongPageHeaderSize
		info |= wal.XLPLongHeader
	}
	if remLen > 0 {
		info |= wal.XLPFirstIsContRecord
	}
	w.grow(p + wal.LSN(size))
	b := w.buf[p-w.base:]
	le := binary.LittleEndian
	le.PutUint16(b[0:], w.Magic)
	le.PutUint16(b[2:], info)
	le.PutUint32(b[4:], w.Timeline)
	le.PutUint64(b[8:], uint64(p))
	le.PutUint32(b[16:], remLen)
	if long {
		le.PutUint64(b[24:], w.SystemID)
		le.PutUint32(b[32:], uint32(w.SegSize))
		le.PutUint32(b[36:], uint32(w.BlockSize))
	}
	return size
}

// EncodeRecord builds a record: the header (with prev and the CRC), a
// block reference for each of blocks (with that data; every second one
// with a compressed full-page image too), and main as its main data.
func EncodeRecord(rmid, info uint8, xid uint32, prev wal.LSN, main []byte, blocks [][]byte) []byte {
	var hdr, data bytes.Buffer
	le := binary.LittleEndian
	for i, blk := range blocks {
		hdr.WriteByte(byte(i))
		flags := byte(wal.BkpBlockHasData)
		if i%2 == 1 {
			flags |= wal.BkpBlockHasImage
		}
		if i > 0 {
			flags |= wal.BkpBlockSameRel
		}
		hdr.WriteByte(flags)
		hdr.Write(le.AppendUint16(nil, uint16(len(blk))))
		if flags&wal.BkpBlockHasImage != 0 {
			img := bytes.Repeat([]byte{0xEE}, 100)
			hdr.Write(le.AppendUint16(nil, uint16(len(img))))
			hdr.Write(le.AppendUint16(nil, 40)) // hole offset
			hdr.WriteByte(wal.BkpImageHasHole | wal.BkpImageCompressPGLZ)
			hdr.Write(le.AppendUint16(nil, 8192-140)) // hole length
			data.Write(img)
		}
		if flags&wal.BkpBlockSameRel == 0 {
			hdr.Write(make([]byte, 12)) // RelFileLocator
		}
		hdr.Write(le.AppendUint32(nil, uint32(i+7)))
		data.Write(blk)
	}
	if len(main) > 0 {
		if len(main) < 256 {
			hdr.WriteByte(wal.BlockIDDataShort)
			hdr.WriteByte(byte(len(main)))
		} else {
			hdr.WriteByte(wal.BlockIDDataLong)
			hdr.Write(le.AppendUint32(nil, uint32(len(main))))
		}
	}
	rec := make([]byte, wal.RecordHeaderSize)
	rec = append(rec, hdr.Bytes()...)
	rec = append(rec, data.Bytes()...)
	rec = append(rec, main...)
	le.PutUint32(rec[0:], uint32(len(rec)))
	le.PutUint32(rec[4:], xid)
	le.PutUint64(rec[8:], uint64(prev))
	rec[16], rec[17] = info, rmid
	le.PutUint32(rec[20:], wal.RecordCRC(rec))
	return rec
}

// Add appends a record.
func (w *Writer) Add(rmid, info uint8, xid uint32, main []byte, blocks ...[]byte) Written {
	rec := EncodeRecord(rmid, info, xid, w.prev, main, blocks)
	start := w.pos
	end := w.put(rec)
	r := Written{LSN: start, End: end, TotalLen: uint32(len(rec)), RMID: rmid, Info: info, XID: xid, Main: main}
	w.prev = start
	w.Records = append(w.Records, r)
	return r
}

// put lays rec out from the current position across pages and returns
// where it ends (aligned).
func (w *Writer) put(rec []byte) wal.LSN {
	rest := rec
	blk := wal.LSN(w.BlockSize)
	for len(rest) > 0 {
		pageEnd := (w.pos/blk + 1) * blk
		n := min(len(rest), int(pageEnd-w.pos))
		w.grow(w.pos + wal.LSN(n))
		copy(w.buf[w.pos-w.base:], rest[:n])
		rest = rest[n:]
		w.pos += wal.LSN(n)
		if len(rest) > 0 {
			w.pos += wal.LSN(w.pageHeader(w.pos, uint32(len(rest))))
		}
	}
	w.pos = (w.pos + 7) &^ 7
	end := w.pos
	if w.pos%blk == 0 {
		w.pos += wal.LSN(w.pageHeader(w.pos, 0))
	}
	return end
}

// pgTime is a time as a TimestampTz.
func pgTime(t time.Time) uint64 {
	return uint64(t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds())
}

// RestorePoint writes an XLOG_RESTORE_POINT record.
func (w *Writer) RestorePoint(name string, at time.Time) Written {
	main := binary.LittleEndian.AppendUint64(nil, pgTime(at))
	field := make([]byte, wal.RestorePointNameLen)
	copy(field, name)
	return w.Add(wal.RMXLog, wal.XLogRestorePoint, 0, append(main, field...))
}

// Commit writes a plain commit record of xid at time at.
func (w *Writer) Commit(xid uint32, at time.Time) Written {
	return w.Add(wal.RMXact, wal.XactCommit, xid, binary.LittleEndian.AppendUint64(nil, pgTime(at)))
}

// Switch writes an XLOG_SWITCH record; the next record starts the next
// segment, the pages in between hold only their headers.
func (w *Writer) Switch() Written {
	r := w.Add(wal.RMXLog, wal.XLogSwitch, 0, nil)
	if uint64(w.pos)%uint64(w.SegSize) == wal.LongPageHeaderSize {
		return r // it ended exactly at a segment's end
	}
	seg := wal.LSN(w.SegSize)
	next := (w.pos + seg - 1) / seg * seg
	blk := wal.LSN(w.BlockSize)
	for p := (w.pos/blk + 1) * blk; p < next; p += blk {
		w.pageHeader(p, 0)
	}
	w.pos = next + wal.LSN(w.pageHeader(next, 0))
	return r
}

// Segments returns the WAL written so far as whole segments, the last one
// zero padded.
func (w *Writer) Segments() ([]wal.Segment, [][]byte) {
	seg := wal.LSN(w.SegSize)
	end := (w.pos + seg - 1) / seg * seg
	w.grow(end)
	var segs []wal.Segment
	var data [][]byte
	for p := w.base; p < end; p += seg {
		segs = append(segs, wal.SegmentAt(w.Timeline, p, w.SegSize))
		data = append(data, w.buf[p-w.base:p-w.base+seg])
	}
	return segs, data
}
