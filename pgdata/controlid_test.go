package pgdata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func TestControlSystemID(t *testing.T) {
	real := testdata(t, "pg_control")
	c, err := ParseControl(real)
	if err != nil {
		t.Fatal(err)
	}
	full := make([]byte, PageSize) // as on disk: the struct, then zeros
	copy(full, real)
	if id, err := ControlSystemID(full); err != nil || id != c.SystemID {
		t.Errorf("known layout: %d, %v; want %d", id, err, c.SystemID)
	}
	// Another version's layout: the same start, the CRC further on.
	other := make([]byte, PageSize)
	copy(other, real[:ctlCRCOff])
	binary.LittleEndian.PutUint32(other[8:], 1700)
	binary.LittleEndian.PutUint32(other[320:], crc32.Checksum(other[:320], castagnoli))
	if id, err := ControlSystemID(other); err != nil || id != c.SystemID {
		t.Errorf("other layout: %d, %v; want %d", id, err, c.SystemID)
	}
	// A whole pg_control file as initdb (Postgres 15, no data checksums)
	// wrote it; pg_controldata says its system identifier.
	if id, err := ControlSystemID(testdata(t, "pg_control_nochecksums_8k")); err != nil || id != 7714267291457709625 {
		t.Errorf("initdb's pg_control: %d, %v", id, err)
	}
	damaged := bytes.Clone(other)
	damaged[3] ^= 1
	for name, b := range map[string][]byte{
		"damaged": damaged, "zeros": make([]byte, PageSize), "short": real[:100], "empty": nil,
	} {
		if _, err := ControlSystemID(b); !errors.Is(err, ErrControl) {
			t.Errorf("%s: %v, want ErrControl", name, err)
		}
	}
}
