package pgdata

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// ControlSystemID returns the system identifier of a pg_control file of
// any Postgres version. system_identifier is the first field of
// ControlFileData in every version; what moves between versions is the
// CRC-32C that ends the struct. A layout ParseControl knows is read with
// it; for another, the file counts as whole when some 4-byte-aligned
// offset in the range a ControlFileData can end holds the CRC-32C of
// everything before it. Damaged or unknown bytes wrap ErrControl.
func ControlSystemID(b []byte) (uint64, error) {
	if c, err := ParseControl(b); err == nil {
		return c.SystemID, nil
	}
	le := binary.LittleEndian
	for off := ctlMinCRCOff; off+4 <= len(b) && off <= ctlMaxCRCOff; off += 4 {
		if crc32.Checksum(b[:off], castagnoli) == le.Uint32(b[off:]) {
			if id := le.Uint64(b[ctlSystemIDOff:]); id != 0 {
				return id, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: no CRC-32C found over its start (damaged, or not a pg_control file)", ErrControl)
}

// Where ControlFileData may end: past the fixed fields every version has
// (about 200 bytes), and well inside the 512 bytes Postgres keeps the
// struct within (PG_CONTROL_MAX_SAFE_SIZE).
const (
	ctlMinCRCOff = 128
	ctlMaxCRCOff = 508
)
