package restore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/internal/lockfile"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// How the background prefetch (one process per pg_wal, `walgo
// wal-prefetch`) works:
//
//   - Every wal-fetch of a segment writes that segment's name into
//     positionFile in the prefetch folder and starts a prefetch only if
//     none holds the folder's lock. The prefetch reads the position as it
//     changes, so one process serves a whole recovery. The first
//     wal-fetch starts it before downloading its own segment, so the two
//     overlap.
//   - It holds a claim on each segment while downloading it
//     (prefetchClaims): a wal-fetch of that segment waits for the
//     download rather than making a second one.
//   - The copy of the segment served last stays while it is the position
//     (Postgres asks for it again at the end of recovery), and the first
//     segment its listing did not show is named in missingFile, so a
//     wal-fetch of it lists first: one request for "not there".
//   - It runs at nice backgroundNice (cmd/walgo): it works ahead of the
//     replay, so on busy cores Postgres' startup process runs first.
//   - It keeps the segments after the position downloaded: as many in
//     flight as the measured replay rate times the measured transfer time
//     needs to hide the round trip, up to FetchConfig.Concurrency, and
//     twice that many ahead, up to FetchConfig.Prefetch.
//   - Within a disk budget: a download starts only while pg_wal's file
//     system keeps reserveFor(...) free after it, and segments furthest
//     ahead are removed again when Postgres' own files leave less than
//     that (Postgres needs room to keep restored segments and to start a
//     new timeline's segment at promotion).
//   - It lists the archive once per log id (up to 256 segments of 16 MiB
//     in one request) and GETs exactly the keys listed: a segment it knows
//     is there costs one request, one it knows is missing costs nothing
//     until the listing is due again (the end of the archive, re-listed
//     with backoff for a standby that waits for new WAL).
//   - Started in a cluster in recovery (a signal file and a live
//     postmaster), it runs until recovery ends (promotion: the signal file
//     is gone), the server stops, or nothing asks for a segment for
//     prefetchIdle; then it removes what it holds and exits. Started
//     anywhere else (wal-fetch run by hand), it fills its window once and
//     exits.

// positionFile, in the prefetch folder, names the segment wal-fetch served
// last: "<segment name> <segment size>".
const positionFile = ".position"

// missingFile, in the prefetch folder, names the first segment the
// prefetch wanted and the archive's listing did not show: a wal-fetch of
// it (the next segment at the end of the archive, asked for at the end of
// recovery and again and again by a standby) lists first, so "not in the
// archive" costs one request. It only orders the requests: the LIST
// answers for the archive as it is now.
const missingFile = ".missing"

// missingHint is the segment name missingFile holds, or "".
func missingHint(walDir string) string {
	b, err := os.ReadFile(filepath.Join(PrefetchDir(walDir), missingFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// lockFile, in the prefetch folder, is flock'ed by the running prefetch
// for its whole life (see Prefetch).
const lockFile = ".lock"

// prefetchRunning reports whether a prefetch holds walDir's folder.
func prefetchRunning(walDir string) bool {
	return lockfile.Held(filepath.Join(PrefetchDir(walDir), lockFile))
}

// claimsDir, in the prefetch folder, holds the claims of the segments the
// prefetch downloads now (see prefetchClaims).
const claimsDir = ".claims"

// prefetchClaims are the claims of walDir's prefetch: it holds a
// segment's claim from the start of its download until its sidecar is
// written, so a wal-fetch of that segment waits for it instead of
// downloading it again.
func prefetchClaims(walDir string) lockfile.Claims {
	return lockfile.Claims{Dir: filepath.Join(PrefetchDir(walDir), claimsDir)}
}

const (
	// prefetchPoll is how often a supervised prefetch looks at the
	// position, the signal files and the free space.
	prefetchPoll = 50 * time.Millisecond
	// prefetchIdle ends a supervised prefetch that no wal-fetch asked
	// anything of for this long (recovery paused, a standby whose primary
	// archives nothing): what it held is removed, the next wal-fetch
	// starts a new one.
	prefetchIdle = 2 * time.Minute
	// relistFirst and relistMax bound the backoff between listings of a
	// log id whose next segment was missing.
	relistFirst = 500 * time.Millisecond
	relistMax   = 15 * time.Second
)

// reserveFor is the free space the prefetch leaves on pg_wal's file
// system: at least 4 segments (the new timeline's first segment at
// promotion, a segment wal-fetch downloads itself, a restartpoint's
// recycling) and a sixteenth of the file system.
func reserveFor(segSize int64, fsSize int64) int64 {
	return max(4*segSize, fsSize/16)
}

// fsSpace reports the free (for unprivileged users) and total bytes of
// the file system holding dir.
var fsSpace = func(dir string) (free, size int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Blocks) * st.Bsize, nil
}

// notePosition records seg as the segment Postgres replays now, for the
// running prefetch. It reports whether no prefetch holds the folder, so
// the caller should start one.
func notePosition(walDir string, seg string, segSize int64) (startOne bool, err error) {
	dir := PrefetchDir(walDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	tmp := filepath.Join(dir, positionFile+".tmp")
	if err := os.WriteFile(tmp, []byte(seg+" "+strconv.FormatInt(segSize, 10)+"\n"), 0o600); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, positionFile)); err != nil {
		return false, err
	}
	// A running prefetch reads the position; else the caller starts one.
	return !prefetchRunning(walDir), nil
}

// readPosition reads positionFile; ok is false when there is none or it
// does not parse.
func readPosition(dir string) (seg wal.Segment, segSize int64, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, positionFile))
	if err != nil {
		return wal.Segment{}, 0, false
	}
	name, size, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	seg, err = wal.ParseSegment(name)
	if err != nil {
		return wal.Segment{}, 0, false
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || !wal.ValidSegmentSize(n) {
		return wal.Segment{}, 0, false
	}
	return seg, n, true
}

// prefetcher is one run of Fetcher.Prefetch.
type prefetcher struct {
	f       *Fetcher
	ctx     context.Context
	dir     string // the prefetch folder
	walDir  string
	segSize int64
	log     *zap.Logger

	pos      wal.Segment
	posAt    time.Time
	rate     float64 // segments replayed per second (EWMA), 0 = unknown
	transfer float64 // seconds one download takes (EWMA), 0 = unknown

	supervised bool // serving a recovering cluster (see supervise)

	listed  map[string]*logListing // by log prefix (timeline + log id)
	missing string                 // the segment missingFile names
	flight  map[string]bool        // segment names downloading
	done    chan fetchDone
	failErr error // the first download failure other than "missing"
}

// logListing is what one LIST of a log id's segments found.
type logListing struct {
	objs   map[string]catalog.WALObject // segment name -> best copy
	at     time.Time                    // when it was listed
	wait   time.Duration                // until the next listing, once one was missing
	missed bool                         // a wanted segment was not in it
}

type fetchDone struct {
	name string
	took time.Duration
	err  error
}

// Prefetch keeps the segments after seg (and after the position later
// wal-fetches record) downloaded into the prefetch folder of walDir, each
// with its checksum and the repository's tag beside it; see the comment at
// the top of this file. Only one prefetch runs per folder at a time; a
// second returns at once.
func (f *Fetcher) Prefetch(ctx context.Context, seg string, walDir string, segSize int64) error {
	cur, err := wal.ParseSegment(seg)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !wal.ValidSegmentSize(segSize) {
		return fmt.Errorf("%w: segment size %d", ErrInvalid, segSize)
	}
	dir := PrefetchDir(walDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // another prefetch is running
	}
	p := &prefetcher{
		f: f, ctx: ctx, dir: dir, walDir: walDir, segSize: segSize, log: f.log,
		pos: cur, posAt: time.Now(),
		listed: map[string]*logListing{}, flight: map[string]bool{}, done: make(chan fetchDone),
	}
	if s, size, ok := readPosition(dir); ok && size == segSize {
		p.pos = s
	}
	removeTemps(dir)
	if !inRecovery(walDir) {
		// Run by hand, outside a recovering cluster: one window, then out.
		return p.once()
	}
	p.supervised = true
	return p.supervise()
}

// inRecovery reports whether walDir's cluster recovers now: a signal file
// in its data directory and a live postmaster.
func inRecovery(walDir string) bool {
	return signalled(filepath.Join(walDir, "RECOVERYXLOG"), pgdata.RecoverySignalFile, pgdata.StandbySignalFile) &&
		pgdata.PostmasterAlive(filepath.Dir(walDir))
}

// once fills the window after the position and returns when every
// download ended.
func (p *prefetcher) once() error {
	p.evict()
	p.start()
	for len(p.flight) > 0 {
		select {
		case d := <-p.done:
			p.finished(d)
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
		p.start()
	}
	if err := p.ctx.Err(); err != nil {
		return err
	}
	return p.failErr
}

// supervise serves the recovery until it ends, the server stops, or
// nothing is asked for prefetchIdle; then it removes what it holds.
func (p *prefetcher) supervise() error {
	tick := time.NewTicker(prefetchPoll)
	defer tick.Stop()
	defer func() {
		p.drain()
		p.clear()
	}()
	for {
		if !inRecovery(p.walDir) {
			p.log.Debug("recovery ended: prefetch stops", zap.String("folder", p.dir))
			return nil
		}
		if time.Since(p.posAt) > prefetchIdle && len(p.flight) == 0 {
			p.log.Debug("no segment asked for: prefetch stops", zap.String("folder", p.dir), zap.Duration("idle", prefetchIdle))
			return nil
		}
		p.readPosition()
		p.evict()
		p.start()
		if p.failErr != nil {
			return p.failErr
		}
		select {
		case <-p.ctx.Done():
			return p.ctx.Err()
		case d := <-p.done:
			p.finished(d)
		case <-tick.C:
		}
	}
}

// readPosition takes a new position from wal-fetch and updates the
// measured replay rate.
func (p *prefetcher) readPosition() {
	s, size, ok := readPosition(p.dir)
	if !ok || size != p.segSize || s == p.pos {
		return
	}
	now := time.Now()
	if s.Timeline == p.pos.Timeline && s.No(p.segSize) > p.pos.No(p.segSize) {
		n := float64(s.No(p.segSize) - p.pos.No(p.segSize))
		r := n / max(now.Sub(p.posAt).Seconds(), 1e-3)
		p.rate = ewma(p.rate, r)
	}
	p.pos, p.posAt = s, now
}

func ewma(old, v float64) float64 {
	if old == 0 {
		return v
	}
	return 0.7*old + 0.3*v
}

// plan returns how many downloads may run at once and how many segments
// after the position to keep: in flight, the replay rate times the
// transfer time (Little's law) plus one; ahead, twice that. Until both
// are measured, the configured maximum.
func (p *prefetcher) plan() (conc, depth int) {
	maxConc, maxDepth := max(1, p.f.cfg.Concurrency), max(1, p.f.cfg.Prefetch)
	if p.rate == 0 || p.transfer == 0 {
		return min(maxConc, maxDepth), maxDepth
	}
	need := int(math.Ceil(p.rate*p.transfer)) + 1
	return min(maxConc, need, maxDepth), min(maxDepth, max(2, 2*need))
}

// window is the segments to keep, nearest first.
func (p *prefetcher) window(depth int) []wal.Segment {
	out := make([]wal.Segment, 0, depth)
	s := p.pos
	for range depth {
		s = s.Next(p.segSize)
		out = append(out, s)
	}
	return out
}

// held lists the complete prefetched segments in the folder.
func (p *prefetcher) held() []string {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if wal.Classify(e.Name()) == wal.KindSegment {
			out = append(out, e.Name())
		}
	}
	return out
}

// evict removes what will never be asked for (segments before the
// position or of another timeline, or further ahead than FetchConfig.
// Prefetch, sidecars without their segment) and,
// while pg_wal's file system has less free space than the reserve, the
// segments furthest ahead.
func (p *prefetcher) evict() {
	// The position's own copy stays too: Postgres asks again for the
	// segment it ended recovery in, right after the one it did not find.
	keep := map[string]bool{p.pos.Name(): true}
	for _, s := range p.window(max(1, p.f.cfg.Prefetch)) {
		keep[s.Name()] = true
	}
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		switch {
		case n == lockFile || n == claimsDir || strings.HasPrefix(n, positionFile) || strings.HasPrefix(n, missingFile) || strings.HasPrefix(n, fetchTempPrefix):
		case keep[strings.TrimSuffix(n, SidecarExt)]:
		case p.flight[n]:
		default:
			os.Remove(filepath.Join(p.dir, n))
		}
	}
	free, size, err := fsSpace(p.dir)
	if err != nil {
		return
	}
	reserve := reserveFor(p.segSize, size)
	if free >= reserve {
		return
	}
	held := p.held()
	slices.Sort(held) // same timeline: the furthest ahead last
	for i := len(held) - 1; i >= 0 && free < reserve; i-- {
		p.drop(held[i])
		free += p.segSize
		p.log.Debug("prefetched segment removed: pg_wal is short of space", zap.String("wal", held[i]))
	}
}

// drop removes one prefetched segment, its sidecar first (a copy without
// one is never taken).
func (p *prefetcher) drop(name string) {
	path := filepath.Join(p.dir, name)
	os.Remove(path + SidecarExt)
	os.Remove(path)
}

// start begins the downloads the plan allows, nearest first, while the
// disk budget has room.
func (p *prefetcher) start() {
	if p.failErr != nil {
		return
	}
	conc, depth := p.plan()
	free, size, err := fsSpace(p.dir)
	if err != nil {
		return
	}
	reserve := reserveFor(p.segSize, size)
	for _, s := range p.window(depth) {
		if len(p.flight) >= conc {
			return
		}
		name := s.Name()
		if p.flight[name] || p.have(name) {
			continue
		}
		o, known := p.lookup(s)
		if !known {
			return // the end of what the archive holds now
		}
		// Every running download may still grow to a whole segment.
		if free-int64(len(p.flight)+1)*p.segSize < reserve {
			p.log.Debug("prefetch waits for room in pg_wal", zap.String("wal", name), zap.Int64("free", free), zap.Int64("reserve", reserve), zap.Int("downloading", len(p.flight)))
			return
		}
		p.flight[name] = true
		go func() {
			t0 := time.Now()
			err := p.fetchOne(o)
			select {
			case p.done <- fetchDone{name: name, took: time.Since(t0), err: err}:
			case <-p.ctx.Done():
			}
		}()
	}
}

// have reports whether name is prefetched from this repository.
func (p *prefetcher) have(name string) bool {
	_, tag, ok := readSidecar(filepath.Join(p.dir, name))
	return ok && tag == p.f.tag
}

// lookup finds segment s in the listing of its log id, listing it when
// it was never listed or, if s was missing, when the backoff allows.
func (p *prefetcher) lookup(s wal.Segment) (catalog.WALObject, bool) {
	prefix := s.Name()[:16]
	l := p.listed[prefix]
	if l != nil {
		if o, ok := l.objs[s.Name()]; ok {
			return o, true
		}
		if time.Since(l.at) < l.wait {
			p.noteMissing(s)
			return catalog.WALObject{}, false
		}
	}
	objs, err := catalog.ListWALSegments(p.ctx, p.f.store, prefix)
	if err != nil {
		// A prefetch run by hand fails with it; one serving a recovery
		// tries again later (wal-fetch itself reports the outage).
		if p.ctx.Err() != nil || !p.supervised {
			p.fail(err)
			return catalog.WALObject{}, false
		}
		p.log.Warn("prefetch: list the archive", zap.String("prefix", prefix), zap.Error(err))
		objs = nil
	}
	next := &logListing{objs: objs, at: time.Now(), wait: relistFirst}
	if l != nil && l.missed {
		next.wait = min(relistMax, 2*l.wait)
	}
	p.listed[prefix] = next
	o, ok := objs[s.Name()]
	next.missed = !ok
	if !ok {
		p.noteMissing(s)
	}
	return o, ok
}

// noteMissing records s in missingFile, once.
func (p *prefetcher) noteMissing(s wal.Segment) {
	if p.missing == s.Name() {
		return
	}
	tmp := filepath.Join(p.dir, missingFile+".tmp")
	if os.WriteFile(tmp, []byte(s.Name()+"\n"), 0o600) == nil && os.Rename(tmp, filepath.Join(p.dir, missingFile)) == nil {
		p.missing = s.Name()
	}
}

// fail records the first failure that stops the prefetch.
func (p *prefetcher) fail(err error) {
	if p.failErr == nil {
		p.failErr = err
	}
}

// finished books a download's end.
func (p *prefetcher) finished(d fetchDone) {
	delete(p.flight, d.name)
	switch {
	case d.err == nil:
		p.transfer = ewma(p.transfer, d.took.Seconds())
	case errors.Is(d.err, errClaimed):
	case errors.Is(d.err, storage.ErrNotFound), errors.Is(d.err, catalog.ErrVanished):
		// Listed, then gone (retention, a replaced copy): list again.
		delete(p.listed, d.name[:16])
	case errors.Is(d.err, syscall.ENOSPC):
		p.log.Debug("prefetch: pg_wal is full", zap.String("wal", d.name))
	case p.ctx.Err() != nil || !p.supervised:
		p.fail(d.err)
	default:
		// Serving a recovery: wal-fetch fetches this one itself and
		// reports what fails; the prefetch goes on.
		p.log.Warn("prefetch failed", zap.String("wal", d.name), zap.Error(d.err))
	}
}

// drain waits for the running downloads.
func (p *prefetcher) drain() {
	for len(p.flight) > 0 {
		select {
		case d := <-p.done:
			p.finished(d)
		case <-p.ctx.Done():
			return
		}
	}
}

// clear removes the prefetch folder and everything in it (a wal-fetch
// still running makes it again).
func (p *prefetcher) clear() {
	if err := os.RemoveAll(p.dir); err != nil {
		p.log.Warn("remove the prefetch folder", zap.String("folder", p.dir), zap.Error(err))
	}
}

// errClaimed: a wal-fetch holds the segment's claim (it is taking the
// segment), so the prefetch leaves it.
var errClaimed = errors.New("claimed by wal-fetch")

// fetchOne downloads one listed segment with its sidecar, holding the
// segment's claim throughout.
func (p *prefetcher) fetchOne(o catalog.WALObject) error {
	cl := prefetchClaims(p.walDir)
	c, ok, err := cl.Try(o.Name)
	if err != nil {
		return fmt.Errorf("prefetch %s: claim: %w", o.Name, err)
	}
	if !ok {
		return errClaimed
	}
	defer cl.Release(o.Name, c)
	path := filepath.Join(p.dir, o.Name)
	os.Remove(path + SidecarExt) // another repository's copy, if any, is replaced
	start := time.Now()
	h := newCopySum()
	// The temp name keeps a half-written copy from ever being taken.
	n, err := p.f.fetchObject(p.ctx, o, nil, o.Name, path, h)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+SidecarExt, []byte(copySum(h)+" "+p.f.tag+"\n"), 0o600); err != nil {
		os.Remove(path)
		return fmt.Errorf("prefetch %s: %w", o.Name, err)
	}
	p.log.Debug("prefetched", zap.String("wal", o.Name), zap.Int64("bytes", n), zap.Duration("took", time.Since(start)))
	return nil
}

// removeTemps removes the temp files of downloads a killed prefetch
// left; only the lock holder calls it.
func removeTemps(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), fetchTempPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
