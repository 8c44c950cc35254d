package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/walgo/walgo/codec"
)

func sentinelSeeds() [][]byte {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.UTC)
	sn := &Sentinel{
		Format: SentinelFormat, Name: "base_000000010000000000000004_D_000000010000000000000002",
		StartLSN: 0x4000028, FinishLSN: 0x4000138, Timeline: 1,
		StartTime: t0, FinishTime: t0.Add(time.Minute), PGVersion: 170002, SystemID: "7300000000000000001",
		SegmentSize: 16 << 20, NextXID: 1234, Hostname: "db1", DataDir: "/var/lib/postgresql/17/main",
		CompressedSize: 10, UncompressedSize: 20, FileCount: 3, Compression: "zst",
		Parts:       []Part{{Key: "basebackups_005/base_000000010000000000000004_D_000000010000000000000002/part_001.tar.zst", Size: 10, SHA256: "ab"}},
		ManifestKey: "basebackups_005/base_000000010000000000000004_D_000000010000000000000002/manifest.json.zst",
		BackupLabel: "START WAL LOCATION: 0/4000028\n", TablespaceMap: "16384 /tmp/ts\n",
		Tablespaces: []Tablespace{{OID: 16384, Name: "ts", Location: "/tmp/ts"}},
		DeltaParent: "base_000000010000000000000002", DeltaFrom: 0x2000028, Permanent: true,
		UserData: json.RawMessage(`{"a": [1, 2]}`), WalgoVersion: "test",
	}
	full, _ := EncodeSentinel(sn)
	return [][]byte{
		full,
		[]byte(`{"format":1,"name":"base_000000010000000000000002"}`),
		[]byte(`{"format":2,"name":"base_000000010000000000000002"}`),
		[]byte(`{"format":1,"name":"base_../../etc"}`),
		[]byte(`{"format":1,"name":"base_000000010000000000000002","start_lsn":"1/a","user_data":null}`),
		[]byte(`{"format":1,"name":"base_000000010000000000000002","start_time":"2026-11-24T10:00:00+05:30"}`),
		[]byte(`{"format":1,"name":"base_000000010000000000000002","start_lsn":"zz"}`),
		[]byte(`{"format":1,"name":"base_000000010000000000000002","parts":[{"key":"../x","size":-1}]}`),
		[]byte(`{"format":1,"name":"base_000000010000000000000002","name":"base_x"}`),
		[]byte(`[]`), []byte(`null`), []byte(``), []byte(`{"format":1e0}`),
	}
}

// FuzzDecodeSentinel: DecodeSentinel never panics, fails only with
// codec.ErrCorrupt or ErrFormat, and what it accepts has a valid name and
// re-encodes to bytes that decode to the same sentinel (and encode the
// same again).
func FuzzDecodeSentinel(f *testing.F) {
	for _, s := range sentinelSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sn, err := DecodeSentinel(b)
		if err != nil {
			if !errors.Is(err, codec.ErrCorrupt) && !errors.Is(err, ErrFormat) {
				t.Fatalf("DecodeSentinel(%q): %v, neither corrupt nor an unknown format", b, err)
			}
			return
		}
		if sn.Format != SentinelFormat || !ValidBackupName(sn.Name) {
			t.Fatalf("DecodeSentinel(%q) accepted format %d, name %q", b, sn.Format, sn.Name)
		}
		enc, err := EncodeSentinel(sn)
		if err != nil {
			t.Fatalf("DecodeSentinel(%q) accepted %+v, which does not encode: %v", b, sn, err)
		}
		sn2, err := DecodeSentinel(enc)
		if err != nil {
			t.Fatalf("re-encoded sentinel does not decode: %v\n%s", err, enc)
		}
		if !sameSentinel(sn, sn2) {
			t.Fatalf("sentinel changed in a round trip:\n%+v\n%+v", sn, sn2)
		}
		enc2, err := EncodeSentinel(sn2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %v\n%s\n%s", err, enc, enc2)
		}
	})
}

// sameSentinel compares two sentinels, times by instant.
func sameSentinel(a, b *Sentinel) bool {
	if !a.StartTime.Equal(b.StartTime) || !a.FinishTime.Equal(b.FinishTime) {
		return false
	}
	x, y := *a, *b
	x.StartTime, x.FinishTime, y.StartTime, y.FinishTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	jx, err1 := json.Marshal(x)
	jy, err2 := json.Marshal(y)
	return err1 == nil && err2 == nil && bytes.Equal(jx, jy)
}

// FuzzDecodeManifest: DecodeManifest never panics, fails only with
// codec.ErrCorrupt or ErrFormat, and what it accepts encodes to JSON that
// decodes to the same manifest.
func FuzzDecodeManifest(f *testing.F) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	m := Manifest{Format: ManifestFormat, Backup: "base_000000010000000000000002", Files: []ManifestFile{
		{Path: "PG_VERSION", Size: 3, Mode: 0o600, ModTime: t0, SHA256: "00"},
		{Path: "base", Mode: uint32(0o700 | 1<<31), ModTime: t0},
		{Path: "base/1/1234", Size: 16384, Mode: 0o600, ModTime: t0, Delta: "pages", Pages: []uint32{0, 1}},
		{Path: "pg_wal", Mode: uint32(0o777 | 1<<27), Link: "/elsewhere"},
	}}
	good, _ := json.Marshal(m)
	for _, s := range [][]byte{
		good,
		[]byte(`{"format":1,"backup":"x","files":null}`),
		[]byte(`{"format":0}`),
		[]byte(`{"format":1,"files":[{"path":"../x","size":-5,"mode":4294967295,"mtime":"0001-01-01T00:00:00Z","pages":[4294967295]}]}`),
		[]byte(`{"format":1} trailing`),
		[]byte(`{"format":1,"files":[{"mtime":"2026-11-24T10:00:00.5-01:00"}]}`),
		[]byte(`{`), []byte(`"x"`), []byte{0xff, 0xfe},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, codec.ErrCorrupt) && !errors.Is(err, ErrFormat) {
				t.Fatalf("DecodeManifest(%q): %v, neither corrupt nor an unknown format", b, err)
			}
			return
		}
		if m.Format != ManifestFormat {
			t.Fatalf("DecodeManifest(%q) accepted format %d", b, m.Format)
		}
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("DecodeManifest(%q) accepted %+v, which does not encode: %v", b, m, err)
		}
		m2, err := DecodeManifest(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v\n%s", err, enc)
		}
		if len(m.Files) != len(m2.Files) || m.Backup != m2.Backup {
			t.Fatalf("manifest changed in a round trip:\n%+v\n%+v", m, m2)
		}
		for i := range m.Files {
			a, c := m.Files[i], m2.Files[i]
			if !a.ModTime.Equal(c.ModTime) {
				t.Fatalf("file %d: mtime %v became %v", i, a.ModTime, c.ModTime)
			}
			a.ModTime, c.ModTime = time.Time{}, time.Time{}
			ja, _ := json.Marshal(a)
			jc, _ := json.Marshal(c)
			if !bytes.Equal(ja, jc) {
				t.Fatalf("file %d changed in a round trip:\n%s\n%s", i, ja, jc)
			}
		}
		enc2, err := json.Marshal(m2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %v\n%s\n%s", err, enc, enc2)
		}
	})
}
