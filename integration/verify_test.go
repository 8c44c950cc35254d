package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// walVerifyJSON is the part of wal-verify --json the tests read.
type walVerifyJSON struct {
	OK        bool `json:"ok"`
	Timelines []struct {
		ID             uint32 `json:"timeline"`
		Last           string `json:"last"`
		HistoryMissing bool   `json:"history_missing"`
	} `json:"timelines"`
	Backups []struct {
		Backup          string `json:"backup"`
		Lineage         string `json:"lineage"`
		FinishSegment   string `json:"finish_segment"`
		Follows         uint32 `json:"follows_timeline"`
		Restorable      bool   `json:"restorable"`
		PITRUpToSegment string `json:"pitr_up_to_segment"`
		OK              bool   `json:"ok"`
	} `json:"backups"`
	Problems []string `json:"problems"`
}

func walVerify(t *testing.T, r repo) (walVerifyJSON, result) {
	t.Helper()
	res := walgo(t, r.env, "wal-verify", "--json")
	var v walVerifyJSON
	if err := json.Unmarshal([]byte(res.stdout), &v); err != nil {
		t.Fatalf("wal-verify --json: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
	}
	return v, res
}

// hide moves an archived object out of the repository's listing and
// returns a function that puts it back (a rename keeps its owner).
func hide(t *testing.T, r repo, key string) (restore func()) {
	t.Helper()
	from := filepath.Join(r.root, filepath.FromSlash(key))
	to := filepath.Join(r.root, "hidden-"+filepath.Base(key))
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Rename(to, from); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWALVerify: a healthy archive passes; a segment removed after a
// backup's finish is named and fails the check; after a fork, the backup
// is checked along timeline 1 and along the fork's timeline 2, and a
// missing 00000002.history fails the check.
func TestWALVerify(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	src.SQL(t, markerSQL)
	mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
	for i := range 4 { // a few more segments
		src.SQL(t, fmt.Sprintf("insert into marker values (%d, 'segment %d')", 1000+i, i))
		archiveAll(t, src)
	}
	m := mark(t, src, 1)
	archiveAll(t, src)

	v, res := walVerify(t, r)
	if res.code != 0 || !v.OK || len(v.Backups) != 1 || !v.Backups[0].Restorable || v.Backups[0].Follows != 1 {
		t.Fatalf("healthy archive: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	last := v.Timelines[0].Last
	if v.Backups[0].PITRUpToSegment != last {
		t.Errorf("PITR up to %s, the last archived segment is %s", v.Backups[0].PITRUpToSegment, last)
	}
	table := mustWalgo(t, r.env, "wal-verify")
	if !strings.Contains(table.stdout, v.Backups[0].Backup) || !strings.Contains(table.stdout, ": OK") {
		t.Errorf("wal-verify table:\n%s", table.stdout)
	}
	t.Logf("wal-verify:\n%s", table.stdout)

	t.Run("segment removed", func(t *testing.T) {
		fin, err := wal.ParseSegment(v.Backups[0].FinishSegment)
		if err != nil {
			t.Fatal(err)
		}
		gone := fin.Next(wal.DefaultSegmentSize)
		if gone.Name() >= last {
			t.Fatalf("no segment between the finish %s and the last %s", fin, last)
		}
		put := hide(t, r, catalog.WALKey(gone.Name(), codec.Zstd{}))
		defer put()
		res := walgo(t, r.env, "wal-verify")
		if res.code != 5 || !strings.Contains(res.stdout, gone.Name()) || !strings.Contains(res.stdout, "FAILED") {
			t.Errorf("exit %d; want 5 naming %s\n%s\n%s", res.code, gone, res.stdout, res.stderr)
		}
		t.Logf("wal-verify:\n%s%s", res.stdout, res.stderr)
		v, _ := walVerify(t, r)
		if v.OK || !v.Backups[0].Restorable || v.Backups[0].PITRUpToSegment >= gone.Name() {
			t.Errorf("json: %+v", v)
		}
	})
	if res := walgo(t, r.env, "wal-verify"); res.code != 0 {
		t.Fatalf("after putting the segment back: exit %d\n%s", res.code, res.stdout)
	}

	// A fork at marker 1, promoted onto timeline 2, archiving into the
	// same repository.
	fork := restoreAndStart(t, r, []string{"--target-lsn", m.lsn}, "archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push %%p'", walgoBin))
	waitPromoted(t, fork)
	fork.SQL(t, "insert into marker values (100, 'written on the fork')")
	archiveAll(t, fork)
	archiveAll(t, src) // the source goes on on timeline 1

	t.Logf("wal-verify after the fork:\n%s", mustWalgo(t, r.env, "wal-verify").stdout)
	// The backup is checked along both histories: the source's, on
	// timeline 1 to its end, and the fork's.
	v, res = walVerify(t, r)
	if res.code != 0 || !v.OK || len(v.Backups) != 2 || v.Backups[0].Lineage != "1" || v.Backups[0].Follows != 1 ||
		!strings.HasPrefix(v.Backups[0].PITRUpToSegment, "00000001") ||
		v.Backups[1].Lineage != "2" || v.Backups[1].Follows != 2 || !strings.HasPrefix(v.Backups[1].PITRUpToSegment, "00000002") {
		t.Fatalf("after the fork: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}

	t.Run("history removed", func(t *testing.T) {
		put := hide(t, r, catalog.WALKey("00000002.history", codec.Zstd{}))
		defer put()
		res := walgo(t, r.env, "wal-verify")
		if res.code != 5 || !strings.Contains(res.stdout, "00000002.history") || !strings.Contains(res.stdout, "MISSING") {
			t.Errorf("exit %d; want 5 naming 00000002.history\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		t.Logf("wal-verify:\n%s%s", res.stdout, res.stderr)
		v, _ := walVerify(t, r)
		if v.OK || v.Backups[0].OK || len(v.Timelines) != 2 || !v.Timelines[1].HistoryMissing {
			t.Errorf("json: %+v", v)
		}
	})
}

// decoded reads a stored object and decodes it by its key's extension.
func decoded(t *testing.T, st storage.Store, key, sep string) []byte {
	t.Helper()
	_, ext, _ := strings.Cut(key, sep)
	dec, err := codec.New(nil, nil, nil).Decode(ext, bytes.NewReader(readObject(t, st, key)))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	b, err := io.ReadAll(dec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// storeZstd stores b zstd-compressed under key and returns its sha256 and
// size as the sentinel records them.
func storeZstd(t *testing.T, st storage.Store, key string, b []byte) (string, int64) {
	t.Helper()
	var buf bytes.Buffer
	w, _ := codec.Zstd{}.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if err := st.Put(context.Background(), key, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(sum[:]), int64(buf.Len())
}

func backupVerify(t *testing.T, r repo, args ...string) result {
	t.Helper()
	return walgo(t, r.env, append([]string{"backup-verify"}, args...)...)
}

// TestBackupVerify: a backup taken under load passes, page checksums
// included; a flipped byte in a partition, a missing partition, a manifest
// that does not match the tars and a damaged relation page are each caught
// and named.
func TestBackupVerify(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "5", "-q")
	src.SQL(t, "create table cold as select g, md5(g::text) as h from generate_series(1, 20000) g; vacuum freeze cold; checkpoint")
	coldPath := src.SQL(t, "select pg_relation_filepath('cold')")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := src.Command(ctx, "pgbench", "-n", "-T", "600", "-c", "2")
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=30MB", "WALGO_PART_SIZE=16MiB"}, r.env...), "backup-push")
	cancel()
	load.Wait()
	names := listBackups(t, r)
	if len(names) != 1 {
		t.Fatalf("backups: %v", names)
	}
	name := names[0]
	st := r.openStore(t)
	bg := context.Background()
	sn, err := catalog.ReadSentinel(bg, st, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(sn.Parts) < 2 {
		t.Fatalf("want several partitions, got %d", len(sn.Parts))
	}

	res := backupVerify(t, r, name, "--pages", "--json")
	var reps []struct {
		OK    bool `json:"ok"`
		Files int  `json:"files"`
		Pages struct {
			Checksums     string `json:"data_checksums"`
			ChecksumsFrom string `json:"data_checksums_from"`
			Checked       int64  `json:"checked"`
			AfterStart    int64  `json:"skipped_after_start"`
		} `json:"pages"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &reps); err != nil || res.code != 0 || len(reps) != 1 || !reps[0].OK {
		t.Fatalf("good backup: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
	}
	if p := reps[0].Pages; p.Checksums != "on" || p.ChecksumsFrom != "pg_control" || p.Checked < 1000 {
		t.Errorf("page checks: %+v", p)
	}
	t.Logf("good backup: %d files, pages %+v", reps[0].Files, reps[0].Pages)
	if res := backupVerify(t, r, "--all"); res.code != 0 || !strings.Contains(res.stdout, name+": OK") {
		t.Errorf("--all: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if res := backupVerify(t, r, "base_000000010000000000000099"); res.code != 1 {
		t.Errorf("unknown backup: exit %d; want 1\n%s", res.code, res.stderr)
	}

	// rewrite puts back the original objects and sentinel after a case.
	rewrite := func(t *testing.T, keys ...string) {
		orig := map[string][]byte{}
		for _, k := range keys {
			orig[k] = readObject(t, st, k)
		}
		t.Cleanup(func() {
			for k, b := range orig {
				if err := st.Put(bg, k, bytes.NewReader(b)); err != nil {
					t.Error(err)
				}
			}
			if err := catalog.WriteSentinel(bg, st, sn); err != nil {
				t.Error(err)
			}
		})
	}
	wantFailure := func(t *testing.T, res result, subs ...string) {
		t.Helper()
		if res.code != 5 {
			t.Errorf("exit %d; want 5\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		for _, s := range subs {
			if !strings.Contains(res.stdout, s) {
				t.Errorf("report lacks %q:\n%s", s, res.stdout)
			}
		}
		t.Logf("report:\n%s", res.stdout)
	}

	t.Run("flipped byte", func(t *testing.T) {
		key := sn.Parts[len(sn.Parts)/2].Key
		rewrite(t, key)
		b := readObject(t, st, key)
		b[len(b)/2] ^= 0x20
		if err := st.Put(bg, key, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		wantFailure(t, backupVerify(t, r, name), key+": sha256 of the stored object")
	})

	t.Run("missing partition", func(t *testing.T) {
		key := sn.Parts[0].Key
		rewrite(t, key)
		if err := st.Delete(bg, key); err != nil {
			t.Fatal(err)
		}
		wantFailure(t, backupVerify(t, r, "LATEST"), key+": partition is missing")
	})

	t.Run("manifest without a file", func(t *testing.T) {
		rewrite(t, sn.ManifestKey)
		var m catalog.Manifest
		if err := json.Unmarshal(decoded(t, st, sn.ManifestKey, ".json."), &m); err != nil {
			t.Fatal(err)
		}
		kept := m.Files[:0]
		for _, f := range m.Files {
			if f.Path != "PG_VERSION" {
				kept = append(kept, f)
			}
		}
		m.Files = kept
		mj, _ := json.Marshal(m)
		bad := *sn
		bad.ManifestSHA256, _ = storeZstd(t, st, sn.ManifestKey, mj)
		if err := catalog.WriteSentinel(bg, st, &bad); err != nil {
			t.Fatal(err)
		}
		wantFailure(t, backupVerify(t, r, name), "PG_VERSION: in the tar but not in the manifest")
	})

	t.Run("damaged page", func(t *testing.T) {
		// Flip a byte inside a page of the cold table written before the
		// backup started, and make the partition's and the manifest's
		// sha256 match the damage: only the page checksum can tell.
		var part catalog.Part
		var tarBytes []byte
		for _, p := range sn.Parts {
			b := decoded(t, st, p.Key, ".tar.")
			if bytes.Contains(b, []byte(coldPath)) {
				part, tarBytes = p, b
				break
			}
		}
		if part.Key == "" {
			t.Fatalf("%s is in no partition", coldPath)
		}
		rewrite(t, part.Key, sn.ManifestKey)
		var out bytes.Buffer
		tw := tar.NewWriter(&out)
		tr := tar.NewReader(bytes.NewReader(tarBytes))
		var fileSum string
		damaged := -1
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if hdr.Name == coldPath {
				for blk := 0; (blk+1)*8192 <= len(data); blk++ {
					pg := data[blk*8192 : (blk+1)*8192]
					lsn := wal.LSN(uint64(binary.LittleEndian.Uint32(pg[0:]))<<32 | uint64(binary.LittleEndian.Uint32(pg[4:])))
					if binary.LittleEndian.Uint16(pg[14:]) != 0 && lsn < sn.StartLSN {
						pg[8000] ^= 0x01
						damaged = blk
						break
					}
				}
				s := sha256.Sum256(data)
				fileSum = hex.EncodeToString(s[:])
			}
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(data); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		if damaged < 0 {
			t.Fatalf("no page of %s older than the backup start", coldPath)
		}
		bad := *sn
		bad.Parts = append([]catalog.Part(nil), sn.Parts...)
		for i := range bad.Parts {
			if bad.Parts[i].Key == part.Key {
				bad.Parts[i].SHA256, bad.Parts[i].Size = storeZstd(t, st, part.Key, out.Bytes())
			}
		}
		var m catalog.Manifest
		if err := json.Unmarshal(decoded(t, st, sn.ManifestKey, ".json."), &m); err != nil {
			t.Fatal(err)
		}
		for i := range m.Files {
			if m.Files[i].Path == coldPath {
				m.Files[i].SHA256 = fileSum
			}
		}
		mj, _ := json.Marshal(m)
		bad.ManifestSHA256, _ = storeZstd(t, st, sn.ManifestKey, mj)
		if err := catalog.WriteSentinel(bg, st, &bad); err != nil {
			t.Fatal(err)
		}
		// Without --pages the backup is consistent with itself.
		if res := backupVerify(t, r, name); res.code != 0 {
			t.Fatalf("without --pages: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
		}
		wantFailure(t, backupVerify(t, r, name, "--pages"),
			fmt.Sprintf("%s: %s: block %d: page checksum", part.Key, coldPath, damaged))
	})

	if res := backupVerify(t, r, "--all", "--pages"); res.code != 0 {
		t.Errorf("after putting everything back: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
}
