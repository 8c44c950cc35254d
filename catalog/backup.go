package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// A backup is stored as:
//
//   - tar partitions part_001.tar.<ext> ... (ustar/PAX), compressed with the
//     codec the extension names. Entries are paths relative to the data
//     directory, slash-separated, never absolute, never with "..": folders
//     (TypeDir), regular files (TypeReg) and symlinks (TypeSymlink). A
//     tablespace is stored as the folder pg_tblspc/<oid>/ with its
//     contents; the sentinel says where it was (Tablespaces). A file the manifest marks Delta "pages" is stored as only
//     its changed 8 KiB pages, in the order of ManifestFile.Pages; a file
//     marked "unchanged" has no entry at all. Each file appears once in
//     one partition. Part.SHA256 is over the stored (compressed) bytes.
//   - manifest.json.<ext>: the Manifest as JSON, compressed likewise; the
//     sentinel holds the sha256 of its stored bytes.
//   - the sentinel, plain JSON, written last. backup_label (and the
//     tablespace_map pg_backup_stop returned) are in it, not in the tars,
//     so a restore writes backup_label only once everything else is in
//     place and checked.

// BackupPrefix is the folder base backups live in (WAL-E/WAL-G's name).
const BackupPrefix = "basebackups_005/"

// SentinelFormat is the sentinel format this walgo writes; readers reject
// any other, so an old walgo never misreads a newer backup.
const SentinelFormat = 1

// ManifestFormat is the manifest format this walgo writes and reads.
const ManifestFormat = 1

const sentinelSuffix = "_backup_stop_sentinel.json"

// ErrFormat: a sentinel or manifest of a format this walgo does not know.
var ErrFormat = errors.New("unknown backup format")

// A backup is named after the WAL segment its start LSN is in:
// base_<start segment> for a full backup, base_<start>_D_<parent's start>
// for a delta. Two backups can start in the same segment (run one after the
// other on an idle cluster, or on a standby with no new restartpoint): the
// second and later get a sequence suffix, base_<start>[_D_<parent>]_<seq>,
// seq 8 upper-case hex digits from 2. So names sort by start segment, and
// backups that started in one segment sort in the order they were named.

// BackupID is what a backup name says.
type BackupID struct {
	Start wal.Segment
	// Parent is the delta parent's start segment; nil for a full backup.
	Parent *wal.Segment
	// Seq is 0 for the first backup named after this start (and parent),
	// 2 and up for later ones.
	Seq uint32
}

// Name spells the id.
func (id BackupID) Name() string {
	n := "base_" + id.Start.Name()
	if id.Parent != nil {
		n += "_D_" + id.Parent.Name()
	}
	if id.Seq > 1 {
		n += fmt.Sprintf("_%08X", id.Seq)
	}
	return n
}

// ParseBackupName reads a backup name; it is the one definition of what a
// backup name may be (and so what is safe to put in a key).
func ParseBackupName(name string) (BackupID, error) {
	bad := fmt.Errorf("%w: %q is not a backup name (base_<segment>[_D_<segment>][_<seq>])", wal.ErrBadName, name)
	rest, ok := strings.CutPrefix(name, "base_")
	if !ok || len(rest) < 24 {
		return BackupID{}, bad
	}
	start, err := wal.ParseSegment(rest[:24])
	if err != nil {
		return BackupID{}, bad
	}
	id := BackupID{Start: start}
	rest = rest[24:]
	if p, ok := strings.CutPrefix(rest, "_D_"); ok {
		if len(p) < 24 {
			return BackupID{}, bad
		}
		ps, err := wal.ParseSegment(p[:24])
		if err != nil {
			return BackupID{}, bad
		}
		id.Parent, rest = &ps, p[24:]
	}
	if rest != "" {
		q, ok := strings.CutPrefix(rest, "_")
		if !ok || len(q) != 8 || !isUpperHex(q) {
			return BackupID{}, bad
		}
		v, _ := strconv.ParseUint(q, 16, 32)
		if v < 2 { // one spelling per name: the first has no suffix
			return BackupID{}, bad
		}
		id.Seq = uint32(v)
	}
	return id, nil
}

func isUpperHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// BackupName names a full backup after its start segment, a delta after
// its own and its parent's start segments (without a sequence suffix: see
// FreeBackupName for a name no other backup has).
func BackupName(start wal.Segment, parent string) string {
	id := BackupID{Start: start}
	if parent != "" {
		if p, err := ParseBackupName(parent); err == nil {
			id.Parent = &p.Start
		}
	}
	return id.Name()
}

// ValidBackupName reports whether name could be a backup name (and so is
// safe to put in a key).
func ValidBackupName(name string) bool {
	_, err := ParseBackupName(name)
	return err == nil
}

// PartKey is the key of tar partition n (1-based) of a backup.
func PartKey(backup string, n int, c Ext) string {
	return fmt.Sprintf("%s%s/part_%03d.tar.%s", BackupPrefix, backup, n, c.Ext())
}

// ManifestKey is the key of a backup's manifest.
func ManifestKey(backup string, c Ext) string {
	return BackupPrefix + backup + "/manifest.json." + c.Ext()
}

// SentinelKey is the key of a backup's sentinel: a backup exists only if
// this object does.
func SentinelKey(backup string) string { return BackupPrefix + backup + sentinelSuffix }

// BackupFolder is the prefix of every object of one backup but its sentinel.
func BackupFolder(backup string) string { return BackupPrefix + backup + "/" }

// Part describes one stored tar partition.
type Part struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`   // stored bytes
	SHA256 string `json:"sha256"` // of the stored bytes
}

// Tablespace is one tablespace of the backed-up cluster (pg_default and
// pg_global, which live in the data directory, are not listed). Its files
// are stored under pg_tblspc/<oid>/.
type Tablespace struct {
	OID  uint32 `json:"oid"`
	Name string `json:"name"`
	// Location is where pg_tblspc/<oid> pointed: an absolute folder, or
	// pg_tblspc/<oid> itself for an in-place tablespace.
	Location string `json:"location"`
}

// Sentinel describes one finished backup. It is written last.
type Sentinel struct {
	Format           int          `json:"format"`
	Name             string       `json:"name"`
	StartLSN         wal.LSN      `json:"start_lsn"`
	FinishLSN        wal.LSN      `json:"finish_lsn"`
	Timeline         uint32       `json:"timeline"`
	StartTime        time.Time    `json:"start_time"`
	FinishTime       time.Time    `json:"finish_time"`
	PGVersion        int          `json:"pg_version"`
	SystemID         string       `json:"system_identifier"`
	SegmentSize      int64        `json:"wal_segment_size"`
	NextXID          uint64       `json:"next_xid"`
	Hostname         string       `json:"hostname"`
	DataDir          string       `json:"data_directory"`
	CompressedSize   int64        `json:"compressed_size"`
	UncompressedSize int64        `json:"uncompressed_size"`
	FileCount        int          `json:"file_count"`
	Compression      string       `json:"compression"`
	Parts            []Part       `json:"parts"`
	ManifestKey      string       `json:"manifest_key"`
	ManifestSHA256   string       `json:"manifest_sha256"`
	BackupLabel      string       `json:"backup_label"`
	TablespaceMap    string       `json:"tablespace_map,omitempty"`
	Tablespaces      []Tablespace `json:"tablespaces"`
	// WALDir is where pg_wal pointed when it was a symlink (initdb
	// --waldir); empty when it was a folder.
	WALDir      string  `json:"wal_directory,omitempty"`
	DeltaParent string  `json:"delta_parent,omitempty"`
	DeltaFrom   wal.LSN `json:"delta_from_lsn,omitempty"`
	// DeltaRefused says why a delta was asked for and a full backup taken
	// instead (page LSNs that cannot be trusted).
	DeltaRefused string `json:"delta_refused,omitempty"`
	// DataChecksums and WALLogHints are the cluster's settings while the
	// backup ran, ServerStarted when its server had started: whether a
	// delta may trust page LSNs since this backup.
	DataChecksums bool      `json:"data_checksums"`
	WALLogHints   bool      `json:"wal_log_hints"`
	ServerStarted time.Time `json:"server_started,omitzero"`
	// FromStandby: the backup was taken on a hot standby (its files, the
	// primary's archived WAL).
	FromStandby  bool            `json:"from_standby,omitempty"`
	Permanent    bool            `json:"permanent"`
	UserData     json.RawMessage `json:"user_data,omitempty"`
	WalgoVersion string          `json:"walgo_version"`
}

// ManifestFile is one file of a backup.
type ManifestFile struct {
	Path    string    `json:"path"` // slash-separated, relative to the data directory
	Size    int64     `json:"size"` // of the restored file
	Mode    uint32    `json:"mode"` // fs.FileMode bits
	ModTime time.Time `json:"mtime"`
	SHA256  string    `json:"sha256,omitempty"` // of the restored file; empty for folders and links
	Link    string    `json:"link,omitempty"`   // symlink target
	// Delta: "" stores the whole file in this backup; "pages" stores only
	// changed pages (Pages lists them); "unchanged" stores nothing: the
	// file is taken from the parent backup.
	Delta string   `json:"delta,omitempty"`
	Pages []uint32 `json:"pages,omitempty"`
}

// Manifest lists every file a backup restores.
type Manifest struct {
	Format int            `json:"format"`
	Backup string         `json:"backup"`
	Files  []ManifestFile `json:"files"`
}

// EncodeSentinel is the sentinel's stored form.
func EncodeSentinel(s *Sentinel) ([]byte, error) {
	return json.MarshalIndent(s, "", "  ")
}

// DecodeSentinel parses a stored sentinel, rejecting unknown formats.
func DecodeSentinel(b []byte) (*Sentinel, error) {
	var s Sentinel
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: sentinel: %v", codec.ErrCorrupt, err)
	}
	if s.Format != SentinelFormat {
		return nil, fmt.Errorf("%w: sentinel format %d (this walgo reads %d)", ErrFormat, s.Format, SentinelFormat)
	}
	if !ValidBackupName(s.Name) {
		return nil, fmt.Errorf("%w: sentinel: invalid backup name %q", codec.ErrCorrupt, s.Name)
	}
	return &s, nil
}

// DecodeManifest parses a manifest's plain JSON, rejecting unknown formats.
func DecodeManifest(r io.Reader) (*Manifest, error) {
	var m Manifest
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", codec.ErrCorrupt, err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("%w: manifest format %d (this walgo reads %d)", ErrFormat, m.Format, ManifestFormat)
	}
	return &m, nil
}

// ReadSentinel fetches one backup's sentinel; ErrNotFound if the backup
// does not exist (or never finished). A backup this walgo cannot restore
// is an error naming what it is: another tool's or a newer walgo's wraps
// ErrForeign, a damaged sentinel or one that disagrees with its key
// (CheckSentinelKey) wraps codec.ErrCorrupt.
func ReadSentinel(ctx context.Context, s storage.Store, name string) (*Sentinel, error) {
	if !ValidBackupName(name) {
		return nil, fmt.Errorf("backup %q: %w", name, storage.ErrNotFound)
	}
	sn, f, err := readSentinel(ctx, s, name)
	switch {
	case err != nil:
		return nil, fmt.Errorf("backup %s: %w", name, err)
	case f != nil && f.Kind == ForeignDamaged:
		return nil, fmt.Errorf("backup %s: %w: sentinel %s is %s", name, codec.ErrCorrupt, f.Key, f.Problem)
	case f != nil:
		return nil, fmt.Errorf("backup %s: %w: %s", name, ErrForeign, f.Problem)
	}
	return sn, nil
}

// readSmall reads a small object (a sentinel) whole, at most limit bytes.
func readSmall(ctx context.Context, s storage.Store, key string, limit int64) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}

// CreateSentinel stores a new backup's sentinel; after it, the backup
// exists. If another sentinel is already stored under its name it fails
// with ErrNameTaken and overwrites nothing; finding this very sentinel (a
// retried create whose first attempt went through) is success.
func CreateSentinel(ctx context.Context, s storage.Store, sn *Sentinel) error {
	b, err := EncodeSentinel(sn)
	if err != nil {
		return err
	}
	key := SentinelKey(sn.Name)
	err = createObject(ctx, s, key, b)
	if errors.Is(err, errExists) {
		// A retried write whose first attempt went through finds its own.
		if stored, rerr := readSmall(ctx, s, key, int64(len(b))+1); rerr == nil && bytes.Equal(stored, b) {
			return nil
		}
		return fmt.Errorf("%w: a sentinel for %s already exists in %s; nothing overwritten", ErrNameTaken, sn.Name, s)
	}
	return err
}

// WriteSentinel stores a sentinel, replacing the one stored (backup-mark).
func WriteSentinel(ctx context.Context, s storage.Store, sn *Sentinel) error {
	b, err := EncodeSentinel(sn)
	if err != nil {
		return err
	}
	return s.Put(ctx, SentinelKey(sn.Name), bytes.NewReader(b))
}

// ListBackups returns every finished backup this walgo can restore,
// oldest finish time first (see ListAllBackups for the others). Ages come
// from the sentinels' times, never from names.
func ListBackups(ctx context.Context, s storage.Store) ([]*Sentinel, error) {
	all, err := ListAllBackups(ctx, s)
	if err != nil {
		return nil, err
	}
	return all.Own, nil
}
