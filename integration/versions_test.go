package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/walgo/walgo/internal/pgtest"
)

// TestUnsupportedVersion: backup-push against a real PostgreSQL 12 server
// (scripts/versions' PG_REFUSED_MAJORS) is refused before anything is
// done, with a message that names the server's version and the supported
// ones: exit 2 (usage), no backup started on the server (no backup_label,
// no backup in progress), nothing written to the repository.
func TestUnsupportedVersion(t *testing.T) {
	for _, major := range pgtest.RefusedMajors(t) {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			r := fileRepo(t)
			c := matrixCluster(t, r, major, []string{"-k"})
			if got := c.SQL(t, "select current_setting('server_version_num')::int / 10000"); got != fmt.Sprint(major) {
				t.Fatalf("server is PostgreSQL %s, want %d", got, major)
			}
			before := repoFiles(t, r)
			res := walgoAs(t, c, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...), "backup-push")
			if res.code != 2 {
				t.Errorf("backup-push of PostgreSQL %d: exit %d, want 2\n%s", major, res.code, res.stderr)
			}
			for _, want := range []string{"unsupported PostgreSQL version", fmt.Sprintf("PostgreSQL %d", major), "supports PostgreSQL 13 to 18"} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("backup-push's refusal lacks %q:\n%s", want, res.stderr)
				}
			}
			if _, err := os.Stat(filepath.Join(c.DataDir(), "backup_label")); !os.IsNotExist(err) {
				t.Errorf("a backup_label was left in the data directory: %v", err)
			}
			// pg_is_in_backup() is true during an exclusive backup; a
			// non-exclusive one ends with its session anyway.
			if got := c.SQL(t, "select pg_is_in_backup()"); got != "f" {
				t.Errorf("the refused server is in a backup: %s", got)
			}
			if after := repoFiles(t, r); !slices.Equal(before, after) {
				t.Errorf("the refusal wrote to the repository:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// repoFiles lists the objects of a file repository (WAL archived by the
// cluster aside: archive_command runs on its own).
func repoFiles(t *testing.T, r repo) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(r.root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r.root, p)
		if !d.IsDir() && !strings.HasPrefix(rel, "wal_005") {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestClusterLayouts: clusters other than the matrix's (which all have
// data checksums and 16 MiB segments): 64 MiB WAL segments (initdb
// --wal-segsize=64) and no data checksums, on both sides of 15's backup
// API change and on 18 (whose initdb turns checksums on unless told
// not to). A full backup and a delta, a point-in-time restore by xid from
// the full backup, and the end of the archive through the delta, both
// checked against the source and by amcheck. Without checksums a delta is
// taken only where wal_log_hints = on; elsewhere backup-push takes a full
// backup and says why.
func TestClusterLayouts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		major  int
		initdb []string
		conf   []string
		delta  bool
	}{
		{"pg13 64MiB no checksums wal_log_hints", 13, []string{"--wal-segsize=64"}, []string{"wal_log_hints = on"}, true},
		{"pg15 64MiB no checksums", 15, []string{"--wal-segsize=64"}, nil, false},
		{"pg18 64MiB no checksums wal_log_hints", 18, []string{"--no-data-checksums", "--wal-segsize=64"}, []string{"wal_log_hints = on"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := fileRepo(t)
			src := matrixCluster(t, r, tc.major, tc.initdb, tc.conf...)
			if got := src.SQL(t, "show wal_segment_size"); got != "64MB" {
				t.Fatalf("wal_segment_size = %s, want 64MB", got)
			}
			if got := src.SQL(t, "show data_checksums"); got != "off" {
				t.Fatalf("data_checksums = %s, want off", got)
			}
			src.PgBench(t, "-i", "-s", "1", "-q")
			src.SQL(t, markerSQL)
			env := append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
			mustWalgoAs(t, src, env, "backup-push")
			src.PgBench(t, "-n", "-t", "150", "-c", "2")
			m := quickMark(t, src, 1)
			res := mustWalgoAs(t, src, env, "backup-push", "--delta")
			src.PgBench(t, "-n", "-t", "150", "-c", "2")
			quickMark(t, src, 2)
			final := state(t, src)
			archiveAll(t, src)

			list := backupDetails(t, r, 2)
			full, second := list[0], list[1]
			if tc.delta {
				if second.DeltaParent != full.Name || second.DeltaRefused != "" {
					t.Errorf("want a delta on %s: parent %q, refused %q\n%s", full.Name, second.DeltaParent, second.DeltaRefused, res.stderr)
				}
			} else if second.DeltaParent != "" || second.DeltaRefused == "" || !strings.Contains(res.stderr, "delta refused") {
				t.Errorf("want a full backup saying why no delta: parent %q, refused %q\n%s", second.DeltaParent, second.DeltaRefused, res.stderr)
			}
			if v, res := walVerify(t, r); res.code != 0 || !v.OK || len(v.Backups) != 2 {
				t.Fatalf("wal-verify: exit %d %+v\n%s", res.code, v, res.stderr)
			}

			c := restoreAndStart(t, r, []string{full.Name, "--target-xid", m.xid})
			waitPromoted(t, c)
			if got := state(t, c); got != m.checksums {
				t.Fatalf("restore to xid %s differs\n got %s\nwant %s", m.xid, got, m.checksums)
			}
			c.Stop(t)
			c = restoreAndStart(t, r, []string{second.Name})
			waitPromoted(t, c)
			if got := state(t, c); got != final {
				t.Fatalf("restore of the end differs\n got %s\nwant %s", got, final)
			}
			if got := c.SQL(t, "show wal_segment_size"); got != "64MB" {
				t.Errorf("restored wal_segment_size = %s", got)
			}
			matrixAmcheck(t, c)
		})
	}
}
