// Package catalog says what a walgo repository holds: it is the only place
// that spells object keys, and it reads listings back into WAL files,
// timelines and gaps.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// WALPrefix is the folder every archived WAL file lives in (WAL-E/WAL-G's name).
const WALPrefix = "wal_005/"

// Ext is what names a stored object's codec: a codec.Compression or a
// *codec.Codec (compression plus encryption).
type Ext interface{ Ext() string }

// WALKey is the key of an archived WAL file stored with codec c. An empty
// extension (WAL-G's compression "none") is the bare name.
func WALKey(name string, c Ext) string {
	if c.Ext() == "" {
		return WALPrefix + name
	}
	return WALPrefix + name + "." + c.Ext()
}

// WALObject is one archived WAL file as listed.
type WALObject struct {
	Name string // Postgres' file name, e.g. 000000010000000000000003
	Kind wal.Kind
	Key  string // full key in the store
	Ext  string // codec extension(s), e.g. "zst"
	Size int64  // stored (compressed) size
}

// readExts is every extension a WAL file may be stored with: walgo's own
// (plain and encrypted), then those of WAL-G and WAL-E.
var readExts = append(codec.AllExts(), codec.ForeignExts()...)

// ParseWALKey splits a key under WALPrefix into the WAL file name and its
// codec extension: one walgo writes, one of WAL-G's or WAL-E's
// (codec.ForeignExts), or none at all (the bare name WAL-G's compression
// "none" stores). ok is false for keys that are not archived WAL files,
// including WAL files stored with an extension walgo cannot read.
func ParseWALKey(key string) (o WALObject, ok bool) {
	rest, found := strings.CutPrefix(key, WALPrefix)
	if !found || strings.Contains(rest, "/") {
		return WALObject{}, false
	}
	if k := wal.Classify(rest); k != wal.KindUnknown {
		return WALObject{Name: rest, Kind: k, Key: key, Ext: ""}, true
	}
	// The name has at most one inner dot (".history", ".partial",
	// ".00000028.backup"); the codec extension follows.
	for _, ext := range readExts {
		name, found := strings.CutSuffix(rest, "."+ext)
		if !found {
			continue
		}
		if k := wal.Classify(name); k != wal.KindUnknown {
			return WALObject{Name: name, Kind: k, Key: key, Ext: ext}, true
		}
	}
	return WALObject{}, false
}

// ListWAL returns every archived WAL file, sorted by name.
func ListWAL(ctx context.Context, s storage.Store) ([]WALObject, error) {
	var out []WALObject
	err := s.List(ctx, WALPrefix, func(oi storage.ObjectInfo) error {
		if o, ok := ParseWALKey(oi.Key); ok {
			o.Size = oi.Size
			out = append(out, o)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list wal: %w", err)
	}
	return out, nil
}

// Gap is a run of missing segments on one timeline, First to Last inclusive.
type Gap struct {
	First string `json:"first"`
	Last  string `json:"last"`
	Count uint64 `json:"count"`
}

// Timeline summarises the archived segments of one timeline.
type Timeline struct {
	ID       uint32 `json:"timeline"`
	First    string `json:"first"`
	Last     string `json:"last"`
	Count    int    `json:"count"`
	Bytes    int64  `json:"stored_bytes"`
	Gaps     []Gap  `json:"gaps"`
	History  bool   `json:"history_file"`
	Partials int    `json:"partial_files"`
}

// Summarize groups archived WAL by timeline, with the gaps between the
// first and last segment of each. segSize is the cluster's wal_segment_size
// (it decides where a log id ends).
func Summarize(objs []WALObject, segSize int64) []Timeline {
	byTLI := map[uint32]*Timeline{}
	segs := map[uint32][]wal.Segment{}
	get := func(id uint32) *Timeline {
		if byTLI[id] == nil {
			byTLI[id] = &Timeline{ID: id, Gaps: []Gap{}}
		}
		return byTLI[id]
	}
	seen := map[string]bool{}
	for _, o := range objs {
		switch o.Kind {
		case wal.KindSegment:
			s, err := wal.ParseSegment(o.Name)
			if err != nil {
				continue
			}
			tl := get(s.Timeline)
			tl.Bytes += o.Size
			if seen[o.Name] { // stored with two codecs: count it once
				continue
			}
			seen[o.Name] = true
			segs[s.Timeline] = append(segs[s.Timeline], s)
		case wal.KindHistory:
			var id uint32
			if _, err := fmt.Sscanf(o.Name[:8], "%08X", &id); err == nil {
				get(id).History = true
			}
		case wal.KindPartial:
			if s, err := wal.ParseSegment(o.Name[:24]); err == nil {
				get(s.Timeline).Partials++
			}
		}
	}
	var out []Timeline
	for id, tl := range byTLI {
		ss := segs[id]
		sort.Slice(ss, func(i, j int) bool { return ss[i].No(segSize) < ss[j].No(segSize) })
		tl.Count = len(ss)
		if len(ss) > 0 {
			tl.First, tl.Last = ss[0].Name(), ss[len(ss)-1].Name()
		}
		for i := 1; i < len(ss); i++ {
			prev, cur := ss[i-1], ss[i]
			if missing := cur.No(segSize) - prev.No(segSize) - 1; missing > 0 {
				first := prev.Next(segSize)
				last := wal.SegmentFromNo(id, cur.No(segSize)-1, segSize)
				tl.Gaps = append(tl.Gaps, Gap{First: first.Name(), Last: last.Name(), Count: missing})
			}
		}
		out = append(out, *tl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// isNil catches a nil *codec.Codec passed as an Ext.
func isNil(e Ext) bool {
	c, ok := e.(*codec.Codec)
	return ok && c == nil
}

// ErrVanished: a WAL file the store had just shown (a listing, or a first
// read) was not found when read. It was deleted or replaced meanwhile; it
// is a storage failure, never "not in the archive", so it does not wrap
// storage.ErrNotFound.
var ErrVanished = errors.New("gone while being read (deleted or replaced concurrently)")

// OpenedWAL is a WAL file found and opened for reading.
type OpenedWAL struct {
	WALObject
	Body io.ReadCloser
	// Unreadable are the keys of copies stored with an extension walgo
	// does not know, found beside the one opened.
	Unreadable []string
}

// OpenWAL finds WAL file name and opens it, in as few requests as the
// store allows: one GET of the key pref (the configured codec) names; only
// when that is not found, one LIST of the keys that start with the name,
// which shows the copies of every other codec (walgo's, WAL-G's, WAL-E's,
// the bare name), and a GET of the preferred one. A file found: 1 request
// (3 when stored with another codec); a file not in the archive: 2.
//
// It returns an error wrapping storage.ErrNotFound only when the archive
// holds no copy at all. A listed copy that is gone when read wraps
// ErrVanished. Copies whose extension walgo cannot read, with no readable
// copy beside them, wrap codec.ErrUnknown and are named: taking them for
// "not in the archive" would end a recovery early.
func OpenWAL(ctx context.Context, s storage.Store, name string, pref Ext) (*OpenedWAL, error) {
	if pref == nil || isNil(pref) {
		pref = codec.Zstd{}
	}
	key := WALKey(name, pref)
	rc, err := s.Get(ctx, key)
	if err == nil {
		return &OpenedWAL{WALObject: WALObject{Name: name, Kind: wal.Classify(name), Key: key, Ext: pref.Ext()}, Body: rc}, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("fetch %s: %w", key, err)
	}
	return OpenWALListed(ctx, s, name)
}

// OpenWALListed is OpenWAL for a file that is likely not in the archive
// (the next segment, where the last listing ended): one LIST first, which
// answers for every codec at once, then a GET of the best copy it shows.
// A file not in the archive: 1 request; a file found: 2. The errors are
// OpenWAL's.
func OpenWALListed(ctx context.Context, s storage.Store, name string) (*OpenedWAL, error) {
	copies, unknown, err := ListWALCopies(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if len(copies) == 0 {
		if len(unknown) > 0 {
			return nil, fmt.Errorf("%s: %w: stored only as %s, an extension walgo does not read (it reads %s): refusing to report it missing",
				name, codec.ErrUnknown, strings.Join(unknown, ", "), strings.Join(readExts, ", "))
		}
		return nil, fmt.Errorf("%s: %w in %s", name, storage.ErrNotFound, s)
	}
	o := copies[0]
	rc, err := s.Get(ctx, o.Key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("fetch %s: listed, then %w", o.Key, ErrVanished)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", o.Key, err)
	}
	return &OpenedWAL{WALObject: o, Body: rc, Unreadable: unknown}, nil
}

// ListWALCopies lists the stored copies of WAL file name with one LIST,
// best first (walgo's codecs in their order, encrypted after plain, then
// WAL-G's and WAL-E's), and the keys beside them that carry an extension
// walgo does not know. Keys of other WAL files that share the prefix (a
// segment's .partial and .backup files) are neither.
func ListWALCopies(ctx context.Context, s storage.Store, name string) (copies []WALObject, unknown []string, err error) {
	prefix := WALPrefix + name
	err = s.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		rest := strings.TrimPrefix(oi.Key, prefix)
		if o, ok := ParseWALKey(oi.Key); ok {
			if o.Name == name {
				o.Size = oi.Size
				copies = append(copies, o)
			}
			return nil
		}
		if !strings.HasPrefix(rest, ".") || strings.Contains(rest, "/") || otherWALFile(name, rest) {
			return nil
		}
		unknown = append(unknown, oi.Key)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.SliceStable(copies, func(i, j int) bool { return copyRank(copies[i].Ext) < copyRank(copies[j].Ext) })
	return copies, unknown, nil
}

// copyRank orders the copies of one WAL file, best first: walgo's codecs
// in their order, encrypted after plain, then WAL-G's and WAL-E's, the
// bare name last.
func copyRank(ext string) int {
	if i := slices.Index(readExts, ext); i >= 0 {
		return i
	}
	return len(readExts)
}

// ListWALSegments lists, with one LIST, the archived segments whose names
// start with namePrefix (e.g. the 16 characters of a timeline and log id:
// at most 256 segments of 16 MiB), each with its best copy as
// ListWALCopies would choose it. Segments stored only with an extension
// walgo cannot read are left out (OpenWAL reports them).
func ListWALSegments(ctx context.Context, s storage.Store, namePrefix string) (map[string]WALObject, error) {
	out := map[string]WALObject{}
	err := s.List(ctx, WALPrefix+namePrefix, func(oi storage.ObjectInfo) error {
		o, ok := ParseWALKey(oi.Key)
		if !ok || o.Kind != wal.KindSegment {
			return nil
		}
		o.Size = oi.Size
		if cur, seen := out[o.Name]; !seen || copyRank(o.Ext) < copyRank(cur.Ext) {
			out[o.Name] = o
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", WALPrefix+namePrefix, err)
	}
	return out, nil
}

// otherWALFile reports whether name+rest is (a copy of) another WAL file
// than name: 000000010000000000000003.partial.xz is the .partial file's,
// not the segment's.
func otherWALFile(name, rest string) bool {
	for i := 1; i <= len(rest); i++ {
		if i == len(rest) || rest[i] == '.' {
			if k := wal.Classify(name + rest[:i]); k != wal.KindUnknown {
				return true
			}
		}
	}
	return false
}
