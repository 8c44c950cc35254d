package restore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/pgdata"
)

const autoConf = pgdata.AutoConfFile

// recoveryKeys are the settings a restore writes; earlier lines setting
// them in postgresql.auto.conf (say, from the restore that made the
// backed-up cluster) are commented out, so they cannot add a second target.
var recoveryKeys = map[string]bool{
	"restore_command":           true,
	"recovery_target":           true,
	"recovery_target_time":      true,
	"recovery_target_lsn":       true,
	"recovery_target_xid":       true,
	"recovery_target_name":      true,
	"recovery_target_action":    true,
	"recovery_target_timeline":  true,
	"recovery_target_inclusive": true,
}

// ParseTargetTime reads a recovery target time: RFC 3339
// ("2026-11-24T10:00:00Z", "2026-11-24T12:00:00+02:00") or Postgres'
// "YYYY-MM-DD HH:MM:SS[.frac][+TZ]" with a zone of "Z", "+HH", "+HHMM" or
// "+HH:MM" ("2026-11-24 10:00:00+00"). A time without a zone is UTC.
func ParseTargetTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, date := range []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05"} {
		for _, zone := range []string{"Z07:00", "Z0700", "Z07", " Z07:00", " Z0700", " Z07", ""} {
			if t, err := time.ParseInLocation(date+zone, s, time.UTC); err == nil {
				return t, nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("%w: target time %q: want RFC 3339 or YYYY-MM-DD HH:MM:SS[+TZ] (UTC without a zone)", ErrInvalid, s)
}

// RestoreCommand returns a restore_command line that runs argv (the walgo
// binary and its global flags) as "ARGV... wal-fetch %f %p": each argument
// quoted for /bin/sh where needed, and every "%" doubled, since Postgres
// expands %-escapes in restore_command before the shell runs it.
func RestoreCommand(argv ...string) string {
	var b strings.Builder
	for _, a := range argv {
		b.WriteString(strings.ReplaceAll(shellQuote(a), "%", "%%"))
		b.WriteByte(' ')
	}
	b.WriteString("wal-fetch %f %p")
	return b.String()
}

func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quoteConf quotes a value for postgresql.conf: single quotes and
// backslashes doubled, as ALTER SYSTEM writes them.
func quoteConf(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// formatTargetTime writes a time the way Postgres reads it whatever its
// TimeZone setting: UTC with an explicit zone, microseconds at most.
func formatTargetTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
}

// recoverySettings are the postgresql.conf lines for opts, in order.
func recoverySettings(opts *BackupFetchOptions) []string {
	set := func(k, v string) string { return k + " = " + quoteConf(v) }
	t := opts.Target
	lines := []string{set("restore_command", opts.RestoreCommand)}
	switch {
	case t.Immediate:
		lines = append(lines, set("recovery_target", "immediate"))
	case t.Time != nil:
		lines = append(lines, set("recovery_target_time", formatTargetTime(*t.Time)))
	case t.LSN != nil:
		lines = append(lines, set("recovery_target_lsn", t.LSN.String()))
	case t.XID != nil:
		lines = append(lines, set("recovery_target_xid", strconv.FormatUint(*t.XID, 10)))
	case t.Name != "":
		lines = append(lines, set("recovery_target_name", t.Name))
	}
	if t.IsSet() {
		lines = append(lines, set("recovery_target_action", t.Action))
	}
	return append(lines, set("recovery_target_timeline", t.Timeline))
}

// writeRecoveryFiles writes backup_label, the recovery settings and the
// signal file, each fsynced. No tablespace_map: the restore made the
// pg_tblspc symlinks itself, pointing where each tablespace was restored
// (as pg_basebackup's plain format does); Postgres would replace them with
// the backup's original locations.
func (r *restorer) writeRecoveryFiles(sn *catalog.Sentinel, opts *BackupFetchOptions) error {
	for _, name := range []string{pgdata.RecoverySignalFile, pgdata.StandbySignalFile} {
		if err := r.fs.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore: remove %s: %w", name, err)
		}
	}
	if err := r.writeSynced(pgdata.BackupLabelFile, []byte(sn.BackupLabel)); err != nil {
		return err
	}
	header := fmt.Sprintf("# Recovery settings written by walgo backup-fetch for backup %s at %s\n",
		sn.Name, time.Now().UTC().Format(time.RFC3339))
	block := header + strings.Join(recoverySettings(opts), "\n") + "\n"
	if err := r.appendAutoConf(block); err != nil {
		return err
	}
	signal := pgdata.RecoverySignalFile
	if opts.Standby {
		signal = pgdata.StandbySignalFile
	}
	return r.writeSynced(signal, nil)
}

// appendAutoConf appends block to postgresql.auto.conf, commenting out the
// earlier lines that set the same recovery settings. The file is replaced
// through a temp file and rename.
func (r *restorer) appendAutoConf(block string) error {
	var old []byte
	f, err := r.fs.Open(autoConf)
	switch {
	case err == nil:
		old, err = io.ReadAll(io.LimitReader(f, 64<<20))
		f.Close()
		if err != nil {
			return fmt.Errorf("restore %s: %w", autoConf, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("restore %s: %w", autoConf, err)
	}
	var b strings.Builder
	for line := range strings.Lines(string(old)) {
		if recoveryKeys[confKey(line)] {
			b.WriteString("# disabled by walgo backup-fetch: ")
		}
		b.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			b.WriteByte('\n')
		}
	}
	b.WriteString(block)
	tmp := autoConf + ".walgo-tmp"
	if err := r.writeSynced(tmp, []byte(b.String())); err != nil {
		return err
	}
	if err := r.fs.Rename(tmp, autoConf); err != nil {
		return fmt.Errorf("restore %s: %w", autoConf, err)
	}
	return nil
}

// confKey returns the lower-cased setting name a postgresql.conf line
// sets, or "" for comments and blank lines.
func confKey(line string) string {
	s := strings.TrimLeft(line, " \t")
	i := strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.')
	})
	if i < 0 {
		i = len(s)
	}
	if i == 0 {
		return ""
	}
	rest := strings.TrimLeft(s[i:], " \t")
	if rest != "" && rest[0] != '=' && s[i] != ' ' && s[i] != '\t' {
		return ""
	}
	return strings.ToLower(s[:i])
}

// writeSynced writes a new file (0600) in the directory and fsyncs it.
func (r *restorer) writeSynced(name string, data []byte) error {
	if err := r.makeRoom(name); err != nil {
		return err
	}
	f, err := r.fs.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	return nil
}
