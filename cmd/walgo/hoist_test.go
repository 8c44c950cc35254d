package main

import (
	"strings"
	"testing"
)

func TestHoistGlobalFlags(t *testing.T) {
	app := newApp(&guard{})
	for _, tt := range []struct{ in, want string }{
		{"walgo backup-list --storage X", "walgo --storage X backup-list"},
		{"walgo backup-list --storage=X --json", "walgo --storage=X backup-list --json"},
		{"walgo --log-level debug wal-push --storage X pg_wal/F", "walgo --log-level debug --storage X wal-push pg_wal/F"},
		{"walgo wal-fetch F P --config C", "walgo --config C wal-fetch F P"},
		{"walgo backup-list --s3-path-style --json", "walgo --s3-path-style backup-list --json"},
		{"walgo delete retain 1 --confirm --storage X", "walgo --storage X delete retain 1 --confirm"},
		{"walgo backup-fetch D LATEST --lineage 2 --target-time T", "walgo --lineage 2 backup-fetch D LATEST --target-time T"},
		{"walgo wal-fetch -- --storage X", "walgo wal-fetch -- --storage X"},
		{"walgo backup-list --help", "walgo backup-list --help"},
		{"walgo --version", "walgo --version"},
		{"walgo no-such-command --storage X", "walgo no-such-command --storage X"},
		{"walgo --storage X backup-list", "walgo --storage X backup-list"},
	} {
		got := strings.Join(hoistGlobalFlags(strings.Fields(tt.in), app), " ")
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestGlobalFlagsAfterTheCommand: `walgo backup-list --storage URL`, the
// way a new user writes it, runs (urfave/cli refused it with "flag
// provided but not defined"), on every command the same way.
func TestGlobalFlagsAfterTheCommand(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	repo := "file://" + dir + "/repo"
	if o := runIn(t, bin, dir, nil, "", []string{"init", "--storage", repo}, nil); o.code != 0 {
		t.Fatalf("walgo init --storage URL: exit %d\n%s", o.code, o.stderr)
	}
	for _, args := range [][]string{
		{"backup-list", "--storage", repo},
		{"wal-list", "--storage=" + repo, "--log-level", "error"},
		{"dump-list", "--storage", repo, "--json"},
	} {
		o := runIn(t, bin, dir, nil, "", args, nil)
		if o.code != 0 {
			t.Errorf("walgo %s: exit %d\n%s", strings.Join(args, " "), o.code, o.stderr)
		}
	}
}
