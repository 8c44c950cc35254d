package catalog

// Lineages: one repository may hold several histories of one cluster. A
// primary archives timeline 1; a fork restored from it and promoted
// archives timeline 2, whose .history file says it left timeline 1 at some
// LSN; the primary goes on writing timeline 1 past that point. WAL names
// and backups alone cannot tell the two apart, and Postgres' own default
// (recovery_target_timeline = 'latest') follows whichever timeline is
// newest. A Lineage names one of these histories: a system identifier and
// a timeline, with that timeline's ancestry from its .history file. A
// backup belongs to every lineage whose history runs through its whole WAL
// range (its timeline, up to at least its finish LSN); a WAL position
// (timeline, LSN) to every lineage that replays it. Every choice walgo
// makes (the delta parent, LATEST, the backup for a target, the timeline
// written into a restored cluster, what retention keeps) is made inside
// one lineage.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// ErrLineage: the lineage named does not exist, a backup is not on the
// lineage named, or the repository holds several lineages a choice could
// follow and none was named.
var ErrLineage = errors.New("lineage")

// Histories is what the archive's .history files say.
type Histories struct {
	// Parents maps a timeline to its history: its ancestors, oldest
	// first, each with the LSN where the history left it.
	Parents map[uint32][]HistoryEntry
	// Bad maps a timeline whose stored history file could not be read or
	// decoded to why.
	Bad map[uint32]error
}

// ReadHistories reads every .history file objs lists, with cd (nil reads
// unencrypted objects only). A file that cannot be fetched, decoded or
// parsed is recorded in Bad; only a store that fails (unreachable,
// permanent error) or a cancelled ctx is an error.
func ReadHistories(ctx context.Context, s storage.Store, cd *codec.Codec, objs []WALObject) (Histories, error) {
	h := Histories{Parents: map[uint32][]HistoryEntry{}, Bad: map[uint32]error{}}
	for _, o := range objs {
		tli, ok := historyTLI(o.Name)
		if !ok {
			continue
		}
		if _, done := h.Parents[tli]; done || h.Bad[tli] != nil {
			continue
		}
		parents, err := ReadTimelineHistory(ctx, s, cd, tli)
		if errors.Is(err, storage.ErrUnreachable) || errors.Is(err, storage.ErrPermanent) || ctx.Err() != nil {
			return Histories{}, err
		}
		if err != nil {
			h.Bad[tli] = err
			continue
		}
		h.Parents[tli] = parents
	}
	return h, nil
}

// Lineage is one history of a cluster: the timeline it ends on and that
// timeline's ancestry.
type Lineage struct {
	// SystemID is the cluster's system identifier, from the backups on
	// the lineage ("" when it holds none).
	SystemID string `json:"system_identifier,omitempty"`
	// Timeline is the newest timeline of the lineage: recovery along it
	// sets recovery_target_timeline to this.
	Timeline uint32 `json:"timeline"`
	// Parents are Timeline's ancestors, oldest first, each with the LSN
	// where this history left it (Timeline's .history file).
	Parents []HistoryEntry `json:"parents,omitempty"`
	// HistoryUnknown: Timeline is above 1 and its .history file is
	// missing or unreadable, so its ancestors are unknown and the lineage
	// holds its own timeline only.
	HistoryUnknown bool `json:"history_unknown,omitempty"`
}

// ID names the lineage in flags and listings: its timeline ("2").
func (l Lineage) ID() string { return strconv.FormatUint(uint64(l.Timeline), 10) }

// end returns the LSN where the lineage leaves timeline tli (the end of
// WAL for its own timeline), and whether tli is on the lineage at all.
func (l Lineage) end(tli uint32) (wal.LSN, bool) {
	if tli == l.Timeline {
		return math.MaxUint64, true
	}
	for _, e := range l.Parents {
		if e.Timeline == tli {
			return e.Switch, true
		}
	}
	return 0, false
}

// Holds reports whether WAL position lsn of timeline tli is on the
// lineage: tli is its timeline, or an ancestor the lineage leaves at or
// after lsn.
func (l Lineage) Holds(tli uint32, lsn wal.LSN) bool {
	end, ok := l.end(tli)
	return ok && lsn <= end
}

// HoldsBackup reports whether b belongs to the lineage: the same cluster,
// and the lineage's history runs through b's WAL up to its finish LSN, so
// that recovery along it reaches b's consistent point.
func (l Lineage) HoldsBackup(b *Sentinel) bool {
	if l.SystemID != "" && b.SystemID != "" && l.SystemID != b.SystemID {
		return false
	}
	return l.Holds(b.Timeline, max(b.StartLSN, b.FinishLSN))
}

// TimelineAt returns the timeline the lineage replays at lsn.
func (l Lineage) TimelineAt(lsn wal.LSN) uint32 {
	for _, e := range l.Parents {
		if lsn < e.Switch {
			return e.Timeline
		}
	}
	return l.Timeline
}

// Describe says what the lineage is, for messages: "timeline 2, from
// timeline 1 at 0/5000028".
func (l Lineage) Describe() string {
	s := fmt.Sprintf("timeline %d", l.Timeline)
	if n := len(l.Parents); n > 0 {
		p := l.Parents[n-1]
		s += fmt.Sprintf(", from timeline %d at %s", p.Timeline, p.Switch)
	}
	if l.HistoryUnknown {
		s += fmt.Sprintf(" (%s missing: ancestry unknown)", wal.HistoryName(l.Timeline))
	}
	return s
}

// path is the lineage's WAL as (timeline, end) steps, oldest first.
func (l Lineage) path() []HistoryEntry {
	return append(slices.Clone(l.Parents), HistoryEntry{Timeline: l.Timeline, Switch: math.MaxUint64})
}

// Diverge returns the LSN up to which lineages a and b replay the same
// WAL: where their histories part (math.MaxUint64 when they are one).
func Diverge(a, b Lineage) wal.LSN {
	pa, pb := a.path(), b.path()
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i].Timeline != pb[i].Timeline {
			if i == 0 {
				return 0
			}
			return pa[i-1].Switch // equal: the step before matched
		}
		if pa[i].Switch != pb[i].Switch {
			return min(pa[i].Switch, pb[i].Switch)
		}
	}
	return math.MaxUint64
}

// CheckParent says why parent cannot be the delta parent of child on the
// lineage of child (nil when it can): it must be of the same cluster, on
// child's timeline or an ancestor of it that child's history leaves at or
// after parent's finish LSN, and finish at or before child's start.
// Otherwise the parent's pages come from another history.
func (l Lineage) CheckParent(child, parent *Sentinel) error {
	switch {
	case parent.SystemID != child.SystemID:
		return fmt.Errorf("delta parent %s is of another cluster (system id %s, not %s)", parent.Name, parent.SystemID, child.SystemID)
	case parent.FinishLSN > child.StartLSN:
		return fmt.Errorf("delta parent %s finished at %s, after %s started at %s", parent.Name, parent.FinishLSN, child.Name, child.StartLSN)
	case l.Timeline != child.Timeline:
		return fmt.Errorf("backup %s is on timeline %d, not on lineage %s", child.Name, child.Timeline, l.ID())
	case l.HoldsBackup(parent):
		return nil
	}
	end, ok := l.end(parent.Timeline)
	switch {
	case !ok && l.HistoryUnknown:
		return fmt.Errorf("delta parent %s is on timeline %d, and %s (timeline %d's history) is missing: its ancestry cannot be checked",
			parent.Name, parent.Timeline, wal.HistoryName(l.Timeline), l.Timeline)
	case !ok:
		return fmt.Errorf("delta parent %s is on timeline %d, which is not in the history of timeline %d (%s): another history",
			parent.Name, parent.Timeline, l.Timeline, l.Describe())
	}
	return fmt.Errorf("delta parent %s finished at %s on timeline %d, after timeline %d's history left timeline %d at %s: another history",
		parent.Name, parent.FinishLSN, parent.Timeline, l.Timeline, parent.Timeline, end)
}

// LineageIndex is every lineage a repository knows: one per timeline its
// WAL file names, .history files and backups name (per system
// identifier, when the backups name several), and the backups on each.
type LineageIndex struct {
	hist      Histories
	backups   []*Sentinel // oldest finish first
	timelines []uint32    // sorted
	lineages  []Lineage   // by system id, then timeline
	multiSys  bool
}

// NewLineageIndex builds the index from what a repository holds: its
// finished backups, its WAL listing and its parsed history files.
func NewLineageIndex(backups []*Sentinel, objs []WALObject, h Histories) *LineageIndex {
	if h.Parents == nil {
		h.Parents = map[uint32][]HistoryEntry{}
	}
	x := &LineageIndex{hist: h, backups: slices.Clone(backups)}
	sort.SliceStable(x.backups, func(i, j int) bool {
		if !x.backups[i].FinishTime.Equal(x.backups[j].FinishTime) {
			return x.backups[i].FinishTime.Before(x.backups[j].FinishTime)
		}
		return x.backups[i].Name < x.backups[j].Name
	})
	known := map[uint32]bool{}
	for _, o := range objs {
		if o.Kind == wal.KindUnknown {
			continue
		}
		if tli, ok := timelineOf(o.Name); ok && tli > 0 {
			known[tli] = true
		}
	}
	for tli, parents := range h.Parents {
		known[tli] = true
		for _, e := range parents {
			known[e.Timeline] = true
		}
	}
	for tli := range h.Bad {
		known[tli] = true
	}
	sysids := map[string]bool{}
	for _, b := range x.backups {
		if b.Timeline > 0 {
			known[b.Timeline] = true
		}
		if b.SystemID != "" {
			sysids[b.SystemID] = true
		}
	}
	for tli := range known {
		x.timelines = append(x.timelines, tli)
	}
	slices.Sort(x.timelines)
	x.multiSys = len(sysids) > 1
	ids := make([]string, 0, len(sysids))
	for id := range sysids {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, tli := range x.timelines {
		l := x.bare(tli)
		var of []string
		for _, id := range ids {
			l.SystemID = id
			if slices.ContainsFunc(x.backups, l.HoldsBackup) {
				of = append(of, id)
			}
		}
		switch {
		case len(of) == 0 && len(ids) == 1:
			of = ids // WAL only, and one cluster: its
		case len(of) == 0:
			of = []string{""}
		}
		for _, id := range of {
			l.SystemID = id
			x.lineages = append(x.lineages, l)
		}
	}
	sort.SliceStable(x.lineages, func(i, j int) bool { return x.lineages[i].SystemID < x.lineages[j].SystemID })
	return x
}

// ReadLineageIndex lists a repository's backups and WAL and reads its
// history files with cd.
func ReadLineageIndex(ctx context.Context, s storage.Store, cd *codec.Codec) (*LineageIndex, error) {
	backups, err := ListBackups(ctx, s)
	if err != nil {
		return nil, err
	}
	objs, err := ListWAL(ctx, s)
	if err != nil {
		return nil, err
	}
	h, err := ReadHistories(ctx, s, cd, objs)
	if err != nil {
		return nil, err
	}
	return NewLineageIndex(backups, objs, h), nil
}

// bare is the lineage of timeline tli without a system identifier.
func (x *LineageIndex) bare(tli uint32) Lineage {
	l := Lineage{Timeline: tli}
	if parents, ok := x.hist.Parents[tli]; ok {
		l.Parents = slices.Clone(parents)
	} else if tli > 1 {
		l.HistoryUnknown = true
	}
	return l
}

// Lineage is the lineage of timeline tli of cluster systemID, whether or
// not the repository holds anything of it yet (a server's own timeline).
func (x *LineageIndex) Lineage(systemID string, tli uint32) Lineage {
	l := x.bare(tli)
	l.SystemID = systemID
	return l
}

// All returns every lineage, by system identifier then timeline.
func (x *LineageIndex) All() []Lineage { return slices.Clone(x.lineages) }

// Backups returns the finished backups, oldest finish first.
func (x *LineageIndex) Backups() []*Sentinel { return slices.Clone(x.backups) }

// BackupsOf returns the backups on lineage l, oldest finish first.
func (x *LineageIndex) BackupsOf(l Lineage) []*Sentinel {
	var out []*Sentinel
	for _, b := range x.backups {
		if l.HoldsBackup(b) {
			out = append(out, b)
		}
	}
	return out
}

// Of returns the lineages b belongs to: its own timeline's first, then
// the descendants whose history leaves b's timeline at or after b's
// finish.
func (x *LineageIndex) Of(b *Sentinel) []Lineage {
	var own, out []Lineage
	for _, l := range x.lineages {
		if !l.HoldsBackup(b) || (l.SystemID != b.SystemID && b.SystemID != "") {
			continue
		}
		if l.Timeline == b.Timeline {
			own = append(own, l)
		} else {
			out = append(out, l)
		}
	}
	return append(own, out...)
}

// Name is how listings and messages name l: its ID, prefixed with the
// system identifier when the repository holds backups of several clusters.
func (x *LineageIndex) Name(l Lineage) string {
	if x.multiSys && l.SystemID != "" {
		return l.SystemID + ":" + l.ID()
	}
	return l.ID()
}

// Names is Name of each lineage.
func (x *LineageIndex) Names(ls []Lineage) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = x.Name(l)
	}
	return out
}

// Find returns the lineage a user named: a timeline ("2"), or
// "SYSTEMID:TIMELINE" where backups of several clusters share the
// repository. ErrLineage, listing the lineages there are, when the
// repository knows no such timeline or the name is ambiguous.
func (x *LineageIndex) Find(name string) (Lineage, error) {
	sys, tl, hasSys := strings.Cut(strings.TrimSpace(name), ":")
	if !hasSys {
		sys, tl = "", sys
	}
	v, err := strconv.ParseUint(strings.TrimSpace(tl), 10, 32)
	if err != nil || v == 0 {
		return Lineage{}, fmt.Errorf("%w %q: want a timeline number (or SYSTEM_ID:TIMELINE); %s", ErrLineage, name, x.listing())
	}
	var found []Lineage
	for _, l := range x.lineages {
		if l.Timeline == uint32(v) && (!hasSys || l.SystemID == sys) {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return Lineage{}, fmt.Errorf("%w %s: the repository holds no timeline %d; %s", ErrLineage, name, v, x.listing())
	}
	return Lineage{}, fmt.Errorf("%w %s: backups of %d clusters are on timeline %d: name one as %s", ErrLineage, name, len(found), v,
		strings.Join(x.Names(found), " or "))
}

// listing names every lineage, for an error message.
func (x *LineageIndex) listing() string {
	if len(x.lineages) == 0 {
		return "it holds none"
	}
	return "it holds lineages " + strings.Join(x.Names(x.lineages), ", ")
}

// Ambiguous is the error for a choice that several lineages could make
// (what says which choice, e.g. "restore LATEST"): it names each with its
// history and newest backup, and how to pick one.
func (x *LineageIndex) Ambiguous(what string, cands []Lineage) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: the repository holds %d histories this could follow (a fork, or a point-in-time restore promoted, archiving into the same repository); name one with --lineage (or WALGO_LINEAGE):", what, len(cands))
	for _, l := range cands {
		fmt.Fprintf(&b, "\n  lineage %s: %s", x.Name(l), l.Describe())
		if bs := x.BackupsOf(l); len(bs) > 0 {
			n := bs[len(bs)-1]
			fmt.Fprintf(&b, "; %d backups, newest %s (timeline %d, finished %s)", len(bs), n.Name, n.Timeline, n.FinishTime.UTC().Format(time.RFC3339))
		} else {
			b.WriteString("; no backups")
		}
	}
	return fmt.Errorf("%w: %s", ErrLineage, b.String())
}

// CommonAt returns the lineage that every one of ls replays at lsn when
// they all replay the same WAL up to lsn (the lineage of the timeline they
// are on there); ok is false when their histories part before lsn.
func (x *LineageIndex) CommonAt(ls []Lineage, lsn wal.LSN) (Lineage, bool) {
	if len(ls) == 0 {
		return Lineage{}, false
	}
	for _, l := range ls[1:] {
		if Diverge(ls[0], l) < lsn {
			return Lineage{}, false
		}
	}
	return x.Lineage(ls[0].SystemID, ls[0].TimelineAt(lsn)), true
}

// ParentOf returns the backup a delta of a server on lineage l, starting
// at start, builds on: the newest backup (by finish time) on l that
// finished at or before start, or nil when there is none.
func (x *LineageIndex) ParentOf(l Lineage, start wal.LSN) *Sentinel {
	bs := x.BackupsOf(l)
	for i := len(bs) - 1; i >= 0; i-- {
		if bs[i].SystemID == l.SystemID && bs[i].FinishLSN <= start {
			return bs[i]
		}
	}
	return nil
}

// ReadLineage reads the lineage of timeline tli of cluster systemID from
// its .history file alone, without listing the archive. A missing or
// unreadable history file gives a lineage with HistoryUnknown set; only a
// store that fails, or a missing or wrong age key, is an error.
func ReadLineage(ctx context.Context, s storage.Store, cd *codec.Codec, systemID string, tli uint32) (Lineage, error) {
	l := Lineage{SystemID: systemID, Timeline: tli}
	if tli <= 1 {
		return l, nil
	}
	parents, err := ReadTimelineHistory(ctx, s, cd, tli)
	switch {
	case err == nil:
		l.Parents = parents
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, codec.ErrCorrupt), errors.Is(err, codec.ErrUnknown):
		l.HistoryUnknown = true
	default:
		return Lineage{}, err
	}
	return l, nil
}

// OnTimeline returns the lineages whose history runs through timeline tli,
// each with the LSN where it leaves tli (math.MaxUint64 for tli's own).
func (x *LineageIndex) OnTimeline(tli uint32) ([]Lineage, []wal.LSN) {
	var ls []Lineage
	var ends []wal.LSN
	for _, l := range x.lineages {
		if end, ok := l.end(tli); ok {
			ls = append(ls, l)
			ends = append(ends, end)
		}
	}
	return ls, ends
}

// HoldsDump reports whether dump d was taken of a server on the lineage:
// the same cluster, at a WAL location of the lineage. A dump that does not
// record where it was taken belongs to none.
func (l Lineage) HoldsDump(d *DumpSentinel) bool {
	if d.Timeline == 0 || l.SystemID != "" && d.SystemID != "" && l.SystemID != d.SystemID {
		return false
	}
	return l.Holds(d.Timeline, d.LSN)
}

// OfDump returns the lineages dump d belongs to.
func (x *LineageIndex) OfDump(d *DumpSentinel) []Lineage {
	var out []Lineage
	for _, l := range x.lineages {
		if l.HoldsDump(d) {
			out = append(out, l)
		}
	}
	return out
}
