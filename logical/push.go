package logical

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
)

// copyBuffer is how much of pg_dump's output is moved at once.
const copyBuffer = 256 << 10

// PushOptions are dump-push's settings.
type PushOptions struct {
	// DSN is a libpq connection string for the database to dump; empty
	// uses the PG* environment, as pg_dump itself would.
	DSN string
	// BinDir holds pg_dump; empty looks it up in PATH.
	BinDir string
	// Codec compresses (and maybe encrypts) the stored dump. pg_dump -Fc
	// compresses its table data itself (zlib, its default level), so the
	// codec mostly adds its checksum and encryption; it is kept as
	// configured so every object of a repository reads the same way.
	Codec *codec.Codec
	// Progress, if set, is called with the bytes pg_dump has written.
	Progress func(done int64)
	Log      *zap.Logger
	// FromBackup is recorded in the sentinel: the base backup the dumped
	// server was restored from (dump-push --from-backup).
	FromBackup   string
	WalgoVersion string
}

// Push runs pg_dump -Fc --no-acl --no-owner and streams its output through
// the codec into storage, then writes the sentinel. Memory stays bounded
// whatever the database's size. If pg_dump fails, nothing is listed and the
// stored object is removed.
func Push(ctx context.Context, store storage.Store, opts PushOptions) (*catalog.DumpSentinel, error) {
	if opts.Codec == nil {
		opts.Codec = codec.New(nil, nil, nil)
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	log := opts.Log
	host, _ := os.Hostname()
	start, name, err := claimName(ctx, store)
	if err != nil {
		return nil, err
	}
	key := catalog.DumpKey(name, opts.Codec)
	log.Info("dump started", zap.String("dump", name), zap.String("key", key))

	// What the sentinel records of the server and of pg_dump is read while
	// pg_dump runs: it is needed only at the end, and a second connection
	// and program start would otherwise delay every dump.
	var (
		srv         server
		dumpVersion string
		infoErr     error
		wg          sync.WaitGroup
	)
	wg.Go(func() {
		if dumpVersion, infoErr = toolVersion(ctx, opts.BinDir, "pg_dump"); infoErr == nil {
			srv, infoErr = describeDSN(ctx, opts.DSN)
		}
	})
	plain, stored, err := dumpInto(ctx, store, key, opts)
	wg.Wait()
	if err == nil && infoErr != nil {
		err = infoErr
	}
	if err != nil {
		// The upload fails along with pg_dump, so this is only a safety net
		// for a backend that kept something.
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := store.Delete(cleanup, key); derr != nil {
			log.Warn("could not remove the failed dump's object", zap.String("key", key), zap.Error(derr))
		}
		return nil, fmt.Errorf("dump %s: %w", name, err)
	}
	sn := &catalog.DumpSentinel{
		Format:          catalog.DumpFormat,
		Name:            name,
		Database:        srv.database,
		PGVersion:       srv.version,
		PGServerVersion: srv.versionString,
		PgDumpVersion:   dumpVersion,
		StartTime:       start,
		FinishTime:      time.Now().UTC(),
		Size:            plain.N,
		SHA256:          plain.SHA256(),
		Key:             key,
		StoredSize:      stored.N,
		StoredSHA256:    stored.SHA256(),
		WalgoVersion:    opts.WalgoVersion,
		FromBackup:      opts.FromBackup,
		Hostname:        host,
		SystemID:        srv.systemID,
		Timeline:        srv.timeline,
		LSN:             srv.lsn,
	}
	if opts.FromBackup != "" {
		// The dumped copy was restored to the backup's end and promoted
		// onto a private timeline: its place in the repository's
		// history is the backup's.
		if b, err := catalog.ReadSentinel(ctx, store, opts.FromBackup); err == nil {
			sn.SystemID, sn.Timeline, sn.LSN = b.SystemID, b.Timeline, b.FinishLSN
		} else {
			sn.Timeline, sn.LSN = 0, 0
			log.Warn("could not read the backup the dump was taken from: its lineage is not recorded", zap.String("backup", opts.FromBackup), zap.Error(err))
		}
	}
	// Names are drawn at random: never write a sentinel over another's.
	if _, err := store.Stat(ctx, catalog.DumpSentinelKey(name)); err == nil {
		return nil, fmt.Errorf("dump %s: %w: another dump-push drew the same name", name, ErrExists)
	}
	if err := catalog.WriteDumpSentinel(ctx, store, sn); err != nil {
		return nil, fmt.Errorf("dump %s: sentinel: %w", name, err)
	}
	log.Info("dump finished", zap.String("dump", name), zap.String("database", sn.Database),
		zap.String("server_version", sn.PGServerVersion), zap.String("pg_dump_version", sn.PgDumpVersion),
		zap.Int64("bytes", sn.Size), zap.Int64("stored_bytes", sn.StoredSize),
		zap.Duration("took", sn.FinishTime.Sub(start).Round(time.Millisecond)))
	return sn, nil
}

// claimName picks the dump's name: its start second and a random tag,
// drawn again in the unlikely case that the name is taken already.
func claimName(ctx context.Context, store storage.Store) (time.Time, string, error) {
	for attempt := 1; ; attempt++ {
		start := time.Now().UTC()
		tag := make([]byte, 3)
		rand.Read(tag)
		name := catalog.DumpName(start, hex.EncodeToString(tag))
		inUse, err := catalog.DumpNameInUse(ctx, store, name)
		if err != nil || !inUse {
			return start, name, err
		}
		if attempt == 3 {
			return start, name, fmt.Errorf("dump %s: %w in %s", name, ErrExists, store)
		}
	}
}

// dumpInto runs pg_dump and uploads its output under key. It returns the
// counters of pg_dump's output and of the stored bytes.
func dumpInto(ctx context.Context, store storage.Store, key string, opts PushOptions) (plain, stored *codec.SumWriter, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd, stderr, err := toolCommand(ctx, opts.BinDir, "pg_dump", opts.DSN, "-Fc", "--no-acl", "--no-owner")
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("pg_dump: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start pg_dump: %w", err)
	}

	// The upload reads before the encoder exists: age writes its header
	// as soon as it is created, and a pipe blocks until someone reads.
	pr, pw := io.Pipe()
	stored = codec.NewSumWriter(pw)
	putDone := make(chan error, 1)
	go func() {
		err := store.Put(ctx, key, pr)
		pr.CloseWithError(err) // unblocks the writer if the upload failed
		putDone <- err
	}()
	// finish fails the upload with err, so nothing is stored, and stops
	// pg_dump if it still runs. A failed upload shows in err already: the
	// pipe hands its error to the writer.
	finish := func(err error) (*codec.SumWriter, *codec.SumWriter, error) {
		pw.CloseWithError(err)
		cancel()
		_ = cmd.Wait()
		<-putDone
		return nil, nil, err
	}

	enc, err := opts.Codec.NewWriter(stored)
	if err != nil {
		return finish(err)
	}
	plain = codec.NewSumWriter(enc)
	plain.Progress = opts.Progress
	if _, err := io.CopyBuffer(plain, out, make([]byte, copyBuffer)); err != nil {
		return finish(fmt.Errorf("stream pg_dump's output: %w", err))
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return finish(toolError("pg_dump", err, stderr))
	}
	logWarnings(opts.Log, "pg_dump", stderr)
	if err := enc.Close(); err != nil {
		return finish(err)
	}
	pw.Close()
	if err := <-putDone; err != nil {
		return nil, nil, fmt.Errorf("store %s: %w", key, err)
	}
	return plain, stored, nil
}
