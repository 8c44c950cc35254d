package restore

// Recovery targets checked against the archived WAL, before anything is
// restored. Postgres replays from the backup's start and stops at the
// first record that meets the target; if the WAL ends first it fails
// ("recovery ended before configured recovery target was reached") after
// the whole restore and replay, and a stop before the backup is
// consistent fails too. So walgo reads the archive first:
//
//   - --target-name: the restore point's XLOG_RESTORE_POINT record gives
//     its LSN; the backup is the newest that finished before it, and no
//     other restore point of that name may lie between that backup's start
//     and it (Postgres would stop at the first).
//   - --target-xid: likewise the transaction's commit or abort record.
//   - --target-time: some commit or abort after the target must be in the
//     archive (Postgres stops before the first one later than the target).
//   - --target-lsn: some record must start at or after the target.
//
// Cost: every scan reads whole segments (download and decompress). Names
// and xids are searched from the newest archived segment backwards, one
// backup's stretch of WAL at a time, so the cost is the WAL written since
// the target (plus the stretch it is in); a name that is not in the
// archive costs a read of everything after the oldest backup's start.
// With a backup named, the search runs forward from its start and stops at
// the first match. Time and LSN targets read the archive's last segments
// only, back to the last commit. Several segments download at once.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// ErrTargetUnreachable: the recovery target is not in the archived WAL a
// restore could replay (a restore point or xid that is not there, a time or
// LSN past its end, a restore point before every backup's end). It wraps
// ErrInvalid: the request cannot be met as given.
var ErrTargetUnreachable = fmt.Errorf("%w: recovery target not in the archive", ErrInvalid)

// found is one record a target search matched.
type found struct {
	lsn  wal.LSN
	time time.Time
	what string // for messages: "restore point \"x\" at 0/5000028 (2026-...)"
}

// describe names a list of matches for a message.
func describeFound(fs []found) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.what)
	}
	return strings.Join(s, "; ")
}

// matcher says whether a record is the one a name or xid target stops at.
type matcher func(*wal.Record) (found, bool)

func restorePointMatcher(name string) matcher {
	return func(r *wal.Record) (found, bool) {
		if !r.IsRestorePoint() {
			return found{}, false
		}
		rp, err := r.RestorePoint()
		if err != nil || rp.Name != name {
			return found{}, false
		}
		return found{lsn: r.LSN, time: rp.Time, what: fmt.Sprintf("restore point %q at %s (%s)", name, r.LSN, rp.Time.UTC().Format(time.RFC3339Nano))}, true
	}
}

func xidMatcher(xid uint64) matcher {
	want := uint32(xid) // Postgres compares the 32-bit xid
	return func(r *wal.Record) (found, bool) {
		if !r.IsXactEnd() {
			return found{}, false
		}
		x, err := r.XactEnd()
		if err != nil || x.XID != want {
			return found{}, false
		}
		verb := "commit"
		if !x.Commit {
			verb = "abort"
		}
		return found{lsn: r.LSN, time: x.Time, what: fmt.Sprintf("%s of xid %d at %s (%s)", verb, x.XID, r.LSN, x.Time.UTC().Format(time.RFC3339Nano))}, true
	}
}

// scanRange calls fn for every record that starts in [from, to), reading
// the segments that hold them (and the next one, where the last may end).
func (a *walArchive) scanRange(ctx context.Context, from, to wal.LSN, last uint64, fn func(*wal.Record) error) error {
	if to <= from {
		return nil
	}
	// The segment holding to-1, and the next for a record that starts in
	// it and ends there, unless nothing starts in it before to.
	hi := a.no(to - 1)
	if to-wal.LSN(hi*uint64(a.segSize)) > wal.LongPageHeaderSize {
		hi++
	}
	hi = min(hi, last)
	_, err := a.scan(ctx, a.no(from), hi, func(r *wal.Record) error {
		if r.LSN < from {
			return nil
		}
		if r.LSN >= to {
			return wal.ErrStop
		}
		return fn(r)
	})
	return err
}

// lastSegment is the highest segment number the archive holds on the
// lineage, and false when it holds none.
func (a *walArchive) lastSegment() (uint64, bool) {
	var last uint64
	ok := false
	for name := range a.have {
		s, err := wal.ParseSegment(name)
		if err != nil {
			continue
		}
		no := s.No(a.segSize)
		if a.segment(no) == s && (!ok || no > last) {
			last, ok = no, true
		}
	}
	return last, ok
}

// locate finds the record target m stops at, searching the archive from
// its end backwards one backup's stretch of WAL at a time, and returns it
// with the newest of backups (those of the lineage) that finished before
// it. what names the target in messages; dupes says whether several
// matches are possible (restore point names are not unique) and so must
// be checked: recovery from the backup would stop at the first.
func (a *walArchive) locate(ctx context.Context, backups []*catalog.Sentinel, m matcher, what string, dupes bool) (found, *catalog.Sentinel, error) {
	bs := append([]*catalog.Sentinel(nil), backups...)
	sort.SliceStable(bs, func(i, j int) bool { return bs[i].StartLSN < bs[j].StartLSN })
	if len(bs) == 0 {
		return found{}, nil, fmt.Errorf("no backups: %w", storage.ErrNotFound)
	}
	last, ok := a.lastSegment()
	if !ok {
		return found{}, nil, fmt.Errorf("%w: %s: the archive holds no WAL of lineage %s", ErrTargetUnreachable, what, a.lineage.Describe())
	}
	end := a.endOf(last)
	var hits []found // in LSN order once complete
	chosen := func(r found) int {
		j := -1
		for i, b := range bs {
			if b.FinishLSN <= r.lsn && (j < 0 || b.FinishLSN > bs[j].FinishLSN) {
				j = i
			}
		}
		return j
	}
	upper := end
	for i := len(bs) - 1; i >= 0; i-- {
		from := bs[i].StartLSN
		var got []found
		err := a.scanRange(ctx, from, upper, last, func(r *wal.Record) error {
			if f, ok := m(r); ok {
				got = append(got, f)
				if !dupes {
					return wal.ErrStop
				}
			}
			return nil
		})
		if err != nil {
			return found{}, nil, err
		}
		hits = append(got, hits...)
		upper = min(upper, from)
		if len(hits) == 0 {
			continue
		}
		target := hits[len(hits)-1]
		j := chosen(target)
		if j < 0 {
			return found{}, nil, fmt.Errorf("%w: %s: the archive has it at %s, before any backup finished (the oldest, %s, finished at %s); no backup can be restored to it",
				ErrTargetUnreachable, what, target.what, bs[0].Name, bs[0].FinishLSN)
		}
		if j < i {
			continue // read on down to the chosen backup's start
		}
		b := bs[j]
		var before []found
		for _, h := range hits {
			if h.lsn >= b.StartLSN && h.lsn < target.lsn {
				before = append(before, h)
			}
		}
		if len(before) > 0 {
			return found{}, nil, fmt.Errorf("%w: %s occurs more than once: recovery from backup %s (the newest before the last one) would stop at the first of %s; "+
				"give --target-lsn %s for the last, or name a backup",
				ErrTargetUnreachable, what, b.Name, describeFound(append(before, target)), target.lsn)
		}
		if err := a.reaches(b, target.lsn); err != nil {
			return found{}, nil, fmt.Errorf("%s at %s: %w", what, target.lsn, err)
		}
		return target, b, nil
	}
	return found{}, nil, fmt.Errorf("%w: %s is not in the archived WAL of lineage %s from the oldest backup's start (%s, %s) to its end (%s); %d segments read",
		ErrTargetUnreachable, what, a.lineage.Describe(), bs[0].Name, bs[0].StartLSN, end, a.segments.Load())
}

// locateFrom finds the first record m matches in recovery from backup b:
// forward from its start. It must come after the backup finished.
func (a *walArchive) locateFrom(ctx context.Context, b *catalog.Sentinel, m matcher, what string) (found, error) {
	runEnd, ok := a.runEnd(a.no(b.StartLSN))
	if !ok {
		return found{}, fmt.Errorf("%w: %s: the archive lacks %s, the first WAL segment of backup %s", ErrTargetUnreachable, what, a.segment(a.no(b.StartLSN)).Name(), b.Name)
	}
	var hit *found
	_, err := a.scan(ctx, a.no(b.StartLSN), runEnd, func(r *wal.Record) error {
		if r.LSN < b.StartLSN {
			return nil
		}
		if f, ok := m(r); ok {
			hit = &f
			return wal.ErrStop
		}
		return nil
	})
	if err != nil {
		return found{}, err
	}
	if hit == nil {
		return found{}, fmt.Errorf("%w: %s is not in the archived WAL after the start of backup %s (%s to %s)",
			ErrTargetUnreachable, what, b.Name, b.StartLSN, a.endOf(runEnd))
	}
	if hit.lsn < b.FinishLSN {
		return found{}, fmt.Errorf("%w: recovery from backup %s would stop at the first %s, before the backup is consistent at %s",
			ErrTargetUnreachable, b.Name, hit.what, b.FinishLSN)
	}
	return *hit, nil
}

// reaches checks that the archive holds every segment from b's start to
// the one holding lsn.
func (a *walArchive) reaches(b *catalog.Sentinel, lsn wal.LSN) error {
	runEnd, ok := a.runEnd(a.no(b.StartLSN))
	if !ok {
		return fmt.Errorf("%w: the archive lacks %s, the first WAL segment of backup %s", ErrTargetUnreachable, a.segment(a.no(b.StartLSN)).Name(), b.Name)
	}
	if runEnd < a.no(lsn) {
		return fmt.Errorf("%w: recovery from backup %s stops at the end of %s: %s is missing from the archive",
			ErrTargetUnreachable, b.Name, a.segment(runEnd).Name(), a.segment(runEnd+1).Name())
	}
	return nil
}

// archiveEnd is how far recovery from a backup can go in the archive.
type archiveEnd struct {
	lastSeg    wal.Segment
	lastRecord wal.LSN // start of the last valid record
	end        wal.LSN // end of it
	commit     *found  // the last commit or abort after the backup finished
}

func (e archiveEnd) String() string {
	s := fmt.Sprintf("the archive reaches LSN %s (its last record starts at %s, in %s)", e.end, e.lastRecord, e.lastSeg.Name())
	if e.commit != nil {
		return s + fmt.Sprintf(", last commit or abort at %s (%s)", e.commit.time.UTC().Format(time.RFC3339Nano), e.commit.lsn)
	}
	return s + ", with no commit or abort after the backup finished"
}

// end reads the last segments recovery from b would replay: the end of the
// unbroken run of segments from b's start, and back from there to the last
// commit or abort after b finished (needTime), or just the last segment.
func (a *walArchive) end(ctx context.Context, b *catalog.Sentinel, needTime bool) (archiveEnd, error) {
	runEnd, ok := a.runEnd(a.no(b.StartLSN))
	if !ok {
		return archiveEnd{}, fmt.Errorf("%w: the archive lacks %s, the first WAL segment of backup %s", ErrTargetUnreachable, a.segment(a.no(b.StartLSN)).Name(), b.Name)
	}
	e := archiveEnd{lastSeg: a.segment(runEnd)}
	floor := a.no(b.StartLSN)
	step := uint64(1) // the last segment, for its last record
	for hi := runEnd; ; {
		lo := hi - min(hi-floor, step-1)
		from := max(b.FinishLSN, wal.LSN(lo*uint64(a.segSize)))
		if hi == runEnd {
			from = wal.LSN(lo * uint64(a.segSize))
		}
		var commit *found
		err := a.scanRange(ctx, from, a.endOf(hi), runEnd, func(r *wal.Record) error {
			if r.LSN >= e.lastRecord {
				e.lastRecord, e.end = r.LSN, r.End
			}
			if r.IsXactEnd() && r.LSN >= b.FinishLSN {
				if x, err := r.XactEnd(); err == nil {
					commit = &found{lsn: r.LSN, time: x.Time}
				}
			}
			return nil
		})
		if err != nil {
			return archiveEnd{}, err
		}
		if commit != nil && e.commit == nil {
			e.commit = commit
		}
		if !needTime || e.commit != nil || lo == floor || wal.LSN(lo*uint64(a.segSize)) <= b.FinishLSN {
			return e, nil
		}
		hi, step = lo-1, uint64(max(2, a.conc))
	}
}

// checkEnd refuses a time or LSN target past the end of what recovery
// from b can replay.
func (a *walArchive) checkEnd(ctx context.Context, b *catalog.Sentinel, t Target) error {
	switch {
	case t.Time != nil:
		e, err := a.end(ctx, b, true)
		if err != nil {
			return err
		}
		// Postgres stops before the first commit or abort later than the
		// target; without one it runs out of WAL.
		if e.commit == nil || !e.commit.time.After(*t.Time) {
			return fmt.Errorf("%w: recovery target time %s is not before the last commit in the archive: %s",
				ErrTargetUnreachable, t.Time.UTC().Format(time.RFC3339Nano), e)
		}
	case t.LSN != nil:
		e, err := a.end(ctx, b, false)
		if err != nil {
			return err
		}
		// Postgres stops after the first record starting at or after it.
		if e.lastRecord < *t.LSN {
			return fmt.Errorf("%w: recovery target LSN %s is past the end of the archive: %s", ErrTargetUnreachable, t.LSN, e)
		}
	}
	return nil
}

// targetSegmentSize is the segment size of the cluster the backups are of.
func targetSegmentSize(bs []*catalog.Sentinel) int64 {
	for _, b := range bs {
		if wal.ValidSegmentSize(b.SegmentSize) {
			return b.SegmentSize
		}
	}
	return wal.DefaultSegmentSize
}

// describeCost is the log fields for what a search read.
func (a *walArchive) describeCost(took time.Duration) []zap.Field {
	return []zap.Field{zap.Int64("segments_read", a.segments.Load()), zap.Int64("bytes_read", a.bytes.Load()), zap.Duration("took", took)}
}

// targetWhat names a name or xid target in messages.
func targetWhat(t Target) string {
	if t.Name != "" {
		return "restore point " + strconv.Quote(t.Name)
	}
	if t.XID != nil {
		return "xid " + strconv.FormatUint(*t.XID, 10)
	}
	return describeTarget(t)
}

// targetSearch is what BackupFetch asks the archive before it restores.
type targetSearch struct {
	store storage.Store
	opts  *BackupFetchOptions
	x     *catalog.LineageIndex
	have  map[string]bool // archived segments, listed once
}

func (s *targetSearch) log() *zap.Logger {
	if s.opts.Log == nil {
		return zap.NewNop()
	}
	return s.opts.Log
}

func (s *targetSearch) archive(ctx context.Context, l catalog.Lineage, bs []*catalog.Sentinel) (*walArchive, error) {
	if s.have == nil {
		have, err := archivedSegments(ctx, s.store)
		if err != nil {
			return nil, err
		}
		s.have = have
	}
	return newWALArchive(s.store, s.opts.Codec, s.have, l, targetSegmentSize(bs), s.opts.Concurrency), nil
}

// place finds a name or xid target's record before the backup is chosen,
// and returns the backup recovery to it must start from, and the lineage
// it was found on. Other targets: "". name is the backup asked for ("" or
// Latest: walgo chooses); pinned the lineage asked for, if any.
func (s *targetSearch) place(ctx context.Context, name string, pinned *catalog.Lineage) (string, *catalog.Lineage, error) {
	t := s.opts.Target
	var m matcher
	switch {
	case t.Name != "":
		m = restorePointMatcher(t.Name)
	case t.XID != nil:
		m = xidMatcher(*t.XID)
	default:
		return "", nil, nil
	}
	what := targetWhat(t)
	start := time.Now()
	log := s.log()
	if strings.EqualFold(name, Latest) {
		bs := s.x.Backups()
		if pinned != nil {
			bs = s.x.BackupsOf(*pinned)
		}
		if len(bs) == 0 {
			return "", nil, fmt.Errorf("no backups: %w in %s", storage.ErrNotFound, s.store)
		}
		name = bs[len(bs)-1].Name
	}
	if name != "" {
		sn, err := catalog.ReadSentinel(ctx, s.store, name)
		if errors.Is(err, storage.ErrNotFound) {
			return "", nil, fmt.Errorf("backup %q: %w in %s", name, storage.ErrNotFound, s.store)
		}
		if err != nil {
			return "", nil, err
		}
		ls := s.x.Of(sn)
		if pinned != nil {
			ls = []catalog.Lineage{*pinned}
		}
		if len(ls) == 0 {
			ls = []catalog.Lineage{s.x.Lineage(sn.SystemID, sn.Timeline)}
		}
		var errs []error
		for _, l := range ls {
			a, err := s.archive(ctx, l, []*catalog.Sentinel{sn})
			if err != nil {
				return "", nil, err
			}
			f, err := a.locateFrom(ctx, sn, m, what)
			log.Info("searched the archive", append(a.describeCost(time.Since(start)), zap.String("target", what), zap.String("backup", sn.Name))...)
			if err == nil {
				log.Info("recovery target found", zap.String("target", f.what), zap.String("backup", sn.Name))
				return sn.Name, &l, nil
			}
			errs = append(errs, err)
		}
		return "", nil, errors.Join(errs...)
	}
	cands := []catalog.Lineage{}
	if pinned != nil {
		cands = append(cands, *pinned)
	} else {
		for _, l := range s.x.All() {
			if len(s.x.BackupsOf(l)) > 0 {
				cands = append(cands, l)
			}
		}
	}
	if len(cands) == 0 {
		return "", nil, fmt.Errorf("no backups: %w in %s", storage.ErrNotFound, s.store)
	}
	type hit struct {
		f found
		b *catalog.Sentinel
		l catalog.Lineage
	}
	var hits []hit
	var errs []error
	for _, l := range cands {
		bs := s.x.BackupsOf(l)
		a, err := s.archive(ctx, l, bs)
		if err != nil {
			return "", nil, err
		}
		f, b, err := a.locate(ctx, bs, m, what, t.Name != "")
		log.Info("searched the archive", append(a.describeCost(time.Since(start)), zap.String("target", what), zap.String("lineage", s.x.Name(l)))...)
		if err != nil {
			if !errors.Is(err, ErrTargetUnreachable) {
				return "", nil, err
			}
			errs = append(errs, err)
			continue
		}
		hits = append(hits, hit{f, b, l})
	}
	switch {
	case len(hits) == 0:
		return "", nil, errors.Join(errs...)
	case len(hits) > 1:
		// The same record on a history the lineages share is one target.
		for _, h := range hits[1:] {
			if h.f.lsn != hits[0].f.lsn || h.b.Name != hits[0].b.Name {
				var ls []catalog.Lineage
				for _, h := range hits {
					ls = append(ls, h.l)
				}
				return "", nil, s.x.Ambiguous("restore to "+what, ls)
			}
		}
	}
	h := hits[0]
	log.Info("recovery target found", zap.String("target", h.f.what), zap.String("backup", h.b.Name), zap.String("lineage", s.x.Name(h.l)))
	return h.b.Name, &h.l, nil
}

// checkEnd refuses a time or LSN target that recovery from sn along l
// cannot reach in the archive.
func (s *targetSearch) checkEnd(ctx context.Context, sn *catalog.Sentinel, l catalog.Lineage) error {
	t := s.opts.Target
	if t.Time == nil && t.LSN == nil {
		return nil
	}
	start := time.Now()
	a, err := s.archive(ctx, l, []*catalog.Sentinel{sn})
	if err != nil {
		return err
	}
	err = a.checkEnd(ctx, sn, t)
	s.log().Info("checked the target against the archive", append(a.describeCost(time.Since(start)), zap.String("target", describeTarget(t)))...)
	return err
}
