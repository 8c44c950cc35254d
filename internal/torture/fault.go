package torture

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/walgo/walgo/wal"
)

// Fault breaks a restore on purpose: the harness's own check that a wrong
// restore makes it fail. It lives in the harness only; walgo is never
// changed for it.
type Fault interface {
	// Break changes a restored data directory (or its recovery
	// settings) after backup-fetch and before Postgres starts on it, and
	// reports whether it changed anything.
	Break(ctx context.Context, s *FaultSite) (bool, error)
}

// FaultSite is what a Fault may look at and use.
type FaultSite struct {
	Case     string     // the restore case
	Dir      string     // the restored data directory
	Kind     TargetKind // the recovery target's kind
	LSN      wal.LSN    // the target point's LSN (0 for TargetImmediate)
	Timeline uint32     // ... and timeline
	Restored string     // the backup backup-fetch restored
	Parent   string     // its delta parent, "" for a full backup
	// Files maps each table to its main fork (pg_relation_filepath) in
	// the restored backup.
	Files map[string]string
	// Scratch is an empty folder the Postgres user owns, removed after
	// the case.
	Scratch string
	r       *runner
}

// Fetch restores backup name into dir (with the tablespace mapped inside
// Scratch), without recovery settings the fault cares about.
func (s *FaultSite) Fetch(ctx context.Context, dir, name string) error {
	rc := &restoreCase{backup: &backup{BackupInfo: BackupInfo{Name: name}}, kind: TargetEnd}
	res, err := s.r.walgo(ctx, nil, s.r.fetchArgs(rc, dir, filepath.Join(s.Scratch, "fault-ts"))...)
	if err != nil {
		return err
	}
	if res.code != 0 {
		return fmt.Errorf("%s", res)
	}
	return nil
}

const pageSize = 8192

// SkipDeltaPage makes a restore of a delta backup look as if one changed
// page had not been stored: it restores the delta's parent next to it and
// puts back, into one table's main fork, the parent's copy of the first
// page where the two hold a different number of tuples.
type SkipDeltaPage struct{}

// Break implements Fault.
func (SkipDeltaPage) Break(ctx context.Context, s *FaultSite) (bool, error) {
	if s.Parent == "" {
		return false, nil
	}
	pdir := filepath.Join(s.Scratch, "parent")
	if err := s.Fetch(ctx, pdir, s.Parent); err != nil {
		return false, fmt.Errorf("restore the parent %s: %w", s.Parent, err)
	}
	for _, t := range slices.Sorted(maps.Keys(s.Files)) {
		rel := s.Files[t]
		cur, err1 := os.ReadFile(filepath.Join(s.Dir, rel))
		old, err2 := os.ReadFile(filepath.Join(pdir, rel))
		if err1 != nil || err2 != nil {
			continue // not in both: a new or dropped table
		}
		for off := 0; off+pageSize <= min(len(cur), len(old)); off += pageSize {
			// pd_lower (bytes 12-13) grows with each line pointer.
			if binary.LittleEndian.Uint16(cur[off+12:]) == binary.LittleEndian.Uint16(old[off+12:]) ||
				bytes.Equal(cur[off:off+pageSize], old[off:off+pageSize]) {
				continue
			}
			copy(cur[off:off+pageSize], old[off:off+pageSize])
			if err := os.WriteFile(filepath.Join(s.Dir, rel), cur, 0o600); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	return false, nil
}

// WithholdWAL makes the archive lose one segment for a restore: the one
// that holds the target point. The restored cluster's restore_command is
// replaced by a script that reports that segment missing (exit 1, as for
// the end of the archive) and runs walgo wal-fetch for every other file.
type WithholdWAL struct{}

// Break implements Fault.
func (WithholdWAL) Break(_ context.Context, s *FaultSite) (bool, error) {
	if s.LSN == 0 {
		return false, nil
	}
	seg := wal.SegmentAt(s.Timeline, s.LSN, wal.DefaultSegmentSize).Name()
	script := filepath.Join(s.Scratch, "restore_command.sh")
	body := fmt.Sprintf("#!/bin/sh\n# written by the torture harness: withhold %s\n[ \"$1\" = %s ] && exit 1\nexec %s wal-fetch \"$1\" \"$2\"\n",
		seg, seg, s.r.cfg.Walgo)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return false, err
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, "postgresql.auto.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return false, err
	}
	_, err = fmt.Fprintf(f, "# the torture harness withholds %s\nrestore_command = '%s %%f %%p'\n", seg, script)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err == nil, err
}
