package pgdata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

// ControlWith returns pg_control bytes b with data_checksum_version set to
// v and the CRC recomputed.
func controlWith(b []byte, v uint32) []byte {
	out := make([]byte, PageSize)
	copy(out, b)
	binary.LittleEndian.PutUint32(out[ctlChecksumVerOff:], v)
	binary.LittleEndian.PutUint32(out[ctlCRCOff:], crc32.Checksum(out[:ctlCRCOff], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

func TestParseControl(t *testing.T) {
	real := testdata(t, "pg_control")
	c, err := ParseControl(real)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1300 || c.BlockSize != 8192 || c.RelSegSize != 131072 || c.DataChecksumVersion != 1 ||
		c.WALBlockSize != 8192 || c.WALSegSize != 16<<20 || c.CatalogVersion != 202209061 || c.SystemID == 0 {
		t.Fatalf("real pg_control: %+v", c)
	}
	if c.SystemIDString() == "" || c.SystemIDString()[0] == '-' {
		t.Errorf("system id %q", c.SystemIDString())
	}
	if c, err := ParseControl(controlWith(real, 0)); err != nil || c.DataChecksumVersion != 0 {
		t.Errorf("checksums off: %+v, %v", c, err)
	}
	bad := bytes.Clone(real)
	bad[ctlChecksumVerOff] = 0 // without fixing the CRC
	odd := controlWith(real, 1)
	binary.LittleEndian.PutUint32(odd[ctlBlockSizeOff:], 12345)
	binary.LittleEndian.PutUint32(odd[ctlCRCOff:], crc32.Checksum(odd[:ctlCRCOff], crc32.MakeTable(crc32.Castagnoli)))
	for name, b := range map[string][]byte{
		"damaged (CRC)": bad, "short": real[:100], "empty": nil,
		// Another layout whose CRC happens to sit at the same place but
		// whose sizes make no sense.
		"implausible sizes": odd,
	} {
		if _, err := ParseControl(b); !errors.Is(err, ErrControl) {
			t.Errorf("%s: %v, want ErrControl", name, err)
		}
	}
}
