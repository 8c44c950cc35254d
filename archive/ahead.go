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
	cl := claims{dir: filepath.Join(own, "pushing")}

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
			c, ok, err := cl.try(n)
			if err != nil || !ok {
				// Taken by wal-push: it will store the file and mark it.
				<-slots
				continue
			}
			// With the claim held, look again: the file may have been
			// pushed and marked, or archived and let go, meanwhile.
			if marks.has(n) || !isReady(walDir, n) {
				cl.release(n, c)
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
				cl.release(n, c)
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

// claims are the files being pushed now: pg_wal/walgo/pushing/NAME, held
// with flock by the process pushing NAME. A claim is live only while its
// lock is held, so one left by a killed process is free.
type claims struct{ dir string }

func (c claims) path(name string) string { return filepath.Join(c.dir, name) }

// try takes the claim of name if no one holds it. ok is false when another
// process (or another call in this one) does.
func (c claims) try(name string) (f *os.File, ok bool, err error) {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, false, err
	}
	for {
		f, err := os.OpenFile(c.path(name), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, false, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, false, nil
			}
			return nil, false, err
		}
		if c.same(f, name) {
			return f, true, nil
		}
		f.Close()
	}
}

// wait takes the claim of name, waiting while another process holds it,
// up to claimWaitMax; ok is false if it gave up waiting. The wait is a
// blocking flock, so the claim is taken the moment its holder lets go.
func (c claims) wait(ctx context.Context, name string) (f *os.File, ok bool, err error) {
	if f, ok, err := c.try(name); err != nil || ok {
		return f, ok, err
	}
	timer := time.NewTimer(claimWaitMax)
	defer timer.Stop()
	for {
		f, err := os.OpenFile(c.path(name), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, false, err
		}
		// The blocked flock owns f once given up on: it closes f when
		// it returns, and with f the lock it may have got.
		var mu sync.Mutex
		abandoned := false
		locked := make(chan error, 1)
		go func() {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			mu.Lock()
			defer mu.Unlock()
			if abandoned {
				f.Close()
				return
			}
			locked <- err
		}()
		var stop error
		select {
		case err := <-locked:
			if err != nil {
				f.Close()
				return nil, false, err
			}
			if c.same(f, name) {
				return f, true, nil
			}
			f.Close() // locked a removed file: wait on the new one
			continue
		case <-timer.C:
		case <-ctx.Done():
			stop = ctx.Err()
		}
		mu.Lock()
		abandoned = true
		select {
		case <-locked: // got it just now: let it go
			f.Close()
		default:
		}
		mu.Unlock()
		return nil, false, stop
	}
}

// same reports whether f, locked, is the file at the claim's path: the
// holder before removes the file as it lets go, and a lock taken on a
// removed file claims nothing.
func (c claims) same(f *os.File, name string) bool {
	var held, now syscall.Stat_t
	return syscall.Fstat(int(f.Fd()), &held) == nil && syscall.Stat(c.path(name), &now) == nil &&
		held.Dev == now.Dev && held.Ino == now.Ino
}

// release lets go of a claim try or wait took.
func (c claims) release(name string, f *os.File) {
	if f == nil {
		return
	}
	os.Remove(c.path(name))
	f.Close()
}
