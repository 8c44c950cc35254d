package catalog

import (
	"context"
	"fmt"
	"io"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// BackupsSegmentSize is the wal_segment_size the backups' sentinels record,
// or 0 when none records one or they disagree.
func BackupsSegmentSize(backups []*Sentinel) int64 {
	var s int64
	for _, b := range backups {
		switch {
		case b.SegmentSize == 0:
		case s == 0:
			s = b.SegmentSize
		case s != b.SegmentSize:
			return 0
		}
	}
	return s
}

// SegmentSize is the repository's wal_segment_size: the one its backups
// record, else the one in the long page header of the last segment in
// objs (only that object's first page is read). It returns 0 and no error
// when the repository cannot tell (no backup records one, no segment is
// stored), and 0 with the error when the segment cannot be read.
func SegmentSize(ctx context.Context, s storage.Store, cd *codec.Codec, backups []*Sentinel, objs []WALObject) (int64, error) {
	if size := BackupsSegmentSize(backups); size != 0 {
		return size, nil
	}
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		if o.Kind != wal.KindSegment {
			continue
		}
		rc, err := s.Get(ctx, o.Key)
		if err != nil {
			return 0, fmt.Errorf("segment size from %s: %w", o.Key, err)
		}
		defer rc.Close()
		dec, err := cd.Decode(o.Ext, rc)
		if err != nil {
			return 0, fmt.Errorf("segment size from %s: %w", o.Key, err)
		}
		defer dec.Close()
		buf := make([]byte, wal.HeaderSize)
		if _, err := io.ReadFull(dec, buf); err != nil {
			return 0, fmt.Errorf("segment size from %s: %w: %w", o.Key, codec.ErrCorrupt, err)
		}
		h, err := wal.ParseHeader(buf)
		if err != nil {
			return 0, fmt.Errorf("segment size from %s: %w", o.Key, err)
		}
		return int64(h.SegmentSize), nil
	}
	return 0, nil
}
