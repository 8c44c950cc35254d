package waltest

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// PgControl returns a real global/pg_control (Postgres 15, initdb, no data
// checksums: pgdata/testdata/pg_control_nochecksums_8k) with its system
// identifier set to sysID and its CRC-32C fixed, for tests that give a data
// directory a cluster of their choosing.
func PgControl(t testing.TB, sysID uint64) []byte {
	t.Helper()
	return PgControlSegSize(t, sysID, 0)
}

// PgControlSegSize is PgControl with a WAL segment size of segSize bytes
// (0 keeps the file's 16 MiB).
func PgControlSegSize(t testing.TB, sysID uint64, segSize uint32) []byte {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "pgdata", "testdata", "pg_control_nochecksums_8k"))
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(b, sysID)
	if segSize != 0 {
		const segSizeOff = 228 // xlog_seg_size
		binary.LittleEndian.PutUint32(b[segSizeOff:], segSize)
	}
	const crcOff = 288 // the end of ControlFileData, pg_control_version 1300
	binary.LittleEndian.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], crc32.MakeTable(crc32.Castagnoli)))
	return b
}
