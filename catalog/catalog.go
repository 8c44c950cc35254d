// Package catalog says what a walgo repository holds: it is the only place
// that spells object keys, and it reads listings back into WAL files,
// timelines and gaps.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// WALPrefix is the folder every archived WAL file lives in (WAL-E/WAL-G's name).
const WALPrefix = "wal_005/"

// Ext is what names a stored object's codec: a codec.Compression or a
// *codec.Codec (compression plus encryption).
type Ext interface{ Ext() string }

// WALKey is the key of an archived WAL file stored with codec c.
func WALKey(name string, c Ext) string {
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

// ParseWALKey splits a key under WALPrefix into the WAL file name and its
// codec extension. ok is false for keys that are not archived WAL files.
func ParseWALKey(key string) (o WALObject, ok bool) {
	rest, found := strings.CutPrefix(key, WALPrefix)
	if !found || strings.Contains(rest, "/") {
		return WALObject{}, false
	}
	// The name has at most one inner dot (".history", ".partial",
	// ".00000028.backup"); the codec extension follows.
	for _, ext := range codec.AllExts() {
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

// FindWAL returns every stored copy of one WAL file (one per codec it was
// ever written with), preferring the extension of pref first. It asks for each
// possible key at once rather than listing the folder, so its cost does not
// grow with the archive: a file:// archive of 100,000 segments would
// otherwise be read whole on every wal-push.
func FindWAL(ctx context.Context, s storage.Store, name string, pref Ext) ([]WALObject, error) {
	exts := codec.AllExts()
	found := make([]*WALObject, len(exts))
	errs := make([]error, len(exts))
	var wg sync.WaitGroup
	for i, ext := range exts {
		wg.Go(func() {
			key := WALPrefix + name + "." + ext
			oi, err := s.Stat(ctx, key)
			switch {
			case errors.Is(err, storage.ErrNotFound):
			case err != nil:
				errs[i] = err
			default:
				found[i] = &WALObject{Name: name, Kind: wal.Classify(name), Key: key, Ext: ext, Size: oi.Size}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("find %s: %w", name, err)
		}
	}
	var out []WALObject
	for _, o := range found {
		if o != nil {
			out = append(out, *o)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return pref != nil && !isNil(pref) && out[i].Ext == pref.Ext() && out[j].Ext != pref.Ext()
	})
	return out, nil
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
