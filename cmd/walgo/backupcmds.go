package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/walgo/walgo/basebackup"
	"github.com/walgo/walgo/ratelimit"
)

func backupPushCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup-push",
		Usage:     "take a base backup of the running cluster",
		ArgsUsage: "[PGDATA]",
		Description: `Runs a non-exclusive backup (pg_backup_start/pg_backup_stop) over one
session, streams the data directory through the disk rate limiter into tar
partitions, compresses and uploads them, then the manifest, then the
sentinel: a backup is listed only once all of it, and the WAL it needs up to
its finish LSN, is stored. Connection settings come from PG* variables or
--pg-dsn; PGDATA defaults to the server's data_directory.`,
		Flags: backupPushFlags(),
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) > 1 {
				return fmt.Errorf("%w: backup-push takes at most one PGDATA", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			dataDir := os.Getenv("PGDATA")
			if len(args) == 1 {
				dataDir = args[0]
			}
			cfg, err := backupConfig(c, e, dataDir)
			if err != nil {
				return err
			}
			progress := newProgress("backup-push", e.log)
			defer progress.done()
			cfg.Progress = progress.update
			_, err = basebackup.Push(c.Context, e.store, cfg, e.log)
			return err
		},
	}
}

// backupPushFlags are backup-push's own flags; schedule has them too.
func backupPushFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "pg-dsn", EnvVars: []string{"WALGO_PG_DSN"}, Usage: "libpq connection string (default: PG* environment)"},
		&cli.StringFlag{Name: "disk-rate-limit", EnvVars: []string{"WALGO_DISK_RATE_LIMIT"}, Value: "10MB", Usage: "read at most `BYTES` per second from disk, e.g. 10MB, 512KiB (0 = unlimited)"},
		&cli.StringFlag{Name: "part-size", EnvVars: []string{"WALGO_PART_SIZE"}, Value: "1GiB", Usage: "uncompressed `BYTES` per tar partition"},
		&cli.DurationFlag{Name: "stop-backup-timeout", EnvVars: []string{"WALGO_STOP_BACKUP_TIMEOUT"}, Value: 10 * time.Minute, Usage: "give up when pg_backup_stop waits this long for WAL archiving (0 = wait forever)"},
		&cli.BoolFlag{Name: "delta", Usage: "store only what changed since the newest backup (same as WALGO_DELTA_MAX_STEPS=7 when that is unset)"},
		&cli.IntFlag{Name: "delta-max-steps", EnvVars: []string{"WALGO_DELTA_MAX_STEPS"}, Usage: "make deltas while the chain to a full backup is shorter than `N` (0 = always full)"},
		&cli.BoolFlag{Name: "spread-checkpoint", EnvVars: []string{"WALGO_SPREAD_CHECKPOINT"}, Usage: "wait for a spread checkpoint at the start instead of an immediate one"},
		&cli.BoolFlag{Name: "permanent", Usage: "mark the backup permanent: retention never deletes it"},
		&cli.StringFlag{Name: "user-data", Usage: "JSON `VALUE` stored in the sentinel"},
	}
}

// backupConfig turns the backupPushFlags and shared settings into a
// basebackup.Config for the cluster whose data directory is dataDir ("" =
// the one the server reports). Progress is left for the caller.
func backupConfig(c *cli.Context, e *env, dataDir string) (basebackup.Config, error) {
	diskRate, err := parseSize(c.String("disk-rate-limit"))
	if err != nil {
		return basebackup.Config{}, err
	}
	partSize, err := parseSize(c.String("part-size"))
	if err != nil {
		return basebackup.Config{}, err
	}
	steps := c.Int("delta-max-steps")
	if c.Bool("delta") && steps == 0 {
		steps = 7
	}
	var userData json.RawMessage
	if s := c.String("user-data"); s != "" {
		if !json.Valid([]byte(s)) {
			return basebackup.Config{}, fmt.Errorf("%w: --user-data is not valid JSON", errUsage)
		}
		userData = json.RawMessage(s)
	}
	return basebackup.Config{
		DataDir:          dataDir,
		DSN:              c.String("pg-dsn"),
		Codec:            e.set.codec,
		PartSize:         partSize,
		Concurrency:      e.set.uploadConc,
		DiskLimiter:      ratelimit.New(diskRate),
		StopTimeout:      c.Duration("stop-backup-timeout"),
		DeltaMaxSteps:    steps,
		SpreadCheckpoint: c.Bool("spread-checkpoint"),
		Permanent:        c.Bool("permanent"),
		UserData:         userData,
		WalgoVersion:     buildVersion(),
	}, nil
}
