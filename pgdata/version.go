package pgdata

import (
	"errors"
	"fmt"
)

// The PostgreSQL major versions walgo backs up and restores: each is
// tested end to end (integration TestMatrix). A version outside them is
// refused before anything is done, never half-handled: its backup API,
// pg_control layout, data directory contents or WAL summaries may differ.
const (
	MinMajor = 13
	MaxMajor = 18
)

// ErrUnsupportedVersion: a PostgreSQL version outside MinMajor..MaxMajor.
var ErrUnsupportedVersion = errors.New("unsupported PostgreSQL version")

// CheckVersion refuses a server_version_num (150004) outside the
// supported majors, wrapping ErrUnsupportedVersion.
func CheckVersion(serverVersion int) error {
	if serverVersion < MinMajor*10000 || serverVersion >= (MaxMajor+1)*10000 {
		return fmt.Errorf("%w: PostgreSQL %s (server_version_num %d); walgo supports PostgreSQL %d to %d",
			ErrUnsupportedVersion, MajorVersion(serverVersion), serverVersion, MinMajor, MaxMajor)
	}
	return nil
}
