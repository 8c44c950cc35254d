package wal

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in   string
		want LSN
		err  bool
	}{
		{"0/0", 0, false},
		{"16/B374D848", 0x16B374D848, false},
		{"FFFFFFFF/FFFFFFFF", ^LSN(0), false},
		{"0/3000028", 0x3000028, false},
		{"", 0, true},
		{"16", 0, true},
		{"/1", 0, true},
		{"1/", 0, true},
		{"G/1", 0, true},
		{"100000000/0", 0, true},
		{"-1/0", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLSN(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, _ := ParseLSN(got.String()); back != got {
				t.Errorf("round trip of %q: %v", tt.in, back)
			}
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		want Kind
	}{
		{"000000010000000000000001", KindSegment},
		{"00000002.history", KindHistory},
		{"000000010000000000000002.00000028.backup", KindBackup},
		{"000000010000000000000003.partial", KindPartial},
		{"00000001000000000000000g", KindUnknown},
		{"00000001000000000000000a", KindUnknown}, // Postgres writes upper case
		{"0000000100000000000001", KindUnknown},
		{"RECOVERYXLOG", KindUnknown},
		{"../00000001000000000001", KindUnknown},
		{"0000000G.history", KindUnknown},
		{"000000010000000000000002.0000002X.backup", KindUnknown},
		{"", KindUnknown},
	}
	for _, tt := range tests {
		if got := Classify(tt.name); got != tt.want {
			t.Errorf("Classify(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestSegmentArithmetic(t *testing.T) {
	tests := []struct {
		name    string
		segSize int64
		next    string
		start   LSN
	}{
		{"000000010000000000000001", 16 << 20, "000000010000000000000002", 0x1000000},
		{"0000000100000000000000FF", 16 << 20, "000000010000000100000000", 0xFF000000},
		{"000000020000000A000000FF", 16 << 20, "000000020000000B00000000", 0xAFF000000},
		{"000000010000000000000FFF", 1 << 20, "000000010000000100000000", 0xFFF00000},
		{"000000010000000000000003", 1 << 30, "000000010000000100000000", 0xC0000000},
	}
	for _, tt := range tests {
		s, err := ParseSegment(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name() != tt.name {
			t.Errorf("Name() = %s, want %s", s.Name(), tt.name)
		}
		if got := s.Next(tt.segSize).Name(); got != tt.next {
			t.Errorf("%s.Next(%d) = %s, want %s", tt.name, tt.segSize, got, tt.next)
		}
		if got := s.StartLSN(tt.segSize); got != tt.start {
			t.Errorf("%s.StartLSN = %v, want %v", tt.name, got, tt.start)
		}
		if got := SegmentAt(s.Timeline, tt.start+5, tt.segSize); got != s {
			t.Errorf("SegmentAt(%v) = %v, want %v", tt.start+5, got, s)
		}
		if got := SegmentFromNo(s.Timeline, s.No(tt.segSize), tt.segSize); got != s {
			t.Errorf("SegmentFromNo = %v, want %v", got, s)
		}
	}
	if _, err := ParseSegment("00000001000000000000000"); !errors.Is(err, ErrBadName) {
		t.Errorf("short name: err = %v", err)
	}
}

func header(pageAddr LSN, segSize uint32, info uint16) []byte {
	b := make([]byte, HeaderSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD110)
	le.PutUint16(b[2:], info)
	le.PutUint32(b[4:], 1)
	le.PutUint64(b[8:], uint64(pageAddr))
	le.PutUint64(b[24:], 7345)
	le.PutUint32(b[32:], segSize)
	le.PutUint32(b[36:], 8192)
	return b
}

func TestHeader(t *testing.T) {
	seg, _ := ParseSegment("000000010000000000000003")
	tests := []struct {
		desc     string
		b        []byte
		fileSize int64
		ok       bool
	}{
		{"good", header(0x3000000, 16<<20, 0x0002), 16 << 20, true},
		{"short file", header(0x3000000, 16<<20, 0x0002), 8 << 20, false},
		{"renamed file", header(0x4000000, 16<<20, 0x0002), 16 << 20, false},
		{"no long header", header(0x3000000, 16<<20, 0), 16 << 20, false},
		{"odd segment size", header(0x3000000, 3<<20, 0x0002), 3 << 20, false},
		{"zeros", make([]byte, HeaderSize), 16 << 20, false},
		{"too short", []byte{1, 2, 3}, 3, false},
	}
	for _, tt := range tests {
		h, err := ParseHeader(tt.b)
		if err == nil {
			err = h.Check(seg, tt.fileSize)
		}
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.desc, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadHeader) {
			t.Errorf("%s: err %v does not wrap ErrBadHeader", tt.desc, err)
		}
	}
}
