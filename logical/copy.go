package logical

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/ratelimit"
)

// PhaseRestoring is reported when pg_dump's output has all been handed to
// pg_restore: what remains is pg_restore loading the last rows and then
// building indexes and constraints, which a byte count cannot show.
const PhaseRestoring = "data sent; pg_restore is building indexes and constraints"

// CopyOptions are copy's settings.
type CopyOptions struct {
	SrcDSN, DstDSN string
	// Confirm allows a destination that holds user objects: pg_restore
	// --clean --if-exists drops the objects the source has first.
	Confirm bool
	// Progress, if set, is called with the bytes passed from pg_dump to
	// pg_restore so far.
	Progress func(done int64)
	// Phase, if set, is called once with PhaseRestoring.
	Phase func(string)
	// BinDir holds pg_dump and pg_restore; empty looks them up in PATH.
	BinDir string
	// Limiter caps the bytes/s passed to pg_restore (the network rate
	// limit, as for every upload); nil means no limit.
	Limiter *ratelimit.Limiter
	Log     *zap.Logger
}

// CopyResult says what Copy did.
type CopyResult struct {
	Source, Destination string // database names
	Bytes               int64  // pg_dump's output
	Data                time.Duration
	Total               time.Duration
}

// Copy pipes pg_dump -Fc --no-acl --no-owner of the source into
// pg_restore --no-owner --no-acl of the destination. A destination with
// user objects is refused (ErrNotEmpty) before anything runs unless
// opts.Confirm, which adds --clean --if-exists. When either program fails
// the other is stopped, and the error holds both programs' messages. A
// failed copy may leave the destination partly restored.
func Copy(ctx context.Context, opts CopyOptions) (*CopyResult, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	start := time.Now()
	// Both checks at once: they are on the critical path of every copy.
	var (
		src, dst       server
		srcErr, dstErr error
		checks         sync.WaitGroup
	)
	checks.Go(func() {
		var err error
		if src, err = describeDSN(ctx, opts.SrcDSN); err != nil {
			srcErr = fmt.Errorf("source: %w", err)
		}
	})
	checks.Go(func() { dst, dstErr = checkTarget(ctx, opts.DstDSN, opts.Confirm) })
	checks.Wait()
	if srcErr != nil {
		return nil, srcErr
	}
	if dstErr != nil {
		return nil, dstErr
	}
	if src.systemID != "" && src.systemID == dst.systemID && src.database == dst.database {
		return nil, fmt.Errorf("%w: source and destination are the same database (%q on cluster %s)", ErrInvalid, src.database, src.systemID)
	}
	res := &CopyResult{Source: src.database, Destination: dst.database}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dump, dumpErrOut, err := toolCommand(ctx, opts.BinDir, "pg_dump", opts.SrcDSN, "-Fc", "--no-acl", "--no-owner")
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	restoreArgs := []string{"--no-owner", "--no-acl"}
	if opts.Confirm {
		restoreArgs = append(restoreArgs, "--clean", "--if-exists")
	}
	restore, restoreErrOut, err := toolCommand(ctx, opts.BinDir, "pg_restore", opts.DstDSN, restoreArgs...)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	out, err := dump.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := restore.StdinPipe()
	if err != nil {
		return nil, err
	}
	log.Info("copy started", zap.String("source", src.database), zap.String("destination", dst.database), zap.Bool("clean", opts.Confirm))
	if err := restore.Start(); err != nil {
		return nil, fmt.Errorf("start pg_restore: %w", err)
	}
	if err := dump.Start(); err != nil {
		cancel()
		_ = restore.Wait()
		return nil, fmt.Errorf("start pg_dump: %w", err)
	}

	// The first failure stops everything; it is also the cause to report
	// first (a pipe error only ever follows pg_restore's exit).
	var (
		mu    sync.Mutex
		order []string
	)
	failed := func(who string) {
		mu.Lock()
		order = append(order, who)
		mu.Unlock()
		cancel()
	}
	var dumpErr, restoreErr, pipeErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		counter := &codec.SumWriter{W: in, Progress: opts.Progress} // counts only
		_, pipeErr = io.CopyBuffer(counter, opts.Limiter.Reader(ctx, out), make([]byte, copyBuffer))
		res.Bytes = counter.N
		if pipeErr != nil {
			failed("pipe")
		}
		// pg_dump's exit status before pg_restore sees the end of the
		// archive: after a failed pg_dump it is stopped, never handed a
		// truncated archive as if it were whole.
		dumpErr = dump.Wait()
		if dumpErr != nil {
			failed("pg_dump")
		}
		in.Close()
		if dumpErr != nil {
			return
		}
		if pipeErr == nil {
			res.Data = time.Since(start)
			if opts.Phase != nil {
				opts.Phase(PhaseRestoring)
			}
			log.Debug(PhaseRestoring, zap.Int64("bytes", res.Bytes))
		}
	})
	wg.Go(func() {
		if restoreErr = restore.Wait(); restoreErr != nil {
			failed("pg_restore")
		}
	})
	wg.Wait()
	if len(order) == 0 {
		logWarnings(log, "pg_dump", dumpErrOut)
		logWarnings(log, "pg_restore", restoreErrOut)
		res.Total = time.Since(start)
		log.Info("copy finished", zap.Int64("bytes", res.Bytes), zap.Duration("took", res.Total.Round(time.Millisecond)))
		return res, nil
	}
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	// pg_restore exiting closes the pipe: report it as the cause.
	if order[0] == "pipe" && restoreErr != nil {
		order[0] = "pg_restore"
	}
	var parts []string
	seen := map[string]bool{}
	for i, who := range append(order, "pg_dump", "pg_restore") {
		if seen[who] {
			continue
		}
		seen[who] = true
		switch who {
		case "pg_dump":
			if dumpErr != nil {
				parts = append(parts, stopped(i, toolError("pg_dump", dumpErr, dumpErrOut)))
			}
		case "pg_restore":
			if restoreErr != nil {
				parts = append(parts, stopped(i, toolError("pg_restore", restoreErr, restoreErrOut)))
			}
		case "pipe":
			parts = append(parts, fmt.Sprintf("passing pg_dump's output to pg_restore: %v", pipeErr))
		}
	}
	return nil, fmt.Errorf("copy %q to %q failed: %s", src.database, dst.database, strings.Join(parts, "; "))
}

// stopped marks every failure after the first as a consequence of it.
func stopped(i int, err error) string {
	if i == 0 {
		return err.Error()
	}
	return err.Error() + " (after the first failure)"
}
