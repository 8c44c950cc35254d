package basebackup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
)

// lockRefresh is how often a running backup refreshes its lock (a
// variable for tests).
var lockRefresh = catalog.LockRefreshInterval

// holdLock refreshes lock in the background until stop is called, and
// returns a context that is cancelled, with an error wrapping
// catalog.ErrLockLost as its cause, when the lock is lost: taken over,
// removed, or not refreshed for catalog.LockStaleAfter (after which
// retention no longer protects the backup's WAL). stop ends the refreshes,
// releases the lock and returns that cause, or nil.
func holdLock(ctx context.Context, lock *catalog.HeldLock, log *zap.Logger) (context.Context, func() error) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(lockRefresh)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if since := time.Since(lock.LastRefreshed()); since > catalog.LockStaleAfter {
				cancel(fmt.Errorf("%w: it was not refreshed for %s (more than %s): retention may have deleted WAL this backup needs; run backup-push again",
					catalog.ErrLockLost, since.Round(time.Second), catalog.LockStaleAfter))
				return
			}
			err := lock.Update(ctx, time.Now(), nil)
			switch {
			case errors.Is(err, catalog.ErrLockLost):
				cancel(err)
				return
			case err != nil && ctx.Err() == nil:
				log.Warn("could not refresh the backup lock; trying again", zap.String("lock", lock.Lock().Key), zap.Error(err))
			}
		}
	}()
	return ctx, func() error {
		close(done)
		<-finished
		cause := context.Cause(ctx)
		if !errors.Is(cause, catalog.ErrLockLost) {
			cause = nil
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer rcancel()
		if err := lock.Release(rctx); err != nil {
			log.Warn("could not release the backup lock; the next backup-push takes it over once stale",
				zap.String("lock", lock.Lock().Key), zap.Duration("stale_after", catalog.LockStaleAfter), zap.Error(err))
		}
		cancel(nil)
		return cause
	}
}
