package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// walArchive reads the archived WAL of one lineage back, record by record,
// for what a restore must know before it starts: where a restore point or
// a transaction's end is, and how far the archive reaches.
type walArchive struct {
	store   storage.Store
	cd      *codec.Codec
	lineage catalog.Lineage
	segSize int64
	conc    int
	have    map[string]bool // archived segment names

	segments atomic.Int64 // read so far
	bytes    atomic.Int64
}

// maxScanMemory bounds the segments held in memory at once while reading
// ahead.
const maxScanMemory = 256 << 20

// archivedSegments lists the repository's WAL once: the names of the
// segments it holds.
func archivedSegments(ctx context.Context, store storage.Store) (map[string]bool, error) {
	objs, err := catalog.ListWAL(ctx, store)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, o := range objs {
		if o.Kind == wal.KindSegment {
			have[o.Name] = true
		}
	}
	return have, nil
}

// newWALArchive reads lineage l's WAL from store; have is what
// archivedSegments listed.
func newWALArchive(store storage.Store, cd *codec.Codec, have map[string]bool, l catalog.Lineage, segSize int64, conc int) *walArchive {
	if !wal.ValidSegmentSize(segSize) {
		segSize = wal.DefaultSegmentSize
	}
	return &walArchive{store: store, cd: cd, lineage: l, segSize: segSize, have: have,
		conc: max(1, min(conc, int(maxScanMemory/segSize)))}
}

// segment is the file recovery along the lineage reads for segment number
// no: the one of the timeline the lineage is on at the segment's end (the
// segment holding a switch point is read from the newer timeline).
func (a *walArchive) segment(no uint64) wal.Segment {
	last := wal.LSN((no+1)*uint64(a.segSize) - 1)
	return wal.SegmentFromNo(a.lineage.TimelineAt(last), no, a.segSize)
}

func (a *walArchive) no(lsn wal.LSN) uint64 { return uint64(lsn) / uint64(a.segSize) }

// runEnd is the number of the last segment of the unbroken run of archived
// segments from segment from on (recovery from there stops after it), and
// false if from itself is not archived.
func (a *walArchive) runEnd(from uint64) (uint64, bool) {
	if !a.have[a.segment(from).Name()] {
		return 0, false
	}
	n := from
	for a.have[a.segment(n+1).Name()] {
		n++
	}
	return n, true
}

// endOf is the LSN just past segment no.
func (a *walArchive) endOf(no uint64) wal.LSN { return wal.LSN((no + 1) * uint64(a.segSize)) }

// read fetches and decodes one segment whole, starting over when the
// transfer is cut off.
func (a *walArchive) read(ctx context.Context, seg wal.Segment) ([]byte, error) {
	name := seg.Name()
	for attempt := 1; ; attempt++ {
		b, err := a.readOnce(ctx, name)
		if err == nil || attempt >= storage.TransferAttempts || !errors.Is(err, storage.ErrUnreachable) || errors.Is(err, codec.ErrCorrupt) {
			return b, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt) * transferRetryWait):
		}
	}
}

func (a *walArchive) readOnce(ctx context.Context, name string) ([]byte, error) {
	o, err := catalog.OpenWAL(ctx, a.store, name, a.cd)
	if err != nil {
		return nil, err
	}
	defer o.Body.Close()
	dec, err := a.cd.Decode(o.Ext, &sourceReader{ctx: ctx, r: o.Body})
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", o.Key, err)
	}
	defer dec.Close()
	var buf bytes.Buffer
	buf.Grow(int(a.segSize))
	n, err := io.Copy(&buf, io.LimitReader(dec, a.segSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", o.Key, readError(err))
	}
	if n != a.segSize {
		return nil, fmt.Errorf("%w: %s holds %d bytes, not a segment of %d", codec.ErrCorrupt, o.Key, n, a.segSize)
	}
	a.segments.Add(1)
	a.bytes.Add(n)
	return buf.Bytes(), nil
}

// scan reads segments from..to (numbers, inclusive) of the lineage in
// order through one wal.Reader and calls fn for each record; several
// segments download at once; segments the archive lacks are skipped. It stops early, returning nil, when fn
// returns wal.ErrStop. The reader's state tells where the WAL read ends.
func (a *walArchive) scan(ctx context.Context, from, to uint64, fn func(*wal.Record) error) (wal.ReaderState, error) {
	r := wal.NewReader(a.segSize)
	if to < from {
		return r.State(), nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	type result struct {
		data []byte
		err  error
	}
	// Only the segments the archive holds: the reader starts over after
	// a missing one.
	var segs []wal.Segment
	for no := from; no <= to; no++ {
		if s := a.segment(no); a.have[s.Name()] {
			segs = append(segs, s)
		}
	}
	n := len(segs)
	results := make([]chan result, n)
	for i := range results {
		results[i] = make(chan result, 1)
	}
	sem := make(chan struct{}, a.conc)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			seg := segs[i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := a.read(ctx, seg)
				results[i] <- result{b, err}
			}()
		}
	}()
	for i := range n {
		var res result
		select {
		case res = <-results[i]:
		case <-ctx.Done():
			return r.State(), ctx.Err()
		}
		if res.err != nil {
			return r.State(), res.err
		}
		err := r.ReadSegment(segs[i], bytes.NewReader(res.data), fn)
		<-sem
		if errors.Is(err, wal.ErrStop) {
			return r.State(), nil
		}
		if err != nil {
			return r.State(), fmt.Errorf("read %s: %w", segs[i].Name(), err)
		}
	}
	return r.State(), nil
}
