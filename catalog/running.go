package catalog

// Running backups in retention: a backup-push in progress shows in its
// lock (lock.go). While the lock is fresh, every delete mode keeps the WAL
// the running backup will need, from its start LSN on (all of its
// timeline's WAL while it has not started yet), and its partitions; a
// stale lock protects nothing, and delete garbage removes it.

import (
	"context"
	"fmt"
	"time"

	"github.com/walgo/walgo/wal"
)

// LockVerdict is what a plan does with one backup-push lock.
type LockVerdict struct {
	Key      string  `json:"key"`
	Holder   string  `json:"holder,omitempty"`
	Backup   string  `json:"backup,omitempty"`
	Timeline uint32  `json:"timeline,omitempty"`
	StartLSN wal.LSN `json:"start_lsn,omitempty"`
	Stale    bool    `json:"stale"`
	Delete   bool    `json:"delete"`
	Reason   string  `json:"reason"`

	token string
}

// runningBackup is a fresh lock's protection.
type runningBackup struct {
	protector
	lock   string
	parent string // the delta parent it reads
	// all: the lock cannot be read, so it may need any WAL.
	all bool
}

// planLocks judges every lock: fresh ones become running backups that
// protect WAL and their unfinished folder; stale ones are noted, and
// removed by delete garbage.
func (p *Plan) planLocks(locks []LockRecord, req DeleteRequest, segSize int64) (running []runningBackup, busy map[string]string) {
	busy = map[string]string{}
	p.Locks = []LockVerdict{}
	for _, r := range locks {
		v := LockVerdict{Key: r.Key}
		l := r.Lock
		var why string
		if l != nil {
			v.Holder, v.Backup, v.Timeline, v.StartLSN, v.token = l.Describe(), l.Backup, l.Timeline, l.StartLSN, l.Token
			v.Stale, why = l.Expired(req.Now)
		} else if req.Now.Sub(r.ModTime) > LockStaleAfter {
			v.Stale, why = true, fmt.Sprintf("not written since %s (more than %s)", r.ModTime.UTC().Format(time.RFC3339), LockStaleAfter)
		}
		switch {
		case v.Stale && (req.Mode == DeleteGarbage || req.Mode == DeleteEverything):
			v.Delete, v.Reason = true, "stale: "+why
		case v.Stale:
			v.Reason = "stale (" + why + "): ignored; delete garbage removes it"
		case l == nil:
			v.Reason = "a backup-push lock that cannot be read (" + r.Err + "): all WAL is kept until it is stale"
			running = append(running, runningBackup{lock: r.Key, all: true, protector: protector{name: "the holder of " + r.Key}})
		case l.Backup == "":
			v.Reason = fmt.Sprintf("a backup-push is starting on timeline %d: its timeline's WAL is kept", l.Timeline)
			running = append(running, runningBackup{lock: r.Key, protector: protector{name: "the backup-push starting on " + l.Host,
				timeline: l.Timeline, startPos: "0000000000000000"}})
		default:
			size := l.SegmentSize
			if !wal.ValidSegmentSize(size) {
				size = segSize
			}
			v.Reason = "a backup-push is running: its partitions and the WAL from its start are kept"
			running = append(running, runningBackup{lock: r.Key, parent: l.DeltaParent, protector: protector{name: "running backup " + l.Backup,
				timeline: l.Timeline, start: l.StartLSN, startPos: wal.SegmentAt(l.Timeline, l.StartLSN, size).Name()[8:]}})
			busy[l.Backup] = fmt.Sprintf("being written by a running backup-push (%s; lock %s)", l.Describe(), r.Key)
		}
		if v.Delete {
			p.Totals.DeleteLocks++
			p.Totals.DeleteObjects++
		}
		p.Locks = append(p.Locks, v)
	}
	if len(running) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("%d backup-push(es) running: the WAL they need and their partitions are kept", len(running)))
	}
	return running, busy
}

// neededByRunning says which running backup, if any, needs WAL file o.
func neededByRunning(hist map[uint32][]HistoryEntry, running []runningBackup, o WALObject) (string, bool) {
	tli, ok := timelineOf(o.Name)
	if !ok || len(running) == 0 {
		return "", false
	}
	if o.Kind == wal.KindHistory || len(o.Name) < 24 {
		return running[0].name, true
	}
	pos := o.Name[8:24]
	for _, r := range running {
		if r.all {
			return r.name, true
		}
		if reaches(hist, r.timeline, r.start, tli) != reachNo && pos >= r.startPos {
			return r.name, true
		}
	}
	return "", false
}

// newRunning re-reads the locks just before Apply deletes unfinished
// backups and WAL, and returns the running backups whose locks the plan did
// not see: a backup-push that started after the plan was made.
func (p *Plan) newRunning(ctx context.Context, ls []LockRecord) ([]runningBackup, map[string]string) {
	known := map[string]bool{}
	for _, v := range p.Locks {
		if v.token != "" {
			known[v.token] = true
		}
	}
	var fresh []LockRecord
	for _, r := range ls {
		if r.Lock != nil && known[r.Lock.Token] {
			continue
		}
		fresh = append(fresh, r)
	}
	q := &Plan{}
	return q.planLocks(fresh, DeleteRequest{Mode: DeleteRetain, Now: time.Now()}, p.segSize)
}
