package pgdata

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Real pages of a Postgres 15 cluster made by `initdb -k` (testdata): each
// carries the checksum Postgres computed in pd_checksum, so it is its own
// test vector.
func TestPageChecksum(t *testing.T) {
	tests := []struct {
		file string
		blk  uint32
		want uint16
	}{
		{"pg_namespace_block0", 0, 0x34BE},
		{"pg_proc_block5", 5, 0xCA71},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			page := testdata(t, tt.file)
			if len(page) != PageSize {
				t.Fatalf("vector is %d bytes", len(page))
			}
			if got := binary.LittleEndian.Uint16(page[8:]); got != tt.want {
				t.Fatalf("vector's pd_checksum is %#x, want %#x", got, tt.want)
			}
			if got := PageChecksum(page, tt.blk); got != tt.want {
				t.Errorf("PageChecksum = %#x, want %#x", got, tt.want)
			}
			if got := FinishChecksum(ChecksumBlock(page), tt.blk); got != tt.want {
				t.Errorf("FinishChecksum(ChecksumBlock) = %#x, want %#x", got, tt.want)
			}
			// pd_checksum itself is not part of the sum.
			p := bytes.Clone(page)
			binary.LittleEndian.PutUint16(p[8:], 0xFFFF)
			if got := PageChecksum(p, tt.blk); got != tt.want {
				t.Errorf("pd_checksum changed the sum: %#x", got)
			}
			// The block number is mixed in: a moved page does not match.
			if got := PageChecksum(page, tt.blk+1); got == tt.want {
				t.Errorf("block %d has the same checksum", tt.blk+1)
			}
			// A flipped bit anywhere is caught.
			for _, off := range []int{0, 10, 100, 4096, PageSize - 1} {
				p := bytes.Clone(page)
				p[off] ^= 0x01
				if got := PageChecksum(p, tt.blk); got == tt.want {
					t.Errorf("bit flipped at %d not caught", off)
				}
			}
		})
	}
}
