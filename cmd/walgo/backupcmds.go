package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

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

// progress shows a bar with bytes, rate and ETA on a terminal, and a log
// line every 10 seconds otherwise (Postgres' log, cron mail).
type progress struct {
	what     string
	log      *zap.Logger
	terminal bool
	start    time.Time
	mu       sync.Mutex
	last     time.Time
	drawn    bool
}

func newProgress(what string, log *zap.Logger) *progress {
	fi, err := os.Stderr.Stat()
	now := time.Now()
	return &progress{what: what, log: log, terminal: err == nil && fi.Mode()&os.ModeCharDevice != 0, start: now, last: now}
}

// update shows done of total bytes; a negative total is unknown.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	every := 10 * time.Second
	if p.terminal {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start).Seconds()
	rate := float64(done) / max(elapsed, 0.001)
	if total < 0 { // unknown total (a pipe): bytes and rate only
		if !p.terminal {
			p.log.Info("progress", zap.String("op", p.what), zap.Int64("bytes", done), zap.String("rate", humanBytes(int64(rate))+"/s"))
		} else {
			fmt.Fprintf(os.Stderr, "\r%s %s  %s/s   ", p.what, humanBytes(done), humanBytes(int64(rate)))
			p.drawn = true
		}
		return
	}
	eta := "?"
	if rate > 0 && total >= done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	if !p.terminal {
		p.log.Info("progress", zap.String("op", p.what), zap.Int64("bytes", done), zap.Int64("total_bytes", total), zap.String("rate", humanBytes(int64(rate))+"/s"), zap.String("eta", eta))
		return
	}
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	const width = 30
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if float64(i) < frac*width {
			bar[i] = '='
		}
	}
	fmt.Fprintf(os.Stderr, "\r%s [%s] %s / %s  %s/s  ETA %s   ", p.what, bar, humanBytes(done), humanBytes(total), humanBytes(int64(rate)), eta)
	p.drawn = true
}

func (p *progress) done() {
	if p.terminal && p.drawn {
		fmt.Fprintln(os.Stderr)
	}
}
