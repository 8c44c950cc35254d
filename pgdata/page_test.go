package pgdata

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/walgo/walgo/wal"
)

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// page is a sane heap page stamped with lsn: pd_lower 28, pd_upper 8000,
// pd_special 8192, layout version 4.
func page(lsn wal.LSN) []byte {
	p := make([]byte, PageSize)
	le := binary.LittleEndian
	le.PutUint32(p[0:], uint32(lsn>>32))
	le.PutUint32(p[4:], uint32(lsn))
	le.PutUint16(p[12:], 28)
	le.PutUint16(p[14:], 8000)
	le.PutUint16(p[16:], PageSize)
	le.PutUint16(p[18:], PageSize|4)
	for i := 8000; i < PageSize; i++ {
		p[i] = 0xAB
	}
	return p
}

func TestParsePageHeader(t *testing.T) {
	h := ParsePageHeader(testdata(t, "pg_namespace_block0"))
	if h.LSN != 0x1683D10 || h.Checksum != 0x34BE || !h.Sane() || h.IsNew() || h.PageSizeVersion != PageSize|4 {
		t.Errorf("pg_namespace block 0: %+v", h)
	}
	if h := ParsePageHeader(make([]byte, PageSize)); !h.IsNew() || h.Sane() || h.LSN != 0 {
		t.Errorf("zero page: %+v", h)
	}
}

func TestUnchanged(t *testing.T) {
	const from = wal.LSN(0x5000000)
	mod := func(p []byte, f func([]byte)) []byte { f(p); return p }
	le := binary.LittleEndian
	tests := []struct {
		name string
		page []byte
		want bool
	}{
		{"older LSN", page(0x4FFFFFF), true},
		{"real page older than from", testdata(t, "pg_namespace_block0"), true},
		{"LSN at from", page(from), false},
		{"newer LSN", page(0x6000000), false},
		// Truncated and extended again: the parent may hold an old page here.
		{"all-zero page", make([]byte, PageSize), false},
		{"new page with data", mod(page(0x1000), func(p []byte) { le.PutUint16(p[14:], 0) }), false},
		{"no LSN", page(0), false},
		{"unknown flag bits (torn or damaged)", mod(page(0x1000), func(p []byte) { le.PutUint16(p[10:], 0x0100) }), false},
		{"pd_lower past pd_upper", mod(page(0x1000), func(p []byte) { le.PutUint16(p[12:], 8100) }), false},
		{"pd_special past the page", mod(page(0x1000), func(p []byte) { le.PutUint16(p[16:], 9000) }), false},
		{"pd_special unaligned", mod(page(0x1000), func(p []byte) { le.PutUint16(p[16:], 8190) }), false},
		{"all-visible flag is a known bit", mod(page(0x1000), func(p []byte) { le.PutUint16(p[10:], PDAllVisible) }), true},
	}
	for _, tt := range tests {
		if got := Unchanged(tt.page, from); got != tt.want {
			t.Errorf("%s: Unchanged = %v, want %v (header %+v)", tt.name, got, tt.want, ParsePageHeader(tt.page))
		}
	}
}

func TestAllZero(t *testing.T) {
	z := make([]byte, PageSize)
	if !AllZero(z) {
		t.Error("zeros")
	}
	for _, off := range []int{0, 4095, PageSize - 1} {
		p := bytes.Clone(z)
		p[off] = 1
		if AllZero(p) {
			t.Errorf("byte %d set: all zero", off)
		}
	}
}
