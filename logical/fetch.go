package logical

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
)

// Latest names the dump that finished last.
const Latest = "LATEST"

// Find returns the sentinel of dump name, or of the newest dump for
// LATEST; ErrNotFound if there is no such dump.
func Find(ctx context.Context, store storage.Store, name string) (*catalog.DumpSentinel, error) {
	if strings.EqualFold(name, Latest) {
		return catalog.LatestDump(ctx, store)
	}
	return catalog.ReadDumpSentinel(ctx, store, name)
}

// Resolve turns LATEST into the name of the newest dump of lineage
// (catalog.LineageIndex.Find) when one is named; any other name, or
// LATEST with no lineage, is returned as it is. ErrNotFound when the
// lineage holds no dump; history files are read with cd.
func Resolve(ctx context.Context, store storage.Store, cd *codec.Codec, name, lineage string) (string, error) {
	if !strings.EqualFold(name, Latest) || lineage == "" {
		return name, nil
	}
	x, err := catalog.ReadLineageIndex(ctx, store, cd)
	if err != nil {
		return "", err
	}
	l, err := x.Find(lineage)
	if err != nil {
		return "", err
	}
	list, err := catalog.ListDumps(ctx, store)
	if err != nil {
		return "", err
	}
	for i := len(list) - 1; i >= 0; i-- {
		if l.HoldsDump(list[i]) {
			return list[i].Name, nil
		}
	}
	return "", fmt.Errorf("no dumps on lineage %s: %w", x.Name(l), storage.ErrNotFound)
}

// Fetch writes dump name's pg_dump output (custom format) to w, checking
// the stored bytes and the decoded output against the sentinel's sizes and
// sha256. Data reaches w as it is decoded, so w has received everything
// by the time a mismatch at the end is reported: a caller writing to a
// file must not keep it on error (FetchFile does that). Damage is an error
// wrapping codec.ErrCorrupt that names the object; a missing or wrong age
// key is codec.ErrNoKey or codec.ErrWrongKey.
func Fetch(ctx context.Context, store storage.Store, cd *codec.Codec, name string, w io.Writer) (*catalog.DumpSentinel, error) {
	sn, err := Find(ctx, store, name)
	if err != nil {
		return nil, err
	}
	if err := fetch(ctx, store, cd, sn, w); err != nil {
		return nil, err
	}
	return sn, nil
}

// fetch is Fetch of the dump sn describes.
func fetch(ctx context.Context, store storage.Store, cd *codec.Codec, sn *catalog.DumpSentinel, w io.Writer) error {
	rc, err := store.Get(ctx, sn.Key)
	if err != nil {
		return fmt.Errorf("fetch dump %s: %w", sn.Name, err)
	}
	defer rc.Close()
	stored := codec.NewSumReader(rc)
	dec, err := cd.Decode(sn.Ext(), stored)
	if err != nil {
		return fmt.Errorf("fetch dump %s: object %s: %w", sn.Name, sn.Key, err)
	}
	defer dec.Close()
	plain := sha256.New()
	out := &errWriter{w: io.MultiWriter(w, plain)}
	n, err := io.CopyBuffer(out, dec, make([]byte, copyBuffer))
	if err == nil {
		// The decoder may stop before the last stored bytes (padding,
		// trailing garbage); they count for the stored checksum.
		_, err = io.Copy(io.Discard, stored)
	}
	switch {
	case err != nil && out.err != nil:
		return fmt.Errorf("fetch dump %s: write: %w", sn.Name, err)
	case err != nil:
		return fmt.Errorf("fetch dump %s: object %s: %w", sn.Name, sn.Key, err)
	}
	if got := stored.SHA256(); stored.N != sn.StoredSize || got != sn.StoredSHA256 {
		return fmt.Errorf("%w: dump %s: object %s: stored bytes have size %d and sha256 %s, the sentinel says %d and %s",
			codec.ErrCorrupt, sn.Name, sn.Key, stored.N, got, sn.StoredSize, sn.StoredSHA256)
	}
	if got := hex.EncodeToString(plain.Sum(nil)); n != sn.Size || got != sn.SHA256 {
		return fmt.Errorf("%w: dump %s: object %s: decoded dump has size %d and sha256 %s, the sentinel says %d and %s",
			codec.ErrCorrupt, sn.Name, sn.Key, n, got, sn.Size, sn.SHA256)
	}
	return nil
}

// FetchFile fetches dump name into a new file at path. The data goes to a
// temporary file in the same folder, which becomes path (fsynced, renamed)
// only once every checksum matched, so a damaged dump never leaves a file
// that looks complete. An existing path is refused (ErrExists).
func FetchFile(ctx context.Context, store storage.Store, cd *codec.Codec, name, path string) (*catalog.DumpSentinel, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%w: %s: choose a new file name", ErrExists, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".walgo-*")
	if err != nil {
		return nil, fmt.Errorf("fetch dump: %w", err)
	}
	tmp := f.Name()
	sn, err := Find(ctx, store, name)
	if err == nil {
		err = fetchInto(ctx, store, cd, sn, f)
	} else {
		f.Close()
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("fetch dump: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself survives a crash
		d.Close()
	}
	return sn, nil
}

// fetchRetryWait grows the wait after each cut-off transfer.
var fetchRetryWait = time.Second // a variable for the tests

// fetchInto fetches the dump sn describes into f, syncs and closes it. A
// transfer cut off by the storage starts over from an empty file, up to
// storage.TransferAttempts times.
func fetchInto(ctx context.Context, store storage.Store, cd *codec.Codec, sn *catalog.DumpSentinel, f *os.File) error {
	bw := bufio.NewWriterSize(f, copyBuffer)
	for attempt := 1; ; attempt++ {
		err := fetch(ctx, store, cd, sn, bw)
		if err == nil {
			break
		}
		if attempt >= storage.TransferAttempts || ctx.Err() != nil ||
			!errors.Is(err, storage.ErrUnreachable) || errors.Is(err, codec.ErrCorrupt) {
			f.Close()
			return err
		}
		if terr := restart(f, bw); terr != nil {
			f.Close()
			return fmt.Errorf("%w (and starting over failed: %w)", err, terr)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return err
		case <-time.After(time.Duration(attempt) * fetchRetryWait):
		}
	}
	err := bw.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fetch dump %s: %w", sn.Name, err)
	}
	return nil
}

// restart empties f and bw for a new attempt.
func restart(f *os.File, bw *bufio.Writer) error {
	bw.Reset(f)
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// errWriter remembers its own write error, to tell it from a read error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}
