package catalog

// Logical backups (pg_dump). A dump is stored as:
//
//   - dumps_005/<name>/dump.pgdump.<ext>: pg_dump's custom-format output
//     (-Fc, with pg_dump's own compression), passed through the codec the
//     extension names;
//   - dumps_005/<name>_dump_sentinel.json: plain JSON, written last. A dump
//     exists only if its sentinel does; it records the sha256 of both the
//     stored bytes and pg_dump's output.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// DumpPrefix is the folder logical backups live in.
const DumpPrefix = "dumps_005/"

// DumpFormat is the dump sentinel format this walgo writes; readers reject
// any other.
const DumpFormat = 1

const (
	dumpSentinelSuffix = "_dump_sentinel.json"
	dumpObject         = "dump.pgdump."
	dumpNamePrefix     = "dump_"
	dumpTimeLayout     = "20060102T150405Z"
)

// DumpName names a dump after the UTC second it started and tag, a few
// random hex digits the caller draws, so that two dumps started in the
// same second (dump-push run from two places) never share a name.
func DumpName(start time.Time, tag string) string {
	return dumpNamePrefix + start.UTC().Format(dumpTimeLayout) + "_" + tag
}

// ValidDumpName reports whether name could be a dump name (and so is safe
// to put in a key).
func ValidDumpName(name string) bool {
	rest, ok := strings.CutPrefix(name, dumpNamePrefix)
	if !ok {
		return false
	}
	ts, tag, ok := strings.Cut(rest, "_")
	if !ok || len(tag) < 1 || len(tag) > 16 || strings.Trim(tag, "0123456789abcdef") != "" {
		return false
	}
	_, err := time.Parse(dumpTimeLayout, ts)
	return err == nil && len(ts) == len(dumpTimeLayout)
}

// DumpKey is the key of a dump's data, stored with codec c.
func DumpKey(name string, c Ext) string {
	return DumpFolder(name) + dumpObject + c.Ext()
}

// DumpFolder is the prefix of every object of one dump but its sentinel.
func DumpFolder(name string) string { return DumpPrefix + name + "/" }

// DumpSentinelKey is the key of a dump's sentinel: a dump exists only if
// this object does.
func DumpSentinelKey(name string) string { return DumpPrefix + name + dumpSentinelSuffix }

// DumpKeyExt returns the codec extension of a dump's data key ("zst",
// "zst.age"); ok is false for any other key.
func DumpKeyExt(name, key string) (ext string, ok bool) {
	ext, ok = strings.CutPrefix(key, DumpFolder(name)+dumpObject)
	return ext, ok && slices.Contains(codec.AllExts(), ext)
}

// DumpSentinel describes one finished dump. It is written last.
type DumpSentinel struct {
	Format          int       `json:"format"`
	Name            string    `json:"name"`
	Database        string    `json:"database"`
	PGVersion       int       `json:"pg_version"`        // server_version_num
	PGServerVersion string    `json:"pg_server_version"` // server_version, e.g. "15.8 (Debian 15.8-1)"
	PgDumpVersion   string    `json:"pg_dump_version"`
	StartTime       time.Time `json:"start_time"`
	FinishTime      time.Time `json:"finish_time"`
	Size            int64     `json:"size"`   // pg_dump's output
	SHA256          string    `json:"sha256"` // of pg_dump's output
	Key             string    `json:"key"`
	StoredSize      int64     `json:"stored_size"`
	StoredSHA256    string    `json:"stored_sha256"`
	WalgoVersion    string    `json:"walgo_version"`
	// FromBackup names the base backup the dump was taken from (dump-push
	// --from-backup); empty for a dump of a live database.
	FromBackup string `json:"from_backup,omitempty"`
	Hostname   string `json:"hostname"`
	// Where in its cluster's history the dumped server was (for a dump
	// --from-backup, the backup's end), so that the dump's lineage is
	// known: the system identifier, timeline and WAL location. Empty when
	// the server did not let the role read them.
	SystemID string  `json:"system_identifier,omitempty"`
	Timeline uint32  `json:"timeline,omitempty"`
	LSN      wal.LSN `json:"lsn,omitempty"`
}

// Ext is the codec extension of the stored data.
func (d *DumpSentinel) Ext() string {
	ext, _ := DumpKeyExt(d.Name, d.Key)
	return ext
}

// EncodeDumpSentinel is the dump sentinel's stored form.
func EncodeDumpSentinel(d *DumpSentinel) ([]byte, error) {
	return json.MarshalIndent(d, "", "  ")
}

// DecodeDumpSentinel parses a stored dump sentinel, rejecting unknown
// formats and a data key that is not the dump's own.
func DecodeDumpSentinel(b []byte) (*DumpSentinel, error) {
	var d DumpSentinel
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%w: dump sentinel: %v", codec.ErrCorrupt, err)
	}
	if d.Format != DumpFormat {
		return nil, fmt.Errorf("%w: dump sentinel format %d (this walgo reads %d)", ErrFormat, d.Format, DumpFormat)
	}
	if !ValidDumpName(d.Name) {
		return nil, fmt.Errorf("%w: dump sentinel: invalid dump name %q", codec.ErrCorrupt, d.Name)
	}
	if _, ok := DumpKeyExt(d.Name, d.Key); !ok {
		return nil, fmt.Errorf("%w: dump sentinel %s: invalid key %q", codec.ErrCorrupt, d.Name, d.Key)
	}
	return &d, nil
}

// ReadDumpSentinel fetches one dump's sentinel; ErrNotFound if the dump
// does not exist (or never finished).
func ReadDumpSentinel(ctx context.Context, s storage.Store, name string) (*DumpSentinel, error) {
	if !ValidDumpName(name) {
		return nil, fmt.Errorf("dump %q: %w", name, storage.ErrNotFound)
	}
	b, err := readSmall(ctx, s, DumpSentinelKey(name), 1<<20)
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", name, err)
	}
	d, err := DecodeDumpSentinel(b)
	if err != nil {
		return nil, err
	}
	if d.Name != name {
		return nil, fmt.Errorf("%w: dump sentinel %s names dump %s", codec.ErrCorrupt, name, d.Name)
	}
	return d, nil
}

// WriteDumpSentinel stores a dump sentinel; after it, the dump exists.
func WriteDumpSentinel(ctx context.Context, s storage.Store, d *DumpSentinel) error {
	b, err := EncodeDumpSentinel(d)
	if err != nil {
		return err
	}
	return s.Put(ctx, DumpSentinelKey(d.Name), bytes.NewReader(b))
}

// DumpNameInUse reports whether anything is stored under name: its
// sentinel or any object in its folder (a dump being written, or the
// leftovers of a failed one).
func DumpNameInUse(ctx context.Context, s storage.Store, name string) (bool, error) {
	if _, err := s.Stat(ctx, DumpSentinelKey(name)); err == nil {
		return true, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return false, fmt.Errorf("dump %s: %w", name, err)
	}
	errFound := errors.New("found")
	err := s.List(ctx, DumpFolder(name), func(storage.ObjectInfo) error { return errFound })
	if errors.Is(err, errFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("dump %s: %w", name, err)
	}
	return false, nil
}

// ListDumps returns every finished dump, oldest finish time first. Ages
// come from the sentinels' times, never from names.
func ListDumps(ctx context.Context, s storage.Store) ([]*DumpSentinel, error) {
	var names []string
	err := s.List(ctx, DumpPrefix, func(oi storage.ObjectInfo) error {
		if n, ok := dumpSentinelName(oi.Key); ok {
			names = append(names, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	out := make([]*DumpSentinel, 0, len(names))
	for _, n := range names {
		d, err := ReadDumpSentinel(ctx, s, n)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sortDumps(out)
	return out, nil
}

// LatestDump is the dump that finished last; ErrNotFound if there is none.
func LatestDump(ctx context.Context, s storage.Store) (*DumpSentinel, error) {
	list, err := ListDumps(ctx, s)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("no dumps: %w", storage.ErrNotFound)
	}
	return list[len(list)-1], nil
}

func sortDumps(d []*DumpSentinel) {
	sort.SliceStable(d, func(i, j int) bool {
		if !d[i].FinishTime.Equal(d[j].FinishTime) {
			return d[i].FinishTime.Before(d[j].FinishTime)
		}
		return d[i].Name < d[j].Name
	})
}

// dumpSentinelName returns the dump a sentinel key belongs to.
func dumpSentinelName(key string) (string, bool) {
	n, ok := strings.CutSuffix(strings.TrimPrefix(key, DumpPrefix), dumpSentinelSuffix)
	if !ok || !strings.HasPrefix(key, DumpPrefix) || strings.Contains(n, "/") || !ValidDumpName(n) {
		return "", false
	}
	return n, true
}

// Dump retention: the same requests as for base backups (retain N, before
// NAME|TIME, everything, garbage), over dump sentinels. Dumps do not depend
// on each other or on WAL, so there are no chains to keep.

// DumpInventory is what a repository holds, as PlanDumpDelete needs it.
type DumpInventory struct {
	// Dumps are the finished dumps (ListDumps).
	Dumps []*DumpSentinel
	// Objects is every object under DumpPrefix, sentinels included.
	Objects []storage.ObjectInfo
}

// ReadDumpInventory lists a repository's dumps for PlanDumpDelete. Objects
// are listed before the sentinels, so a dump finishing meanwhile is seen
// as finished.
func ReadDumpInventory(ctx context.Context, s storage.Store) (*DumpInventory, error) {
	inv := &DumpInventory{}
	err := s.List(ctx, DumpPrefix, func(oi storage.ObjectInfo) error {
		inv.Objects = append(inv.Objects, oi)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	if inv.Dumps, err = ListDumps(ctx, s); err != nil {
		return nil, err
	}
	return inv, nil
}

// DumpVerdict is what a plan does with one finished dump.
type DumpVerdict struct {
	Name       string    `json:"name"`
	Database   string    `json:"database"`
	FinishTime time.Time `json:"finish_time"`
	FromBackup string    `json:"from_backup,omitempty"`
	Delete     bool      `json:"delete"`
	Reason     string    `json:"reason"`
	// Keys are the objects deleted with the dump, its sentinel first.
	Keys  []string `json:"keys,omitempty"`
	Bytes int64    `json:"bytes"`
}

// DumpPlanTotals counts what a dump plan deletes and keeps.
type DumpPlanTotals struct {
	DeleteDumps       int   `json:"delete_dumps"`
	DeleteUnfinished  int   `json:"delete_unfinished"`
	DeleteObjects     int   `json:"delete_objects"`
	DeleteBytes       int64 `json:"delete_bytes"`
	KeepDumps         int   `json:"keep_dumps"`
	UnrecognizedFiles int   `json:"unrecognized_objects"`
}

// DumpPlan says what a dump delete removes and why everything else stays.
type DumpPlan struct {
	Mode string `json:"mode"`
	// Dumps lists every finished dump, oldest finish first.
	Dumps []DumpVerdict `json:"dumps"`
	// Unfinished lists dump folders without a sentinel.
	Unfinished []Unfinished `json:"unfinished"`
	// Unrecognized lists objects under the dump folder that are not part
	// of a dump; they are always left alone.
	Unrecognized []string       `json:"unrecognized"`
	Notes        []string       `json:"notes"`
	Totals       DumpPlanTotals `json:"totals"`

	sizes map[string]int64
}

// PlanDumpDelete decides what req deletes from the dumps inv describes.
// It reads nothing and deletes nothing. Modes: DeleteRetain (N newest by
// finish time), DeleteBefore (Before or BeforeName's finish time; refused
// if it would delete every dump), DeleteEverything, DeleteGarbage (only
// folders without a sentinel, older than MinAge).
func PlanDumpDelete(inv *DumpInventory, req DeleteRequest) (*DumpPlan, error) {
	if inv == nil {
		inv = &DumpInventory{}
	}
	dumps := append([]*DumpSentinel(nil), inv.Dumps...)
	sortDumps(dumps)
	p := &DumpPlan{Mode: req.Mode.String(), Dumps: []DumpVerdict{}, Unfinished: []Unfinished{},
		Unrecognized: []string{}, Notes: []string{}, sizes: map[string]int64{}}

	keep := map[string]string{}
	switch req.Mode {
	case DeleteRetain:
		if req.N < 1 {
			return nil, fmt.Errorf("%w: retain needs N of at least 1 (to delete every dump: everything)", ErrBadRequest)
		}
		for i := max(0, len(dumps)-req.N); i < len(dumps); i++ {
			keep[dumps[i].Name] = fmt.Sprintf("one of the %d newest dumps", req.N)
		}
	case DeleteBefore:
		limit, what := req.Before, req.Before.UTC().Format(time.RFC3339)
		if req.BeforeName != "" {
			i := slices.IndexFunc(dumps, func(d *DumpSentinel) bool { return d.Name == req.BeforeName })
			if i < 0 {
				return nil, fmt.Errorf("dump %s: %w", req.BeforeName, storage.ErrNotFound)
			}
			limit, what = dumps[i].FinishTime, req.BeforeName
			keep[req.BeforeName] = "the named dump"
		} else if limit.IsZero() {
			return nil, fmt.Errorf("%w: before needs a dump name or a time", ErrBadRequest)
		}
		for _, d := range dumps {
			if keep[d.Name] == "" && !d.FinishTime.Before(limit) {
				keep[d.Name] = "finished at or after " + what
			}
		}
		if len(keep) == 0 && len(dumps) > 0 {
			return nil, fmt.Errorf("%w: this would delete every dump (the newest finished %s); use everything to delete them all",
				ErrBadRequest, dumps[len(dumps)-1].FinishTime.UTC().Format(time.RFC3339))
		}
	case DeleteEverything:
	case DeleteGarbage:
		for _, d := range dumps {
			keep[d.Name] = "finished dump (garbage keeps them all)"
		}
	default:
		return nil, fmt.Errorf("%w: %s is not a dump delete mode", ErrBadRequest, req.Mode)
	}

	objsOf := map[string][]storage.ObjectInfo{}
	finished := map[string]bool{}
	for _, d := range dumps {
		finished[d.Name] = true
	}
	sentinelSeen := map[string]bool{}
	var unfinishedNames []string
	for _, oi := range inv.Objects {
		if n, ok := dumpSentinelName(oi.Key); ok {
			sentinelSeen[n] = true
			objsOf[n] = append(objsOf[n], oi)
			continue
		}
		n, _, ok := strings.Cut(strings.TrimPrefix(oi.Key, DumpPrefix), "/")
		if !ok || !strings.HasPrefix(oi.Key, DumpPrefix) || !ValidDumpName(n) {
			p.Unrecognized = append(p.Unrecognized, oi.Key)
			continue
		}
		if !finished[n] && !slices.Contains(unfinishedNames, n) {
			unfinishedNames = append(unfinishedNames, n)
		}
		objsOf[n] = append(objsOf[n], oi)
	}

	for _, d := range dumps {
		v := DumpVerdict{Name: d.Name, Database: d.Database, FinishTime: d.FinishTime.UTC(), FromBackup: d.FromBackup}
		if r := keep[d.Name]; r != "" {
			v.Reason = r
			p.Totals.KeepDumps++
			p.Dumps = append(p.Dumps, v)
			continue
		}
		v.Delete = true
		v.Reason = dumpDeleteReason(req)
		v.Keys = []string{DumpSentinelKey(d.Name)}
		for _, oi := range objsOf[d.Name] {
			if oi.Key != DumpSentinelKey(d.Name) {
				v.Keys = append(v.Keys, oi.Key)
			}
			v.Bytes += oi.Size
			p.sizes[oi.Key] = oi.Size
		}
		p.Totals.DeleteDumps++
		p.Totals.DeleteObjects += len(v.Keys)
		p.Totals.DeleteBytes += v.Bytes
		p.Dumps = append(p.Dumps, v)
	}

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
		switch {
		case sentinelSeen[n]:
			u.Reason = "a sentinel was listed for it but could not be read back (a concurrent delete?): left alone"
		case req.Mode == DeleteEverything:
			u.Delete, u.Reason = true, "unfinished dump (everything)"
		case age < req.MinAge:
			u.Reason = fmt.Sprintf("unfinished, but its newest object is only %s old (min age %s): it may still be running", age.Round(time.Second), req.MinAge)
		case req.Mode != DeleteGarbage:
			u.Reason = "unfinished dump: garbage removes it"
		default:
			u.Delete, u.Reason = true, "unfinished dump: no sentinel"
		}
		if u.Delete {
			p.Totals.DeleteUnfinished++
			p.Totals.DeleteObjects += len(u.Keys)
			p.Totals.DeleteBytes += u.Bytes
		}
		p.Unfinished = append(p.Unfinished, u)
	}
	p.Totals.UnrecognizedFiles = len(p.Unrecognized)
	if len(p.Unrecognized) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("%d object(s) under %s that are not dumps are left alone", len(p.Unrecognized), DumpPrefix))
	}
	return p, nil
}

func dumpDeleteReason(req DeleteRequest) string {
	switch req.Mode {
	case DeleteRetain:
		return fmt.Sprintf("older than the %d newest dumps", req.N)
	case DeleteBefore:
		if req.BeforeName != "" {
			return "finished before " + req.BeforeName
		}
		return "finished before " + req.Before.UTC().Format(time.RFC3339)
	case DeleteEverything:
		return "everything"
	}
	return "deleted"
}

// DumpApplyResult counts what ApplyDumpPlan deleted.
type DumpApplyResult struct {
	Dumps      int   `json:"dumps"`
	Unfinished int   `json:"unfinished"`
	Objects    int   `json:"objects"`
	Bytes      int64 `json:"bytes"`
	// Skipped names unfinished dumps whose sentinel appeared after the
	// plan was made: they finished, so they were left alone.
	Skipped []string `json:"skipped"`
}

// ApplyDumpPlan carries out a plan made by PlanDumpDelete: first the
// sentinels of the deleted dumps (so an interruption never leaves a listed
// dump without its data), then their data, then unfinished leftovers whose
// sentinel still does not exist. Deleting an object that is already gone
// is not an error, so running a plan again is safe.
func ApplyDumpPlan(ctx context.Context, s storage.Store, p *DumpPlan, opts ApplyOptions) (DumpApplyResult, error) {
	var res DumpApplyResult
	if opts.Concurrency < 1 {
		opts.Concurrency = 8
	}
	d := &deleter{s: s, sizes: p.sizes, opts: opts}
	var sentinels, data []string
	for _, v := range p.Dumps {
		if v.Delete {
			sentinels = append(sentinels, v.Keys[0])
			data = append(data, v.Keys[1:]...)
		}
	}
	err := d.all(ctx, sentinels)
	if err == nil {
		err = d.all(ctx, data)
	}
	if err == nil {
		res.Dumps = len(sentinels)
		res.Unfinished, res.Skipped, err = d.unfinished(ctx, p.Unfinished, DumpSentinelKey)
	}
	res.Objects, res.Bytes = d.objects, d.bytes
	return res, err
}
