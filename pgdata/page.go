package pgdata

import (
	"encoding/binary"

	"github.com/walgo/walgo/wal"
)

// PageSize is BLCKSZ, the size of a relation page. walgo supports the
// default only (pg_control says a cluster's own).
const PageSize = 8192

// PageHeaderSize is SizeOfPageHeaderData.
const PageHeaderSize = 24

// pdValidFlagBits are the pd_flags bits Postgres defines (PD_HAS_FREE_LINES,
// PD_PAGE_FULL, PD_ALL_VISIBLE).
const pdValidFlagBits = 0x0007

// PDAllVisible is PD_ALL_VISIBLE: every tuple on the page is visible to
// every transaction. Without data checksums and wal_log_hints, vacuum sets
// it without changing the page's LSN.
const PDAllVisible = 0x0004

// PageHeader is PageHeaderData (src/include/storage/bufpage.h), read as a
// little-endian machine writes it.
type PageHeader struct {
	LSN             wal.LSN // pd_lsn: the end of the last WAL record that changed the page
	Checksum        uint16  // pd_checksum
	Flags           uint16  // pd_flags
	Lower           uint16  // pd_lower: end of the line pointers
	Upper           uint16  // pd_upper: start of the tuples; 0 on a new page
	Special         uint16  // pd_special: start of the special space
	PageSizeVersion uint16  // pd_pagesize_version
	PruneXID        uint32  // pd_prune_xid
}

// ParsePageHeader reads the header at the start of page (at least
// PageHeaderSize bytes).
func ParsePageHeader(page []byte) PageHeader {
	le := binary.LittleEndian
	return PageHeader{
		LSN:             PageLSN(page),
		Checksum:        le.Uint16(page[8:]),
		Flags:           le.Uint16(page[10:]),
		Lower:           le.Uint16(page[12:]),
		Upper:           le.Uint16(page[14:]),
		Special:         le.Uint16(page[16:]),
		PageSizeVersion: le.Uint16(page[18:]),
		PruneXID:        le.Uint32(page[20:]),
	}
}

// PageLSN is pd_lsn: two uint32, the high half first.
func PageLSN(page []byte) wal.LSN {
	le := binary.LittleEndian
	return wal.LSN(uint64(le.Uint32(page[0:]))<<32 | uint64(le.Uint32(page[4:])))
}

// IsNew reports a page never initialised (PageIsNew: pd_upper 0). It
// carries no checksum.
func (h PageHeader) IsNew() bool { return h.Upper == 0 }

// Sane reports whether the header passes the checks Postgres makes before
// it lets a page into the buffer pool (PageIsVerifiedExtended): known flag
// bits only, pd_lower <= pd_upper <= pd_special <= BLCKSZ, pd_special
// aligned. A new page is not sane.
func (h PageHeader) Sane() bool {
	return !h.IsNew() && h.Flags&^pdValidFlagBits == 0 &&
		h.Lower <= h.Upper && h.Upper <= h.Special && h.Special <= PageSize && h.Special%8 == 0
}

// AllZero reports whether page holds only zero bytes: a page a relation was
// extended by and that was never written, which Postgres accepts as valid.
func AllZero(page []byte) bool {
	for _, c := range page {
		if c != 0 {
			return false
		}
	}
	return true
}

// Unchanged reports whether a page of a relation's main fork may be taken
// from a parent backup that started at from: a sane, stamped page whose
// LSN is older than from. With data checksums or wal_log_hints, every change
// to such a page after from stamps it with a newer LSN; hint bits set
// before from were on disk when the parent read it (the parent's start
// checkpoint wrote them). Everything else is changed: a newer LSN, a page
// with no LSN (written without WAL), a new or all-zero page (the parent may
// hold an older page at that place: a relation truncated and extended
// again), and a page whose header is not sane (torn or damaged).
func Unchanged(page []byte, from wal.LSN) bool {
	h := ParsePageHeader(page)
	return h.Sane() && h.LSN != 0 && h.LSN < from
}
