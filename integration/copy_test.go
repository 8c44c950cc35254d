package integration

import (
	"strings"
	"testing"

	"github.com/walgo/walgo/internal/pgtest"
)

// TestCopy: copy between two clusters makes the destination match the
// source; a second copy onto the now non-empty destination is refused
// without --confirm and changes nothing, and with --confirm matches again.
func TestCopy(t *testing.T) {
	pgtest.Require(t)
	src := pgtest.New(t, pgtest.Options{})
	src.Start(t)
	dst := pgtest.New(t, pgtest.Options{})
	dst.Start(t)
	src.PgBench(t, "-i", "-s", "2", "-q")
	src.SQL(t, specialSQL)
	want := dbState(t, src, "postgres")
	env := []string{"WALGO_PG_BINDIR=" + pgtest.BinDir(t)}
	srcDSN, dstDSN := dbDSN(src, "postgres"), dbDSN(dst, "postgres")

	res := mustWalgo(t, env, "copy", srcDSN, dstDSN)
	t.Log(strings.TrimSpace(res.stdout))
	if !strings.Contains(res.stderr, "pg_restore is building indexes and constraints") {
		t.Errorf("copy did not say that the index phase runs:\n%s", res.stderr)
	}
	if got := dbState(t, dst, "postgres"); got != want {
		t.Fatalf("destination differs from the source\n got %s\nwant %s", got, want)
	}

	// Change the destination, then copy again without --confirm.
	dst.SQL(t, "update pgbench_accounts set abalance = 99 where aid <= 10; drop table special")
	changed := dst.SQL(t, tableChecksums)
	res = walgo(t, env, "copy", srcDSN, dstDSN)
	if res.code != 3 || !strings.Contains(res.stderr, "--confirm") || !strings.Contains(res.stderr, "not empty") {
		t.Fatalf("copy onto a non-empty destination: exit %d, want 3 and a message about --confirm\n%s", res.code, res.stderr)
	}
	if got := dst.SQL(t, tableChecksums); got != changed {
		t.Fatal("a refused copy changed the destination")
	}
	if n := dst.SQL(t, "select count(*) from pg_class where relname = 'special'"); n != "0" {
		t.Fatal("a refused copy created a table")
	}

	mustWalgo(t, env, "copy", "--confirm", srcDSN, dstDSN)
	if got := dbState(t, dst, "postgres"); got != want {
		t.Fatalf("copy --confirm: destination differs from the source\n got %s\nwant %s", got, want)
	}

	// pg_dump failing (a role that reads nothing) stops the copy with its message.
	src.SQL(t, "create role reader login")
	dst.SQL(t, "create database empty")
	res = walgo(t, env, "copy", strings.Replace(srcDSN, "user=postgres", "user=reader", 1), dbDSN(dst, "empty"))
	if res.code != 6 || !strings.Contains(res.stderr, "pg_dump") || !strings.Contains(res.stderr, "permission denied") {
		t.Fatalf("copy with a failing pg_dump: exit %d, want 6 with pg_dump's message\n%s", res.code, res.stderr)
	}
	t.Logf("failed copy: %s", strings.TrimSpace(res.stderr))

	// The same database on both sides is refused before anything runs.
	res = walgo(t, env, "copy", "--confirm", srcDSN, srcDSN)
	if res.code != 2 || !strings.Contains(res.stderr, "same database") {
		t.Fatalf("copy onto itself: exit %d, want 2\n%s", res.code, res.stderr)
	}
	if got := dbState(t, src, "postgres"); got != want {
		t.Fatal("copy onto itself changed the source")
	}
}
