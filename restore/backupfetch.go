package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// Latest names the newest finished backup in BackupFetchOptions.Name.
const Latest = "LATEST"

// maxChain bounds a delta chain, so a corrupt repository cannot make a
// restore walk forever.
const maxChain = 1000

// Target is a point-in-time recovery target. At most one of Immediate,
// Time, LSN, XID and Name may be set (Postgres refuses several). Action and Timeline
// are written only with the recovery settings and do not choose a backup.
type Target struct {
	// Immediate stops recovery as soon as the restored backup is
	// consistent (recovery_target = 'immediate'): the database as of the
	// end of the backup, whatever WAL the archive holds after it.
	Immediate bool
	// Time stops recovery at the first commit after this time.
	Time *time.Time
	// LSN stops recovery at this WAL location.
	LSN *wal.LSN
	// XID stops recovery after this transaction commits or aborts.
	// BackupFetch finds its record in the archived WAL and restores the
	// newest backup that finished before it; Postgres compares the low 32
	// bits only.
	XID *uint64
	// Name stops recovery at this restore point (pg_create_restore_point),
	// found in the archived WAL the same way.
	Name string
	// Action is what Postgres does at the target: "promote" (the default
	// when a target is set), "pause" or "shutdown".
	Action string
	// Timeline overrides recovery_target_timeline: "latest", "current" or
	// a timeline id. Empty (the default) writes the timeline of the
	// lineage the restore follows, so that recovery never follows another
	// history (a fork archiving into the same repository) to its end.
	Timeline string
}

// IsSet reports whether a recovery target (immediate, time, LSN, xid or
// name) is set.
func (t Target) IsSet() bool {
	return t.Immediate || t.Time != nil || t.LSN != nil || t.XID != nil || t.Name != ""
}

// BackupFetchOptions says what BackupFetch restores and how.
type BackupFetchOptions struct {
	// Dir is the data directory to restore into. It is created (0700) if
	// missing; an existing one must be empty unless Overwrite is set.
	Dir string
	// Name is a backup name, Latest for the backup that finished last, or
	// "" for the newest backup that finished before Target (Latest when no
	// target is set). A named or Latest backup must have finished before a
	// time or LSN target.
	Name string
	// Target is the point-in-time recovery target, if any.
	Target Target
	// Lineage names the history to restore (catalog.LineageIndex.Find:
	// "2", or "SYSTEMID:2"): the backup is chosen among its backups, and
	// recovery follows its timeline. Empty: the one lineage the backup
	// and target allow; where several could serve, BackupFetch refuses
	// with catalog.ErrLineage naming them.
	Lineage string
	// Standby makes the restored cluster a standby (standby.signal) that
	// keeps replaying archived WAL, instead of recovering and promoting.
	Standby bool
	// Overwrite empties a non-empty Dir before restoring into it. A Dir
	// holding postmaster.pid is refused even so.
	Overwrite bool
	// Tablespaces maps tablespaces of the backup, by name or oid, to the
	// folder each is restored into instead of its original location.
	// Without an entry, a tablespace goes back to its original location
	// (see TablespacesUnder). A tablespace's folder must be missing or
	// empty (Overwrite does not empty it), and pg_tblspc/<oid> becomes a
	// symlink to it; no tablespace_map is written.
	Tablespaces map[string]string
	// TablespacesUnder, if set, restores every tablespace not in
	// Tablespaces into TablespacesUnder/<oid>: restore drills, which must
	// never write into the production tablespaces' folders.
	TablespacesUnder string
	// WALDir, if set, restores pg_wal as a symlink to this folder (missing
	// or empty), as initdb --waldir makes it; otherwise pg_wal is a folder
	// inside Dir, whatever it was on the backed-up cluster.
	WALDir string
	// Concurrency is how many partitions download at once (at least 1).
	Concurrency int
	// Codec decodes stored objects (decompression, and decryption with
	// its identities); nil reads plain (unencrypted) objects only.
	Codec *codec.Codec
	// RestoreCommand is the restore_command line to write, complete with
	// "%f %p" (see RestoreCommand). Required.
	RestoreCommand string
	// Progress, if set, is called as partitions download, with the stored
	// bytes read so far and the stored size of every partition to read
	// (the whole delta chain). It is called from several goroutines at
	// once and often: it must be quick and do its own throttling.
	Progress func(done, total int64)
	// Log receives progress and warnings; nil logs nothing.
	Log *zap.Logger
}

// BackupFetchResult describes a finished restore.
type BackupFetchResult struct {
	Backup     string        // the backup restored
	Lineage    string        // the lineage recovery follows (its ID)
	Timeline   string        // the recovery_target_timeline written
	Chain      []string      // the backups applied, full backup first
	Downloaded int64         // stored (compressed) bytes read
	Written    int64         // bytes written into files
	Files      int           // regular files in the restored directory
	Duration   time.Duration // wall time
	// Outside maps each folder of the data directory restored elsewhere
	// (pg_tblspc/<oid>, pg_wal) to where it went.
	Outside map[string]string
}

// BackupFetch restores a base backup into opts.Dir and prepares it for
// recovery: it chooses the backup (see BackupFetchOptions.Name), walks its
// delta chain back to the full backup, downloads each layer's partitions in
// parallel, checks every sha256 (partitions, manifest, each file), refuses
// any tar entry that would land outside Dir, restores each tablespace into
// its own folder (see Tablespaces) linked from pg_tblspc, then writes
// backup_label, the recovery settings (into postgresql.auto.conf, or
// recovery.conf before Postgres 12) and recovery.signal or standby.signal,
// and fsyncs what it wrote. global/pg_control is put in place last, so an
// interrupted restore leaves a directory Postgres refuses to start.
//
// Nothing in Dir (or a tablespace folder) is touched until the backup, its
// chain and their manifests have been read and checked and every folder
// outside Dir chosen. On failure BackupFetch removes everything it
// wrote into Dir and the tablespace folders (and those folders it created)
// and returns the error: wrapping storage.ErrNotFound for a missing backup,
// codec.ErrCorrupt for damaged or unsafe data (naming the object key),
// ErrInvalid for bad options, a non-empty Dir or tablespace folder.
func BackupFetch(ctx context.Context, store storage.Store, opts BackupFetchOptions) (*BackupFetchResult, error) {
	start := time.Now()
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	opts.Concurrency = max(1, opts.Concurrency)
	if err := opts.validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: restore folder %s: %v", ErrInvalid, opts.Dir, err)
	}

	x, err := catalog.ReadLineageIndex(ctx, store, opts.Codec)
	if err != nil {
		return nil, err
	}
	lineage := opts.Lineage
	if _, err := strconv.ParseUint(opts.Target.Timeline, 10, 32); err == nil && lineage == "" {
		if _, err := x.Find(opts.Target.Timeline); err == nil {
			lineage = opts.Target.Timeline // recovery along timeline N: that lineage's backups
		}
	}
	var pinned *catalog.Lineage
	if lineage != "" {
		l, err := x.Find(lineage)
		if err != nil {
			return nil, err
		}
		pinned = &l
	}
	search := &targetSearch{store: store, opts: &opts, x: x}
	name, placed, err := search.place(ctx, opts.Name, pinned)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = opts.Name
	}
	if placed != nil {
		pinned = placed // the lineage the target was found on
	}
	ch, err := chooseBackup(ctx, store, x, name, pinned, opts.Target)
	if err != nil {
		return nil, err
	}
	if err := pgdata.CheckVersion(ch.sn.PGVersion); err != nil {
		return nil, fmt.Errorf("%w: backup %s: %w", ErrInvalid, ch.sn.Name, err)
	}
	if err := search.checkEnd(ctx, ch.sn, ch.lineage); err != nil {
		return nil, err
	}
	sn := ch.sn
	if opts.Target.Timeline == "" {
		opts.Target.Timeline = ch.lineage.ID()
	}
	chain, err := backupChain(ctx, store, sn, func(sysid string, tli uint32) (catalog.Lineage, error) {
		return x.Lineage(sysid, tli), nil
	})
	if err != nil {
		return nil, err
	}
	names := make([]string, len(chain))
	for i, s := range chain {
		names[i] = s.Name
	}
	opts.Log.Info("restoring backup", zap.String("backup", sn.Name), zap.Strings("chain", names),
		zap.String("lineage", x.Name(ch.lineage)), zap.String("history", ch.lineage.Describe()), zap.String("recovery_target_timeline", opts.Target.Timeline),
		zap.Time("finished", sn.FinishTime), zap.Stringer("finish_lsn", sn.FinishLSN), zap.String("into", dir))

	layers := make([]*layer, len(chain))
	for i, s := range chain {
		if layers[i], err = fetchManifest(ctx, store, opts.Codec, s, i == 0); err != nil {
			return nil, err
		}
	}

	moved, err := planMoves(layers[len(layers)-1], dir, &opts)
	if err != nil {
		return nil, err
	}
	if from := sn.WALDir; from != "" && opts.WALDir == "" {
		opts.Log.Info("pg_wal was a symlink on the backed-up cluster; it is restored as a folder inside the data directory (--waldir puts it elsewhere)",
			zap.String("original_location", from))
	}
	created, err := prepareDir(dir, opts.Overwrite, opts.Log)
	if err != nil {
		if created {
			os.Remove(dir)
		}
		return nil, err
	}
	res, err := restoreInto(ctx, store, dir, layers, moved, &opts)
	if err != nil {
		undoMoves(moved, opts.Log)
		if cerr := removeContents(dir); cerr != nil {
			opts.Log.Error("could not clean up after a failed restore", zap.String("dir", dir), zap.Error(cerr))
		} else if created {
			os.Remove(dir)
		}
		return nil, err
	}
	res.Chain = names
	res.Lineage, res.Timeline = x.Name(ch.lineage), opts.Target.Timeline
	res.Duration = time.Since(start)
	res.Outside = map[string]string{}
	for _, m := range moved {
		res.Outside[m.path] = m.target
	}
	opts.Log.Info("restored", zap.String("backup", res.Backup), zap.String("into", dir),
		zap.Int64("downloaded", res.Downloaded), zap.Int64("written", res.Written),
		zap.Int("files", res.Files), zap.Duration("took", res.Duration))
	return res, nil
}

func restoreInto(ctx context.Context, store storage.Store, dir string, layers []*layer, moved []*movedDir, opts *BackupFetchOptions) (*BackupFetchResult, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("restore into %s: %w", dir, err)
	}
	defer root.Close()
	t := &destTree{main: root, moved: moved}
	defer t.close()
	if err := openMoves(moved, opts.Log); err != nil {
		return nil, err
	}
	r := newRestorer(t, dir, store, opts)
	r.setTotal(layers)
	for _, l := range layers {
		if err := r.restoreLayer(ctx, l); err != nil {
			return nil, err
		}
	}
	final := layers[len(layers)-1]
	files, err := r.finish(ctx, final)
	if err != nil {
		return nil, err
	}
	if err := r.writeRecoveryFiles(final.sn, opts); err != nil {
		return nil, err
	}
	if err := root.Chmod(".", 0o700); err != nil {
		return nil, fmt.Errorf("restore into %s: %w", dir, err)
	}
	if err := r.syncAll(); err != nil {
		return nil, err
	}
	if err := r.placeControlFile(final); err != nil {
		return nil, err
	}
	return &BackupFetchResult{
		Backup:     final.sn.Name,
		Downloaded: r.downloaded.Load(),
		Written:    r.written.Load(),
		Files:      files,
	}, nil
}

func (o *BackupFetchOptions) validate() error {
	if o.Dir == "" {
		return fmt.Errorf("%w: no restore folder given", ErrInvalid)
	}
	t := &o.Target
	n := 0
	for _, set := range []bool{t.Immediate, t.Time != nil, t.LSN != nil, t.XID != nil, t.Name != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w: give at most one recovery target (immediate, time, LSN, xid or name)", ErrInvalid)
	}
	switch t.Action {
	case "":
		if n > 0 {
			t.Action = "promote"
		}
	case "promote", "pause", "shutdown":
		if n == 0 {
			return fmt.Errorf("%w: a target action needs a recovery target", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: target action %q: want promote, pause or shutdown", ErrInvalid, t.Action)
	}
	switch tl := t.Timeline; tl {
	case "", "latest", "current":
	default:
		if id, err := strconv.ParseUint(tl, 0, 32); err != nil || id == 0 {
			return fmt.Errorf("%w: target timeline %q: want latest, current or a timeline id", ErrInvalid, tl)
		}
	}
	if strings.TrimSpace(o.RestoreCommand) == "" {
		return fmt.Errorf("%w: no restore_command given", ErrInvalid)
	}
	for what, v := range map[string]string{"restore_command": o.RestoreCommand, "target name": t.Name} {
		if strings.ContainsAny(v, "\n\r\x00") {
			return fmt.Errorf("%w: %s contains a line break or NUL", ErrInvalid, what)
		}
	}
	return nil
}

// ChooseBackup is the choice BackupFetch makes, without restoring and
// without reading WAL (name and xid targets are placed in the archive by
// BackupFetch alone): the backup that name (a backup name, Latest, or ""
// for the newest that finished before t) and lineage (empty: the one the
// request allows, see BackupFetchOptions.Lineage) select, and the lineage
// recovery from it follows. History files are read with cd. catalog.ErrLineage when the
// lineage is unknown, the backup is not on it, or several could serve.
func ChooseBackup(ctx context.Context, store storage.Store, cd *codec.Codec, name, lineage string, t Target) (*catalog.Sentinel, catalog.Lineage, error) {
	x, err := catalog.ReadLineageIndex(ctx, store, cd)
	if err != nil {
		return nil, catalog.Lineage{}, err
	}
	var pinned *catalog.Lineage
	if lineage != "" {
		l, err := x.Find(lineage)
		if err != nil {
			return nil, catalog.Lineage{}, err
		}
		pinned = &l
	}
	ch, err := chooseBackup(ctx, store, x, name, pinned, t)
	return ch.sn, ch.lineage, err
}

// choice is what a restore recovers: a backup, and the lineage recovery
// follows from it.
type choice struct {
	sn      *catalog.Sentinel
	lineage catalog.Lineage
}

// chooseBackup picks the backup to restore and the history to follow: a
// name, Latest, or with no name the newest backup that finished before the
// target (Latest without one), among the backups of lineage pinned (every
// backup when it is nil). Without a lineage, the backup and target must leave
// one: a history that several lineages share up to the target (an LSN,
// or a time before a backup they all hold finished, or the end of the
// backup) is followed on the timeline it is on there; otherwise the
// choice is refused, naming the lineages.
func chooseBackup(ctx context.Context, store storage.Store, x *catalog.LineageIndex, name string, pinned *catalog.Lineage, t Target) (choice, error) {
	if name != "" && !strings.EqualFold(name, Latest) {
		sn, err := catalog.ReadSentinel(ctx, store, name)
		if errors.Is(err, storage.ErrNotFound) {
			return choice{}, fmt.Errorf("backup %q: %w in %s", name, storage.ErrNotFound, store)
		}
		if err != nil {
			return choice{}, err
		}
		if err := reachable(sn, t); err != nil {
			return choice{}, err
		}
		if pinned != nil {
			if !pinned.HoldsBackup(sn) {
				return choice{}, fmt.Errorf("%w: backup %s is not on lineage %s (%s); it is on lineage %s",
					catalog.ErrLineage, sn.Name, x.Name(*pinned), pinned.Describe(), strings.Join(x.Names(x.Of(sn)), ", "))
			}
			return choice{sn, *pinned}, nil
		}
		l, err := oneLineage(x, x.Of(sn), sn, t, "restore "+sn.Name)
		return choice{sn, l}, err
	}

	latest := name != "" || !t.IsSet()
	qualifies := func(b *catalog.Sentinel) bool { return latest || finishedBefore(b, t) }
	newest := func(bs []*catalog.Sentinel) *catalog.Sentinel {
		for i := len(bs) - 1; i >= 0; i-- {
			if qualifies(bs[i]) {
				return bs[i]
			}
		}
		return nil
	}
	pool, where := x.Backups(), ""
	if pinned != nil {
		pool, where = x.BackupsOf(*pinned), " on lineage "+x.Name(*pinned)
	}
	if len(pool) == 0 {
		return choice{}, fmt.Errorf("no backups%s: %w in %s", where, storage.ErrNotFound, store)
	}
	if newest(pool) == nil {
		return choice{}, fmt.Errorf("no backup%s finished before the recovery target %s (the oldest finished at %s, LSN %s): %w",
			where, describeTarget(t), pool[0].FinishTime.UTC().Format(time.RFC3339), pool[0].FinishLSN, storage.ErrNotFound)
	}
	pick := func(l catalog.Lineage) (choice, error) {
		sn := newest(x.BackupsOf(l))
		if latest {
			if err := reachable(sn, t); err != nil {
				return choice{}, err
			}
		}
		return choice{sn, l}, nil
	}
	if pinned != nil {
		return pick(*pinned)
	}
	var cands []catalog.Lineage
	for _, l := range x.All() {
		if newest(x.BackupsOf(l)) != nil {
			cands = append(cands, l)
		}
	}
	if len(cands) == 1 {
		return pick(cands[0])
	}
	if t.Immediate {
		// The end of the newest backup, whichever history it is on.
		sn := newest(pool)
		return choice{sn, x.Lineage(sn.SystemID, sn.Timeline)}, nil
	}
	what := "restore LATEST"
	if !latest {
		what = "restore to " + describeTarget(t)
	}
	if l, ok := commonAt(x, cands, t); ok && !latest {
		return pick(l)
	}
	return choice{}, x.Ambiguous(what, cands)
}

// oneLineage is the lineage a restore of sn to target t follows, among
// cands (the lineages holding sn).
func oneLineage(x *catalog.LineageIndex, cands []catalog.Lineage, sn *catalog.Sentinel, t Target, what string) (catalog.Lineage, error) {
	switch {
	case len(cands) == 0:
		return x.Lineage(sn.SystemID, sn.Timeline), nil
	case len(cands) == 1:
		return cands[0], nil
	case t.Immediate:
		return x.Lineage(sn.SystemID, sn.Timeline), nil
	}
	if l, ok := commonAt(x, cands, t); ok {
		return l, nil
	}
	return catalog.Lineage{}, x.Ambiguous(what, cands)
}

// commonAt is the lineage every one of cands follows up to target t, when
// the target is known to lie before their histories part: an LSN at or
// before it, or a time at or before the finish of a backup every one of
// them holds (that backup finished before they parted).
func commonAt(x *catalog.LineageIndex, cands []catalog.Lineage, t Target) (catalog.Lineage, bool) {
	switch {
	case t.LSN != nil:
		return x.CommonAt(cands, *t.LSN)
	case t.Time != nil:
		for _, b := range x.Backups() {
			shared := true
			for _, l := range cands {
				shared = shared && l.HoldsBackup(b)
			}
			if shared && !b.FinishTime.Before(*t.Time) {
				return x.CommonAt(cands, b.FinishLSN)
			}
		}
	}
	return catalog.Lineage{}, false
}

// finishedBefore reports whether recovery from sn can reach target t. A
// restore point name cannot be placed in time, so any backup qualifies.
func finishedBefore(sn *catalog.Sentinel, t Target) bool {
	switch {
	case t.Time != nil:
		return sn.FinishTime.Before(*t.Time)
	case t.LSN != nil:
		return sn.FinishLSN <= *t.LSN
	case t.XID != nil:
		return sn.NextXID <= *t.XID
	}
	return true
}

// reachable refuses a backup chosen by name (or as Latest) that finished
// after a time or LSN target: recovery cannot stop before the point where
// the backup becomes consistent. An xid cannot be placed that surely.
func reachable(sn *catalog.Sentinel, t Target) error {
	if (t.Time != nil || t.LSN != nil) && !finishedBefore(sn, t) {
		return fmt.Errorf("%w: backup %s finished at %s (LSN %s), not before the recovery target %s: recovery could not stop there",
			ErrInvalid, sn.Name, sn.FinishTime.UTC().Format(time.RFC3339), sn.FinishLSN, describeTarget(t))
	}
	return nil
}

func describeTarget(t Target) string {
	switch {
	case t.Immediate:
		return "immediate (the end of the backup)"
	case t.Time != nil:
		return "time " + t.Time.UTC().Format(time.RFC3339Nano)
	case t.LSN != nil:
		return "LSN " + t.LSN.String()
	case t.XID != nil:
		return "xid " + strconv.FormatUint(*t.XID, 10)
	case t.Name != "":
		return "restore point " + strconv.Quote(t.Name)
	}
	return "(none)"
}

// backupChain returns sn's delta chain, full backup first, sn last. Every
// parent must exist and, on the lineage of its child's timeline (from
// lineageOf), be of the same cluster and history and finish before its
// child starts (catalog.Lineage.CheckParent): a chain that crosses
// histories would restore another history's pages.
func backupChain(ctx context.Context, store storage.Store, sn *catalog.Sentinel, lineageOf func(sysid string, tli uint32) (catalog.Lineage, error)) ([]*catalog.Sentinel, error) {
	chain := []*catalog.Sentinel{sn}
	seen := map[string]bool{sn.Name: true}
	for cur := sn; cur.DeltaParent != ""; {
		if seen[cur.DeltaParent] || len(chain) >= maxChain {
			return nil, fmt.Errorf("%w: backup %s: delta chain loops or is longer than %d", codec.ErrCorrupt, sn.Name, maxChain)
		}
		p, err := catalog.ReadSentinel(ctx, store, cur.DeltaParent)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("backup %s: delta parent %s: %w in %s", cur.Name, cur.DeltaParent, storage.ErrNotFound, store)
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: delta parent: %w", cur.Name, err)
		}
		if p.SystemID != sn.SystemID {
			return nil, fmt.Errorf("%w: backup %s: delta parent %s is of another cluster (system id %s, not %s)",
				codec.ErrCorrupt, cur.Name, p.Name, p.SystemID, sn.SystemID)
		}
		if p.StartLSN >= cur.StartLSN {
			return nil, fmt.Errorf("%w: backup %s: delta parent %s does not start before it", codec.ErrCorrupt, cur.Name, p.Name)
		}
		l, err := lineageOf(cur.SystemID, cur.Timeline)
		if err != nil {
			return nil, fmt.Errorf("backup %s: delta parent: %w", cur.Name, err)
		}
		if err := l.CheckParent(cur, p); err != nil {
			return nil, fmt.Errorf("%w: backup %s: the delta chain is broken at %s -> %s: %v", codec.ErrCorrupt, sn.Name, cur.Name, p.Name, err)
		}
		seen[p.Name] = true
		chain = append(chain, p)
		cur = p
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	if strings.TrimSpace(sn.BackupLabel) == "" {
		return nil, fmt.Errorf("%w: backup %s has no backup_label", codec.ErrCorrupt, sn.Name)
	}
	return chain, nil
}

// layer is one backup of a chain with its checked manifest.
type layer struct {
	sn    *catalog.Sentinel
	m     *catalog.Manifest
	files map[string]*catalog.ManifestFile // by cleaned path
}

// fetchManifest downloads a backup's manifest, checks the sha256 of its
// stored bytes against the sentinel, decodes and validates it.
func fetchManifest(ctx context.Context, store storage.Store, cd *codec.Codec, sn *catalog.Sentinel, full bool) (*layer, error) {
	key := sn.ManifestKey
	if !strings.HasPrefix(key, catalog.BackupFolder(sn.Name)) || strings.Contains(key, "..") {
		return nil, fmt.Errorf("%w: backup %s: manifest key %q is outside the backup", codec.ErrCorrupt, sn.Name, key)
	}
	ext, err := keyExt(key, ".json.")
	if err != nil {
		return nil, err
	}
	rc, err := store.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: backup %s: manifest %s is missing", codec.ErrCorrupt, sn.Name, key)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	src := &sourceReader{ctx: ctx, r: io.TeeReader(rc, h)}
	dec, err := cd.Decode(ext, src)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", key, err)
	}
	m, err := catalog.DecodeManifest(dec)
	if err == nil {
		_, err = io.Copy(io.Discard, dec) // to the codec's end and its checks
	}
	dec.Close()
	if err == nil {
		_, err = io.Copy(io.Discard, src)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", key, readError(err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, sn.ManifestSHA256) {
		return nil, fmt.Errorf("%w: %s: sha256 %s, the sentinel says %s", codec.ErrCorrupt, key, got, sn.ManifestSHA256)
	}
	files, err := checkManifest(m, sn, full)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	for _, p := range sn.Parts {
		if !strings.HasPrefix(p.Key, catalog.BackupFolder(sn.Name)) || strings.Contains(p.Key, "..") {
			return nil, fmt.Errorf("%w: backup %s: partition key %q is outside the backup", codec.ErrCorrupt, sn.Name, p.Key)
		}
		if _, err := keyExt(p.Key, ".tar."); err != nil {
			return nil, err
		}
	}
	return &layer{sn: sn, m: m, files: files}, nil
}

// keyExt returns the codec extension after sep in a key
// ("part_001.tar.zst.age" with sep ".tar." gives "zst.age").
func keyExt(key, sep string) (string, error) {
	i := strings.LastIndex(key, sep)
	if i < 0 {
		return "", fmt.Errorf("%w: %s: no %q extension", codec.ErrCorrupt, key, strings.Trim(sep, "."))
	}
	ext := key[i+len(sep):]
	if !slices.Contains(codec.AllExts(), ext) {
		return "", fmt.Errorf("%s: %w: extension %q", key, codec.ErrUnknown, ext)
	}
	return ext, nil
}

// checkManifest validates every entry of m and indexes them by path.
func checkManifest(m *catalog.Manifest, sn *catalog.Sentinel, full bool) (map[string]*catalog.ManifestFile, error) {
	if m.Backup != sn.Name {
		return nil, fmt.Errorf("%w: manifest of backup %q, not %s", codec.ErrCorrupt, m.Backup, sn.Name)
	}
	// Unsafe paths first: they say the most about a backup.
	names := make([]string, len(m.Files))
	for i, f := range m.Files {
		p, err := cleanEntryName(f.Path)
		if err == nil && p == controlTmp {
			err = errors.New("reserved name")
		}
		if err != nil {
			return nil, fmt.Errorf("%w: refusing manifest entry %q: %v", codec.ErrCorrupt, f.Path, err)
		}
		names[i] = p
	}
	files := make(map[string]*catalog.ManifestFile, len(m.Files))
	for i := range m.Files {
		f, p := &m.Files[i], names[i]
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: manifest entry %q: %s", codec.ErrCorrupt, f.Path, fmt.Sprintf(format, args...))
		}
		if p == "." {
			continue // the data directory itself: always 0700
		}
		if files[p] != nil {
			return nil, bad("listed twice")
		}
		mode := fs.FileMode(f.Mode)
		switch {
		case mode.IsRegular():
			switch f.Delta {
			case "", "pages", "unchanged":
			default:
				return nil, bad("unknown delta kind %q", f.Delta)
			}
			if full && f.Delta != "" {
				return nil, bad("delta %q in a full backup", f.Delta)
			}
			if f.Size < 0 {
				return nil, bad("negative size")
			}
			// A whole file has a sha256; a delta's may be unknown to the
			// backup (hint bits change pages without changing their LSN).
			if f.Delta == "" || f.SHA256 != "" {
				if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
					return nil, bad("invalid sha256 %q", f.SHA256)
				}
			}
			for _, pg := range f.Pages {
				if int64(pg)*pgdata.PageSize >= f.Size {
					return nil, bad("page %d is past the end (size %d)", pg, f.Size)
				}
			}
			if len(f.Pages) > 0 && f.Delta != "pages" {
				return nil, bad("pages listed for delta %q", f.Delta)
			}
		case mode.IsDir():
		case mode&fs.ModeSymlink != 0:
			if f.Link == "" {
				return nil, bad("symlink without a target")
			}
		default:
			return nil, bad("unsupported file type %v", mode.Type())
		}
		if !mode.IsRegular() && f.Delta != "" {
			return nil, bad("delta %q on a %v", f.Delta, mode.Type())
		}
		files[p] = f
	}
	return files, nil
}

// prepareDir makes dir an empty folder: creating it (0700) if missing,
// emptying it if it is not and overwrite is set. It reports whether it
// created dir.
func prepareDir(dir string, overwrite bool, log *zap.Logger) (bool, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("restore into %s: %w", dir, err)
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return true, fmt.Errorf("restore into %s: fsync parent: %w", dir, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("restore into %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%w: restore into %s: not a folder", ErrInvalid, dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("restore into %s: %w", dir, err)
	}
	if len(ents) == 0 {
		return false, nil
	}
	if !overwrite {
		return false, fmt.Errorf("%w: restore into %s: the folder is not empty (it holds %s); pass --overwrite to replace its contents",
			ErrInvalid, dir, ents[0].Name())
	}
	if _, err := os.Lstat(filepath.Join(dir, pgdata.PIDFile)); err == nil {
		return false, fmt.Errorf("%w: restore into %s: postmaster.pid is present, a server may be running there; stop it and remove the file first",
			ErrInvalid, dir)
	}
	log.Warn("emptying the restore folder", zap.String("dir", dir), zap.Int("entries", len(ents)))
	if err := removeContents(dir); err != nil {
		return false, fmt.Errorf("restore into %s: empty it: %w", dir, err)
	}
	return false, nil
}

// removeContents removes everything inside dir, never following symlinks,
// making read-only folders writable first so their contents can go.
func removeContents(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
