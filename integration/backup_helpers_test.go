package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
)

// archivingCluster starts a cluster with data checksums that archives
// through walgo into r.
func archivingCluster(t *testing.T, r repo, extraConf ...string) *pgtest.Cluster {
	t.Helper()
	pgtest.Require(t)
	return matrixCluster(t, r, 0, []string{"-k"}, extraConf...)
}

// walgoAs runs walgo as the Postgres user with the cluster's connection
// settings and r's repository settings, as an operator's cron job would.
func walgoAs(t *testing.T, c *pgtest.Cluster, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := c.Command(ctx, walgoBin, args...)
	cmd.Env = append(cmd.Env, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run walgo %v: %v", args, err)
	}
	return res
}

func mustWalgoAs(t *testing.T, c *pgtest.Cluster, env []string, args ...string) result {
	t.Helper()
	r := walgoAs(t, c, env, args...)
	if r.code != 0 {
		t.Fatalf("walgo %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// smallCluster is an archiving cluster into r with pgbench's tables at
// scale 1 and the marker table, and the settings for backup-push runs
// without a disk rate limit.
func smallCluster(t *testing.T, r repo) (*pgtest.Cluster, []string) {
	t.Helper()
	src := archivingCluster(t, r)
	src.PgBench(t, "-i", "-s", "1", "-q")
	src.SQL(t, markerSQL)
	return src, append([]string{"WALGO_DISK_RATE_LIMIT=0"}, r.env...)
}
