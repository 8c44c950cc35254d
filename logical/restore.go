package logical

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
)

// RestoreOptions are dump-restore's settings.
type RestoreOptions struct {
	// Name is the dump to restore, or LATEST.
	Name string
	// DSN is the target database (empty: the PG* environment).
	DSN string
	// Jobs is pg_restore's -j: tables restored at once (default 1).
	Jobs int
	// Confirm allows restoring into a database that holds user objects;
	// pg_restore --clean drops the objects the dump contains first.
	Confirm bool
	// TempDir holds the downloaded dump while pg_restore reads it (default:
	// the system's temp folder). It needs room for the whole dump.
	TempDir string
	// BinDir holds pg_restore; empty looks it up in PATH.
	BinDir string
	Codec  *codec.Codec
	Log    *zap.Logger
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Dump     *catalog.DumpSentinel
	Database string
	Download time.Duration
	Restore  time.Duration
}

// Restore downloads a dump into a temporary file, checking every checksum
// (parallel pg_restore cannot read a pipe), and runs pg_restore --no-owner
// --no-acl --clean --if-exists -j N on it. A target with user objects is
// refused (ErrNotEmpty) before anything is downloaded unless
// opts.Confirm. The temporary file is always removed.
func Restore(ctx context.Context, store storage.Store, opts RestoreOptions) (*RestoreResult, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	sn, err := Find(ctx, store, opts.Name)
	if err != nil {
		return nil, err
	}
	target, err := checkTarget(ctx, opts.DSN, opts.Confirm)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Dump: sn, Database: target.database}
	if target.version/10000 < sn.PGVersion/10000 {
		log.Warn("restoring into an older major version of Postgres than the dump was taken from; pg_restore may fail",
			zap.Int("dump_pg_version", sn.PGVersion), zap.Int("target_pg_version", target.version))
	}
	f, err := os.CreateTemp(opts.TempDir, "walgo-"+sn.Name+"-*.pgdump")
	if err != nil {
		return nil, fmt.Errorf("restore dump %s: temp file: %w", sn.Name, err)
	}
	defer os.Remove(f.Name())
	start := time.Now()
	log.Info("downloading dump", zap.String("dump", sn.Name), zap.String("file", f.Name()), zap.Int64("bytes", sn.Size))
	if err := fetchInto(ctx, store, opts.Codec, sn, f); err != nil {
		return nil, err
	}
	res.Download = time.Since(start)

	start = time.Now()
	log.Info("running pg_restore", zap.String("dump", sn.Name), zap.String("database", target.database), zap.Int("jobs", opts.Jobs))
	cmd, stderr, err := toolCommand(ctx, opts.BinDir, "pg_restore", opts.DSN,
		"--no-owner", "--no-acl", "--clean", "--if-exists", "--jobs="+strconv.Itoa(opts.Jobs))
	if err != nil {
		return nil, err
	}
	cmd.Args = append(cmd.Args, f.Name())
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("restore dump %s into %q: %w", sn.Name, target.database, toolError("pg_restore", err, stderr))
	}
	logWarnings(log, "pg_restore", stderr)
	res.Restore = time.Since(start)
	log.Info("dump restored", zap.String("dump", sn.Name), zap.String("database", target.database),
		zap.Duration("download", res.Download.Round(time.Millisecond)), zap.Duration("pg_restore", res.Restore.Round(time.Millisecond)))
	return res, nil
}
