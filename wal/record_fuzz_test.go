package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/wal"
)

// Small segments, so that a fuzz input covers two of them.
const (
	fuzzSegSize = 16 << 10
	fuzzBlock   = 1024
)

// FuzzReader: whatever two segments hold, the Reader never panics or
// hangs, fails only with ErrBadHeader, and what it delivers is real: in
// order, aligned, whole, with a CRC that matches; decoding any record's
// contents never panics either.
func FuzzReader(f *testing.F) {
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 9))
		w := waltest.NewWriter(fuzzSegSize, fuzzBlock, wal.Segment{Timeline: 1, Seg: 8})
		end := wal.Segment{Timeline: 1, Seg: 10}.StartLSN(fuzzSegSize) - 4096
		for i := 0; w.Pos() < end; i++ {
			switch rng.IntN(8) {
			case 0:
				w.RestorePoint("point", t0)
			case 1:
				twoPhase := binary.LittleEndian.AppendUint32(append(make([]byte, 8), wal.XinfoHasTwoPhase, 0, 0, 0), 77)
				w.Add(wal.RMXact, wal.XactCommitPrepared|wal.XactHasInfo, 5, twoPhase)
			case 2:
				if seed%2 == 0 {
					w.Switch()
				}
			default:
				w.Add(10, 0, uint32(i), make([]byte, rng.IntN(3000)), make([]byte, rng.IntN(50)))
			}
		}
		_, data := w.Segments()
		f.Add(bytes.Join(data[:2], nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = append(b, make([]byte, max(0, 2*fuzzSegSize-len(b)))...)[:2*fuzzSegSize]
		r := wal.NewReader(fuzzSegSize)
		r.MaxBuffered = 8192
		var last wal.LSN
		for i := range 2 {
			seg := wal.Segment{Timeline: 1, Seg: uint32(8 + i)}
			err := r.ReadSegment(seg, bytes.NewReader(b[i*fuzzSegSize:(i+1)*fuzzSegSize]), func(rec *wal.Record) error {
				if rec.LSN <= last && last != 0 || rec.LSN%8 != 0 || rec.End%8 != 0 || rec.End <= rec.LSN {
					t.Fatalf("record at %s..%s after %s", rec.LSN, rec.End, last)
				}
				last = rec.LSN
				if rec.Truncated != (rec.Data == nil) || rec.TotalLen < wal.RecordHeaderSize {
					t.Fatalf("record at %s: truncated %v, %d bytes of %d", rec.LSN, rec.Truncated, len(rec.Data), rec.TotalLen)
				}
				if rec.Data != nil {
					d := rec.Data
					if uint32(len(d)) != rec.TotalLen {
						t.Fatalf("record at %s: %d bytes, says %d", rec.LSN, len(d), rec.TotalLen)
					}
					if wal.RecordCRC(d) != binary.LittleEndian.Uint32(d[20:]) {
						t.Fatalf("record at %s delivered with a bad CRC", rec.LSN)
					}
				}
				decodeAll(t, rec)
				return nil
			})
			if err != nil && !errors.Is(err, wal.ErrBadHeader) {
				t.Fatalf("segment %d: %v", i, err)
			}
		}
	})
}

// decodeAll runs every decoder on rec; what they return must lie within it.
func decodeAll(t *testing.T, rec *wal.Record) {
	t.Helper()
	if m, err := rec.MainData(); err == nil && !bytes.HasSuffix(rec.Data, m) {
		t.Fatalf("main data is not the record's tail")
	}
	if rec.IsRestorePoint() {
		if p, err := rec.RestorePoint(); err == nil && len(p.Name) >= wal.RestorePointNameLen {
			t.Fatalf("restore point name of %d bytes", len(p.Name))
		}
	}
	if rec.IsXactEnd() {
		_, _ = rec.XactEnd()
	}
}

// FuzzRecordDecode: the record decoders never panic on any contents, for
// any resource manager, kind and format version.
func FuzzRecordDecode(f *testing.F) {
	name := make([]byte, wal.RestorePointNameLen)
	copy(name, "before_upgrade")
	f.Add(waltest.EncodeRecord(wal.RMXLog, wal.XLogRestorePoint, 0, 0, append(make([]byte, 8), name...), nil), uint16(0xD110))
	f.Add(waltest.EncodeRecord(wal.RMXact, wal.XactCommit, 9, 0, make([]byte, 8), [][]byte{{1, 2}, {3}}), uint16(0xD10D))
	f.Add(waltest.EncodeRecord(wal.RMXact, wal.XactAbortPrepared|wal.XactHasInfo, 0, 0, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x13, 1, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4}, nil), uint16(0xD118))
	f.Fuzz(func(t *testing.T, b []byte, magic uint16) {
		if len(b) < wal.RecordHeaderSize {
			return
		}
		rec := &wal.Record{Data: b, TotalLen: uint32(len(b)), Magic: magic, Info: b[16], RMID: b[17], XID: binary.LittleEndian.Uint32(b[4:])}
		decodeAll(t, rec)
	})
}
