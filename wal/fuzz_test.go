package wal

import (
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
)

func isHexAnyCase(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// FuzzParseLSN: an accepted LSN is 1 to 8 hex digits, "/", 1 to 8 hex
// digits, worth what they say; it prints the way Postgres does and parses
// back to itself, through MarshalText and UnmarshalText too.
func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "0/3000028", "", "16", "/1", "1/",
		"G/1", "100000000/0", "-1/0", "+1/0", "0x1/0", "1_0/0", "00000000/00000001", "a/b", " 1/0", "1/0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		hi, lo, ok := strings.Cut(s, "/")
		if !ok || len(hi) < 1 || len(hi) > 8 || len(lo) < 1 || len(lo) > 8 || !isHexAnyCase(hi) || !isHexAnyCase(lo) {
			t.Fatalf("ParseLSN accepted %q (as %v): not XXXXXXXX/XXXXXXXX", s, l)
		}
		h, _ := strconv.ParseUint(hi, 16, 32)
		w, _ := strconv.ParseUint(lo, 16, 32)
		if l != LSN(h<<32|w) {
			t.Fatalf("ParseLSN(%q) = %v, want %X/%X", s, l, h, w)
		}
		// Only leading zeros and case may differ from the input.
		norm := func(x string) string {
			if x = strings.TrimLeft(strings.ToUpper(x), "0"); x == "" {
				return "0"
			}
			return x
		}
		str := l.String()
		if want := norm(hi) + "/" + norm(lo); str != want {
			t.Fatalf("ParseLSN(%q).String() = %q, want %q", s, str, want)
		}
		back, err := ParseLSN(str)
		if err != nil || back != l {
			t.Fatalf("%q -> %v prints %q, which parses to %v, %v", s, l, str, back, err)
		}
		txt, err := l.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var u LSN
		if err := u.UnmarshalText(txt); err != nil || u != l {
			t.Fatalf("text round trip of %v: %q -> %v, %v", l, txt, u, err)
		}
	})
}

// FuzzLSNString: every 64-bit LSN prints and parses back to itself.
func FuzzLSNString(f *testing.F) {
	for _, v := range []uint64{0, 1, 0x16B374D848, 1<<32 - 1, 1 << 32, ^uint64(0)} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v uint64) {
		l := LSN(v)
		back, err := ParseLSN(l.String())
		if err != nil || back != l {
			t.Fatalf("%#x prints %q, which parses to %v, %v", v, l.String(), back, err)
		}
	})
}

// FuzzClassify: whatever Classify calls a segment parses with ParseSegment
// and re-names identically, and nothing else parses; the segment name
// inside a .backup or .partial name does the same; a .history name is
// HistoryName of its timeline. For every valid segment size a segment's
// number, start LSN and successor agree with each other.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"000000010000000000000001", "00000002.history", "000000010000000000000002.00000028.backup",
		"000000010000000000000003.partial", "00000001000000000000000a", "0000000100000000000000001", "00000001.HISTORY",
		"000000010000000000000002.00000028.backupx", "000000010000000100000000", "FFFFFFFFFFFFFFFFFFFFFFFF", "", "x.partial"} {
		f.Add(s, uint8(24))
	}
	f.Fuzz(func(t *testing.T, name string, sizeShift uint8) {
		k := Classify(name)
		seg, err := ParseSegment(name)
		if (err == nil) != (k == KindSegment) {
			t.Fatalf("Classify(%q) = %v, but ParseSegment says %v", name, k, err)
		}
		switch k {
		case KindSegment:
			if seg.Name() != name || seg.String() != name {
				t.Fatalf("%q parses to %+v, named %q", name, seg, seg.Name())
			}
		case KindBackup, KindPartial:
			s, err := ParseSegment(name[:24])
			if err != nil || s.Name() != name[:24] {
				t.Fatalf("%v %q: its segment %q parses to %+v, %v", k, name, name[:24], s, err)
			}
		case KindHistory:
			tli, err := strconv.ParseUint(name[:8], 16, 32)
			if err != nil || HistoryName(uint32(tli)) != name {
				t.Fatalf("history %q: timeline %v, %v, named %q", name, tli, err, HistoryName(uint32(tli)))
			}
		case KindUnknown:
			if k.String() != "unknown" {
				t.Fatalf("KindUnknown prints %q", k.String())
			}
			return
		default:
			t.Fatalf("Classify(%q) = %d, not a Kind", name, k)
		}
		if k != KindSegment {
			return
		}
		segSize := int64(MinSegmentSize) << (sizeShift % 11) // 1 MiB .. 1 GiB
		if !ValidSegmentSize(segSize) {
			t.Fatalf("segment size %d rejected", segSize)
		}
		if !seg.Valid(segSize) {
			return
		}
		no := seg.No(segSize)
		if got := SegmentFromNo(seg.Timeline, no, segSize); got != seg {
			t.Fatalf("%s: number %d with size %d gives back %s", seg, no, segSize, got)
		}
		start := seg.StartLSN(segSize)
		if got := SegmentAt(seg.Timeline, start, segSize); got != seg {
			t.Fatalf("%s starts at %v, which is in %s", seg, start, got)
		}
		if got := SegmentAt(seg.Timeline, start+LSN(segSize)-1, segSize); got != seg {
			t.Fatalf("%s ends before %v, which is in %s", seg, start+LSN(segSize)-1, got)
		}
		next := seg.Next(segSize)
		if !next.Valid(segSize) {
			t.Fatalf("%s: next %s is not valid with size %d", seg, next, segSize)
		}
		if no < ^uint64(0)/uint64(segSize) { // not the last segment a timeline can have
			if next.No(segSize) != no+1 || next.StartLSN(segSize) != start+LSN(segSize) {
				t.Fatalf("%s: next %s is number %d, want %d", seg, next, next.No(segSize), no+1)
			}
		}
		if Classify(next.Name()) != KindSegment {
			t.Fatalf("next of %s, %s, is not a segment name", seg, next.Name())
		}
	})
}

// FuzzParseHeader: ParseHeader never panics, accepts only what it
// documents, and Check never panics on what it accepted, whatever segment
// and size it is asked about.
func FuzzParseHeader(f *testing.F) {
	good := make([]byte, HeaderSize)
	le := binary.LittleEndian
	le.PutUint16(good[0:], 0xD110)
	le.PutUint16(good[2:], 0x0006)
	le.PutUint32(good[4:], 1)
	le.PutUint64(good[8:], 0x3000000)
	le.PutUint64(good[24:], 7300000000000000001)
	le.PutUint32(good[32:], DefaultSegmentSize)
	le.PutUint32(good[36:], 8192)
	f.Add(good, "000000010000000000000003", int64(DefaultSegmentSize))
	f.Add(good[:HeaderSize-1], "000000010000000000000003", int64(0))
	f.Add([]byte{}, "", int64(-1))
	f.Fuzz(func(t *testing.T, b []byte, name string, size int64) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if len(b) < HeaderSize || !ValidSegmentSize(int64(h.SegmentSize)) || h.Magic < 0xD000 || h.BlockSize == 0 ||
			binary.LittleEndian.Uint16(b[2:])&XLPLongHeader == 0 {
			t.Fatalf("ParseHeader accepted %x as %+v", b[:min(len(b), HeaderSize)], h)
		}
		seg, err := ParseSegment(name)
		if err != nil {
			seg = Segment{Timeline: h.Timeline}
		}
		if err := h.Check(seg, size); err == nil {
			if size != int64(h.SegmentSize) || h.PageAddr != seg.StartLSN(size) {
				t.Fatalf("Check accepted %+v for %s of %d bytes", h, seg, size)
			}
		}
	})
}
