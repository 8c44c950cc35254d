// Package waltest makes synthetic WAL files for unit tests: the right size
// and a long page header that matches the name, with filler that
// compresses about as well as real WAL.
package waltest

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/walgo/walgo/wal"
)

// Segment returns the bytes of segment name of size segSize; seed varies
// the filler so two calls can differ in content only.
func Segment(t testing.TB, name string, segSize int64, seed uint64) []byte {
	t.Helper()
	s, err := wal.ParseSegment(name)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, segSize)
	r := rand.New(rand.NewPCG(seed, uint64(s.No(segSize))))
	for i := wal.HeaderSize; i < len(b); i += 64 {
		b[i] = byte(r.IntN(256))
	}
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD110)
	le.PutUint16(b[2:], 0x0002|0x0004)
	le.PutUint32(b[4:], s.Timeline)
	le.PutUint64(b[8:], uint64(s.StartLSN(segSize)))
	le.PutUint64(b[24:], 7300000000000000001)
	le.PutUint32(b[32:], uint32(segSize))
	le.PutUint32(b[36:], 8192)
	return b
}

// WriteFile writes data to dir/name and returns its path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// PgWal makes a pg_wal folder with its archive_status inside a temp dir.
func PgWal(t testing.TB) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "pg_wal")
	if err := os.MkdirAll(filepath.Join(d, "archive_status"), 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}
