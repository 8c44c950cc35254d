package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// headerConcurrency bounds the segments whose start wal-verify reads at once.
const headerConcurrency = 16

// BadSegment is an archived segment whose long page header does not make
// it the segment its name says, of this repository's cluster.
type BadSegment struct {
	Name    string `json:"name"`
	Key     string `json:"key"`
	Problem string `json:"problem"`
}

// HeaderCheck is what CheckWALHeaders found.
type HeaderCheck struct {
	// Checked counts the objects whose header was read.
	Checked int `json:"checked"`
	// Bad lists the ones that fail, by key.
	Bad []BadSegment `json:"bad"`
	// SystemID is the system identifier the segments were held to: the
	// backups', or failing that the one most segments carry.
	SystemID string `json:"system_identifier,omitempty"`
	// Skipped says why some objects were not read (encrypted, no key).
	Skipped []string `json:"skipped,omitempty"`
}

// CheckWALHeaders reads the long page header at the start of every
// archived segment and .partial file in objs (decoding with cd, only as
// far as the header) and checks it against the name: the page address is
// the segment's start, the timeline is the name's (or an ancestor's, for
// the first segment of a timeline), the segment size is segSize, and the
// system identifier is the cluster's. The cluster's is the one of
// systemIDs (the backups') when they agree, or else the one most segments
// carry. A segment that holds another segment's content, or another
// cluster's, is reported; so is one that cannot be decoded. Only the
// store failing is an error.
func CheckWALHeaders(ctx context.Context, s storage.Store, cd *codec.Codec, objs []WALObject, segSize int64, systemIDs []string) (*HeaderCheck, error) {
	type result struct {
		o   WALObject
		h   wal.Header
		err error // of the object, not the store
	}
	var todo []WALObject
	for _, o := range objs {
		if o.Kind == wal.KindSegment || o.Kind == wal.KindPartial {
			todo = append(todo, o)
		}
	}
	results := make([]result, len(todo))
	var storeErr error
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eachBounded(headerConcurrency, len(todo), func(i int) {
		o := todo[i]
		h, err := readHeader(ctx, s, cd, o)
		if err != nil && !errors.Is(err, codec.ErrCorrupt) && !errors.Is(err, codec.ErrUnknown) &&
			!errors.Is(err, wal.ErrBadHeader) && !errors.Is(err, codec.ErrNoKey) && !errors.Is(err, codec.ErrWrongKey) {
			mu.Lock()
			if storeErr == nil {
				storeErr = fmt.Errorf("read %s: %w", o.Key, err)
			}
			mu.Unlock()
			cancel()
		}
		results[i] = result{o, h, err}
	})
	if storeErr != nil {
		return nil, storeErr
	}

	hc := &HeaderCheck{Bad: []BadSegment{}}
	want, ok := agreedSystemID(systemIDs)
	if !ok {
		count := map[uint64]int{}
		for _, r := range results {
			if r.err == nil {
				count[r.h.SystemID]++
			}
		}
		for id, n := range count {
			if n > count[want] || (n == count[want] && id < want) {
				want = id
			}
		}
	}
	if want != 0 {
		hc.SystemID = strconv.FormatUint(want, 10)
	}
	keyless := 0
	for _, r := range results {
		if errors.Is(r.err, codec.ErrNoKey) {
			keyless++
			continue
		}
		hc.Checked++
		bad := BadSegment{Name: r.o.Name, Key: r.o.Key}
		switch seg, _ := wal.ParseSegment(r.o.Name[:24]); {
		case r.err != nil:
			bad.Problem = r.err.Error()
		case r.h.Check(seg, segSize) != nil:
			bad.Problem = r.h.Check(seg, segSize).Error()
			if r.h.PageAddr != seg.StartLSN(segSize) && wal.ValidSegmentSize(int64(r.h.SegmentSize)) {
				bad.Problem += fmt.Sprintf(" (it holds segment %s)", wal.SegmentAt(r.h.Timeline, r.h.PageAddr, int64(r.h.SegmentSize)).Name())
			}
		case want != 0 && r.h.SystemID != want:
			bad.Problem = fmt.Sprintf("WAL of database system %d, not this repository's %d", r.h.SystemID, want)
		default:
			continue
		}
		hc.Bad = append(hc.Bad, bad)
	}
	if keyless > 0 {
		hc.Skipped = append(hc.Skipped, fmt.Sprintf("%d encrypted segment(s) not read: no age identity (WALGO_AGE_IDENTITY_FILE)", keyless))
	}
	sort.Slice(hc.Bad, func(i, j int) bool { return hc.Bad[i].Key < hc.Bad[j].Key })
	return hc, nil
}

// agreedSystemID is the one system identifier ids hold (empty ones
// ignored); ok is false when there is none, several, or one not a number.
func agreedSystemID(ids []string) (uint64, bool) {
	var got uint64
	for _, s := range ids {
		if s == "" {
			continue
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || (got != 0 && v != got) {
			return 0, false
		}
		got = v
	}
	return got, got != 0
}

// readHeader decodes the start of one archived WAL file.
func readHeader(ctx context.Context, s storage.Store, cd *codec.Codec, o WALObject) (wal.Header, error) {
	rc, err := s.Get(ctx, o.Key)
	if errors.Is(err, storage.ErrNotFound) {
		return wal.Header{}, fmt.Errorf("listed, then %w", ErrVanished)
	}
	if err != nil {
		return wal.Header{}, err
	}
	defer rc.Close()
	dec, err := cd.Decode(o.Ext, rc)
	if err != nil {
		return wal.Header{}, err
	}
	defer dec.Close()
	b := make([]byte, wal.HeaderSize)
	if _, err := io.ReadFull(dec, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return wal.Header{}, fmt.Errorf("%w: shorter than a page header", wal.ErrBadHeader)
		}
		return wal.Header{}, err
	}
	return wal.ParseHeader(b)
}
