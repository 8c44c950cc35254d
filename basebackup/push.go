// Package basebackup is backup-push: a non-exclusive base backup of a live
// cluster, streamed file by file through a disk rate limiter into tar
// partitions, compressed and uploaded several at a time, with a manifest and
// a sentinel written last.
package basebackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/ratelimit"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// Config holds backup-push's settings.
type Config struct {
	// DataDir is the cluster's data directory; empty means the one the
	// server reports. A different one is refused.
	DataDir string
	// DSN is a libpq connection string; empty uses the PG* environment.
	DSN string
	// Codec compresses (and maybe encrypts) partitions and the manifest,
	// and reads a delta parent's manifest.
	Codec *codec.Codec
	// PartSize is the uncompressed size after which a new tar partition
	// starts (default 1 GiB).
	PartSize int64
	// Concurrency is how many partitions may be uploading at once.
	Concurrency int
	// DiskLimiter caps how fast data files are read; nil means no limit.
	DiskLimiter *ratelimit.Limiter
	// StopTimeout bounds pg_backup_stop's wait for WAL archiving.
	StopTimeout time.Duration
	// DeltaMaxSteps > 0 makes a delta of the newest backup of this cluster
	// while its chain back to a full backup is shorter than this.
	DeltaMaxSteps int
	// SpreadCheckpoint waits for a spread checkpoint at the start instead
	// of asking for an immediate one.
	SpreadCheckpoint bool
	Permanent        bool
	UserData         json.RawMessage
	WalgoVersion     string
	// Progress, if set, is called as bytes are read, with the total known
	// at the start.
	Progress func(done, total int64)
}

// Push takes a base backup and returns its sentinel. Nothing is listed
// unless every object, the backup's WAL and the manifest are stored.
//
// It holds the cluster history's backup lock (catalog.AcquireBackupLock)
// from before pg_backup_start to after the sentinel: a second Push of the
// same cluster into the same repository fails with catalog.ErrLocked, and
// retention sees the running backup's start LSN in the lock. If the lock
// is lost (taken over, removed, not refreshed for catalog.LockStaleAfter)
// the backup is abandoned with catalog.ErrLockLost.
func Push(ctx context.Context, store storage.Store, cfg Config, log *zap.Logger) (sn *catalog.Sentinel, err error) {
	if cfg.Codec == nil {
		cfg.Codec = codec.New(nil, nil, nil)
	}
	if cfg.PartSize <= 0 {
		cfg.PartSize = 1 << 30
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	srv, err := connect(ctx, cfg.DSN)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	if err := srv.checkArchiving(ctx); err != nil {
		return nil, err
	}
	dataDir, err := checkDataDir(cfg.DataDir, srv.dataDir)
	if err != nil {
		return nil, err
	}
	tli, err := srv.timeline(ctx)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	lock, err := catalog.AcquireBackupLock(ctx, store, catalog.BackupLock{SystemID: srv.systemID, Timeline: tli,
		Host: host, PID: os.Getpid(), DataDir: dataDir, WalgoVersion: cfg.WalgoVersion}, time.Now())
	if err != nil {
		return nil, err
	}
	if old := lock.TookOver; old != nil {
		log.Warn("took over a stale backup lock", zap.String("lock", old.Key), zap.String("holder", old.Describe()))
	}
	ctx, stopLock := holdLock(ctx, lock, log)
	defer func() {
		if cause := stopLock(); err != nil && cause != nil {
			err = cause
		}
	}()
	if srv.standby {
		log.Info("backing up a standby: its files, the WAL its primary archives")
	}
	start, err := srv.start(ctx, "walgo "+time.Now().UTC().Format(time.RFC3339), !cfg.SpreadCheckpoint)
	if err != nil {
		return nil, err
	}
	// The parent is chosen once the start is known: it must have finished
	// by then, on this server's own history.
	parent, err := chooseParent(ctx, store, cfg.Codec, srv.systemID, start, cfg.DeltaMaxSteps, log)
	if err != nil {
		return nil, err
	}
	refused := ""
	if parent != nil {
		if refused = deltaRefusal(srv.lsns, parent); refused != "" {
			log.Warn("delta refused: taking a full backup", zap.String("parent", parent.Name), zap.String("reason", refused))
			parent = nil
		}
	}
	var parentManifest *catalog.Manifest
	if parent != nil {
		// Retention keeps the parent of a running backup: say which it is
		// before reading it.
		if err := lock.Update(ctx, time.Now(), func(l *catalog.BackupLock) { l.DeltaParent = parent.Name }); err != nil {
			return nil, err
		}
		if parentManifest, err = readManifest(ctx, store, cfg.Codec, parent); err != nil {
			return nil, fmt.Errorf("delta parent %s: %w", parent.Name, err)
		}
	}
	startSeg := wal.SegmentAt(start.timeline, start.lsn, srv.segSize)
	parentName := ""
	if parent != nil {
		parentName = parent.Name
	}
	if start.timeline != tli {
		return nil, fmt.Errorf("the cluster switched from timeline %d to %d while the backup started; run backup-push again", tli, start.timeline)
	}
	name, err := catalog.FreeBackupName(ctx, store, startSeg, parentName)
	if err != nil {
		return nil, err
	}
	err = lock.Update(ctx, time.Now(), func(l *catalog.BackupLock) {
		l.Backup, l.DeltaParent, l.StartLSN, l.SegmentSize = name, parentName, start.lsn, srv.segSize
	})
	if err != nil {
		return nil, err
	}
	log.Info("backup started", zap.String("backup", name), zap.Stringer("start_lsn", start.lsn), zap.Uint32("timeline", start.timeline), zap.String("delta_parent", parentName))

	tbs, err := srv.tablespaces(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := walk(dataDir, pgdata.MajorVersion(srv.version))
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", dataDir, err)
	}
	sn = &catalog.Sentinel{
		Format:        catalog.SentinelFormat,
		Name:          name,
		StartLSN:      start.lsn,
		Timeline:      start.timeline,
		StartTime:     start.time,
		PGVersion:     srv.version,
		SystemID:      srv.systemID,
		SegmentSize:   srv.segSize,
		Hostname:      host,
		DataDir:       dataDir,
		Compression:   cfg.Codec.Ext(),
		DeltaParent:   parentName,
		DeltaRefused:  refused,
		Permanent:     cfg.Permanent,
		UserData:      cfg.UserData,
		WalgoVersion:  cfg.WalgoVersion,
		Tablespaces:   []catalog.Tablespace{},
		DataChecksums: srv.lsns.checksums,
		WALLogHints:   srv.lsns.walLogHints,
		ServerStarted: srv.lsns.started.UTC(),
		FromStandby:   srv.standby,
	}
	sn.Tablespaces, sn.WALDir = linkedDirs(entries, tbs)
	var delta *deltaPlan
	if parent != nil {
		sn.DeltaFrom = parent.StartLSN
		delta = newDeltaPlan(parent.StartLSN, parentManifest.Files, entries)
	}

	w := newPartWriter(ctx, store, name, cfg, log)
	files, err := w.writeAll(entries, delta)
	if err != nil {
		return nil, err
	}
	stop, err := srv.stop(ctx)
	if err != nil {
		return nil, err
	}
	sn.FinishLSN, sn.FinishTime, sn.NextXID = stop.lsn, stop.time, stop.nextXID
	sn.BackupLabel, sn.TablespaceMap = stop.label, stop.spcmap
	sn.Parts = w.parts
	for _, p := range w.parts {
		sn.CompressedSize += p.Size
	}
	sn.UncompressedSize = w.plain
	sn.FileCount = len(files)

	// The backup is restorable only once its last WAL segment is in this
	// repository: wait for archive_command to put it there.
	last := wal.SegmentAt(start.timeline, stop.lsn-1, srv.segSize)
	if err := waitArchived(ctx, store, last.Name(), cfg.StopTimeout, srv.standby); err != nil {
		return nil, err
	}

	mkey, msum, err := writeManifest(ctx, store, cfg.Codec, &catalog.Manifest{Format: catalog.ManifestFormat, Backup: name, Files: files})
	if err != nil {
		return nil, err
	}
	sn.ManifestKey, sn.ManifestSHA256 = mkey, msum
	// Still ours? A lost lock means retention may have removed WAL.
	if err := lock.Update(ctx, time.Now(), nil); err != nil {
		return nil, err
	}
	if parent != nil {
		if _, err := catalog.ReadSentinel(ctx, store, parent.Name); err != nil {
			return nil, fmt.Errorf("delta parent %s is gone (%v): deleted while this backup ran? run backup-push again", parent.Name, err)
		}
	}
	if err := catalog.CreateSentinel(ctx, store, sn); err != nil {
		return nil, fmt.Errorf("write sentinel: %w", err)
	}
	log.Info("backup finished", zap.String("backup", name), zap.Stringer("finish_lsn", stop.lsn),
		zap.Int64("bytes", sn.UncompressedSize), zap.Int64("stored_bytes", sn.CompressedSize),
		zap.Int("files", sn.FileCount), zap.Int("parts", len(sn.Parts)), zap.Duration("took", stop.time.Sub(start.time)))
	return sn, nil
}

// linkedDirs lists the cluster's tablespaces for the sentinel, as the walk
// found them (each pg_tblspc/<oid> followed to where it points) named from
// pg_tablespace, and where pg_wal points when it is a symlink. A tablespace
// pg_tablespace lists but the walk did not see (in place, or created since)
// keeps the server's location.
func linkedDirs(entries []entry, tbs []tablespace) ([]catalog.Tablespace, string) {
	out := []catalog.Tablespace{}
	seen := map[uint32]bool{}
	walDir := ""
	for _, e := range entries {
		if e.name == pgdata.WALDir {
			walDir = e.followed
		}
		oid, ok := pgdata.ParseTablespaceLink(e.name)
		if !ok || e.followed == "" {
			continue
		}
		ts := catalog.Tablespace{OID: oid, Location: e.followed}
		for _, t := range tbs {
			if t.oid == oid {
				ts.Name = t.name
			}
		}
		out = append(out, ts)
		seen[oid] = true
	}
	for _, t := range tbs {
		if !seen[t.oid] {
			out = append(out, catalog.Tablespace{OID: t.oid, Name: t.name, Location: t.location})
		}
	}
	return out, walDir
}

func checkDataDir(given, server string) (string, error) {
	if given == "" {
		return server, nil
	}
	a, err := os.Stat(given)
	if err != nil {
		return "", fmt.Errorf("%w: data directory: %v", ErrBadDataDir, err)
	}
	b, err := os.Stat(server)
	if err != nil {
		return "", fmt.Errorf("%w: the server's data directory %s: %v", ErrBadDataDir, server, err)
	}
	if !os.SameFile(a, b) {
		return "", fmt.Errorf("%w: %s is not the data directory of the server walgo connected to (%s)", ErrBadDataDir, given, server)
	}
	return filepath.Abs(given)
}

// ErrBadDataDir: the data directory given does not belong to the server.
var ErrBadDataDir = errors.New("wrong data directory")

// chooseParent returns the backup a delta builds on, or nil for a full:
// the newest backup of this cluster on the server's own lineage (its
// timeline, or an ancestor that its .history file leaves at or after the
// parent's finish) that finished by the new backup's start. A newer backup
// of another history (a fork, or the primary a fork came from) would give
// the delta pages of that history. A chain that is broken, loops or
// crosses histories starts afresh with a full backup.
func chooseParent(ctx context.Context, store storage.Store, cd *codec.Codec, systemID string, start startInfo, maxSteps int, log *zap.Logger) (*catalog.Sentinel, error) {
	if maxSteps <= 0 {
		return nil, nil
	}
	x, err := catalog.ReadLineageIndex(ctx, store, cd)
	if err != nil {
		return nil, fmt.Errorf("choose delta parent: %w", err)
	}
	l := x.Lineage(systemID, start.timeline)
	parent := x.ParentOf(l, start.lsn)
	all := x.Backups()
	for i := len(all) - 1; i >= 0 && all[i] != parent; i-- {
		if b := all[i]; b.SystemID == systemID && !l.HoldsBackup(b) {
			log.Info("a newer backup is of another history: not a delta parent", zap.String("backup", b.Name),
				zap.Uint32("its_timeline", b.Timeline), zap.String("this_history", l.Describe()))
		}
	}
	if parent == nil {
		log.Info("no earlier backup on this server's history: taking a full backup", zap.String("history", l.Describe()))
		return nil, nil
	}
	byName := map[string]*catalog.Sentinel{}
	for _, b := range all {
		byName[b.Name] = b
	}
	steps := 0 // delta links from parent back to its full backup
	for b := parent; b.DeltaParent != ""; steps++ {
		p, ok := byName[b.DeltaParent]
		if !ok || steps >= len(all) {
			log.Warn("the newest backup's delta chain is broken: taking a full backup", zap.String("backup", b.Name), zap.String("missing_parent", b.DeltaParent))
			return nil, nil
		}
		if err := x.Lineage(b.SystemID, b.Timeline).CheckParent(b, p); err != nil {
			log.Warn("the newest backup's delta chain crosses histories: taking a full backup", zap.String("backup", b.Name), zap.Error(err))
			return nil, nil
		}
		b = p
	}
	if steps+1 > maxSteps {
		return nil, nil
	}
	return parent, nil
}

func readManifest(ctx context.Context, store storage.Store, cd *codec.Codec, sn *catalog.Sentinel) (*catalog.Manifest, error) {
	rc, err := store.Get(ctx, sn.ManifestKey)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h := sha256.New()
	_, ext, _ := strings.Cut(sn.ManifestKey, "/manifest.json.")
	dec, err := cd.Decode(ext, io.TeeReader(rc, h))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	m, err := catalog.DecodeManifest(dec)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, dec)
	if hex.EncodeToString(h.Sum(nil)) != sn.ManifestSHA256 {
		return nil, fmt.Errorf("%w: %s: sha256 mismatch", codec.ErrCorrupt, sn.ManifestKey)
	}
	return m, nil
}

func writeManifest(ctx context.Context, store storage.Store, comp *codec.Codec, m *catalog.Manifest) (key, sum string, err error) {
	var buf bytes.Buffer
	w, err := comp.NewWriter(&buf)
	if err != nil {
		return "", "", err
	}
	if err := json.NewEncoder(w).Encode(m); err != nil {
		return "", "", err
	}
	if err := w.Close(); err != nil {
		return "", "", err
	}
	s := sha256.Sum256(buf.Bytes())
	key = catalog.ManifestKey(m.Backup, comp)
	if err := store.Put(ctx, key, bytes.NewReader(buf.Bytes())); err != nil {
		return "", "", fmt.Errorf("write manifest: %w", err)
	}
	return key, hex.EncodeToString(s[:]), nil
}

// waitArchived polls the repository until segment is stored, for at most
// timeout (0 = no limit). A standby archives nothing itself and cannot
// switch WAL segments: its backup's last segment reaches the repository
// once the primary has finished and archived it.
func waitArchived(ctx context.Context, store storage.Store, segment string, timeout time.Duration, standby bool) error {
	start := time.Now()
	for {
		found, _, err := catalog.ListWALCopies(ctx, store, segment)
		if err != nil {
			return err
		}
		if len(found) > 0 {
			return nil
		}
		if timeout > 0 && time.Since(start) >= timeout {
			if standby {
				return fmt.Errorf("%w after %s: the backup's last WAL segment %s was not archived into %s; this is a backup of a standby, whose WAL the primary archives: the primary's archive_command must push into this repository, and it archives a segment only once it is full (set archive_timeout on the primary, or run select pg_switch_wal() there); check the primary's pg_stat_archiver (WALGO_STOP_BACKUP_TIMEOUT sets the limit)", ErrStopTimeout, timeout, segment, store)
			}
			return fmt.Errorf("%w after %s: the backup's last WAL segment %s was not archived into %s; check pg_stat_archiver and that archive_command pushes to this repository (WALGO_STOP_BACKUP_TIMEOUT sets the limit)", ErrStopTimeout, timeout, segment, store)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
