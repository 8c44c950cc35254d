package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/lockfile"
	"github.com/walgo/walgo/pgdata"
)

// The background pusher (PushAhead) keeps compressing and storing the
// .ready files of one pg_wal while Postgres' archiver calls wal-push for
// them one at a time. Postgres waits for each call, so a backlog drained by
// calls alone leaves the cores idle between them; with the pusher ahead,
// most calls find their file already stored (a marker) and return.
//
// Who pushes a file is settled by its claim: pg_wal/walgo/pushing/NAME,
// flock'ed by the process pushing it, the pusher or wal-push itself. A
// wal-push that finds its file claimed waits for the claim, then takes the
// marker the pusher left. The kernel drops a dead process's lock, so a
// pusher killed in the middle of a file leaves nothing that blocks: the
// waiting wal-push gets the claim, finds no marker and pushes the file
// itself. Whoever stores a file writes its marker before it lets go of the
// claim, so a file is compressed and sent once. Correctness never rests on
// the claims: every write is create-only, and a second push of the same
// content is confirmed by its sha256.

// aheadWindow bounds how far ahead of the archiver the pusher goes, in
// files, so the markers a call looks through stay few.
const aheadWindow = 32

// aheadIdle is how long the pusher waits for a new .ready file before it
// exits.
var aheadIdle = 2 * time.Second

// aheadPoll is how often the pusher looks for new .ready files once the
// ones it knows are pushed.
const aheadPoll = 20 * time.Millisecond

// claimWaitMax bounds how long wal-push waits for a file the pusher holds:
// past it, wal-push pushes the file too (create-only, so at worst twice).
var claimWaitMax = 10 * time.Minute

// PushAhead pushes walDir's .ready files that no one is pushing, oldest
// first (history files before segments, as the archiver takes them), up to
// Config.Concurrency at once and at most aheadWindow files ahead of the
// archiver, and leaves a marker for each so that Postgres' call for it
// returns at once. It returns nil when no new .ready file came for
// aheadIdle, or when another PushAhead holds walDir (only one runs per
// pg_wal), or at once when idle and walDir's server is not running. It
// stops at the first failed file and returns its error:
// Postgres' own call for that file pushes it again and reports the failure.
func (p *Pusher) PushAhead(ctx context.Context, walDir string) error {
	own := filepath.Join(walDir, "walgo")
	if err := os.MkdirAll(own, 0o700); err != nil {
		return fmt.Errorf("push ahead: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(own, aheadLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("push ahead: %w", err)
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return nil // another pusher holds this pg_wal
	}
	cache := catalog.RepositoryCache{Path: filepath.Join(own, "repository"), Now: p.cfg.Now}
	repo, err := p.repository(ctx, cache, false)
	if err != nil {
		return fmt.Errorf("push ahead: %w", err)
	}
	store := repo.Store(p.store, p.log)
	marks := markers{dir: filepath.Join(own, "pushed"), store: p.store.String()}
	cl := lockfile.Claims{Dir: filepath.Join(own, "pushing")}

	var (
		mu      sync.Mutex
		failure error
		pushed  int
		wg      sync.WaitGroup
	)
	stopped := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failure != nil
	}
	// A slot is held by each push in flight, and by the loop only while it
	// claims: between scans, len(slots) is the pushes in flight.
	slots := make(chan struct{}, p.cfg.Concurrency)
	handled := map[string]bool{} // pushed, skipped or failed by this run
	idleSince := time.Now()
	for ctx.Err() == nil && !stopped() {
		dispatched := false
		for _, n := range readyAfter(walDir, "", aheadWindow) {
			if handled[n] || marks.has(n) {
				continue
			}
			if stopped() {
				break // start nothing more: the storage fails
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			c, ok, err := cl.Try(n)
			if err != nil || !ok {
				// Taken by wal-push: it will store the file and mark it.
				<-slots
				continue
			}
			// With the claim held, look again: the file may have been
			// pushed and marked, or archived and let go, meanwhile.
			if marks.has(n) || !isReady(walDir, n) {
				cl.Release(n, c)
				handled[n] = true
				<-slots
				continue
			}
			handled[n], dispatched = true, true
			wg.Go(func() {
				defer func() { <-slots }()
				start := time.Now()
				path := filepath.Join(walDir, n)
				res, err := p.pushFile(ctx, store, path)
				if err == nil {
					err = marks.put(n, repo.ID)
				}
				cl.Release(n, c)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
						return // archived and removed meanwhile
					}
					if failure == nil {
						failure = err
					}
					return
				}
				pushed++
				p.log.Info("pushed ahead", zap.String("wal", n), zap.Bool("already_archived", res.Skipped),
					zap.Int64("bytes", res.Plain), zap.Int64("stored_bytes", res.Stored), zap.Duration("took", time.Since(start)))
			})
		}
		busy := len(slots) > 0
		if dispatched || busy {
			idleSince = time.Now()
		}
		if dispatched {
			continue
		}
		// Nothing to do: no new .ready file comes from a stopped server.
		if !busy && (time.Since(idleSince) > aheadIdle || !pgdata.PostmasterAlive(filepath.Dir(walDir))) {
			break
		}
		if sleepCtx(ctx, aheadPoll) != nil {
			break
		}
	}
	wg.Wait()
	if failure != nil {
		p.log.Warn("pushing ahead stopped; Postgres' own call pushes the file", zap.Error(failure))
		return fmt.Errorf("push ahead: %w", failure)
	}
	p.log.Debug("pushing ahead done", zap.Int("pushed", pushed))
	return ctx.Err()
}

// aheadLockFile, in pg_wal/walgo, is held by the running PushAhead.
const aheadLockFile = "ahead.lock"

// aheadRunning reports whether a PushAhead holds walDir.
func aheadRunning(walDir string) bool {
	return lockfile.Held(filepath.Join(walDir, "walgo", aheadLockFile))
}

// isReady reports whether Postgres still waits for name to be archived.
func isReady(walDir, name string) bool {
	_, err := os.Stat(filepath.Join(walDir, "archive_status", name+".ready"))
	return err == nil
}
