// Package drill restores a backup into a temporary folder and starts a
// private Postgres on it: restore drills (`walgo restore-test`: restore,
// recover, pg_amcheck, clean up) and short-lived forks that tools such as
// dump-push read instead of the production database.
package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/pgserver"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage"
)

// Options say which backup to fork and how.
type Options struct {
	// Backup is a backup name or restore.Latest ("" means Latest): the
	// newest backup, of Lineage when it is set.
	Backup string
	// Lineage names the history LATEST is taken from (see
	// restore.BackupFetchOptions.Lineage); empty: every backup.
	Lineage string
	// WorkDir is the parent of the temporary folder; "" means os.TempDir().
	WorkDir string
	// Codec decodes stored objects; nil reads plain objects only.
	Codec *codec.Codec
	// Concurrency is how many partitions download at once, and how many
	// relations pg_amcheck checks at once.
	Concurrency int
	// RestoreCommand is the restore_command recovery fetches WAL with
	// (see restore.RestoreCommand). Required.
	RestoreCommand string
	// BinDir holds the Postgres server binaries; "" finds them for the
	// backup's version (see pgserver.FindBinDir).
	BinDir string
	// HeapAllIndexed makes pg_amcheck also check that every heap tuple
	// has its index entries (--heapallindexed): slower, more thorough.
	HeapAllIndexed bool
	// Settings are extra "name=value" server settings for the fork.
	Settings []string
	// StartTimeout bounds the server's start, up to a consistent state;
	// 0 means pgserver.DefaultStartTimeout.
	StartTimeout time.Duration
	// Log receives what happens; nil logs nothing.
	Log *zap.Logger
	// Phase, if set, is told when each phase starts: "download" (the
	// backup is restored), "replay" (the server starts and recovers),
	// "check" (pg_amcheck; Run only).
	Phase func(name string)
	// Progress, if set, is told the stored bytes downloaded so far and in
	// all during "download" (see restore.BackupFetchOptions.Progress).
	Progress func(done, total int64)
}

// phase tells opts.Phase, if set, that a phase starts.
func (o *Options) phase(name string) {
	if o.Phase != nil {
		o.Phase(name)
	}
}

// Report is what a drill took, phase by phase.
type Report struct {
	Backup   string        // the backup restored
	Bytes    int64         // stored bytes downloaded
	Download time.Duration // backup-fetch
	Replay   time.Duration // server start, WAL replay to consistency, promotion
	Check    time.Duration // pg_amcheck (zero for Fork)
	Total    time.Duration
}

// Instance is a running fork: a private Postgres on a restored copy.
type Instance struct {
	Server  *pgserver.Server
	Dir     string // the temporary folder, removed by Close
	DataDir string // the data directory, inside Dir
	Report  Report
	log     *zap.Logger
}

// Fork restores the backup into a new temporary folder under WorkDir (its
// tablespaces too, whatever their original locations) with
// recovery_target = 'immediate' and recovery_target_action = promote,
// starts it with pgserver and waits until it has promoted: a consistent,
// private copy of the database as of the end of the backup. On any failure,
// ctx's end included, nothing is left running and the folder is removed.
// Errors wrap storage.ErrNotFound for a missing backup, codec.ErrCorrupt for
// damaged data (naming the object), pgserver.ErrRoot when run as root.
func Fork(ctx context.Context, store storage.Store, opts Options) (*Instance, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	inst, err := fork(ctx, store, opts)
	if err != nil {
		inst.cleanUp(ctx)
		return nil, err
	}
	return inst, nil
}

// fork is Fork without the clean-up on failure: it returns the Instance
// made so far (or an empty one) with the error, for the caller to close.
func fork(ctx context.Context, store storage.Store, opts Options) (*Instance, error) {
	start := time.Now()
	inst := &Instance{Report: Report{Backup: opts.Backup}, log: opts.Log}
	if err := pgserver.CheckUser(); err != nil {
		return inst, err
	}
	if strings.TrimSpace(opts.RestoreCommand) == "" {
		return inst, fmt.Errorf("%w: no restore_command given", restore.ErrInvalid)
	}
	// Resolve the backup first: the report names it, a newer backup
	// finishing meanwhile does not change what is restored, and missing
	// server binaries fail before a long download.
	sn, _, err := restore.ChooseBackup(ctx, store, opts.Codec, opts.Backup, opts.Lineage, restore.Target{Immediate: true})
	if err != nil {
		return inst, err
	}
	inst.Report.Backup = sn.Name
	if sn.PGVersion > 0 {
		if opts.BinDir, err = pgserver.FindBinDir(pgdata.MajorVersion(sn.PGVersion), opts.BinDir); err != nil {
			return inst, err
		}
	}

	workDir := opts.WorkDir
	if workDir == "" {
		workDir = os.TempDir()
	}
	dir, err := os.MkdirTemp(workDir, "walgo-drill-")
	if err != nil {
		return inst, fmt.Errorf("drill folder: %w", err)
	}
	inst.Dir, inst.DataDir = dir, filepath.Join(dir, "data")

	opts.Log.Info("restoring backup into a temporary folder", zap.String("backup", sn.Name), zap.String("dir", dir))
	opts.phase("download")
	res, err := restore.BackupFetch(ctx, store, restore.BackupFetchOptions{
		Dir:  inst.DataDir,
		Name: sn.Name,
		// The end of the backup, on its own timeline: no later WAL, no
		// probing for newer timelines.
		Target: restore.Target{Immediate: true, Action: "promote", Timeline: "current"},
		// Every tablespace into the drill's own folder: a drill never
		// writes where production's tablespaces live.
		TablespacesUnder: filepath.Join(dir, "tablespaces"),
		Concurrency:      opts.Concurrency,
		Codec:            opts.Codec,
		RestoreCommand:   opts.RestoreCommand,
		Log:              opts.Log,
		Progress:         opts.Progress,
	})
	if err != nil {
		return inst, err
	}
	inst.Report.Bytes = res.Downloaded
	inst.Report.Download = time.Since(start)

	replayStart := time.Now()
	opts.phase("replay")
	inst.Server, err = pgserver.Start(ctx, pgserver.Options{
		DataDir:      inst.DataDir,
		BinDir:       opts.BinDir,
		Settings:     opts.Settings,
		StartTimeout: opts.StartTimeout,
		Log:          opts.Log,
	})
	if err != nil {
		return inst, fmt.Errorf("start the restored copy: %w", err)
	}
	if err := inst.Server.WaitPromoted(ctx); err != nil {
		return inst, fmt.Errorf("recover the restored copy: %w", err)
	}
	inst.Report.Replay = time.Since(replayStart)
	inst.Report.Total = time.Since(start)
	opts.Log.Info("restored copy is consistent and promoted", zap.String("backup", sn.Name),
		zap.Duration("download", inst.Report.Download), zap.Duration("replay", inst.Report.Replay),
		zap.String("dsn", inst.Server.DSN()))
	return inst, nil
}

// cleanUp closes a failed Instance, logging what it could not clean.
func (i *Instance) cleanUp(ctx context.Context) {
	dir := i.Dir
	if err := i.Close(context.WithoutCancel(ctx)); err != nil {
		i.log.Error("could not clean up after a failed drill", zap.String("dir", dir), zap.Error(err))
	}
}

// Close stops the server and removes the temporary folder. It may be
// called on a half-made Instance and more than once.
func (i *Instance) Close(ctx context.Context) error {
	var errs []error
	if i.Server != nil {
		if err := i.Server.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		i.Server = nil
	}
	if i.Dir != "" {
		waitPrefetch(i.DataDir, i.log)
		if err := removeAll(i.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove drill folder: %w", err))
		} else {
			i.Dir = ""
		}
	}
	return errors.Join(errs...)
}

// Run is `walgo restore-test`: Fork, then pg_amcheck over every database
// of the copy (installing amcheck there), then Close. Any failure is an
// error; corruption pg_amcheck reports wraps codec.ErrCorrupt. The report
// holds the phases that finished, also on failure.
func Run(ctx context.Context, store storage.Store, opts Options) (*Report, error) {
	start := time.Now()
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	inst, err := fork(ctx, store, opts)
	rep := &inst.Report
	if err != nil {
		inst.cleanUp(ctx)
		rep.Total = time.Since(start)
		return rep, err
	}
	checkStart := time.Now()
	opts.phase("check")
	err = amcheck(ctx, inst.Server, opts)
	rep.Check = time.Since(checkStart)
	if cerr := inst.Close(context.WithoutCancel(ctx)); cerr != nil && err == nil {
		err = cerr
	}
	rep.Total = time.Since(start)
	if err == nil {
		opts.Log.Info("restore drill passed", zap.String("backup", rep.Backup), zap.Int64("bytes", rep.Bytes),
			zap.Duration("download", rep.Download), zap.Duration("replay", rep.Replay),
			zap.Duration("check", rep.Check), zap.Duration("total", rep.Total))
	}
	return rep, err
}

// amcheck checks every database of the server with amcheck: pg_amcheck
// (heap, TOAST and B-tree indexes) on Postgres 14 and later, whose
// amcheck has verify_heapam; on 13 every B-tree index against its table
// (bt_index_check with heapallindexed), which is all its amcheck can do.
func amcheck(ctx context.Context, srv *pgserver.Server, opts Options) error {
	if major, _ := strconv.Atoi(srv.Version()); major != 0 && major < 14 {
		return indexCheck(ctx, srv, opts)
	}
	bin, err := findAmcheck(srv.BinDir())
	if err != nil {
		return err
	}
	args := amcheckArgs(srv.SocketDir(), srv.Port(), srv.User(), opts.Concurrency, opts.HeapAllIndexed)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = clientEnv(os.Environ())
	cmd.Dir = os.TempDir()
	out := &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	opts.Log.Info("checking the restored copy", zap.String("pg_amcheck", bin), zap.Strings("args", args))
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		return fmt.Errorf("%w: pg_amcheck found corruption in the restored copy:\n%s", codec.ErrCorrupt, out.String())
	case ctx.Err() != nil:
		return fmt.Errorf("pg_amcheck: %w", ctx.Err())
	}
	return fmt.Errorf("pg_amcheck: %w\n%s", err, out.String())
}

// ErrNoAmcheck: no pg_amcheck next to the server binaries nor in PATH.
var ErrNoAmcheck = errors.New("no pg_amcheck")

// findAmcheck is pg_amcheck next to the server binaries (a distribution's
// bin folder has it), else the one in PATH: it is a client, and any
// version of it (14 or later) checks any server from 14 on.
func findAmcheck(serverBin string) (string, error) {
	p := filepath.Join(serverBin, "pg_amcheck")
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p, nil
	}
	if p, err := exec.LookPath("pg_amcheck"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w in %s or PATH: restore-test checks the restored copy with pg_amcheck (PostgreSQL 14 or later's client tools, e.g. the postgresql-client package)", ErrNoAmcheck, serverBin)
}

func amcheckArgs(host string, port int, user string, jobs int, heapAllIndexed bool) []string {
	args := []string{"--all", "--install-missing", "--host", host, "--port", strconv.Itoa(port),
		"--username", user, "--no-password", "--jobs", strconv.Itoa(max(1, jobs))}
	if heapAllIndexed {
		args = append(args, "--heapallindexed")
	}
	return args
}

// clientEnv is env without the PG* variables that would point a client
// elsewhere than the flags say (PGSERVICE, PGDATABASE, PGSSLMODE, ...).
func clientEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PG") {
			out = append(out, kv)
		}
	}
	return out
}

// waitPrefetch waits (a bounded time) until no background wal-prefetch
// started by the copy's restore_command still writes into its pg_wal,
// so the folder can go.
func waitPrefetch(dataDir string, log *zap.Logger) {
	f, err := os.OpenFile(filepath.Join(restore.PrefetchDir(filepath.Join(dataDir, pgdata.WALDir)), ".lock"), os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			log.Warn("a background wal-prefetch is still running in the drill folder", zap.String("data_dir", dataDir))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// removeAll removes dir, retrying briefly: a process that was just stopped
// may still be dropping files into it.
func removeAll(dir string) error {
	var err error
	for range 5 {
		// A restored copy may hold read-only folders.
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
	cut bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	s := strings.TrimSpace(string(t.b))
	if t.cut {
		return "...\n" + s
	}
	return s
}
