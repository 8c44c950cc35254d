package restore

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgdata"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// ExtractChainForTest restores tars as one backup chain into dir (which
// must exist and be empty), the way BackupFetch does once it has read the
// sentinels and manifests: tars[0] is a full backup, each next one a delta
// on the one before, each stored as a single uncompressed partition. The
// manifests are made from the tars, so that arbitrary entries get past the
// manifest checks and reach the writes: every regular file, folder and
// symlink is listed as its header says (the first time it appears), a
// regular file with the sha256 of its content. In a delta, a file the
// layer before held as a regular file, whose content here is whole 8 KiB
// pages, becomes a "pages" delta of pages 0..n-1, and whatever the layer
// before listed but this tar lacks is kept (regular files as "unchanged").
// Like BackupFetch, it empties dir after a failed restore.
func ExtractChainForTest(ctx context.Context, dir string, tars ...[]byte) error {
	st := &memStore{objects: map[string][]byte{}}
	var layers []*layer
	var prev map[string]*catalog.ManifestFile
	for i, tb := range tars {
		seg := wal.Segment{Timeline: 1, Seg: uint32(i + 2)}
		name := catalog.BackupName(seg, "")
		if i > 0 {
			name = catalog.BackupName(seg, layers[i-1].sn.Name)
		}
		m := &catalog.Manifest{Format: catalog.ManifestFormat, Backup: name, Files: manifestFromTar(tb, prev)}
		partKey := catalog.PartKey(name, 1, codec.None{})
		st.objects[partKey] = tb
		sum := sha256.Sum256(tb)
		sn := &catalog.Sentinel{
			Format:      catalog.SentinelFormat,
			Name:        name,
			Timeline:    1,
			PGVersion:   170000,
			SegmentSize: wal.DefaultSegmentSize,
			Compression: "none",
			Parts:       []catalog.Part{{Key: partKey, Size: int64(len(tb)), SHA256: hex.EncodeToString(sum[:])}},
			BackupLabel: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
		}
		if i > 0 {
			sn.DeltaParent = layers[i-1].sn.Name
		}
		files, err := checkManifest(m, sn, i == 0)
		if err != nil {
			return err
		}
		layers = append(layers, &layer{sn: sn, m: m, files: files})
		prev = files
	}
	if len(layers) == 0 {
		return fmt.Errorf("%w: no layer", ErrInvalid)
	}
	opts := &BackupFetchOptions{
		Dir:            dir,
		Name:           Latest,
		Concurrency:    2,
		RestoreCommand: "walgo wal-fetch %f %p",
		Log:            zap.NewNop(),
	}
	if _, err := restoreInto(ctx, st, dir, layers, nil, opts); err != nil {
		if cerr := removeContents(dir); cerr != nil {
			return fmt.Errorf("%w (and cleaning up: %v)", err, cerr)
		}
		return err
	}
	return nil
}

// manifestFromTar lists the entries of a tar, see ExtractChainForTest.
func manifestFromTar(tb []byte, prev map[string]*catalog.ManifestFile) []catalog.ManifestFile {
	var files []catalog.ManifestFile
	listed := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(tb))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		p := strings.TrimSuffix(hdr.Name, "/")
		clean, err := cleanEntryName(p)
		if err != nil || listed[clean] {
			continue
		}
		mf := catalog.ManifestFile{Path: p, Mode: uint32(hdr.FileInfo().Mode()), ModTime: hdr.ModTime}
		switch hdr.Typeflag {
		case tar.TypeReg:
			h := sha256.New()
			n, _ := io.Copy(h, tr)
			mf.Size, mf.SHA256 = n, hex.EncodeToString(h.Sum(nil))
			if pf := prev[clean]; pf != nil && fs.FileMode(pf.Mode).IsRegular() && n > 0 && n%pgdata.PageSize == 0 {
				mf.Delta = "pages"
				for pg := range n / pgdata.PageSize {
					mf.Pages = append(mf.Pages, uint32(pg))
				}
			}
		case tar.TypeDir:
		case tar.TypeSymlink:
			mf.Link = hdr.Linkname
		default:
			continue // entry() refuses it on its own
		}
		listed[clean] = true
		files = append(files, mf)
	}
	var kept []string
	for p := range prev {
		if !listed[p] {
			kept = append(kept, p)
		}
	}
	sort.Strings(kept)
	for _, p := range kept {
		mf := *prev[p]
		if fs.FileMode(mf.Mode).IsRegular() {
			mf.Delta, mf.Pages = "unchanged", nil
		}
		files = append(files, mf)
	}
	return files
}

// memStore is a Store in memory, for ExtractChainForTest.
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
}

func (s *memStore) String() string { return "mem://" }

func (s *memStore) Put(_ context.Context, key string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = b
	return nil
}

func (s *memStore) Create(_ context.Context, key string, r io.Reader, _ storage.Metadata) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objects[key]; ok {
		return fmt.Errorf("%s: %w", key, storage.ErrExists)
	}
	s.objects[key] = b
	return nil
}

func (s *memStore) Get(_ context.Context, key string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *memStore) Stat(_ context.Context, key string) (storage.ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	}
	return storage.ObjectInfo{Key: key, Size: int64(len(b))}, nil
}

func (s *memStore) List(_ context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	s.mu.Lock()
	var keys []string
	for k := range s.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		oi, err := s.Stat(context.Background(), k)
		if err != nil {
			continue
		}
		if err := fn(oi); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, key)
	return nil
}
