package wal_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/waltest"
	"github.com/walgo/walgo/wal"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// randomWAL writes n records of random kinds and sizes, some larger than
// a segment, with switches now and then.
func randomWAL(rng *rand.Rand, segSize int64, blk, n int) *waltest.Writer {
	w := waltest.NewWriter(segSize, blk, wal.Segment{Timeline: 1, Seg: 3})
	for i := range n {
		switch rng.IntN(20) {
		case 0:
			w.Switch()
		case 1:
			w.RestorePoint("rp_"+string(rune('a'+i%26)), t0.Add(time.Duration(i)*time.Second))
		case 2:
			w.Commit(uint32(1000+i), t0.Add(time.Duration(i)*time.Second))
		default:
			size := rng.IntN(3 * blk)
			if rng.IntN(50) == 0 {
				size = int(segSize) + rng.IntN(int(segSize))
			}
			var blocks [][]byte
			for range rng.IntN(4) {
				blocks = append(blocks, make([]byte, rng.IntN(200)))
			}
			w.Add(10, 0, uint32(rng.IntN(5000)), bytes.Repeat([]byte{byte(i)}, size), blocks...)
		}
	}
	return w
}

func readAll(t testing.TB, r *wal.Reader, segs []wal.Segment, data [][]byte) []wal.Record {
	t.Helper()
	var out []wal.Record
	for i, s := range segs {
		err := r.ReadSegment(s, bytes.NewReader(data[i]), func(rec *wal.Record) error {
			c := *rec
			c.Data = append([]byte(nil), rec.Data...)
			out = append(out, c)
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
	}
	return out
}

// TestReaderSynthetic: random WAL with several page and segment sizes
// reads back record for record: positions, lengths, main data, and the
// restore points and commits decode to what was written.
func TestReaderSynthetic(t *testing.T) {
	for _, tc := range []struct {
		segSize int64
		blk     int
	}{{1 << 20, 8192}, {1 << 20, 1024}, {2 << 20, 16384}, {1 << 20, 65536}} {
		for seed := range uint64(2) {
			rng := rand.New(rand.NewPCG(seed, uint64(tc.blk)))
			w := randomWAL(rng, tc.segSize, tc.blk, 300)
			segs, data := w.Segments()
			got := readAll(t, wal.NewReader(tc.segSize), segs, data)
			if len(got) != len(w.Records) {
				t.Fatalf("seg %d blk %d seed %d: %d records read, %d written", tc.segSize, tc.blk, seed, len(got), len(w.Records))
			}
			for i, want := range w.Records {
				g := got[i]
				if g.LSN != want.LSN || g.End != want.End || g.TotalLen != want.TotalLen || g.RMID != want.RMID || g.XID != want.XID {
					t.Fatalf("seg %d blk %d seed %d record %d: got %s..%s len %d, want %s..%s len %d", tc.segSize, tc.blk, seed, i,
						g.LSN, g.End, g.TotalLen, want.LSN, want.End, want.TotalLen)
				}
				m, err := g.MainData()
				if err != nil || !bytes.Equal(m, want.Main) {
					t.Fatalf("record %d at %s: main data %d bytes, %v; want %d", i, g.LSN, len(m), err, len(want.Main))
				}
				switch {
				case g.IsRestorePoint():
					rp, err := g.RestorePoint()
					if err != nil || rp.LSN != want.LSN || len(rp.Name) < 4 || rp.Time.Before(t0) {
						t.Fatalf("restore point at %s: %+v, %v", g.LSN, rp, err)
					}
				case g.IsXactEnd():
					x, err := g.XactEnd()
					if err != nil || !x.Commit || x.XID != want.XID || x.Time.Before(t0) {
						t.Fatalf("commit at %s: %+v, %v", g.LSN, x, err)
					}
				}
			}
		}
	}
}

// TestReaderEndOfWAL: the WAL ends at the first bad record (zeros, a CRC
// mismatch, a broken back link, a page from elsewhere) and the reader says
// where; what comes before is delivered.
func TestReaderEndOfWAL(t *testing.T) {
	const blk = 8192
	mk := func() (*waltest.Writer, []wal.Segment, [][]byte) {
		w := waltest.NewWriter(1<<20, blk, wal.Segment{Timeline: 1, Seg: 3})
		for i := range 40 {
			w.Add(10, 0, uint32(i), bytes.Repeat([]byte{1}, 700))
		}
		segs, data := w.Segments()
		return w, segs, data
	}
	base := wal.Segment{Timeline: 1, Seg: 3}.StartLSN(1 << 20)
	for _, tc := range []struct {
		name   string
		damage func(w *waltest.Writer, data []byte) wal.LSN // where the WAL must end
	}{
		{"zeros", func(w *waltest.Writer, data []byte) wal.LSN { return w.Records[39].LSN }},
		{"crc", func(w *waltest.Writer, data []byte) wal.LSN {
			data[w.Records[20].LSN-base+wal.RecordHeaderSize+5] ^= 1
			return w.Records[19].LSN
		}},
		{"back link", func(w *waltest.Writer, data []byte) wal.LSN {
			binary.LittleEndian.PutUint64(data[w.Records[25].LSN-base+8:], 12345)
			return w.Records[24].LSN
		}},
		{"recycled page", func(w *waltest.Writer, data []byte) wal.LSN {
			// The third page claims to be another segment's.
			binary.LittleEndian.PutUint64(data[2*blk+8:], uint64(base)+7*blk)
			var last wal.LSN
			for _, r := range w.Records {
				if r.End-base <= 2*blk {
					last = r.LSN
				}
			}
			return last
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, segs, data := mk()
			want := tc.damage(w, data[0])
			r := wal.NewReader(1 << 20)
			got := readAll(t, r, segs, data)
			st := r.State()
			if !st.Ended || st.LastStart != want || len(got) == 0 || got[len(got)-1].LSN != want {
				t.Fatalf("state %+v after %d records; want the last at %s", st, len(got), want)
			}
		})
	}
}

// TestReaderBadSegment: a segment whose first page is not its own, of the
// wrong size or short, is an error, not the end of the WAL.
func TestReaderBadSegment(t *testing.T) {
	w := waltest.NewWriter(1<<20, 8192, wal.Segment{Timeline: 1, Seg: 3})
	w.Add(10, 0, 1, []byte("x"))
	segs, data := w.Segments()
	none := func(*wal.Record) error { return nil }
	if err := wal.NewReader(1<<20).ReadSegment(segs[0], bytes.NewReader(data[0]), none); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"other segment": wal.NewReader(1<<20).ReadSegment(wal.Segment{Timeline: 1, Seg: 4}, bytes.NewReader(data[0]), none),
		"segment size":  wal.NewReader(2<<20).ReadSegment(segs[0], bytes.NewReader(data[0]), none),
		"short":         wal.NewReader(1<<20).ReadSegment(segs[0], io.LimitReader(bytes.NewReader(data[0]), 20000), none),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	stop := wal.NewReader(1<<20).ReadSegment(segs[0], bytes.NewReader(data[0]), func(*wal.Record) error { return wal.ErrStop })
	if stop != wal.ErrStop {
		t.Errorf("ErrStop: %v", stop)
	}
}
