package main

import (
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/walgo/walgo/drill"
	"github.com/walgo/walgo/pgserver"
	"github.com/walgo/walgo/restore"
)

// drillFlags are the settings of a restored private copy; restore-test has
// them, and so may every command that forks a backup (dump-push
// --from-backup, schedule --drill).
func drillFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "work-dir", EnvVars: []string{"WALGO_DRILL_WORK_DIR"}, Usage: "restore into a temporary folder under `DIR` (default: the system temp folder); it needs room for the whole database"},
		&cli.StringFlag{Name: "pg-bindir", EnvVars: []string{"WALGO_PG_BINDIR"}, Usage: "Postgres server binaries `DIR` (default: /usr/lib/postgresql/<version>/bin, pg_config --bindir, PATH)"},
		&cli.BoolFlag{Name: "heapallindexed", EnvVars: []string{"WALGO_DRILL_HEAPALLINDEXED"}, Value: true, Usage: "pg_amcheck also checks that every row has its index entries (slower); --heapallindexed=false to skip"},
		&cli.DurationFlag{Name: "start-timeout", EnvVars: []string{"WALGO_DRILL_START_TIMEOUT"}, Value: pgserver.DefaultStartTimeout, Usage: "give up when the restored copy is not consistent after this long"},
	}
}

// drillOptions builds drill.Options for backup (a name or LATEST) from the
// shared settings and the drillFlags the command has (missing ones take
// their defaults), or why the restored copy could have no restore_command.
func drillOptions(c *cli.Context, e *env, backup string) (drill.Options, error) {
	cmdline, err := restoreCommandLine(e.set, e.log)
	if err != nil {
		return drill.Options{}, fmt.Errorf("restore_command for the restored copy: %w", err)
	}
	if backup == "" {
		backup = restore.Latest
	}
	heap := true
	if c.IsSet("heapallindexed") {
		heap = c.Bool("heapallindexed")
	}
	return drill.Options{
		Backup:         backup,
		Lineage:        e.set.lineage,
		WorkDir:        c.String("work-dir"),
		Codec:          e.set.codec,
		Concurrency:    e.set.downloadConc,
		RestoreCommand: cmdline,
		BinDir:         c.String("pg-bindir"),
		HeapAllIndexed: heap,
		StartTimeout:   c.Duration("start-timeout"),
		Log:            e.log,
	}, nil
}

func restoreTestCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore-test",
		Usage:     "prove a backup restores: restore it into a temporary folder, recover, run pg_amcheck, clean up",
		ArgsUsage: "[flags] [NAME|LATEST]",
		Description: `Restores backup NAME (default LATEST) into a new temporary folder, starts a
private Postgres on it (a free loopback port, a private unix socket, its
own trust-only pg_hba.conf, archive_mode = off so the copy never writes
into the repository) with recovery_target = 'immediate', waits until it is
consistent and promoted, runs pg_amcheck --all --install-missing over every
database of the copy, then stops it and removes the folder, whatever
happened. It prints how long the download, the replay and the check took.

Run it as the database's OS user (e.g. postgres): Postgres refuses root.
The folder needs room for the whole database; choose it with --work-dir.
Any failure exits non-zero: a damaged backup with 5, naming the object.`,
		Flags: drillFlags(),
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) > 1 {
				return fmt.Errorf("%w: restore-test takes an optional NAME or LATEST", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			backup := restore.Latest
			if len(args) == 1 {
				backup = args[0]
			}
			opts, err := drillOptions(c, e, backup)
			if err != nil {
				return err
			}
			progress := newProgress("restore-test", e.log)
			opts.Phase, opts.Progress = progress.phase, progress.update
			rep, err := drill.Run(c.Context, e.store, opts)
			progress.done()
			printDrillReport(c.App.Writer, rep, err)
			return err
		},
	}
}

// printDrillReport prints the phases a drill went through.
func printDrillReport(w io.Writer, rep *drill.Report, err error) {
	if rep == nil || err != nil && rep.Download == 0 {
		return // failed before restoring anything: the error says it all
	}
	status := "OK"
	if err != nil {
		status = "FAILED"
	}
	d := func(t time.Duration) string {
		if t == 0 {
			return "-"
		}
		return t.Round(time.Millisecond).String()
	}
	fmt.Fprintf(w, "restore-test %s: %s\n", rep.Backup, status)
	fmt.Fprintf(w, "  download  %-10s %s\n", d(rep.Download), humanBytes(rep.Bytes))
	fmt.Fprintf(w, "  replay    %s\n", d(rep.Replay))
	fmt.Fprintf(w, "  check     %s\n", d(rep.Check))
	fmt.Fprintf(w, "  total     %s\n", d(rep.Total))
}
