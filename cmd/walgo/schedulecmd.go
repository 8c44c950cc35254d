package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
	_ "time/tzdata" // zone names resolve in a minimal container image too

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/walgo/walgo/basebackup"
	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/drill"
	"github.com/walgo/walgo/schedule"
)

const scheduleHelp = `A long-running agent: every day at --backup-at it runs backup-push (same
flags and WALGO_* settings), then, with --retain N, the same retention as
"walgo delete retain N --confirm" (or, with --retain-window 7d, as "walgo
delete window 7d --confirm"), then, with --drill, a restore drill of
the new backup (as restore-test: restore into a temporary folder, recover,
pg_amcheck, clean up). Run it as the database's OS user (e.g. postgres),
under systemd or in a container, with the PG* settings backup-push needs.

--backup-at is "HH:MM[:SS] [ZONE]", 24-hour: "02:00 America/Los_Angeles",
"02:00 PDT", "23:30:00 UTC", or "02:00" for the machine's local time zone.
ZONE is an IANA zone name, UTC/GMT/Z, or an abbreviation.

` + schedule.AbbreviationHelp + `

Exactly one run per local calendar day: when the time does not exist that
day (the hour skipped when daylight-saving time starts, e.g. 02:30 in Los
Angeles in March) the run is at the end of the gap (03:00); when it occurs
twice (the hour repeated when it ends) the run is at the first occurrence.
The clock is re-read at least once a minute, so a clock that jumps, or a
machine that slept, is noticed: a run that cannot start within --max-late
of its time is skipped and logged, and a day that ran never runs again,
whatever the clock does. A failed backup, retention or drill is logged and
counted, and the agent goes on to the next day.

Every run is logged (start, duration, result) to stderr; the retention's
plan is printed to stdout. With --metrics-addr, GET /metrics serves, in
the Prometheus text format: walgo_last_backup_timestamp_seconds,
walgo_last_backup_duration_seconds, walgo_last_backup_success,
walgo_last_successful_backup_timestamp_seconds,
walgo_last_backup_size_bytes (stored) and
walgo_last_backup_uncompressed_size_bytes, walgo_backups_total{result},
walgo_last_retention_success, walgo_last_drill_success,
walgo_last_drill_timestamp_seconds, walgo_drills_total{result},
walgo_next_backup_timestamp_seconds, and Postgres' pg_stat_archiver, read
at each scrape over a new connection (5 s limit): walgo_archiver_up (0 when
it cannot be read), walgo_pg_archiver_archived_total, _failed_total,
_last_archived_time_seconds, _last_failed_time_seconds.

On SIGTERM or SIGINT it stops: a running backup is abandoned (its session
ends, so Postgres ends the backup; nothing is listed, as the sentinel is
never written; "walgo delete garbage" removes its objects once they are
older than --min-age), the metrics server shuts down, and it exits 0.`

func scheduleCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "backup-at", EnvVars: []string{"WALGO_BACKUP_AT"}, Usage: "run every day at `TIME`: \"HH:MM[:SS] [ZONE]\", e.g. \"02:00 PDT\" or \"02:00 Europe/Berlin\""},
		&cli.IntFlag{Name: "retain", EnvVars: []string{"WALGO_RETAIN"}, Usage: "after each backup, keep the `N` newest backups (delete retain N --confirm); 0 = delete nothing"},
		&cli.StringFlag{Name: "retain-window", EnvVars: []string{"WALGO_RETAIN_WINDOW"}, Usage: "after each backup, keep what a recovery to any moment of the last `DURATION` needs (delete window DURATION --confirm), e.g. 7d; not with --retain"},
		&cli.BoolFlag{Name: "drill", EnvVars: []string{"WALGO_DRILL"}, Usage: "after each backup, restore it into a temporary folder and check it (restore-test)"},
		&cli.StringFlag{Name: "metrics-addr", EnvVars: []string{"WALGO_METRICS_ADDR"}, Usage: "serve Prometheus metrics at http://`HOST:PORT`/metrics (default: off)"},
		&cli.DurationFlag{Name: "max-late", EnvVars: []string{"WALGO_MAX_LATE"}, Value: schedule.DefaultMaxLate, Usage: "skip a run that cannot start within this of its time (machine asleep, clock jumped)"},
		minAgeFlag(),
	}
	flags = append(flags, backupPushFlags()...)
	flags = append(flags, drillFlags()...)
	return &cli.Command{
		Name:        "schedule",
		Usage:       "run backup-push every day at a set time in a time zone, then retention and an optional restore drill; serve /metrics",
		Description: scheduleHelp,
		Flags:       flags,
		Action:      runSchedule,
	}
}

func runSchedule(c *cli.Context) error {
	if err := noArgs(c, "schedule"); err != nil {
		return err
	}
	if c.String("backup-at") == "" {
		return fmt.Errorf(`%w: schedule needs --backup-at "HH:MM[:SS] [ZONE]" (or WALGO_BACKUP_AT)`, errUsage)
	}
	spec, err := schedule.ParseAt(c.String("backup-at"))
	if err != nil {
		return fmt.Errorf("%w: --backup-at: %v", errUsage, err)
	}
	retain := c.Int("retain")
	if retain < 0 {
		return fmt.Errorf("%w: --retain must be 0 (off) or more, not %d", errUsage, retain)
	}
	var window time.Duration
	if w := c.String("retain-window"); w != "" {
		if retain > 0 {
			return fmt.Errorf("%w: --retain and --retain-window are two retention rules: give one", errUsage)
		}
		if window, err = parseWindow(w); err != nil {
			return fmt.Errorf("%w: --retain-window: %v", errUsage, err)
		}
	}
	e, err := setup(c, true)
	if err != nil {
		return err
	}
	// Bad backup settings fail now, not at the first run in the night.
	if _, err := backupConfig(c, e, os.Getenv("PGDATA")); err != nil {
		return err
	}
	a := &agent{c: c, e: e, retain: retain, window: window, drill: c.Bool("drill"), minAge: c.Duration("min-age")}
	a.metrics = &schedule.Metrics{
		Info: map[string]string{"backup_at": spec.String(), "zone": spec.Location.String(),
			"retain": strconv.Itoa(retain), "retain_window": window.String(), "drill": strconv.FormatBool(a.drill), "version": buildVersion()},
		Archiver: func(ctx context.Context) (schedule.ArchiverStats, error) {
			return schedule.ReadArchiver(ctx, c.String("pg-dsn"))
		},
	}
	if addr := c.String("metrics-addr"); addr != "" {
		stop, err := serveMetrics(addr, a.metrics, e.log)
		if err != nil {
			return err
		}
		defer stop()
	}
	e.log.Info("schedule started", zap.String("backup_at", spec.String()), zap.Int("retain", retain), zap.Bool("drill", a.drill))
	r := &schedule.Runner{
		Spec:    spec,
		Job:     a.run,
		MaxLate: c.Duration("max-late"),
		Planned: a.metrics.SetNext,
		Log:     e.log,
	}
	err = r.Run(c.Context)
	e.log.Info("schedule stopped")
	return err
}

// serveMetrics serves m at addr/metrics until stop is called.
func serveMetrics(addr string, m *schedule.Metrics, log *zap.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: --metrics-addr: %v", errUsage, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	log.Info("serving metrics", zap.String("url", "http://"+ln.Addr().String()+"/metrics"))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	}, nil
}

// agent is one scheduled run's work: backup, retention, drill.
type agent struct {
	c       *cli.Context
	e       *env
	retain  int
	window  time.Duration // recovery window retention, instead of retain
	drill   bool
	minAge  time.Duration
	metrics *schedule.Metrics
}

// run takes the backup, then applies retention and runs the drill, each
// recorded in the metrics. Work cut short by ctx (the agent stopping) is
// not recorded as a failure.
func (a *agent) run(ctx context.Context) error {
	log := a.e.log
	cfg, err := backupConfig(a.c, a.e, os.Getenv("PGDATA"))
	if err != nil {
		return err
	}
	progress := newProgress("backup-push", log)
	cfg.Progress = progress.update
	start := time.Now()
	sn, err := basebackup.Push(ctx, a.e.store, cfg, log)
	progress.done()
	if ctx.Err() != nil {
		return err
	}
	res := schedule.BackupResult{Finished: time.Now(), Duration: time.Since(start), Err: err}
	if err == nil {
		res.Name, res.CompressedSize, res.UncompressedSize = sn.Name, sn.CompressedSize, sn.UncompressedSize
	}
	a.metrics.BackupDone(res)
	if err != nil {
		return fmt.Errorf("backup-push: %w", err)
	}

	var errs []error
	if a.retain > 0 || a.window > 0 {
		req := catalog.DeleteRequest{Mode: catalog.DeleteRetain, N: a.retain, MinAge: a.minAge}
		if a.window > 0 {
			req = catalog.DeleteRequest{Mode: catalog.DeleteWindow, Window: a.window, MinAge: a.minAge}
		}
		err := applyDelete(ctx, a.e, req, true, false, a.c.App.Writer)
		if ctx.Err() != nil {
			return err
		}
		a.metrics.RetentionDone(err == nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
	}
	if a.drill {
		var rep *drill.Report
		opts, err := drillOptions(a.c, a.e, sn.Name)
		if err == nil {
			rep, err = drill.Run(ctx, a.e.store, opts)
		}
		if ctx.Err() != nil {
			return err
		}
		a.metrics.DrillDone(time.Now(), err == nil)
		printDrillReport(a.c.App.Writer, rep, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("restore drill of %s: %w", sn.Name, err))
		}
	}
	return errors.Join(errs...)
}
