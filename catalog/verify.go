package catalog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// WAL continuity: can every backup be recovered, and up to where?
//
// Recovery from a backup replays WAL from the segment holding its start LSN,
// on its timeline. At a timeline switch recorded in a history file, replay
// continues on the child timeline: the parent's segments up to (not
// including) the segment holding the switch point, then the child's from
// that segment on (Postgres reads the switch segment from the newest
// timeline that holds it; the parent's copy is archived only as .partial).

// maxHistorySize bounds a history file read into memory: one line per
// ancestor timeline, so real ones are a few KiB.
const maxHistorySize = 1 << 20

// HistoryEntry is one line of a timeline history file: timeline Timeline
// ended at Switch, where the next timeline of the history began.
type HistoryEntry struct {
	Timeline uint32  `json:"timeline"`
	Switch   wal.LSN `json:"switch_lsn"`
	Reason   string  `json:"reason,omitempty"`
}

// ParseTimelineHistory reads a timeline history file as Postgres does
// (readTimeLineHistory): lines "parentTLI<TAB>switchpoint<TAB>reason",
// blank lines and lines starting with '#' ignored, leading white space
// skipped. Timeline ids must increase and switch points must not decrease.
// Anything else wraps codec.ErrCorrupt. An empty file gives no entries.
func ParseTimelineHistory(r io.Reader) ([]HistoryEntry, error) {
	var out []HistoryEntry
	sc := bufio.NewScanner(io.LimitReader(r, maxHistorySize+1))
	sc.Buffer(make([]byte, 4096), maxHistorySize)
	read := 0
	for n := 1; sc.Scan(); n++ {
		read += len(sc.Bytes()) + 1
		if read > maxHistorySize {
			return nil, fmt.Errorf("%w: history file larger than %d bytes", codec.ErrCorrupt, maxHistorySize)
		}
		line := strings.TrimLeft(sc.Text(), " \t\r\n\v\f")
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimRight(line, "\r")
		fields := strings.SplitN(line, "\t", 3)
		if len(fields) < 2 {
			return nil, fmt.Errorf("%w: history line %d: want timeline, switch point and reason", codec.ErrCorrupt, n)
		}
		tli, err := strconv.ParseUint(strings.TrimSpace(fields[0]), 10, 32)
		if err != nil || tli == 0 {
			return nil, fmt.Errorf("%w: history line %d: invalid timeline %q", codec.ErrCorrupt, n, fields[0])
		}
		lsn, err := wal.ParseLSN(strings.TrimSpace(fields[1]))
		if err != nil {
			return nil, fmt.Errorf("%w: history line %d: %v", codec.ErrCorrupt, n, err)
		}
		e := HistoryEntry{Timeline: uint32(tli), Switch: lsn}
		if len(fields) == 3 {
			e.Reason = strings.TrimSpace(fields[2])
		}
		if k := len(out); k > 0 {
			if e.Timeline <= out[k-1].Timeline {
				return nil, fmt.Errorf("%w: history line %d: timeline ids must increase", codec.ErrCorrupt, n)
			}
			if e.Switch < out[k-1].Switch {
				return nil, fmt.Errorf("%w: history line %d: switch points must not decrease", codec.ErrCorrupt, n)
			}
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: history line longer than %d bytes", codec.ErrCorrupt, maxHistorySize)
		}
		return nil, err
	}
	return out, nil
}

// ReadTimelineHistory fetches and parses the history file of timeline tli, decoding
// it with cd (nil reads unencrypted objects only), as wal-fetch would. It
// wraps storage.ErrNotFound when the archive does not hold it and
// codec.ErrCorrupt when it cannot be decoded or parsed, or names timelines
// that are not older than tli.
func ReadTimelineHistory(ctx context.Context, s storage.Store, cd *codec.Codec, tli uint32) ([]HistoryEntry, error) {
	name := wal.HistoryName(tli)
	found, err := OpenWAL(ctx, s, name, cd)
	if err != nil {
		return nil, err
	}
	o, rc := found.WALObject, found.Body
	defer rc.Close()
	dec, err := cd.Decode(o.Ext, rc)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", o.Key, err)
	}
	defer dec.Close()
	h, err := ParseTimelineHistory(dec)
	if err == nil {
		_, err = io.Copy(io.Discard, dec) // to the codec's end and its checks
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", o.Key, err)
	}
	for _, e := range h {
		if e.Timeline >= tli {
			return nil, fmt.Errorf("%w: %s: lists timeline %d, not older than %d", codec.ErrCorrupt, o.Key, e.Timeline, tli)
		}
	}
	return h, nil
}

// TimelineReport is one timeline of a WAL verification.
type TimelineReport struct {
	Timeline
	// Parents is the timeline's history (its ancestors and where each ended).
	Parents []HistoryEntry `json:"parents,omitempty"`
	// HistoryMissing: a timeline above 1 that the archive knows (segments,
	// .partial files, or named by another history) without its .history.
	HistoryMissing bool `json:"history_missing"`
	// HistoryError says why a stored history file could not be read.
	HistoryError string `json:"history_error,omitempty"`
}

// PathStep is one timeline of the WAL a recovery replays: segments First to
// Last of that timeline. An empty First means no segment is needed from it.
type PathStep struct {
	Timeline uint32 `json:"timeline"`
	First    string `json:"first"`
	Last     string `json:"last"`
	Count    uint64 `json:"segments"`
}

// TimelineGap is a run of missing segments on a recovery's path.
type TimelineGap struct {
	Timeline uint32 `json:"timeline"`
	Gap
}

// BackupWAL says whether one backup can be recovered along one lineage,
// and up to where.
type BackupWAL struct {
	Backup string `json:"backup"`
	// Lineage is the history this entry follows (LineageIndex.Name); a
	// backup has one entry per lineage it belongs to.
	Lineage       string  `json:"lineage"`
	Timeline      uint32  `json:"timeline"`
	StartLSN      wal.LSN `json:"start_lsn"`
	FinishLSN     wal.LSN `json:"finish_lsn"`
	StartSegment  string  `json:"start_segment"`
	FinishSegment string  `json:"finish_segment"`
	// Follows is the timeline recovery ends on: the lineage's.
	Follows uint32     `json:"follows_timeline"`
	Path    []PathStep `json:"path"`
	// Restorable: every segment up to the finish LSN's is archived, so the
	// backup can reach a consistent state.
	Restorable bool `json:"restorable"`
	// PITRUpTo is how far recovery can go without a gap: the end of
	// segment PITRUpToSegment. Zero when the backup is not restorable.
	PITRUpTo        wal.LSN `json:"pitr_up_to_lsn"`
	PITRUpToSegment string  `json:"pitr_up_to_segment"`
	// Gaps are the missing runs on the path, FirstGap the earliest.
	Gaps     []TimelineGap `json:"gaps"`
	FirstGap *TimelineGap  `json:"first_gap,omitempty"`
	// MissingHistory lists timelines from the backup's own up whose history
	// file is missing or unreadable: whether recovery could follow them
	// cannot be told.
	MissingHistory []uint32 `json:"missing_history,omitempty"`
	Problems       []string `json:"problems"`
	Notes          []string `json:"notes,omitempty"`
	OK             bool     `json:"ok"`
}

// WALReport is the result of a WAL continuity check.
type WALReport struct {
	SegmentSize int64            `json:"wal_segment_size"`
	Timelines   []TimelineReport `json:"timelines"`
	Backups     []BackupWAL      `json:"backups"`
	// Headers is what reading every segment's header found (VerifyWAL).
	Headers *HeaderCheck `json:"headers,omitempty"`
	// Problems are the findings that fail the check: broken backups,
	// missing or unreadable history files, segments whose header does not
	// match their name or cluster.
	Problems []string `json:"problems"`
	OK       bool     `json:"ok"`
}

// VerifyWAL lists the archive, reads every history file with cd, reads
// every segment's page header (CheckWALHeaders: a segment whose header is
// wrong counts as missing) and checks the continuity of the WAL each
// backup needs (see CheckContinuity). Only failures to list or read the
// store are errors; what the archive lacks is in the report.
func VerifyWAL(ctx context.Context, s storage.Store, cd *codec.Codec, backups []*Sentinel, segSize int64) (*WALReport, error) {
	if !wal.ValidSegmentSize(segSize) {
		return nil, fmt.Errorf("invalid wal segment size %d", segSize)
	}
	objs, err := ListWAL(ctx, s)
	if err != nil {
		return nil, err
	}
	h, err := ReadHistories(ctx, s, cd, objs)
	if err != nil {
		return nil, err
	}
	bad := map[uint32]string{}
	for tli, err := range h.Bad {
		if !errors.Is(err, codec.ErrCorrupt) && !errors.Is(err, codec.ErrUnknown) && !errors.Is(err, storage.ErrNotFound) {
			return nil, err // a missing or wrong key: say so, not "unreadable"
		}
		bad[tli] = err.Error()
	}
	// Every segment's header, not only its name: one holding another
	// segment's content or another cluster's WAL breaks recovery as a
	// missing one does, so it counts as missing below.
	var ids []string
	for _, b := range backups {
		ids = append(ids, b.SystemID)
	}
	hc, err := CheckWALHeaders(ctx, s, cd, objs, segSize, ids)
	if err != nil {
		return nil, err
	}
	badKeys := map[string]bool{}
	for _, b := range hc.Bad {
		badKeys[b.Key] = true
	}
	good := objs[:0:0]
	for _, o := range objs {
		if !badKeys[o.Key] {
			good = append(good, o)
		}
	}
	rep := CheckContinuity(good, h.Parents, bad, backups, segSize)
	rep.Headers = hc
	for _, b := range hc.Bad {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s", b.Key, b.Problem))
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

// historyTLI is the timeline of a history file name.
func historyTLI(name string) (uint32, bool) {
	if wal.Classify(name) != wal.KindHistory {
		return 0, false
	}
	v, err := strconv.ParseUint(name[:8], 16, 32)
	return uint32(v), err == nil
}

// walIndex is the archive's segments and histories, for path walking.
type walIndex struct {
	segSize int64
	segs    map[uint32][]uint64 // timeline -> sorted segment numbers
	hist    map[uint32][]HistoryEntry
	bad     map[uint32]string
	missing map[uint32]bool // timelines > 1 known without a readable or present history
}

// CheckContinuity judges, from the archive's listing objs and the parsed
// history files (hist, by timeline; bad holds why a stored history could
// not be read), whether each backup can be recovered and how far, along
// each lineage it belongs to (LineageIndex.Of): a restore follows one
// history only, so each must be whole on its own.
//
// For each backup and lineage it walks the path recovery takes: from the
// segment holding StartLSN on the backup's timeline, along the lineage (its
// ancestors' segments up to each switch point's segment, then its own to
// its newest archived segment). Every missing segment on that path is a
// gap; the first says how far point-in-time recovery can go, and one at or
// before the finish LSN's segment means the backup cannot be restored. A
// lineage whose timeline has no archived segment at or after the point
// where a descendant holding the backup left it (a failover, or a fork not
// yet overtaken by its origin) is only a prefix of that descendant's, and
// is not walked on its own.
//
// A timeline above 1 that has segments or .partial files, or that a
// history names as an ancestor, without a readable history file, fails the
// check: Postgres finds the newest timeline by probing history files, so
// recovery would stop following there. The report is OK when no backup
// has a gap on its path and no history file is missing.
func CheckContinuity(objs []WALObject, hist map[uint32][]HistoryEntry, bad map[uint32]string, backups []*Sentinel, segSize int64) *WALReport {
	ix := &walIndex{segSize: segSize, segs: map[uint32][]uint64{}, hist: hist, bad: bad, missing: map[uint32]bool{}}
	if ix.hist == nil {
		ix.hist = map[uint32][]HistoryEntry{}
	}
	if ix.bad == nil {
		ix.bad = map[uint32]string{}
	}
	known := map[uint32]bool{}
	seen := map[string]bool{}
	for _, o := range objs {
		switch o.Kind {
		case wal.KindSegment:
			s, err := wal.ParseSegment(o.Name)
			if err != nil || !s.Valid(segSize) {
				continue
			}
			known[s.Timeline] = true
			if !seen[o.Name] {
				seen[o.Name] = true
				ix.segs[s.Timeline] = append(ix.segs[s.Timeline], s.No(segSize))
			}
		case wal.KindPartial:
			if s, err := wal.ParseSegment(o.Name[:24]); err == nil {
				known[s.Timeline] = true
			}
		}
	}
	for tli, h := range ix.hist {
		known[tli] = true
		for _, e := range h {
			known[e.Timeline] = true
		}
	}
	for tli := range ix.bad {
		known[tli] = true
	}
	for _, ss := range ix.segs {
		slices.Sort(ss)
	}
	for tli := range known {
		_, ok := ix.hist[tli]
		if tli > 1 && !ok && ix.bad[tli] == "" {
			ix.missing[tli] = true
		}
	}

	rep := &WALReport{SegmentSize: segSize, Timelines: []TimelineReport{}, Backups: []BackupWAL{}, Problems: []string{}}
	byID := map[uint32]*Timeline{}
	sums := Summarize(objs, segSize)
	for i := range sums {
		byID[sums[i].ID] = &sums[i]
	}
	ids := make([]uint32, 0, len(known))
	for tli := range known {
		ids = append(ids, tli)
	}
	slices.Sort(ids)
	for _, tli := range ids {
		tr := TimelineReport{Timeline: Timeline{ID: tli, Gaps: []Gap{}}}
		if s := byID[tli]; s != nil {
			tr.Timeline = *s
		}
		tr.Parents = ix.hist[tli]
		tr.HistoryError = ix.bad[tli]
		tr.HistoryMissing = ix.missing[tli]
		switch {
		case tr.HistoryError != "":
			rep.Problems = append(rep.Problems, fmt.Sprintf("timeline %d: history file %s unreadable: %s", tli, wal.HistoryName(tli), tr.HistoryError))
		case tr.HistoryMissing:
			rep.Problems = append(rep.Problems, fmt.Sprintf("timeline %d: history file %s is missing (the timeline has %s)", tli, wal.HistoryName(tli), ix.evidence(tli, byID[tli])))
		}
		rep.Timelines = append(rep.Timelines, tr)
	}
	badErr := map[uint32]error{}
	for tli, why := range ix.bad {
		badErr[tli] = errors.New(why)
	}
	x := NewLineageIndex(backups, objs, Histories{Parents: ix.hist, Bad: badErr})
	several := len(x.All()) > 1
	for _, b := range backups {
		ls := x.Of(b)
		if len(ls) == 0 {
			ls = []Lineage{x.Lineage(b.SystemID, b.Timeline)}
		}
		var walk []Lineage
		for _, l := range ls {
			if !ix.prefix(l, ls) {
				walk = append(walk, l)
			}
		}
		if len(walk) == 0 {
			walk = ls[:1]
		}
		said := map[string]bool{} // a problem of the backup, not of one lineage, is said once
		for _, l := range walk {
			bw := ix.backup(b, l, ids)
			bw.Lineage = x.Name(l)
			who := b.Name
			if several {
				who += " on lineage " + bw.Lineage
			}
			for _, p := range bw.Problems {
				if !said[p] {
					said[p] = true
					rep.Problems = append(rep.Problems, who+": "+p)
				}
			}
			rep.Backups = append(rep.Backups, bw)
		}
	}
	rep.OK = len(rep.Problems) == 0
	return rep
}

// prefix reports whether lineage l of a backup is only the start of
// another of its lineages (ls): a descendant left l's timeline at a point
// after which the archive holds no segment of it.
func (ix *walIndex) prefix(l Lineage, ls []Lineage) bool {
	ss := ix.segs[l.Timeline]
	for _, d := range ls {
		for _, e := range d.Parents {
			if e.Timeline != l.Timeline {
				continue
			}
			sw := uint64(e.Switch) / uint64(ix.segSize)
			if len(ss) == 0 || ss[len(ss)-1] < sw {
				return true
			}
		}
	}
	return false
}

// evidence says why a timeline is known, for a missing history message.
func (ix *walIndex) evidence(tli uint32, s *Timeline) string {
	var parts []string
	if s != nil && s.Count > 0 {
		parts = append(parts, nSegments(uint64(s.Count)))
	}
	if s != nil && s.Partials > 0 {
		parts = append(parts, fmt.Sprintf("%d .partial files", s.Partials))
	}
	var children []string
	for child, h := range ix.hist {
		for _, e := range h {
			if e.Timeline == tli {
				children = append(children, wal.HistoryName(child))
				break
			}
		}
	}
	if len(children) > 0 {
		sort.Strings(children)
		parts = append(parts, "ancestor in "+strings.Join(children, ", "))
	}
	return strings.Join(parts, ", ")
}

// rng is one step of a recovery path: segments from to end-1 of a
// timeline; empty when end <= from.
type rng struct {
	tli       uint32
	from, end uint64
}

// backup walks one backup's recovery path along lineage l.
func (ix *walIndex) backup(b *Sentinel, l Lineage, ids []uint32) BackupWAL {
	seg := ix.segSize
	t0 := b.Timeline
	bw := BackupWAL{
		Backup: b.Name, Timeline: t0, StartLSN: b.StartLSN, FinishLSN: b.FinishLSN,
		Path: []PathStep{}, Gaps: []TimelineGap{}, Problems: []string{},
	}
	if t0 == 0 {
		bw.Problems = append(bw.Problems, "the sentinel names no timeline")
		return bw
	}
	if b.SegmentSize != 0 && b.SegmentSize != seg {
		bw.Problems = append(bw.Problems, fmt.Sprintf("the backup's wal_segment_size is %d, not %d: set WALGO_WAL_SEGMENT_SIZE", b.SegmentSize, seg))
		return bw
	}
	start := uint64(b.StartLSN) / uint64(seg)
	finishLSN := b.FinishLSN
	if finishLSN > b.StartLSN {
		finishLSN-- // the finish LSN ends the last record: its last byte is before it
	}
	finish := max(start, uint64(finishLSN)/uint64(seg))
	bw.StartSegment = wal.SegmentFromNo(t0, start, seg).Name()
	bw.FinishSegment = wal.SegmentFromNo(t0, finish, seg).Name()

	for _, tli := range ids {
		if tli >= t0 && (ix.missing[tli] || ix.bad[tli] != "") {
			bw.MissingHistory = append(bw.MissingHistory, tli)
		}
	}
	if len(bw.MissingHistory) > 0 {
		names := make([]string, len(bw.MissingHistory))
		for i, tli := range bw.MissingHistory {
			names[i] = wal.HistoryName(tli)
		}
		which := "those timelines"
		if len(names) == 1 {
			which = "that timeline"
		}
		bw.Problems = append(bw.Problems, fmt.Sprintf("%s missing or unreadable: cannot tell whether recovery from this backup must follow %s",
			strings.Join(names, ", "), which))
	}

	// Along the lineage: t0 to where the lineage leaves it, each later
	// ancestor, then the lineage's own timeline to its newest segment.
	follow, steps := l.Timeline, []rng{{tli: t0, from: start, end: ix.end(t0, start)}}
	if k := slices.IndexFunc(l.Parents, func(e HistoryEntry) bool { return e.Timeline == t0 }); k >= 0 {
		steps = nil
		from := start
		for _, e := range l.Parents[k:] {
			sw := uint64(e.Switch) / uint64(seg) // the child reads this segment from its own timeline
			steps = append(steps, rng{tli: e.Timeline, from: from, end: sw})
			from = max(from, sw)
		}
		steps = append(steps, rng{tli: l.Timeline, from: from, end: ix.end(l.Timeline, from)})
	}
	bw.Follows = follow
	for _, tli := range ids {
		h, ok := ix.hist[tli]
		if !ok || tli <= t0 {
			continue
		}
		if k := slices.IndexFunc(h, func(e HistoryEntry) bool { return e.Timeline == t0 }); k >= 0 && h[k].Switch > b.StartLSN && h[k].Switch < b.FinishLSN {
			bw.Notes = append(bw.Notes, fmt.Sprintf("timeline %d left timeline %d at %s, while this backup ran: it cannot be restored along timeline %d", tli, t0, h[k].Switch, tli))
		}
	}
	// The WAL up to the finish segment is needed whatever the archive holds.
	if last := &steps[len(steps)-1]; last.from <= finish {
		last.end = max(last.end, finish+1)
	}

	for _, st := range steps {
		if st.end <= st.from {
			continue
		}
		bw.Path = append(bw.Path, PathStep{
			Timeline: st.tli,
			First:    wal.SegmentFromNo(st.tli, st.from, seg).Name(),
			Last:     wal.SegmentFromNo(st.tli, st.end-1, seg).Name(),
			Count:    st.end - st.from,
		})
		bw.Gaps = append(bw.Gaps, ix.gaps(st)...)
	}
	// How far recovery gets: the segment before the first gap, or the end.
	reach := uint64(0) // one past the last segment reached
	if len(bw.Gaps) > 0 {
		g := bw.Gaps[0]
		bw.FirstGap = &g
		f, _ := wal.ParseSegment(g.First)
		reach = f.No(seg)
	} else if len(steps) > 0 {
		for _, st := range steps {
			reach = max(reach, st.end)
		}
	}
	if reach > finish {
		bw.Restorable = true
		for _, st := range steps {
			if st.from < reach && reach <= st.end {
				s := wal.SegmentFromNo(st.tli, reach-1, seg)
				bw.PITRUpToSegment = s.Name()
				bw.PITRUpTo = wal.LSN(reach * uint64(seg))
			}
		}
	}
	if g := bw.FirstGap; g != nil {
		if bw.Restorable {
			bw.Problems = append(bw.Problems, fmt.Sprintf("gap on timeline %d: %s missing (%s): point-in-time recovery stops at %s (end of %s)",
				g.Timeline, gapRange(g.Gap), nSegments(g.Count), bw.PITRUpTo, bw.PITRUpToSegment))
		} else {
			bw.Problems = append(bw.Problems, fmt.Sprintf("not restorable: %s missing (timeline %d, %s), needed to reach the finish segment %s",
				gapRange(g.Gap), g.Timeline, nSegments(g.Count), bw.FinishSegment))
		}
		for _, g := range bw.Gaps[1:] {
			bw.Problems = append(bw.Problems, fmt.Sprintf("further gap on timeline %d: %s missing (%s)", g.Timeline, gapRange(g.Gap), nSegments(g.Count)))
		}
	}
	bw.OK = len(bw.Problems) == 0
	return bw
}

// nSegments is "1 segment", "2 segments".
func nSegments(n uint64) string {
	if n == 1 {
		return "1 segment"
	}
	return fmt.Sprintf("%d segments", n)
}

func gapRange(g Gap) string {
	if g.First == g.Last {
		return g.First
	}
	return g.First + ".." + g.Last
}

// end is one past the newest archived segment of tli, or from when it has
// none from from on (the step is then empty).
func (ix *walIndex) end(tli uint32, from uint64) uint64 {
	ss := ix.segs[tli]
	if len(ss) == 0 || ss[len(ss)-1] < from {
		return from
	}
	return ss[len(ss)-1] + 1
}

// gaps lists the missing runs of segments st.from..st.end-1.
func (ix *walIndex) gaps(st rng) []TimelineGap {
	ss := ix.segs[st.tli]
	i, _ := slices.BinarySearch(ss, st.from)
	var out []TimelineGap
	next := st.from
	add := func(a, b uint64) { // a..b-1 missing
		out = append(out, TimelineGap{Timeline: st.tli, Gap: Gap{
			First: wal.SegmentFromNo(st.tli, a, ix.segSize).Name(),
			Last:  wal.SegmentFromNo(st.tli, b-1, ix.segSize).Name(),
			Count: b - a,
		}})
	}
	for ; i < len(ss) && ss[i] < st.end; i++ {
		if ss[i] > next {
			add(next, ss[i])
		}
		next = ss[i] + 1
	}
	if next < st.end {
		add(next, st.end)
	}
	return out
}
