package integration

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/storage"
)

// ageKey writes a fresh identity file the Postgres user can read and
// returns its path, its public key and its secret (to look for in logs).
func ageKey(t *testing.T) (path, recipient, secret string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(pgtest.OwnedDir(t, "age"), "identity.txt")
	if err := os.WriteFile(path, []byte("# walgo test key\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, filepath.Dir(path))
	return path, id.Recipient().String(), id.String()
}

// TestEncryptedPITR: with age on, everything stored is encrypted, a PITR
// cycle works, a missing or wrong key fails clearly, and no secret reaches
// a log.
func TestEncryptedPITR(t *testing.T) {
	base := fileRepo(t)
	idFile, recipient, secret := ageKey(t)
	r := base
	r.env = append([]string{"WALGO_AGE_RECIPIENTS=" + recipient, "WALGO_AGE_IDENTITY_FILE=" + idFile}, base.env...)

	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "2", "-q")
	src.SQL(t, markerSQL)
	push := mustWalgoAs(t, src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
	m := mark(t, src, 1)
	mark(t, src, 2)
	archiveAll(t, src)

	// Every object but the sentinels is age-encrypted and not readable as zstd.
	st := r.openStore(t)
	ctx := context.Background()
	var objects, encrypted int
	err := st.List(ctx, "", func(oi storage.ObjectInfo) error {
		objects++
		if strings.HasSuffix(oi.Key, "_backup_stop_sentinel.json") || oi.Key == catalog.RepositoryKey {
			return nil
		}
		if !strings.HasSuffix(oi.Key, ".age") {
			t.Errorf("stored unencrypted: %s", oi.Key)
			return nil
		}
		encrypted++
		rc, err := st.Get(ctx, oi.Key)
		if err != nil {
			return err
		}
		defer rc.Close()
		dec, err := codec.Decode(codec.Zstd{}, rc)
		if err == nil {
			_, err = io.Copy(io.Discard, dec)
		}
		if err == nil {
			t.Errorf("%s reads as plain zstd", oi.Key)
		}
		return nil
	})
	if err != nil || encrypted == 0 {
		t.Fatalf("listing: %v, %d of %d objects encrypted", err, encrypted, objects)
	}

	// PITR to marker 1 with the key.
	c := restoreAndStart(t, r, []string{"--target-lsn", m.lsn})
	waitPromoted(t, c)
	if got := state(t, c); got != m.checksums {
		t.Fatalf("encrypted PITR: state differs\n got %s\nwant %s", got, m.checksums)
	}

	// Without a key, and with the wrong one: clear errors, exit above 125 from wal-fetch.
	wrongFile, _, wrongSecret := ageKey(t)
	name := strings.TrimSpace(src.SQL(t, "select last_archived_wal from pg_stat_archiver"))
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	cases := []struct {
		desc string
		env  []string
		msg  string
	}{
		{"no identity", append([]string{"WALGO_PREFETCH=0"}, base.env...), "no age identity"},
		{"wrong identity", append([]string{"WALGO_PREFETCH=0", "WALGO_AGE_IDENTITY_FILE=" + wrongFile}, base.env...), "none of the configured age identities"},
	}
	var logs bytes.Buffer
	logs.WriteString(push.stderr)
	for _, tc := range cases {
		res := walgo(t, tc.env, "wal-fetch", name, dest)
		logs.WriteString(res.stderr)
		if res.code <= 125 || !strings.Contains(res.stderr, tc.msg) {
			t.Errorf("wal-fetch, %s: exit %d, stderr %q; want > 125 and %q", tc.desc, res.code, res.stderr, tc.msg)
		}
		res = walgo(t, tc.env, "backup-fetch", filepath.Join(t.TempDir(), "d"), "LATEST")
		logs.WriteString(res.stderr)
		if res.code == 0 || !strings.Contains(res.stderr, tc.msg) {
			t.Errorf("backup-fetch, %s: exit %d, stderr %q; want a failure saying %q", tc.desc, res.code, res.stderr, tc.msg)
		}
	}

	// No secret in anything walgo or Postgres logged.
	for _, f := range []string{src.LogFile(), c.LogFile()} {
		b, _ := os.ReadFile(f)
		logs.Write(b)
	}
	for _, s := range []string{secret, wrongSecret} {
		if strings.Contains(logs.String(), s) {
			t.Fatal("an age secret key appears in the logs")
		}
	}
}
