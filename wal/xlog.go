package wal

// What walgo reads inside WAL records: the main data of any record, and
// the records recovery targets stop at: restore points (RM_XLOG_ID,
// XLOG_RESTORE_POINT: a name and a time), transaction commits and aborts
// (RM_XACT_ID: a time and an xid), and checkpoints (their time).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Resource managers walgo reads records of (rmgrlist.h).
const (
	RMXLog = 0 // RM_XLOG_ID
	RMXact = 1 // RM_XACT_ID
)

// XLR_INFO_MASK: the low bits of xl_info that XLogInsert owns; the high
// bits say the record's kind within its resource manager.
const xlrInfoMask = 0x0F

// Record kinds (the high bits of xl_info).
const (
	// RM_XLOG_ID (pg_control.h).
	XLogCheckpointShutdown = 0x00
	XLogCheckpointOnline   = 0x10
	XLogSwitch             = 0x40
	XLogRestorePoint       = 0x70

	// RM_XACT_ID (xact.h): the kind is info & 0x70; XactHasInfo says an
	// xl_xact_xinfo follows the time.
	XactCommit         = 0x00
	XactAbort          = 0x20
	XactCommitPrepared = 0x30
	XactAbortPrepared  = 0x40
	XactHasInfo        = 0x80
	xactOpMask         = 0x70
)

// xl_xact_xinfo bits: the parts of a commit or abort record that follow.
const (
	XinfoHasDBInfo      = 1 << 0
	XinfoHasSubxacts    = 1 << 1
	XinfoHasRelFiles    = 1 << 2
	XinfoHasInvals      = 1 << 3
	XinfoHasTwoPhase    = 1 << 4
	XinfoHasDroppedStat = 1 << 8 // Postgres 15 and later
)

// Block references and the main data header (xlogrecord.h).
const (
	MaxBlockID           = 32  // XLR_MAX_BLOCK_ID
	BlockIDDataShort     = 255 // XLR_BLOCK_ID_DATA_SHORT: one length byte follows
	BlockIDDataLong      = 254 // XLR_BLOCK_ID_DATA_LONG: a 4-byte length follows
	BlockIDOrigin        = 253
	BlockIDTopLevelXID   = 252
	BkpBlockHasImage     = 0x10
	BkpBlockHasData      = 0x20
	BkpBlockSameRel      = 0x80
	BkpImageHasHole      = 0x01
	bkpImageCompressed14 = 0x02 // BKPIMAGE_IS_COMPRESSED before 15
	BkpImageCompressPGLZ = 0x04 // from 15 on
	bkpImageCompressed15 = 0x04 | 0x08 | 0x10

	// RestorePointNameLen is the size of xl_restore_point's name field
	// (MAXFNAMELEN); names are at most one byte shorter.
	RestorePointNameLen = 64
)

// Page magics of the Postgres major versions whose formats differ in
// what this file reads.
const (
	magicPG15 = 0xD110
	magicPG18 = 0xD118
)

// ErrBadRecord: a record's contents do not parse as its kind says.
var ErrBadRecord = errors.New("malformed WAL record")

// pgEpoch is Postgres' timestamp zero (2000-01-01 UTC).
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// PGTime converts a TimestampTz (microseconds since 2000-01-01 UTC).
func PGTime(us int64) time.Time { return pgEpoch.Add(time.Duration(us) * time.Microsecond) }

// MainData returns the record's main data: what follows its block
// references' data, the rmgr's own payload.
func (r *Record) MainData() ([]byte, error) {
	if r.Data == nil {
		return nil, fmt.Errorf("%w at %s: record not kept in memory", ErrBadRecord, r.LSN)
	}
	b := r.Data
	bad := func(what string) error { return fmt.Errorf("%w at %s: %s", ErrBadRecord, r.LSN, what) }
	pos := RecordHeaderSize
	data := 0 // bytes of block data and images the headers announce
	main := 0
	u16 := func() (int, bool) {
		if pos+2 > len(b) {
			return 0, false
		}
		v := int(binary.LittleEndian.Uint16(b[pos:]))
		pos += 2
		return v, true
	}
headers:
	for len(b)-pos > data {
		id := b[pos]
		pos++
		switch {
		case id == BlockIDDataShort:
			if pos+1 > len(b) {
				return nil, bad("truncated data header")
			}
			main = int(b[pos])
			pos++
			break headers // the main data header comes last
		case id == BlockIDDataLong:
			if pos+4 > len(b) {
				return nil, bad("truncated data header")
			}
			main = int(binary.LittleEndian.Uint32(b[pos:]))
			pos += 4
			break headers
		case id == BlockIDOrigin:
			pos += 2
		case id == BlockIDTopLevelXID:
			pos += 4
		case id <= MaxBlockID:
			if pos+3 > len(b) {
				return nil, bad("truncated block header")
			}
			flags := b[pos]
			pos++
			n, _ := u16()
			data += n
			if flags&BkpBlockHasImage != 0 {
				imgLen, ok := u16()
				if !ok {
					return nil, bad("truncated image header")
				}
				pos += 2 // hole offset
				if pos >= len(b) {
					return nil, bad("truncated image header")
				}
				info := b[pos]
				pos++
				compressed := info&bkpImageCompressed15 != 0
				if r.Magic < magicPG15 {
					compressed = info&bkpImageCompressed14 != 0
				}
				if info&BkpImageHasHole != 0 && compressed {
					pos += 2 // hole length
				}
				data += imgLen
			}
			if flags&BkpBlockSameRel == 0 {
				pos += 12 // RelFileLocator
			}
			pos += 4 // block number
		default:
			return nil, bad(fmt.Sprintf("invalid block id %d", id))
		}
	}
	if main < 0 || pos+data+main != len(b) {
		return nil, bad(fmt.Sprintf("headers announce %d bytes, the record holds %d", pos+data+main, len(b)))
	}
	return b[len(b)-main:], nil
}

// RestorePoint is an XLOG_RESTORE_POINT record: pg_create_restore_point.
type RestorePoint struct {
	Name string
	Time time.Time
	LSN  LSN // the record's start
	End  LSN // the record's end, which pg_create_restore_point returns
}

// IsRestorePoint reports whether the record is a restore point.
func (r *Record) IsRestorePoint() bool {
	return r.RMID == RMXLog && r.Info&^xlrInfoMask == XLogRestorePoint
}

// RestorePoint decodes a restore point record (xl_restore_point: the time,
// then the name in a 64-byte field).
func (r *Record) RestorePoint() (RestorePoint, error) {
	if !r.IsRestorePoint() {
		return RestorePoint{}, fmt.Errorf("%w at %s: not a restore point", ErrBadRecord, r.LSN)
	}
	d, err := r.MainData()
	if err != nil {
		return RestorePoint{}, err
	}
	if len(d) < 8+RestorePointNameLen {
		return RestorePoint{}, fmt.Errorf("%w at %s: restore point of %d bytes", ErrBadRecord, r.LSN, len(d))
	}
	name := d[8 : 8+RestorePointNameLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return RestorePoint{Name: string(name), Time: PGTime(int64(binary.LittleEndian.Uint64(d))), LSN: r.LSN, End: r.End}, nil
}

// XactEnd is a transaction's commit or abort record: what recovery_target
// _time and _xid stop at.
type XactEnd struct {
	Commit   bool // commit (or commit prepared); false for an abort
	Prepared bool // of a prepared transaction (COMMIT/ROLLBACK PREPARED)
	XID      uint32
	Time     time.Time
	LSN      LSN
	End      LSN
}

// IsXactEnd reports whether the record commits or aborts a transaction.
func (r *Record) IsXactEnd() bool {
	if r.RMID != RMXact {
		return false
	}
	switch r.Info & xactOpMask {
	case XactCommit, XactAbort, XactCommitPrepared, XactAbortPrepared:
		return true
	}
	return false
}

// XactEnd decodes a commit or abort record: its time, and the xid
// recovery compares with recovery_target_xid (the prepared transaction's
// for COMMIT/ROLLBACK PREPARED, the record's own otherwise).
func (r *Record) XactEnd() (XactEnd, error) {
	if !r.IsXactEnd() {
		return XactEnd{}, fmt.Errorf("%w at %s: not a commit or abort", ErrBadRecord, r.LSN)
	}
	d, err := r.MainData()
	if err != nil {
		return XactEnd{}, err
	}
	bad := func(what string) error { return fmt.Errorf("%w at %s: %s", ErrBadRecord, r.LSN, what) }
	if len(d) < 8 {
		return XactEnd{}, bad("commit record too short")
	}
	op := r.Info & xactOpMask
	x := XactEnd{Commit: op == XactCommit || op == XactCommitPrepared, Prepared: op == XactCommitPrepared || op == XactAbortPrepared,
		XID: r.XID, Time: PGTime(int64(binary.LittleEndian.Uint64(d))), LSN: r.LSN, End: r.End}
	if !x.Prepared {
		return x, nil
	}
	// The prepared transaction's xid is in xl_xact_twophase, after the
	// parts xinfo announces (ParseCommitRecord, ParseAbortRecord).
	le := binary.LittleEndian
	pos := 8
	var xinfo uint32
	if r.Info&XactHasInfo != 0 {
		if len(d) < pos+4 {
			return XactEnd{}, bad("no xinfo")
		}
		xinfo = le.Uint32(d[pos:])
		pos += 4
	}
	counted := func(each int) error {
		if len(d) < pos+4 {
			return bad("truncated")
		}
		n := int(int32(le.Uint32(d[pos:])))
		if n < 0 || n > len(d) {
			return bad("invalid count")
		}
		pos += 4 + n*each
		return nil
	}
	statSize := 12
	if r.Magic >= magicPG18 {
		statSize = 16
	}
	steps := []struct {
		flag uint32
		skip func() error
	}{
		{XinfoHasDBInfo, func() error { pos += 8; return nil }},
		{XinfoHasSubxacts, func() error { return counted(4) }},
		{XinfoHasRelFiles, func() error { return counted(12) }},
		{XinfoHasDroppedStat, func() error { return counted(statSize) }},
	}
	if op == XactCommitPrepared {
		steps = append(steps, struct {
			flag uint32
			skip func() error
		}{XinfoHasInvals, func() error { return counted(16) }})
	}
	for _, s := range steps {
		if xinfo&s.flag != 0 {
			if err := s.skip(); err != nil {
				return XactEnd{}, err
			}
		}
	}
	if xinfo&XinfoHasTwoPhase == 0 {
		return XactEnd{}, bad("prepared transaction's record without its xid")
	}
	if len(d) < pos+4 {
		return XactEnd{}, bad("truncated")
	}
	x.XID = le.Uint32(d[pos:])
	return x, nil
}

// IsCheckpoint reports whether the record is a checkpoint (online or
// shutdown).
func (r *Record) IsCheckpoint() bool {
	if r.RMID != RMXLog {
		return false
	}
	k := r.Info &^ xlrInfoMask
	return k == XLogCheckpointOnline || k == XLogCheckpointShutdown
}

// RecordCRC is the CRC-32C Postgres stores in xl_crc: over the record after
// its header, then the header up to xl_crc.
func RecordCRC(rec []byte) uint32 {
	crc := crc32.Update(0, castagnoli, rec[RecordHeaderSize:])
	return crc32.Update(crc, castagnoli, rec[:20])
}
