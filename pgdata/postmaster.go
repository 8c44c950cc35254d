package pgdata

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PostmasterAlive reports whether the postmaster.pid in dataDir names a
// running process: a server runs (or its pid was taken since, which a
// caller deciding whether to keep serving it can accept).
func PostmasterAlive(dataDir string) bool {
	f, err := os.Open(filepath.Join(dataDir, PIDFile))
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false
	}
	line, _, _ := strings.Cut(string(b[:n]), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
