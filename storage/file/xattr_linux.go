package file

import (
	"errors"
	"strings"
	"syscall"

	"github.com/walgo/walgo/storage"
)

// xattrPrefix names walgo's metadata among a file's extended attributes.
const xattrPrefix = "user.walgo."

// noXattrs reports a filesystem that keeps no user extended attributes.
func noXattrs(err error) bool {
	return errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EPERM)
}

// setMetadata stores meta as extended attributes of the file at p. A
// filesystem without user extended attributes stores nothing.
func setMetadata(p string, meta storage.Metadata) error {
	for k, v := range meta {
		if err := syscall.Setxattr(p, xattrPrefix+k, []byte(v), 0); err != nil {
			if noXattrs(err) {
				return nil
			}
			return err
		}
	}
	return nil
}

// getMetadata reads walgo's extended attributes of the file at p; nil when
// it has none.
func getMetadata(p string) (storage.Metadata, error) {
	buf := make([]byte, 1024)
	var n int
	for {
		var err error
		n, err = syscall.Listxattr(p, buf)
		if errors.Is(err, syscall.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			if noXattrs(err) {
				return nil, nil
			}
			return nil, err
		}
		break
	}
	var meta storage.Metadata
	val := make([]byte, storage.MaxMetadata)
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		k, ok := strings.CutPrefix(name, xattrPrefix)
		if !ok || k == "" {
			continue
		}
		m, err := syscall.Getxattr(p, name, val)
		if errors.Is(err, syscall.ENODATA) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if meta == nil {
			meta = storage.Metadata{}
		}
		meta[k] = string(val[:m])
	}
	return meta, nil
}
