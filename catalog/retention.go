package catalog

// Retention: PlanDelete decides, as a pure function of what a repository
// holds, which backups, unfinished-backup leftovers and WAL files a delete
// command removes and why everything else stays; Apply removes them in an
// order that keeps the repository consistent if it is interrupted.
//
// The rules, in order:
//
//  1. The request selects the backups to keep, in every lineage (history)
//     on its own (LineageIndex), or in the one Lineage names: the N newest
//     of each (by finish time, never by name), the N newest full backups
//     of each and every delta built on them, those that finished at or
//     after a time (and of a lineage that would lose all, its newest),
//     those of each that a recovery to any moment of a window needs
//     (window: every backup that finished inside it and the newest that
//     finished before it starts), none (everything), or all (garbage). A
//     backup shared by several lineages counts in each.
//  2. Permanent backups are kept (only "everything" with Force deletes them).
//  3. The whole delta chain of every kept backup is kept.
//  4. A WAL segment (and a .partial or .backup file, by the segment it
//     names) is kept when some kept backup can replay through it along a
//     lineage it is kept for: from the segment holding the backup's start
//     LSN, on the backup's timeline and the lineage's later timelines, up
//     to the segment holding the point where the lineage leaves each. A
//     backup kept whatever the lineage (permanent, a chain parent, garbage,
//     before) keeps what any recovery from it could replay: its timeline
//     and every timeline descending from it (by the .history files) that
//     forked at or after its start. So no lineage loses WAL because
//     another has newer backups. A timeline whose
//     history is missing or unreadable may descend from any lower one, so
//     its WAL is kept from the oldest such backup's start on. Unfinished
//     backups that are left alone because they may still be running
//     protect WAL from their start segment the same way.
//  5. .history files are kept unless everything is deleted; when no
//     finished backup is kept, WAL is left alone (there is nothing to
//     measure it against), except by "everything".
//  6. Foreign backups (another tool's, a newer walgo's, damaged
//     sentinels: see ForeignBackup) are never deleted but by
//     "everything", and protect the WAL from their start like kept
//     backups do, unless IncludeForeign; one whose start is unknown keeps
//     all WAL.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// ErrBadRequest: a delete request that is invalid or would do something
// unsafe (such as deleting every backup by age).
var ErrBadRequest = errors.New("delete refused")

// ErrChanged: the repository changed between planning and deleting in a
// way that makes the plan unsafe; nothing more is deleted.
var ErrChanged = errors.New("repository changed since the plan")

// DeleteMode is what a delete command selects.
type DeleteMode int

// The delete commands.
const (
	DeleteRetain     DeleteMode = iota + 1 // keep the N newest backups
	DeleteRetainFull                       // keep the N newest full backups and their deltas
	DeleteBefore                           // delete backups that finished before a time or a named backup
	DeleteEverything                       // delete every backup and all WAL
	DeleteGarbage                          // delete leftovers of unfinished backups and WAL no backup needs
	DeleteWindow                           // keep what a recovery to any moment of the last Window needs
)

func (m DeleteMode) String() string {
	switch m {
	case DeleteRetain:
		return "retain"
	case DeleteRetainFull:
		return "retain-full"
	case DeleteBefore:
		return "before"
	case DeleteEverything:
		return "everything"
	case DeleteGarbage:
		return "garbage"
	case DeleteWindow:
		return "window"
	}
	return "unknown"
}

// DeleteRequest is what an operator asked for.
type DeleteRequest struct {
	Mode DeleteMode
	// N is how many (full) backups DeleteRetain and DeleteRetainFull keep;
	// at least 1.
	N int
	// Before (DeleteBefore): backups that finished before it are deleted.
	Before time.Time
	// BeforeName (DeleteBefore), instead of Before: the named backup's
	// finish time is the limit, so the backup itself is kept.
	BeforeName string
	// Window (DeleteWindow) is the recovery window: every moment from
	// Now-Window to now stays restorable.
	Window time.Duration
	// Force (DeleteEverything) deletes permanent backups too.
	Force bool
	// Now is the current time, for MinAge and Window.
	Now time.Time
	// MinAge: an unfinished backup whose newest object is younger than
	// this may still be running: delete garbage leaves it alone, and every
	// mode but everything keeps the WAL from its start on.
	MinAge time.Duration
	// SegmentSize is the wal_segment_size assumed for a backup whose
	// sentinel does not record one (0: 16 MiB).
	SegmentSize int64
	// IncludeForeign: the WAL foreign backups need is not kept for them
	// (they themselves still stay, but with everything).
	IncludeForeign bool
	// Lineage, when set (LineageIndex.Find), confines retain and before
	// to the backups of that lineage: they are counted, kept and deleted
	// as if it were the only one, and every backup not on it is kept.
	// Without it, every lineage counts on its own.
	Lineage string
}

// Inventory is what a repository holds, as PlanDelete needs it.
type Inventory struct {
	// Backups are the finished backups (ListBackups).
	Backups []*Sentinel
	// Foreign are the sentinels this walgo cannot restore (ListAllBackups).
	Foreign []ForeignBackup
	// BackupObjects is every object under BackupPrefix, sentinels included.
	BackupObjects []storage.ObjectInfo
	// WAL is every archived WAL file (ListWAL).
	WAL []WALObject
	// OtherWAL holds objects under WALPrefix that are not WAL files.
	OtherWAL []storage.ObjectInfo
	// Histories maps a timeline to its parsed .history file; a timeline
	// whose file is missing or unreadable is absent.
	Histories map[uint32][]HistoryEntry
	// HistoryErrors says why a timeline's history could not be read.
	HistoryErrors map[uint32]string
	// Leftovers are what interrupted writes left where listings do not
	// show it (storage.Sweeper), anywhere in the repository.
	Leftovers []storage.Leftover
	// LeftoversError says why they could not be listed (a server that
	// refuses to list multipart uploads); the plan then leaves them.
	LeftoversError string
	// Locks are the backup-push locks: the backups running now.
	Locks []LockRecord
}

// ReadInventory lists a repository for PlanDelete. Backup objects are
// listed before the sentinels, so a backup finishing meanwhile is seen as
// finished. History files are read with cd (nil reads unencrypted ones);
// one that cannot be decoded is recorded in HistoryErrors and treated as
// missing, which only makes the plan keep more.
func ReadInventory(ctx context.Context, s storage.Store, cd *codec.Codec) (*Inventory, error) {
	inv := &Inventory{Histories: map[uint32][]HistoryEntry{}, HistoryErrors: map[uint32]string{}}
	// Locks first: a backup-push that starts later is caught by Apply.
	locks, err := ListBackupLocks(ctx, s)
	if err != nil {
		return nil, err
	}
	inv.Locks = locks
	err = s.List(ctx, BackupPrefix, func(oi storage.ObjectInfo) error {
		inv.BackupObjects = append(inv.BackupObjects, oi)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	all, err := ListAllBackups(ctx, s)
	if err != nil {
		return nil, err
	}
	inv.Backups, inv.Foreign = all.Own, all.Foreign
	err = s.List(ctx, WALPrefix, func(oi storage.ObjectInfo) error {
		if o, ok := ParseWALKey(oi.Key); ok {
			o.Size = oi.Size
			inv.WAL = append(inv.WAL, o)
		} else {
			inv.OtherWAL = append(inv.OtherWAL, oi)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list wal: %w", err)
	}
	h, err := ReadHistories(ctx, s, cd, inv.WAL)
	if err != nil {
		return nil, err
	}
	inv.Histories = h.Parents
	for tli, err := range h.Bad {
		inv.HistoryErrors[tli] = err.Error()
	}
	err = storage.LeftoversOf(ctx, s, "", func(l storage.Leftover) error {
		inv.Leftovers = append(inv.Leftovers, l)
		return nil
	})
	if errors.Is(err, storage.ErrPermanent) && ctx.Err() == nil {
		inv.Leftovers, inv.LeftoversError = nil, err.Error()
	} else if err != nil {
		return nil, fmt.Errorf("list leftovers: %w", err)
	}
	return inv, nil
}

// BackupVerdict is what a plan does with one finished backup.
type BackupVerdict struct {
	Name        string    `json:"name"`
	DeltaParent string    `json:"delta_parent,omitempty"`
	Timeline    uint32    `json:"timeline"`
	StartLSN    wal.LSN   `json:"start_lsn"`
	FinishTime  time.Time `json:"finish_time"`
	Permanent   bool      `json:"permanent"`
	Delete      bool      `json:"delete"`
	Reason      string    `json:"reason"`
	// Keys are the objects deleted with the backup, its sentinel first.
	Keys  []string `json:"keys,omitempty"`
	Bytes int64    `json:"bytes"`
}

// Unfinished is a backup folder without a sentinel: an interrupted
// backup-push, a crashed delete, or one still running.
type Unfinished struct {
	Name   string    `json:"name"`
	Newest time.Time `json:"newest_object_time"`
	Delete bool      `json:"delete"`
	Reason string    `json:"reason"`
	Keys   []string  `json:"keys"`
	Bytes  int64     `json:"bytes"`
}

// ForeignVerdict is what a plan does with a backup walgo cannot restore.
type ForeignVerdict struct {
	ForeignBackup
	Delete bool   `json:"delete"`
	Reason string `json:"reason"`
	// Keys are its objects, its sentinel first.
	Keys  []string `json:"keys"`
	Bytes int64    `json:"bytes"`
}

// LeftoverVerdict is what a plan does with one storage.Leftover: the temp
// file or unfinished multipart upload of an interrupted write.
type LeftoverVerdict struct {
	storage.Leftover
	Delete bool   `json:"delete"`
	Reason string `json:"reason"`
}

// WALRange is a run of archived WAL files of one timeline, consecutive in
// name order, that a plan treats alike.
type WALRange struct {
	Timeline uint32   `json:"timeline"`
	First    string   `json:"first"`
	Last     string   `json:"last"`
	Files    int      `json:"files"`
	Bytes    int64    `json:"bytes"`
	Delete   bool     `json:"delete"`
	Reason   string   `json:"reason"`
	Keys     []string `json:"keys,omitempty"` // deleted ranges only
}

// PlanTotals counts what a plan deletes and keeps.
type PlanTotals struct {
	DeleteBackups     int   `json:"delete_backups"`
	DeleteUnfinished  int   `json:"delete_unfinished"`
	DeleteWALFiles    int   `json:"delete_wal_files"`
	DeleteLeftovers   int   `json:"delete_leftovers"`
	DeleteLocks       int   `json:"delete_stale_locks"`
	DeleteObjects     int   `json:"delete_objects"`
	DeleteBytes       int64 `json:"delete_bytes"`
	KeepBackups       int   `json:"keep_backups"`
	KeepWALFiles      int   `json:"keep_wal_files"`
	UnrecognizedFiles int   `json:"unrecognized_objects"`
}

// Plan says what a delete command removes and why everything else stays.
type Plan struct {
	Mode string `json:"mode"`
	// Backups lists every finished backup, oldest finish first.
	Backups []BackupVerdict `json:"backups"`
	// Unfinished lists backup folders without a sentinel.
	Unfinished []Unfinished `json:"unfinished"`
	// Foreign lists the backups this walgo cannot restore.
	Foreign []ForeignVerdict `json:"foreign"`
	// WAL lists the archived WAL in runs, by timeline then name.
	WAL []WALRange `json:"wal"`
	// Leftovers lists what interrupted writes left behind.
	Leftovers []LeftoverVerdict `json:"leftovers"`
	// Locks lists the backup-push locks: running backups, and stale locks.
	Locks []LockVerdict `json:"locks"`
	// Unrecognized lists objects under the backup and WAL folders that are
	// neither; they are always left alone.
	Unrecognized []string `json:"unrecognized"`
	// Notes are warnings and explanations for the operator.
	Notes  []string   `json:"notes"`
	Totals PlanTotals `json:"totals"`

	force bool
	// deleteOrder lists deleted backups, deltas before their parents.
	deleteOrder []string
	// foreignKeys lists the objects of deleted foreign backups, each
	// sentinel before its folder's objects.
	foreignKeys []string
	walDelete   []WALObject
	sizes       map[string]int64 // of every key the plan deletes
	hist        map[uint32][]HistoryEntry
	segSize     int64
	running     []runningBackup
}

// protector is a backup (finished and kept, or unfinished and left alone)
// that needs the WAL from its start on: along the lineages it is kept for,
// or with no lineages, on every timeline its recovery can reach.
type protector struct {
	name     string
	timeline uint32
	start    wal.LSN
	startPos string // log and segment fields (16 hex) of the start segment
	lineages []Lineage
}

// reach says whether a backup on one timeline can replay onto another.
type reach int

const (
	reachNo reach = iota
	reachUnsure
	reachYes
)

// reaches tells whether recovery from a backup that started at start on
// timeline from can continue onto timeline to.
func reaches(hist map[uint32][]HistoryEntry, from uint32, start wal.LSN, to uint32) reach {
	if to == from {
		return reachYes
	}
	if to < from { // a child timeline always gets a higher id than its parent
		return reachNo
	}
	h, ok := hist[to]
	if !ok {
		return reachUnsure
	}
	for _, sw := range h {
		if sw.Timeline == from {
			if sw.Switch >= start {
				return reachYes
			}
			return reachNo
		}
	}
	return reachNo
}

// timelineOf reads the timeline from an archived file's name.
func timelineOf(name string) (uint32, bool) {
	if len(name) < 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(name[:8], 16, 32)
	return uint32(v), err == nil
}

// PlanDelete decides what req deletes from the repository inv describes.
// It reads nothing and deletes nothing. It refuses (ErrBadRequest) an
// invalid request, and a DeleteBefore that would delete every backup.
func PlanDelete(inv *Inventory, req DeleteRequest) (*Plan, error) {
	if inv == nil {
		inv = &Inventory{}
	}
	segSize := req.SegmentSize
	if !wal.ValidSegmentSize(segSize) {
		segSize = wal.DefaultSegmentSize
	}
	backups := append([]*Sentinel(nil), inv.Backups...)
	sort.SliceStable(backups, func(i, j int) bool {
		if !backups[i].FinishTime.Equal(backups[j].FinishTime) {
			return backups[i].FinishTime.Before(backups[j].FinishTime)
		}
		return backups[i].Name < backups[j].Name
	})
	byName := map[string]*Sentinel{}
	for _, b := range backups {
		byName[b.Name] = b
	}
	p := &Plan{Mode: req.Mode.String(), force: req.Force, Backups: []BackupVerdict{}, Unfinished: []Unfinished{}, Foreign: []ForeignVerdict{},
		WAL: []WALRange{}, Unrecognized: []string{}, Notes: []string{}, sizes: map[string]int64{}}

	badHist := map[uint32]error{}
	for tli, why := range inv.HistoryErrors {
		badHist[tli] = errors.New(why)
	}
	x := NewLineageIndex(backups, inv.WAL, Histories{Parents: inv.Histories, Bad: badHist})
	var scope *Lineage
	if req.Lineage != "" {
		if req.Mode == DeleteEverything || req.Mode == DeleteGarbage {
			return nil, fmt.Errorf("%w: delete %s applies to every lineage: a lineage is for retain and before", ErrBadRequest, req.Mode)
		}
		l, err := x.Find(req.Lineage)
		if err != nil {
			return nil, err
		}
		scope = &l
	}
	keep, keptFor, err := selectKept(x, backups, byName, req, scope)
	if err != nil {
		return nil, err
	}
	p.hist, p.segSize = inv.Histories, segSize
	var busy map[string]string
	p.running, busy = p.planLocks(inv.Locks, req, segSize)
	for _, r := range p.running {
		if r.parent != "" && byName[r.parent] != nil && keep[r.parent] == "" {
			keep[r.parent] = "delta parent of " + r.name
		}
	}
	// Permanent backups, then the chain of everything kept.
	for _, b := range backups {
		if b.Permanent && !(req.Mode == DeleteEverything && req.Force) {
			keep[b.Name] = "permanent"
			keptFor.of(b.Name).any = true
		}
	}
	permanentLeft := 0
	for _, b := range backups {
		if b.Permanent && keep[b.Name] == "permanent" {
			permanentLeft++
		}
	}
	if req.Mode == DeleteEverything && permanentLeft > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("%d permanent backup(s) kept, with their delta chains and the WAL they need: add --force to delete them too", permanentLeft))
	}
	var roots []*Sentinel
	for _, b := range backups {
		if keep[b.Name] != "" {
			roots = append(roots, b)
		}
	}
	brokenNoted := map[string]bool{}
	for _, b := range roots {
		seen := map[string]bool{b.Name: true}
		for cur := b; cur.DeltaParent != "" && !seen[cur.DeltaParent]; {
			par, ok := byName[cur.DeltaParent]
			if !ok {
				if !brokenNoted[cur.Name] {
					brokenNoted[cur.Name] = true
					p.Notes = append(p.Notes, fmt.Sprintf("backup %s: its delta parent %s is missing, so it cannot be restored", cur.Name, cur.DeltaParent))
				}
				break
			}
			if keep[par.Name] == "" {
				keep[par.Name] = "parent of kept delta " + cur.Name
			}
			keptFor.of(par.Name).merge(keptFor.of(b.Name))
			seen[par.Name] = true
			cur = par
		}
	}
	if req.Mode == DeleteBefore && len(keep) == 0 && len(backups) > 0 {
		return nil, fmt.Errorf("%w: this would delete every backup (the newest finished %s); use delete everything to empty the repository",
			ErrBadRequest, backups[len(backups)-1].FinishTime.UTC().Format(time.RFC3339))
	}

	// Objects: sentinels, finished backups' folders, unfinished folders.
	objsOf := map[string][]storage.ObjectInfo{}
	sentinelSeen := map[string]bool{}
	var unfinishedNames []string
	foreignObjs := map[string][]storage.ObjectInfo{}
	for _, f := range inv.Foreign {
		foreignObjs[f.Name] = nil
	}
	for _, oi := range inv.BackupObjects {
		rest := strings.TrimPrefix(oi.Key, BackupPrefix)
		if n, ok := strings.CutSuffix(rest, sentinelSuffix); ok && !strings.Contains(n, "/") {
			if _, foreign := foreignObjs[n]; foreign {
				foreignObjs[n] = append([]storage.ObjectInfo{oi}, foreignObjs[n]...)
				continue
			}
		}
		if n, _, ok := strings.Cut(rest, "/"); ok {
			if _, foreign := foreignObjs[n]; foreign {
				foreignObjs[n] = append(foreignObjs[n], oi)
				continue
			}
		}
		if n, ok := strings.CutSuffix(rest, sentinelSuffix); ok && !strings.Contains(n, "/") && ValidBackupName(n) {
			sentinelSeen[n] = true
			objsOf[n] = append(objsOf[n], oi)
			continue
		}
		n, _, ok := strings.Cut(rest, "/")
		if !ok || !ValidBackupName(n) {
			p.Unrecognized = append(p.Unrecognized, oi.Key)
			continue
		}
		if byName[n] == nil && !slices.Contains(unfinishedNames, n) {
			unfinishedNames = append(unfinishedNames, n)
		}
		objsOf[n] = append(objsOf[n], oi)
	}

	var protectors []protector
	for _, b := range backups {
		v := BackupVerdict{Name: b.Name, DeltaParent: b.DeltaParent, Timeline: b.Timeline, StartLSN: b.StartLSN,
			FinishTime: b.FinishTime.UTC(), Permanent: b.Permanent}
		if r := keep[b.Name]; r != "" {
			v.Reason = r
			p.Totals.KeepBackups++
			size := b.SegmentSize
			if !wal.ValidSegmentSize(size) {
				size = segSize
			}
			protectors = append(protectors, protector{name: b.Name, timeline: b.Timeline, start: b.StartLSN,
				startPos: wal.SegmentAt(b.Timeline, b.StartLSN, size).Name()[8:], lineages: keptFor.of(b.Name).list()})
		} else {
			v.Delete = true
			v.Reason = deleteReason(req, b)
			if ls := x.Of(b); len(x.All()) > 1 && (req.Mode == DeleteRetain || req.Mode == DeleteRetainFull) {
				which := "lineage " + strings.Join(x.Names(ls), ", ")
				if scope != nil {
					which = "lineage " + x.Name(*scope)
				}
				v.Reason += " of " + which
			}
			v.Keys = append(v.Keys, SentinelKey(b.Name))
			for _, oi := range objsOf[b.Name] {
				if oi.Key != SentinelKey(b.Name) {
					v.Keys = append(v.Keys, oi.Key)
				}
				v.Bytes += oi.Size
				p.sizes[oi.Key] = oi.Size
			}
			p.Totals.DeleteBackups++
			p.Totals.DeleteObjects += len(v.Keys)
			p.Totals.DeleteBytes += v.Bytes
		}
		p.Backups = append(p.Backups, v)
	}
	p.deleteOrder = deletionOrder(backups, byName, keep)
	keptFinished := len(protectors)
	foreignProtect, unknownStart := p.planForeign(inv.Foreign, foreignObjs, req, segSize)
	protectors = append(protectors, foreignProtect...)

	for _, n := range unfinishedNames {
		u := Unfinished{Name: n}
		for _, oi := range objsOf[n] {
			u.Keys = append(u.Keys, oi.Key)
			u.Bytes += oi.Size
			p.sizes[oi.Key] = oi.Size
			if oi.ModTime.After(u.Newest) {
				u.Newest = oi.ModTime
			}
		}
		u.Newest = u.Newest.UTC()
		age := req.Now.Sub(u.Newest)
		running := sentinelSeen[n] || age < req.MinAge
		switch {
		case busy[n] != "":
			u.Reason = busy[n]
			running = false // the lock protects its WAL
		case sentinelSeen[n]:
			u.Reason = "a sentinel was listed for it but could not be read back (a concurrent delete?): left alone"
		case req.Mode == DeleteEverything:
			u.Delete, u.Reason = true, "unfinished backup (delete everything)"
		case running:
			u.Reason = fmt.Sprintf("unfinished, but its newest object is only %s old (min age %s): it may still be running", age.Round(time.Second), req.MinAge)
		case req.Mode != DeleteGarbage:
			u.Reason = "unfinished backup: delete garbage removes it"
		default:
			u.Delete, u.Reason = true, "unfinished backup: no sentinel"
		}
		if u.Delete {
			p.Totals.DeleteUnfinished++
			p.Totals.DeleteObjects += len(u.Keys)
			p.Totals.DeleteBytes += u.Bytes
		} else if running {
			// It may be a running backup-push: keep the WAL it will need.
			if id, err := ParseBackupName(n); err == nil {
				s := id.Start
				protectors = append(protectors, protector{name: n, timeline: s.Timeline,
					start: s.StartLSN(segSize), startPos: s.Name()[8:]})
			}
		}
		p.Unfinished = append(p.Unfinished, u)
	}

	p.planWAL(inv, req, protectors, keptFinished, unknownStart)
	p.planLeftovers(inv.Leftovers, req, busy)
	if inv.LeftoversError != "" {
		p.Notes = append(p.Notes, "what interrupted writes left could not be listed, so it stays: "+inv.LeftoversError)
	}
	for _, oi := range inv.OtherWAL {
		p.Unrecognized = append(p.Unrecognized, oi.Key)
	}
	p.Totals.UnrecognizedFiles = len(p.Unrecognized)
	if len(p.Unrecognized) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("%d object(s) that are neither backups nor WAL files are left alone", len(p.Unrecognized)))
	}
	return p, nil
}

// planForeign: a foreign backup is deleted only by everything; otherwise
// it protects the WAL from its start (unless IncludeForeign), and one
// whose start is unknown names itself in unknownStart, which keeps all WAL.
func (p *Plan) planForeign(fs []ForeignBackup, objs map[string][]storage.ObjectInfo, req DeleteRequest, segSize int64) (prot []protector, unknownStart string) {
	for _, f := range fs {
		v := ForeignVerdict{ForeignBackup: f, Keys: []string{}}
		for _, oi := range objs[f.Name] {
			v.Keys = append(v.Keys, oi.Key)
			v.Bytes += oi.Size
		}
		switch {
		case req.Mode == DeleteEverything:
			v.Delete, v.Reason = true, "foreign backup (delete everything)"
			for _, oi := range objs[f.Name] {
				p.sizes[oi.Key] = oi.Size
			}
			p.foreignKeys = append(p.foreignKeys, v.Keys...)
			p.Totals.DeleteObjects += len(v.Keys)
			p.Totals.DeleteBytes += v.Bytes
		case req.IncludeForeign:
			v.Reason = "foreign backup: never deleted but by delete everything (--include-foreign: its WAL is not kept for it)"
		case f.StartKnown:
			v.Reason = "foreign backup: never deleted but by delete everything; the WAL from its start is kept for it (--include-foreign lets it go)"
			start := wal.SegmentAt(f.Timeline, f.StartLSN, segSize)
			prot = append(prot, protector{name: "foreign backup " + f.Name, timeline: f.Timeline, start: f.StartLSN, startPos: start.Name()[8:]})
		default:
			v.Reason = "foreign backup whose start is unknown: never deleted but by delete everything, and all WAL is kept (--include-foreign lets it go)"
			if unknownStart == "" {
				unknownStart = f.Name
			}
		}
		p.Foreign = append(p.Foreign, v)
	}
	if n := len(fs); n > 0 && req.Mode != DeleteEverything {
		p.Notes = append(p.Notes, fmt.Sprintf("%d backup(s) walgo cannot restore (another tool's, a newer walgo's, or damaged) are left alone; see backup-list", n))
	}
	return prot, unknownStart
}

// planLeftovers: garbage removes what interrupted writes left once it is
// older than MinAge (a younger one may be a write still running), and
// everything removes all of it.
func (p *Plan) planLeftovers(ls []storage.Leftover, req DeleteRequest, busy map[string]string) {
	p.Leftovers = []LeftoverVerdict{}
	for _, l := range ls {
		v := LeftoverVerdict{Leftover: l}
		age := req.Now.Sub(l.ModTime)
		name, _, _ := strings.Cut(strings.TrimPrefix(l.Key, BackupPrefix), "/")
		switch {
		case strings.HasPrefix(l.Key, BackupPrefix) && busy[name] != "":
			v.Reason = "an upload of a running backup-push: " + busy[name]
		case req.Mode == DeleteEverything:
			v.Delete, v.Reason = true, "left by an interrupted write (delete everything)"
		case age < req.MinAge:
			v.Reason = fmt.Sprintf("only %s old (min age %s): it may be a write still running", age.Round(time.Second), req.MinAge)
		case req.Mode != DeleteGarbage:
			v.Reason = "left by an interrupted write: delete garbage removes it"
		default:
			v.Delete, v.Reason = true, "left by an interrupted write"
		}
		if v.Delete {
			p.Totals.DeleteLeftovers++
			p.Totals.DeleteBytes += l.Size
		}
		p.Leftovers = append(p.Leftovers, v)
	}
}

// selectKept applies the request's own rule (step 1), mapping each kept
// backup to the reason, and to the lineages it is kept for (nil: for
// whatever recovery from it can reach).
func selectKept(x *LineageIndex, backups []*Sentinel, byName map[string]*Sentinel, req DeleteRequest, scope *Lineage) (map[string]string, keptLineages, error) {
	keep := map[string]string{}
	keptFor := keptLineages{}
	// The lineages counted: each with backups, or the one in scope.
	var counted []Lineage
	if scope != nil {
		counted = []Lineage{*scope}
		for _, b := range backups {
			if !scope.HoldsBackup(b) {
				keep[b.Name] = "not on lineage " + x.Name(*scope)
			}
		}
	} else {
		for _, l := range x.All() {
			if len(x.BackupsOf(l)) > 0 {
				counted = append(counted, l)
			}
		}
	}
	several := len(x.All()) > 1 || scope != nil
	of := func(l Lineage) string {
		if several {
			return " of lineage " + x.Name(l)
		}
		return ""
	}
	keepFor := func(b *Sentinel, l Lineage, reason string) {
		if keep[b.Name] == "" {
			keep[b.Name] = reason
		}
		if scope != nil {
			keptFor.of(b.Name).any = true // the lineage in scope alone is counted; what is kept protects all it reaches
		} else {
			keptFor.of(b.Name).add(l)
		}
	}
	switch req.Mode {
	case DeleteRetain:
		if req.N < 1 {
			return nil, keptLineages{}, fmt.Errorf("%w: retain needs N of at least 1 (to delete every backup: delete everything)", ErrBadRequest)
		}
		for _, l := range counted {
			bs := x.BackupsOf(l)
			for _, b := range bs[max(0, len(bs)-req.N):] {
				keepFor(b, l, fmt.Sprintf("one of the %d newest backups%s", req.N, of(l)))
			}
		}
	case DeleteRetainFull:
		if req.N < 1 {
			return nil, keptLineages{}, fmt.Errorf("%w: retain FULL needs N of at least 1 (to delete every backup: delete everything)", ErrBadRequest)
		}
		for _, l := range counted {
			var fulls []*Sentinel
			for _, b := range x.BackupsOf(l) {
				if b.DeltaParent == "" {
					fulls = append(fulls, b)
				}
			}
			keptFull := map[string]bool{}
			for _, b := range fulls[max(0, len(fulls)-req.N):] {
				keptFull[b.Name] = true
				keepFor(b, l, fmt.Sprintf("one of the %d newest full backups%s", req.N, of(l)))
			}
			for _, b := range x.BackupsOf(l) {
				if b.DeltaParent == "" {
					continue
				}
				if root, ok := chainRoot(b, byName); ok && keptFull[root] {
					keepFor(b, l, "delta of kept full backup "+root)
				}
			}
		}
	case DeleteBefore:
		limit := req.Before
		what := limit.UTC().Format(time.RFC3339)
		if req.BeforeName != "" {
			b := byName[req.BeforeName]
			if b == nil {
				return nil, keptLineages{}, fmt.Errorf("backup %s: %w", req.BeforeName, storage.ErrNotFound)
			}
			limit, what = b.FinishTime, req.BeforeName
		} else if limit.IsZero() {
			return nil, keptLineages{}, fmt.Errorf("%w: before needs a backup name or a time", ErrBadRequest)
		}
		for _, b := range backups {
			if !b.FinishTime.Before(limit) && (scope == nil || scope.HoldsBackup(b)) {
				keep[b.Name] = "finished at or after " + what
				keptFor.of(b.Name).any = true
			}
		}
		if req.BeforeName != "" {
			keep[req.BeforeName] = "the named backup"
			keptFor.of(req.BeforeName).any = true
		}
		if scope != nil {
			bs := x.BackupsOf(*scope)
			if len(bs) > 0 && keep[bs[len(bs)-1].Name] == "" {
				return nil, keptLineages{}, fmt.Errorf("%w: this would delete every backup of lineage %s (the newest finished %s)",
					ErrBadRequest, x.Name(*scope), bs[len(bs)-1].FinishTime.UTC().Format(time.RFC3339))
			}
			break
		}
		if len(keep) == 0 {
			break // every backup: refused by the caller
		}
		for _, l := range counted {
			bs := x.BackupsOf(l)
			if !slices.ContainsFunc(bs, func(b *Sentinel) bool { return keep[b.Name] != "" }) {
				keepFor(bs[len(bs)-1], l, "the newest backup"+of(l)+": before keeps one of every lineage")
			}
		}
	case DeleteWindow:
		if req.Window <= 0 || req.Now.IsZero() {
			return nil, keptLineages{}, fmt.Errorf("%w: window needs a length of more than 0", ErrBadRequest)
		}
		for _, l := range counted {
			bs := x.BackupsOf(l)
			for name, why := range windowKept(bs, req.Now.Add(-req.Window)) {
				keepFor(byName[name], l, why)
			}
		}
	case DeleteEverything:
	case DeleteGarbage:
		for _, b := range backups {
			keep[b.Name] = "finished backup (delete garbage keeps them all)"
		}
	default:
		return nil, keptLineages{}, fmt.Errorf("%w: unknown delete mode %d", ErrBadRequest, req.Mode)
	}
	for name := range keep {
		if f := keptFor.of(name); len(f.ls) == 0 {
			f.any = true // kept whatever the lineage
		}
	}
	return keep, keptFor, nil
}

// keptFor says, for a kept backup, which lineages it protects WAL on.
type keptFor struct {
	any bool      // whatever recovery from it can reach
	ls  []Lineage // else these
}

func (f *keptFor) add(l Lineage) {
	if !slices.ContainsFunc(f.ls, func(m Lineage) bool { return m.Timeline == l.Timeline && m.SystemID == l.SystemID }) {
		f.ls = append(f.ls, l)
	}
}

func (f *keptFor) merge(g *keptFor) {
	f.any = f.any || g.any
	for _, l := range g.ls {
		f.add(l)
	}
}

// list is the lineages to protect, nil for any.
func (f *keptFor) list() []Lineage {
	if f.any {
		return nil
	}
	return f.ls
}

// keptLineages maps a kept backup's name to what it protects.
type keptLineages map[string]*keptFor

func (k keptLineages) of(name string) *keptFor {
	if k[name] == nil {
		k[name] = &keptFor{}
	}
	return k[name]
}

// windowKept is the recovery window's rule over backups (oldest finish
// first), as Barman's RECOVERY WINDOW: a recovery to any moment since from
// needs every backup that finished at or after it, and the newest that
// finished before it, from which the moments between from and the next
// backup's finish are replayed. Its WAL and delta chain are kept by the
// rules after step 1.
func windowKept(backups []*Sentinel, from time.Time) map[string]string {
	keep := map[string]string{}
	since := from.UTC().Format(time.RFC3339)
	var before *Sentinel
	for _, b := range backups {
		if b.FinishTime.Before(from) {
			before = b
			continue
		}
		keep[b.Name] = "finished inside the recovery window (since " + since + ")"
	}
	if before != nil {
		keep[before.Name] = "the newest backup that finished before the recovery window starts (" + since + "): recoveries to its first moments start from it"
	}
	return keep
}

func deleteReason(req DeleteRequest, b *Sentinel) string {
	switch req.Mode {
	case DeleteWindow:
		return "finished before the recovery window (since " + req.Now.Add(-req.Window).UTC().Format(time.RFC3339) +
			"), and a newer backup also did: no moment inside the window needs it"
	case DeleteRetain:
		return fmt.Sprintf("older than the %d newest backups", req.N)
	case DeleteRetainFull:
		if b.DeltaParent != "" {
			return fmt.Sprintf("delta not based on the %d newest full backups", req.N)
		}
		return fmt.Sprintf("older than the %d newest full backups", req.N)
	case DeleteBefore:
		if req.BeforeName != "" {
			return "finished before " + req.BeforeName
		}
		return "finished before " + req.Before.UTC().Format(time.RFC3339)
	case DeleteEverything:
		if b.Permanent {
			return "delete everything --force"
		}
		return "delete everything"
	}
	return "deleted"
}

// chainRoot follows delta parents to the full backup; ok is false for a
// broken or looping chain.
func chainRoot(b *Sentinel, byName map[string]*Sentinel) (string, bool) {
	seen := map[string]bool{}
	for cur := b; ; {
		if cur.DeltaParent == "" {
			return cur.Name, true
		}
		if seen[cur.Name] {
			return "", false
		}
		seen[cur.Name] = true
		par, ok := byName[cur.DeltaParent]
		if !ok {
			return "", false
		}
		cur = par
	}
}

// chainLen is how many backups the chain from b back to its full backup
// holds (len(byName)+1 for a loop).
func chainLen(b *Sentinel, byName map[string]*Sentinel) int {
	n := 1
	for cur := b; cur.DeltaParent != "" && n <= len(byName); n++ {
		par, ok := byName[cur.DeltaParent]
		if !ok {
			break
		}
		cur = par
	}
	return n
}

// deletionOrder lists the deleted backups so that a delta comes before its
// parent: an interrupted delete never leaves a listed delta whose parent
// is gone.
func deletionOrder(backups []*Sentinel, byName map[string]*Sentinel, keep map[string]string) []string {
	var del []*Sentinel
	for _, b := range backups {
		if keep[b.Name] == "" {
			del = append(del, b)
		}
	}
	sort.SliceStable(del, func(i, j int) bool {
		di, dj := chainLen(del[i], byName), chainLen(del[j], byName)
		if di != dj {
			return di > dj
		}
		return del[i].FinishTime.After(del[j].FinishTime)
	})
	out := make([]string, len(del))
	for i, b := range del {
		out[i] = b.Name
	}
	return out
}

// walVerdict is the decision for one WAL object.
type walVerdict struct {
	delete bool
	reason string
}

// planWAL applies rules 4 and 5 to every archived WAL file.
func (p *Plan) planWAL(inv *Inventory, req DeleteRequest, protectors []protector, keptFinished int, unknownStart string) {
	hist := inv.Histories
	everything := req.Mode == DeleteEverything && keptFinished == 0
	leaveAll := keptFinished == 0 && !everything
	if leaveAll && len(inv.WAL) > 0 {
		p.Notes = append(p.Notes, "no finished backup is kept: WAL is left alone")
	}
	if unknownStart != "" && !everything && !leaveAll {
		leaveAll = true
		p.Notes = append(p.Notes, fmt.Sprintf("foreign backup %s does not say where its WAL starts: all WAL is left alone (--include-foreign deletes it for walgo's backups only)", unknownStart))
	}
	segSize := req.SegmentSize
	if !wal.ValidSegmentSize(segSize) {
		segSize = wal.DefaultSegmentSize
	}
	// Per timeline: the runs of positions kept backups surely need
	// (from a start to where a lineage leaves the timeline, or open), and
	// the first position one may need when a history file is missing.
	type span struct {
		from, to string // log and segment fields; to "" is open, else inclusive
		by       string
	}
	type need struct {
		spans            []span
		unsure, unsureBy string
		hasUnsure        bool
	}
	needs := map[uint32]*need{}
	needOf := func(tli uint32) *need {
		if n := needs[tli]; n != nil {
			return n
		}
		n := &need{}
		for _, pr := range protectors {
			r := reaches(hist, pr.timeline, pr.start, tli)
			if r == reachUnsure && (!n.hasUnsure || pr.startPos < n.unsure) {
				n.unsure, n.unsureBy, n.hasUnsure = pr.startPos, pr.name, true
			}
			if pr.lineages == nil {
				if r == reachYes {
					n.spans = append(n.spans, span{from: pr.startPos, by: pr.name})
				}
				continue
			}
			for _, l := range pr.lineages {
				end, ok := l.end(tli)
				if !ok || tli < pr.timeline {
					continue
				}
				sp := span{from: pr.startPos, by: pr.name}
				if tli != l.Timeline {
					sp.to = wal.SegmentAt(tli, end, segSize).Name()[8:]
				}
				n.spans = append(n.spans, sp)
			}
		}
		needs[tli] = n
		return n
	}
	unsureNoted := map[uint32]bool{}
	decide := func(o WALObject) walVerdict {
		tli, ok := timelineOf(o.Name)
		switch {
		case !ok:
			return walVerdict{reason: "unparsable name: kept"}
		case o.Kind == wal.KindHistory && !everything:
			return walVerdict{reason: "timeline history: always kept"}
		}
		if by, ok := neededByRunning(hist, p.running, o); ok {
			return walVerdict{reason: "needed by " + by}
		}
		switch {
		case everything:
			return walVerdict{delete: true, reason: "delete everything"}
		case leaveAll && unknownStart != "" && keptFinished > 0:
			return walVerdict{reason: "a foreign backup may need it"}
		case leaveAll:
			return walVerdict{reason: "no finished backup is kept"}
		}
		pos := o.Name[8:24]
		n := needOf(tli)
		first, firstBy, last := "", "", ""
		for _, sp := range n.spans {
			if pos >= sp.from && (sp.to == "" || pos <= sp.to) {
				return walVerdict{reason: "needed by kept backups"}
			}
			if first == "" || sp.from < first {
				first, firstBy = sp.from, sp.by
			}
			if sp.to != "" && sp.to < pos && sp.to > last {
				last = sp.to
			}
		}
		if n.hasUnsure && pos >= n.unsure {
			if !unsureNoted[tli] {
				unsureNoted[tli] = true
				why := "missing"
				if e := inv.HistoryErrors[tli]; e != "" {
					why = "unreadable (" + e + ")"
				}
				p.Notes = append(p.Notes, fmt.Sprintf("timeline %d: its history file is %s, so it may descend from a kept backup's timeline: its WAL is kept from %s's start on", tli, why, n.unsureBy))
			}
			return walVerdict{reason: fmt.Sprintf("timeline %d's history is unknown: kept to be safe", tli)}
		}
		switch {
		case first != "" && pos < first:
			return walVerdict{delete: true, reason: fmt.Sprintf("before %08X%s, where the oldest kept backup that reaches timeline %d (%s) starts", tli, first, tli, firstBy)}
		case last != "":
			return walVerdict{delete: true, reason: fmt.Sprintf("after %08X%s, where the lineages the kept backups are kept for leave timeline %d, and before any later kept backup's start", tli, last, tli)}
		}
		return walVerdict{delete: true, reason: fmt.Sprintf("no kept backup reaches timeline %d", tli)}
	}

	objs := append([]WALObject(nil), inv.WAL...)
	sort.SliceStable(objs, func(i, j int) bool {
		if objs[i].Name != objs[j].Name {
			return objs[i].Name < objs[j].Name
		}
		return objs[i].Key < objs[j].Key
	})
	var cur *WALRange
	var curTLI uint32
	for _, o := range objs {
		v := decide(o)
		tli, _ := timelineOf(o.Name)
		if cur == nil || tli != curTLI || v.delete != cur.Delete || v.reason != cur.Reason {
			p.WAL = append(p.WAL, WALRange{Timeline: tli, First: o.Name, Delete: v.delete, Reason: v.reason})
			cur, curTLI = &p.WAL[len(p.WAL)-1], tli
		}
		cur.Last = o.Name
		cur.Files++
		cur.Bytes += o.Size
		if v.delete {
			p.sizes[o.Key] = o.Size
			cur.Keys = append(cur.Keys, o.Key)
			p.walDelete = append(p.walDelete, o)
			p.Totals.DeleteWALFiles++
			p.Totals.DeleteObjects++
			p.Totals.DeleteBytes += o.Size
		} else {
			p.Totals.KeepWALFiles++
		}
	}
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// Concurrency is how many objects are deleted at once (default 8).
	Concurrency int
	// OnDelete, if set, is called after each object is deleted, possibly
	// from several goroutines at once.
	OnDelete func(key string)
}

// ApplyResult counts what Apply deleted.
type ApplyResult struct {
	Backups    int   `json:"backups"`
	Unfinished int   `json:"unfinished"`
	WALFiles   int   `json:"wal_files"`
	Leftovers  int   `json:"leftovers"`
	Objects    int   `json:"objects"`
	Bytes      int64 `json:"bytes"`
	// Skipped names unfinished backups whose sentinel appeared after the
	// plan was made (they finished), or whose backup-push started since
	// (they are running): they were left alone.
	Skipped []string `json:"skipped"`
	// KeptForRunning counts WAL files the plan deleted but a backup-push
	// that started since needs: they were left alone.
	KeptForRunning int `json:"kept_for_running_backups"`
	// Locks counts stale backup-push locks removed.
	Locks int `json:"stale_locks"`
}

// Apply carries out a plan made by PlanDelete. It first re-reads the
// backups and stops with ErrChanged, deleting nothing, if a backup it
// would delete became permanent or a new backup builds on one. Then, in
// this order, so that an interruption leaves a consistent repository that
// a later delete (or delete garbage) finishes: the sentinels of deleted
// backups, deltas before parents (each backup stops being listed before
// anything it needs goes); their other objects; unfinished backups' objects whose
// sentinel still does not exist; what interrupted writes left (temp files,
// multipart uploads); WAL files, oldest name first, .history
// files last. Deleting an object that is already gone is not an error, so
// running a plan again is safe.
func Apply(ctx context.Context, s storage.Store, p *Plan, opts ApplyOptions) (ApplyResult, error) {
	var res ApplyResult
	if opts.Concurrency < 1 {
		opts.Concurrency = 8
	}
	verdicts := map[string]*BackupVerdict{}
	for i := range p.Backups {
		verdicts[p.Backups[i].Name] = &p.Backups[i]
	}
	fresh, err := ListBackups(ctx, s)
	if err != nil {
		return res, err
	}
	freshByName := map[string]*Sentinel{}
	for _, b := range fresh {
		freshByName[b.Name] = b
	}
	for _, b := range fresh {
		v := verdicts[b.Name]
		if v != nil && v.Delete && b.Permanent && !p.force {
			return res, fmt.Errorf("%w: backup %s was marked permanent; nothing deleted, run the command again", ErrChanged, b.Name)
		}
		if v != nil {
			continue
		}
		seen := map[string]bool{}
		for cur := b; cur.DeltaParent != "" && !seen[cur.Name]; {
			seen[cur.Name] = true
			if pv := verdicts[cur.DeltaParent]; pv != nil && pv.Delete {
				return res, fmt.Errorf("%w: new backup %s builds on %s, which the plan deletes; nothing deleted, run the command again", ErrChanged, b.Name, cur.DeltaParent)
			}
			par, ok := freshByName[cur.DeltaParent]
			if !ok {
				break
			}
			cur = par
		}
	}

	// A backup-push that started since the plan and builds on a backup
	// the plan deletes (its lock names the parent).
	locks, err := ListBackupLocks(ctx, s)
	if err != nil {
		return res, err
	}
	newRunning, _ := p.newRunning(ctx, locks)
	for _, r := range append(newRunning, p.running...) {
		if v := verdicts[r.parent]; v != nil && v.Delete {
			return res, fmt.Errorf("%w: %s builds on %s, which the plan deletes; nothing deleted, run the command again", ErrChanged, r.name, r.parent)
		}
	}

	d := &deleter{s: s, sizes: p.sizes, opts: opts}
	done := func(err error) (ApplyResult, error) {
		res.Objects, res.Bytes = d.objects, d.bytes
		return res, err
	}

	// 1. Sentinels, one by one, deltas first.
	for _, name := range p.deleteOrder {
		if err := d.del(ctx, SentinelKey(name)); err != nil {
			return done(err)
		}
	}
	// 2. The deleted backups' other objects.
	var keys []string
	for _, name := range p.deleteOrder {
		keys = append(keys, verdicts[name].Keys[1:]...)
	}
	if err := d.all(ctx, keys); err != nil {
		return done(err)
	}
	res.Backups = len(p.deleteOrder)
	// 2b. Foreign backups (delete everything only), each sentinel first.
	for _, k := range p.foreignKeys {
		if err := d.del(ctx, k); err != nil {
			return done(err)
		}
	}
	// A backup-push that started since the plan was made: its partitions
	// and the WAL it needs stay.
	locks, err = ListBackupLocks(ctx, s)
	if err != nil {
		return done(err)
	}
	running, busy := p.newRunning(ctx, locks)
	// 3. Unfinished leftovers, unless they finished meanwhile.
	var unfinished []Unfinished
	for _, u := range p.Unfinished {
		if busy[u.Name] != "" {
			res.Skipped = append(res.Skipped, u.Name)
			continue
		}
		unfinished = append(unfinished, u)
	}
	n, skipped, err := d.unfinished(ctx, unfinished, SentinelKey)
	res.Unfinished, res.Skipped = n, append(res.Skipped, skipped...)
	if err != nil {
		return done(err)
	}
	// 4. What interrupted writes left behind.
	for _, v := range p.Leftovers {
		if name, _, _ := strings.Cut(strings.TrimPrefix(v.Key, BackupPrefix), "/"); !v.Delete || busy[name] != "" {
			continue
		}
		if err := storage.RemoveLeftover(ctx, s, v.Leftover); err != nil {
			return done(fmt.Errorf("remove leftover of %s (%s): %w", v.Key, v.ID, err))
		}
		res.Leftovers++
		d.bytes += v.Size
		if opts.OnDelete != nil {
			opts.OnDelete(v.Key + " (leftover " + v.ID + ")")
		}
	}
	// 5. WAL, oldest first, history last.
	var walKeys, histKeys []string
	for _, o := range p.walDelete {
		if _, needed := neededByRunning(p.hist, running, o); needed {
			res.KeptForRunning++
			continue
		}
		if o.Kind == wal.KindHistory {
			histKeys = append(histKeys, o.Key)
		} else {
			walKeys = append(walKeys, o.Key)
		}
	}
	for _, ks := range [][]string{walKeys, histKeys} {
		if err := d.all(ctx, ks); err != nil {
			return done(err)
		}
		res.WALFiles += len(ks)
	}
	// 6. Stale locks, if still the same and still stale.
	for _, v := range p.Locks {
		if !v.Delete {
			continue
		}
		cur := lockByKey(locks, v.Key)
		switch {
		case cur == nil:
			continue
		case cur.Lock == nil && time.Since(cur.ModTime) <= LockStaleAfter:
			continue
		case cur.Lock != nil && cur.Lock.Token != v.token:
			continue
		case cur.Lock != nil:
			if gone, _ := cur.Lock.Expired(time.Now()); !gone {
				continue
			}
		}
		if err := d.del(ctx, v.Key); err != nil {
			return done(err)
		}
		res.Locks++
	}
	return done(nil)
}

func lockByKey(ls []LockRecord, key string) *LockRecord {
	for i := range ls {
		if ls[i].Key == key {
			return &ls[i]
		}
	}
	return nil
}

// deleter deletes the objects of a plan, counting them, for Apply and
// ApplyDumpPlan.
type deleter struct {
	s     storage.Store
	sizes map[string]int64
	opts  ApplyOptions

	mu      sync.Mutex
	objects int
	bytes   int64
	noBatch bool // the storage refused a batch delete
}

func (d *deleter) del(ctx context.Context, key string) error {
	if err := d.s.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	d.deleted(key)
	return nil
}

func (d *deleter) deleted(key string) {
	d.mu.Lock()
	d.objects++
	d.bytes += d.sizes[key]
	d.mu.Unlock()
	if d.opts.OnDelete != nil {
		d.opts.OnDelete(key)
	}
}

// all deletes keys in order: storage.MaxBatchDelete per request where the
// storage deletes in batches (S3 DeleteObjects), else Concurrency single
// deletes at a time.
func (d *deleter) all(ctx context.Context, keys []string) error {
	for len(keys) > 0 && !d.noBatch {
		batch := keys[:min(len(keys), storage.MaxBatchDelete)]
		err := storage.BatchDelete(ctx, d.s, batch)
		if errors.Is(err, storage.ErrUnsupported) {
			d.noBatch = true
			break
		}
		if err != nil {
			return fmt.Errorf("delete %d objects from %s: %w", len(batch), batch[0], err)
		}
		for _, k := range batch {
			d.deleted(k)
		}
		keys = keys[len(batch):]
	}
	return parallel(ctx, max(d.opts.Concurrency, 1), keys, d.del)
}

// unfinished deletes the leftovers marked for deletion, except those whose
// sentinel (sentinelKey of the name) appeared since the plan was made:
// they finished, and are returned as skipped.
func (d *deleter) unfinished(ctx context.Context, us []Unfinished, sentinelKey func(string) string) (n int, skipped []string, err error) {
	for _, u := range us {
		if !u.Delete {
			continue
		}
		_, err := d.s.Stat(ctx, sentinelKey(u.Name))
		if err == nil {
			skipped = append(skipped, u.Name)
			continue
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return n, skipped, fmt.Errorf("check %s: %w", u.Name, err)
		}
		if err := d.all(ctx, u.Keys); err != nil {
			return n, skipped, err
		}
		n++
	}
	return n, skipped, nil
}

// parallel runs fn on every key, n at a time, handing keys out in order;
// it stops at the first error and returns it.
func parallel(ctx context.Context, n int, keys []string, fn func(context.Context, string) error) error {
	if len(keys) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range min(n, len(keys)) {
		wg.Go(func() {
			for {
				mu.Lock()
				if first != nil || next >= len(keys) {
					mu.Unlock()
					return
				}
				k := keys[next]
				next++
				mu.Unlock()
				if err := fn(ctx, k); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
