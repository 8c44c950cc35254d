package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/pgtest"
)

func listBackups(t *testing.T, r repo) []string {
	t.Helper()
	var list []struct {
		Name string `json:"name"`
	}
	out := mustWalgo(t, r.env, "backup-list", "--json")
	if err := json.Unmarshal([]byte(out.stdout), &list); err != nil {
		t.Fatalf("backup-list --json: %v\n%s", err, out.stdout)
	}
	var names []string
	for _, b := range list {
		names = append(names, b.Name)
	}
	return names
}

// TestBackupPushRefusals: a cluster that does not archive, and one whose
// archiving is broken, get a clear error and no listed backup.
func TestBackupPushRefusals(t *testing.T) {
	r := fileRepo(t)
	pgtest.Require(t)
	off := pgtest.New(t, pgtest.Options{Env: r.env, Conf: []string{"archive_mode = off"}})
	off.Start(t)
	res := walgoAs(t, off, r.env, "backup-push")
	if res.code != 2 || !strings.Contains(res.stderr, "archive_mode = off") {
		t.Errorf("archiving off: exit %d, stderr %q; want 2 and a clear message", res.code, res.stderr)
	}
	off.Stop(t)

	broken := archivingCluster(t, r, "archive_command = 'false'")
	res = walgoAs(t, broken, append([]string{"WALGO_DISK_RATE_LIMIT=0", "WALGO_STOP_BACKUP_TIMEOUT=5s"}, r.env...), "backup-push")
	if res.code == 0 || !strings.Contains(res.stderr, "not archived") {
		t.Errorf("broken archiving: exit %d, stderr %q; want a timeout naming the cause", res.code, res.stderr)
	}
	if got := listBackups(t, r); len(got) != 0 {
		t.Errorf("failed backups are listed: %v", got)
	}
}

// TestBackupPushKilled: kill -9 in the middle of backup-push leaves
// nothing listed, and the next backup-push succeeds.
func TestBackupPushKilled(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "5", "-q")
	ctx := context.Background()
	cmd := src.Command(ctx, walgoBin, "backup-push")
	cmd.Env = append(cmd.Env, append([]string{"WALGO_DISK_RATE_LIMIT=2MB"}, r.env...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, time.Minute, func() bool {
		found := false
		filepath.WalkDir(filepath.Join(r.root, "basebackups_005"), func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), ".walgo-tmp-") {
				found = true
			}
			return nil
		})
		return found
	}, "backup-push to start uploading")
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if got := listBackups(t, r); len(got) != 0 {
		t.Fatalf("a killed backup is listed: %v", got)
	}
	mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
	if got := listBackups(t, r); len(got) != 1 {
		t.Fatalf("after a good backup-push: %v", got)
	}
}

// TestBackupFetchBadInput: unknown name, non-empty folder, a damaged
// partition and a tar entry escaping the folder all fail clearly and write
// nothing Postgres could start.
func TestBackupFetchBadInput(t *testing.T) {
	r := fileRepo(t)
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "1", "-q")
	mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
	names := listBackups(t, r)
	if len(names) != 1 {
		t.Fatalf("backups: %v", names)
	}
	good := names[0]
	st := r.openStore(t)
	ctx := context.Background()

	t.Run("unknown name", func(t *testing.T) {
		res := walgo(t, r.env, "backup-fetch", filepath.Join(t.TempDir(), "d"), "base_000000010000000000000099")
		if res.code != 1 || !strings.Contains(res.stderr, "base_000000010000000000000099") {
			t.Errorf("exit %d, stderr %q; want 1 naming the backup", res.code, res.stderr)
		}
	})
	t.Run("non-empty folder", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "precious"), []byte("keep me"), 0o600)
		res := walgo(t, r.env, "backup-fetch", dir, good)
		if res.code != 2 || !strings.Contains(res.stderr, "not empty") {
			t.Errorf("exit %d, stderr %q; want 2 and 'not empty'", res.code, res.stderr)
		}
		ents, _ := os.ReadDir(dir)
		if b, _ := os.ReadFile(filepath.Join(dir, "precious")); len(ents) != 1 || string(b) != "keep me" {
			t.Errorf("the non-empty folder was touched: %d entries", len(ents))
		}
	})

	sn, err := catalog.ReadSentinel(ctx, st, good)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("flipped byte", func(t *testing.T) {
		key := sn.Parts[0].Key
		orig := readObject(t, st, key)
		defer st.Put(ctx, key, bytes.NewReader(orig))
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 0x20
		st.Put(ctx, key, bytes.NewReader(bad))
		dir := filepath.Join(t.TempDir(), "d")
		res := walgo(t, r.env, "backup-fetch", dir, good)
		if res.code != 5 || !strings.Contains(res.stderr, key) {
			t.Errorf("exit %d, stderr %q; want 5 naming %s", res.code, res.stderr, key)
		}
		for _, f := range []string{"backup_label", "recovery.signal", "PG_VERSION"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				t.Errorf("a failed restore left %s: Postgres could start on it", f)
			}
		}
	})
	t.Run("tar entry escaping the folder", func(t *testing.T) {
		// A hand-made backup whose only partition holds "../escaped".
		var tarBuf bytes.Buffer
		tw := tar.NewWriter(&tarBuf)
		for _, name := range []string{"PG_VERSION", "../escaped"} {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: 3, Typeflag: tar.TypeReg})
			tw.Write([]byte("15\n"))
		}
		tw.Close()
		var enc bytes.Buffer
		zw, _ := codec.Zstd{}.NewWriter(&enc)
		zw.Write(tarBuf.Bytes())
		zw.Close()
		evil := *sn
		evil.Name = "base_000000010000000000000077"
		evil.StartLSN, evil.FinishLSN = 0x77000028, 0x77000100 // in the segment the name gives
		evil.FinishTime = sn.FinishTime.Add(-time.Hour)
		partKey := catalog.PartKey(evil.Name, 1, codec.Zstd{})
		st.Put(ctx, partKey, bytes.NewReader(enc.Bytes()))
		sum := sha256.Sum256(enc.Bytes())
		evil.Parts = []catalog.Part{{Key: partKey, Size: int64(enc.Len()), SHA256: hex.EncodeToString(sum[:])}}
		var mbuf bytes.Buffer
		mw, _ := codec.Zstd{}.NewWriter(&mbuf)
		json.NewEncoder(mw).Encode(catalog.Manifest{Format: catalog.ManifestFormat, Backup: evil.Name, Files: []catalog.ManifestFile{
			{Path: "PG_VERSION", Size: 3, Mode: 0o600},
			{Path: "../escaped", Size: 3, Mode: 0o600},
		}})
		mw.Close()
		evil.ManifestKey = catalog.ManifestKey(evil.Name, codec.Zstd{})
		st.Put(ctx, evil.ManifestKey, bytes.NewReader(mbuf.Bytes()))
		msum := sha256.Sum256(mbuf.Bytes())
		evil.ManifestSHA256 = hex.EncodeToString(msum[:])
		if err := catalog.WriteSentinel(ctx, st, &evil); err != nil {
			t.Fatal(err)
		}
		defer st.Delete(ctx, catalog.SentinelKey(evil.Name))

		parent := t.TempDir()
		dir := filepath.Join(parent, "d")
		res := walgo(t, r.env, "backup-fetch", dir, evil.Name)
		if res.code == 0 || !strings.Contains(res.stderr, "escaped") {
			t.Errorf("exit %d, stderr %q; want a refusal naming the entry", res.code, res.stderr)
		}
		if _, err := os.Stat(filepath.Join(parent, "escaped")); err == nil {
			t.Error("a tar entry was written outside the restore folder")
		}
		if _, err := os.Stat(filepath.Join(dir, "backup_label")); err == nil {
			t.Error("a refused restore left backup_label")
		}
	})
}
