package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// Sentinels walgo cannot restore. basebackups_005/ may be shared with
// WAL-G and WAL-E (the same folder names), hold a sentinel a newer walgo
// wrote, or a damaged one. None of them may stop a listing: each is
// reported as a ForeignBackup, never chosen for a restore or as a delta
// parent, never deleted but by delete everything, and the WAL from its
// start is kept by retention (unless asked otherwise).
//
// WAL-G's sentinel (internal/databases/postgres/backup_sentinel_dto.go,
// BackupSentinelDto and its V2) is JSON with "LSN" (start) and "FinishLSN"
// as plain numbers, "PgVersion", "SystemIdentifier", "DeltaFrom", sizes,
// and since V2 "Version": 2, "StartTime", "FinishTime", "Hostname",
// "IsPermanent". WAL-E's holds "wal_segment_backup_start" and
// "wal_segment_offset_backup_start" (and _stop), and names its backups
// base_<segment>_<offset>.

// Kinds of foreign backups.
const (
	ForeignWALG    = "WAL-G"
	ForeignWALE    = "WAL-E"
	ForeignNewer   = "newer walgo"
	ForeignDamaged = "damaged"
	ForeignUnknown = "unknown"
)

// ForeignBackup is a sentinel under BackupPrefix that this walgo cannot
// restore, with what could be read of it.
type ForeignBackup struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	// Kind is what it is: WAL-G, WAL-E, newer walgo, damaged, unknown.
	Kind       string    `json:"kind"`
	Timeline   uint32    `json:"timeline,omitempty"`
	StartLSN   wal.LSN   `json:"start_lsn,omitempty"`
	FinishLSN  wal.LSN   `json:"finish_lsn,omitempty"`
	StartTime  time.Time `json:"start_time,omitzero"`
	FinishTime time.Time `json:"finish_time,omitzero"`
	PGVersion  int       `json:"pg_version,omitempty"`
	SystemID   string    `json:"system_identifier,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
	Permanent  bool      `json:"permanent,omitempty"`
	DeltaFrom  string    `json:"delta_from,omitempty"`
	// StartKnown: Timeline and StartLSN say where its WAL begins (from its
	// sentinel, or failing that from the segment its name starts with).
	StartKnown bool `json:"start_known"`
	// Problem says why walgo cannot restore it and what to do.
	Problem string `json:"problem"`
}

// Backups is what BackupPrefix holds.
type Backups struct {
	// Own are the finished backups this walgo can restore, oldest finish
	// time first.
	Own []*Sentinel
	// Foreign are the sentinels it cannot, by name.
	Foreign []ForeignBackup
}

// ErrForeign: a backup this walgo cannot restore: another tool's or a
// newer walgo's (a damaged sentinel or one that disagrees with its key
// wraps codec.ErrCorrupt instead).
var ErrForeign = errors.New("not a backup this walgo can restore")

// sentinelConcurrency bounds the sentinels a listing reads at once: on an
// object store each read is a round trip, and a thousand of them one after
// the other take seconds. 128 reads 1,000 sentinels in 8 rounds; more
// gained nothing measurable (BenchmarkListBackups1000) and costs a
// connection (and on S3 a TLS handshake) each. A variable for the
// benchmark.
var sentinelConcurrency = 128

// maxSentinel bounds a walgo sentinel read into memory. Other tools'
// sentinels are read as a stream, whatever their size (WAL-G's older ones
// embed the list of every file).
const maxSentinel = 16 << 20

// ListAllBackups lists BackupPrefix and reads every sentinel, at most
// sentinelConcurrency at once. A sentinel walgo cannot restore is returned
// in Foreign, never as an error; only failures of the store itself (and a
// canceled ctx) fail the listing. A sentinel that is gone when read (a
// concurrent delete) is skipped.
func ListAllBackups(ctx context.Context, s storage.Store) (*Backups, error) {
	var names []string
	err := s.List(ctx, BackupPrefix, func(oi storage.ObjectInfo) error {
		rest := strings.TrimPrefix(oi.Key, BackupPrefix)
		if n, ok := strings.CutSuffix(rest, sentinelSuffix); ok && n != "" && !strings.Contains(n, "/") {
			names = append(names, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	type read struct {
		own     *Sentinel
		foreign *ForeignBackup
		err     error
	}
	results := make([]read, len(names))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eachBounded(sentinelConcurrency, len(names), func(i int) {
		own, foreign, err := readSentinel(ctx, s, names[i])
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			cancel()
		}
		results[i] = read{own, foreign, err}
	})
	out := &Backups{}
	for i, r := range results {
		switch {
		case errors.Is(r.err, storage.ErrNotFound):
		case r.err != nil:
			return nil, fmt.Errorf("backup %s: %w", names[i], r.err)
		case r.own != nil:
			out.Own = append(out.Own, r.own)
		default:
			out.Foreign = append(out.Foreign, *r.foreign)
		}
	}
	sort.SliceStable(out.Own, func(i, j int) bool { return out.Own[i].FinishTime.Before(out.Own[j].FinishTime) })
	return out, nil
}

// readSentinel reads the sentinel of backup name: a walgo backup this
// walgo restores, or what it is otherwise. err is only the store's.
func readSentinel(ctx context.Context, s storage.Store, name string) (*Sentinel, *ForeignBackup, error) {
	key := SentinelKey(name)
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	// A walgo sentinel is decoded from its bytes as they are; the fields
	// describe the others, streamed whatever their size.
	whole := &capped{max: maxSentinel}
	fields, err := topLevelFields(io.TeeReader(rc, whole), describeFields)
	if err != nil {
		var se sourceErr
		if errors.As(err, &se) {
			return nil, nil, se.err
		}
		return nil, damaged(name, key, "it is not a valid JSON object ("+err.Error()+")"), nil
	}
	if raw, ok := fields["format"]; ok {
		return ownSentinel(name, key, raw, fields, whole)
	}
	f := ForeignBackup{Name: name, Key: key, Kind: ForeignUnknown}
	startFromName(&f)
	switch {
	case fields["LSN"] != nil || fields["FinishLSN"] != nil || fields["PgVersion"] != nil:
		f.Kind = ForeignWALG
		walgSentinel(&f, fields)
		f.Problem = "a WAL-G backup: walgo cannot restore it (restore it with wal-g backup-fetch); walgo leaves it and the WAL it needs alone"
	case fields["wal_segment_backup_start"] != nil:
		f.Kind = ForeignWALE
		waleSentinel(&f, fields)
		f.Problem = "a WAL-E backup: walgo cannot restore it (restore it with wal-e or wal-g backup-fetch); walgo leaves it and the WAL it needs alone"
	default:
		f.Problem = "a sentinel walgo does not recognise (no walgo, WAL-G or WAL-E fields): check what wrote it; walgo leaves it and the WAL after it alone"
	}
	return nil, &f, nil
}

// capped keeps the first max bytes written to it and notes any more.
type capped struct {
	bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); len(p) > room {
		c.over = true
		c.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.Buffer.Write(p)
}

// ownSentinel decodes a sentinel with a "format" field: walgo's.
func ownSentinel(name, key string, rawFormat json.RawMessage, fields map[string]json.RawMessage, whole *capped) (*Sentinel, *ForeignBackup, error) {
	var format int
	if err := json.Unmarshal(rawFormat, &format); err != nil || format < 1 {
		return nil, damaged(name, key, fmt.Sprintf("its format %s is not one any walgo writes", rawFormat)), nil
	}
	if format > SentinelFormat {
		f := &ForeignBackup{Name: name, Key: key, Kind: ForeignNewer,
			Problem: fmt.Sprintf("written by a newer walgo (sentinel format %d; this walgo reads %d): upgrade walgo to restore it", format, SentinelFormat)}
		walgoFields(f, fields)
		startFromName(f)
		return nil, f, nil
	}
	var sn *Sentinel
	err := fmt.Errorf("larger than %d bytes", maxSentinel)
	if !whole.over {
		if sn, err = DecodeSentinel(whole.Bytes()); err == nil {
			err = CheckSentinelKey(name, sn)
		}
	}
	if err != nil {
		f := damaged(name, key, err.Error())
		walgoFields(f, fields)
		return nil, f, nil
	}
	return sn, nil, nil
}

// damaged describes a sentinel that cannot be trusted.
func damaged(name, key, why string) *ForeignBackup {
	why = strings.TrimPrefix(why, codec.ErrCorrupt.Error()+": ")
	why = strings.TrimPrefix(why, "backup "+name+": ")
	why = strings.TrimPrefix(why, "sentinel: ")
	f := &ForeignBackup{Name: name, Key: key, Kind: ForeignDamaged,
		Problem: "damaged: " + why + ". walgo never restores or deletes it (but with delete everything); " +
			"if it is not another tool's, restore the object from a copy or remove " + key + " and the folder " + BackupFolder(name) + " by hand"}
	startFromName(f)
	return f
}

// CheckSentinelKey checks that a walgo sentinel read from the key of
// backup name describes that backup: the same name, and a timeline and
// start LSN in the segment the name starts with (a sentinel copied over
// another's fails here). Failures wrap codec.ErrCorrupt.
func CheckSentinelKey(name string, sn *Sentinel) error {
	if sn.Name != name {
		return fmt.Errorf("%w: the sentinel stored as backup %s describes backup %s (copied over it?)", codec.ErrCorrupt, name, sn.Name)
	}
	id, err := ParseBackupName(name)
	if err != nil {
		return fmt.Errorf("%w: %v", codec.ErrCorrupt, err)
	}
	seg := id.Start
	if sn.Timeline != seg.Timeline {
		return fmt.Errorf("%w: backup %s: its sentinel says timeline %d, its name timeline %d", codec.ErrCorrupt, name, sn.Timeline, seg.Timeline)
	}
	size := sn.SegmentSize
	if size == 0 {
		size = wal.DefaultSegmentSize
	}
	if !wal.ValidSegmentSize(size) {
		return fmt.Errorf("%w: backup %s: wal_segment_size %d", codec.ErrCorrupt, name, size)
	}
	if at := wal.SegmentAt(sn.Timeline, sn.StartLSN, size); at != seg {
		return fmt.Errorf("%w: backup %s: its sentinel starts at %s (segment %s), not in the segment its name gives", codec.ErrCorrupt, name, sn.StartLSN, at.Name())
	}
	if sn.SystemID != "" {
		if _, err := strconv.ParseUint(sn.SystemID, 10, 64); err != nil {
			return fmt.Errorf("%w: backup %s: system identifier %q", codec.ErrCorrupt, name, sn.SystemID)
		}
	}
	switch parent, err := ParseBackupName(sn.DeltaParent); {
	case sn.DeltaParent == "" && id.Parent != nil:
		return fmt.Errorf("%w: backup %s: its name says delta, its sentinel names no parent", codec.ErrCorrupt, name)
	case sn.DeltaParent != "" && (err != nil || id.Parent == nil || parent.Start != *id.Parent):
		return fmt.Errorf("%w: backup %s: its sentinel names delta parent %s, its name another", codec.ErrCorrupt, name, sn.DeltaParent)
	}
	folder := BackupFolder(name)
	if sn.ManifestKey != "" && !strings.HasPrefix(sn.ManifestKey, folder) {
		return fmt.Errorf("%w: backup %s: its sentinel's manifest %s is another backup's", codec.ErrCorrupt, name, sn.ManifestKey)
	}
	for _, p := range sn.Parts {
		if !strings.HasPrefix(p.Key, folder) {
			return fmt.Errorf("%w: backup %s: its sentinel's partition %s is another backup's", codec.ErrCorrupt, name, p.Key)
		}
	}
	return nil
}

// startFromName fills in the start segment a backup name gives (walgo,
// WAL-G: base_<segment>[...]; WAL-E: base_<segment>_<offset>) when the
// sentinel did not say where the backup starts.
func startFromName(f *ForeignBackup) {
	if f.StartKnown {
		return
	}
	rest, ok := strings.CutPrefix(f.Name, "base_")
	if !ok || len(rest) < 24 {
		return
	}
	seg, err := wal.ParseSegment(rest[:24])
	if err != nil {
		return
	}
	f.Timeline = seg.Timeline
	f.StartLSN = seg.StartLSN(wal.DefaultSegmentSize)
	f.StartKnown = true
}

// walgSentinel reads WAL-G's fields (numbers for LSNs and the system id).
func walgSentinel(f *ForeignBackup, fields map[string]json.RawMessage) {
	var v struct {
		LSN              *uint64   `json:"LSN"`
		FinishLSN        *uint64   `json:"FinishLSN"`
		PgVersion        int       `json:"PgVersion"`
		SystemIdentifier *uint64   `json:"SystemIdentifier"`
		DeltaFrom        *string   `json:"DeltaFrom"`
		StartTime        time.Time `json:"StartTime"`
		FinishTime       time.Time `json:"FinishTime"`
		Hostname         string    `json:"Hostname"`
		IsPermanent      bool      `json:"IsPermanent"`
	}
	decodeFields(fields, &v)
	f.PGVersion, f.Hostname, f.Permanent = v.PgVersion, v.Hostname, v.IsPermanent
	f.StartTime, f.FinishTime = v.StartTime.UTC(), v.FinishTime.UTC()
	if v.FinishLSN != nil {
		f.FinishLSN = wal.LSN(*v.FinishLSN)
	}
	if v.SystemIdentifier != nil {
		f.SystemID = strconv.FormatUint(*v.SystemIdentifier, 10)
	}
	if v.DeltaFrom != nil {
		f.DeltaFrom = *v.DeltaFrom
	}
	if v.LSN != nil && f.StartKnown { // the timeline comes from the name
		f.StartLSN = wal.LSN(*v.LSN)
	}
}

// waleSentinel reads WAL-E's start and stop: a segment name and a hex
// offset into it (WAL-E knew only 16 MiB segments).
func waleSentinel(f *ForeignBackup, fields map[string]json.RawMessage) {
	at := func(segKey, offKey string) (wal.Segment, wal.LSN, bool) {
		var segName, off string
		if json.Unmarshal(fields[segKey], &segName) != nil || json.Unmarshal(fields[offKey], &off) != nil {
			return wal.Segment{}, 0, false
		}
		seg, err := wal.ParseSegment(segName)
		o, oerr := strconv.ParseUint(off, 16, 32)
		if err != nil || oerr != nil {
			return wal.Segment{}, 0, false
		}
		return seg, seg.StartLSN(wal.DefaultSegmentSize) + wal.LSN(o), true
	}
	if seg, lsn, ok := at("wal_segment_backup_start", "wal_segment_offset_backup_start"); ok {
		f.Timeline, f.StartLSN, f.StartKnown = seg.Timeline, lsn, true
	}
	if _, lsn, ok := at("wal_segment_backup_stop", "wal_segment_offset_backup_stop"); ok {
		f.FinishLSN = lsn
	}
}

// walgoFields reads what a walgo sentinel of another format, or a
// damaged one, still tells.
func walgoFields(f *ForeignBackup, fields map[string]json.RawMessage) {
	var v struct {
		Timeline   uint32    `json:"timeline"`
		StartLSN   wal.LSN   `json:"start_lsn"`
		FinishLSN  wal.LSN   `json:"finish_lsn"`
		StartTime  time.Time `json:"start_time"`
		FinishTime time.Time `json:"finish_time"`
		PGVersion  int       `json:"pg_version"`
		SystemID   string    `json:"system_identifier"`
		Hostname   string    `json:"hostname"`
		Permanent  bool      `json:"permanent"`
	}
	decodeFields(fields, &v)
	f.FinishLSN, f.StartTime, f.FinishTime = v.FinishLSN, v.StartTime.UTC(), v.FinishTime.UTC()
	f.PGVersion, f.SystemID, f.Hostname, f.Permanent = v.PGVersion, v.SystemID, v.Hostname, v.Permanent
	if f.Kind == ForeignNewer && v.Timeline != 0 {
		f.Timeline, f.StartLSN, f.StartKnown = v.Timeline, v.StartLSN, true
	}
}

// decodeFields decodes fields into the struct v points to field by field,
// so that one value of an unexpected type spoils only itself.
func decodeFields(fields map[string]json.RawMessage, v any) {
	for k, raw := range fields {
		b, _ := json.Marshal(map[string]json.RawMessage{k: raw})
		_ = json.Unmarshal(b, v)
	}
}

// describeFields are the top-level keys that say what a sentinel is and
// describe one walgo cannot restore: walgo's "format" and a few of its
// fields, WAL-G's and WAL-E's. Others (WAL-G's "Files" list) are skipped
// without being held in memory.
var describeFields = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range []string{
		"format", "name", "timeline", "start_lsn", "finish_lsn", "start_time", "finish_time", "pg_version",
		"system_identifier", "hostname", "permanent",
		"LSN", "FinishLSN", "PgVersion", "SystemIdentifier", "DeltaFrom", "StartTime", "FinishTime",
		"Hostname", "IsPermanent", "Version",
		"wal_segment_backup_start", "wal_segment_offset_backup_start",
		"wal_segment_backup_stop", "wal_segment_offset_backup_stop",
	} {
		m[k] = true
	}
	return m
}()

// sourceErr marks an error of the reader under a JSON decoder.
type sourceErr struct{ err error }

func (e sourceErr) Error() string { return e.err.Error() }

type markedReader struct {
	r io.Reader
	n int64
}

func (m *markedReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.n += int64(n)
	if err != nil && err != io.EOF {
		err = sourceErr{err}
	}
	return n, err
}

// topLevelFields reads a JSON object from r and returns the raw values of
// the keys in want, skipping the others token by token. The values kept
// may total at most maxSentinel bytes. Errors of r come back as sourceErr.
func topLevelFields(r io.Reader, want map[string]bool) (map[string]json.RawMessage, error) {
	mr := &markedReader{r: r}
	dec := json.NewDecoder(mr)
	fail := func(err error) (map[string]json.RawMessage, error) {
		var se sourceErr
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, err
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("empty")
		}
		return fail(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	out := map[string]json.RawMessage{}
	kept := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fail(err)
		}
		key, _ := tok.(string)
		if want[key] {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return fail(err)
			}
			if kept += len(raw); kept > maxSentinel {
				return nil, fmt.Errorf("its fields take more than %d bytes", maxSentinel)
			}
			out[key] = bytes.Clone(raw)
			continue
		}
		if err := skipValue(dec); err != nil {
			return fail(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return fail(err)
	}
	return out, nil
}

// skipValue consumes one JSON value from dec.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}
