package pgdata

import "encoding/binary"

// Postgres' page checksum (src/include/storage/checksum_impl.h): the page
// read as 2048 little-endian uint32 words, row by row into 32 parallel
// FNV-1a-like sums (pd_checksum counted as zero), two more rounds of zeros,
// the sums XORed together; then the block number XORed in and the result
// reduced to 1..65535, so that 0 never is a checksum.

const (
	nSums    = 32
	fnvPrime = 16777619
)

var checksumBaseOffsets = [nSums]uint32{
	0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
	0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
	0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
	0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
}

// ChecksumBlock is pg_checksum_block over an 8 KiB page, with the
// pd_checksum field (bytes 8-9) taken as zero. FinishChecksum turns it into
// the checksum of a block number: a caller that learns the block number
// later (pg_control's segment size comes last in a backup) keeps this.
func ChecksumBlock(page []byte) uint32 {
	sums := checksumBaseOffsets
	page = page[:PageSize]
	for i := 0; i < PageSize; i += 4 * nSums {
		row := page[i : i+4*nSums]
		for j := range nSums {
			v := binary.LittleEndian.Uint32(row[4*j:])
			if i == 0 && j == 2 {
				v &= 0xFFFF0000 // pd_checksum is the low half of word 2
			}
			tmp := sums[j] ^ v
			sums[j] = tmp*fnvPrime ^ tmp>>17
		}
	}
	for range 2 {
		for j := range nSums {
			tmp := sums[j]
			sums[j] = tmp*fnvPrime ^ tmp>>17
		}
	}
	var r uint32
	for _, s := range sums {
		r ^= s
	}
	return r
}

// FinishChecksum is pg_checksum_page's last step: mix in the block number
// (within the relation fork, across segment files) and reduce to 1..65535.
func FinishChecksum(blockSum, blkno uint32) uint16 {
	return uint16((blockSum^blkno)%65535 + 1)
}

// PageChecksum is pg_checksum_page: the checksum Postgres stores in
// pd_checksum of block blkno.
func PageChecksum(page []byte, blkno uint32) uint16 {
	return FinishChecksum(ChecksumBlock(page), blkno)
}
