package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/wal"
)

func backupFetchCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup-fetch",
		Usage:     "restore a base backup into a data directory, ready for (point-in-time) recovery",
		ArgsUsage: "[flags] DIR [NAME|LATEST]",
		Description: `Restores backup NAME (see backup-list), LATEST (the backup that finished
last), or without NAME the newest backup that finished before the recovery
target (LATEST when no target is given) into DIR, then writes
backup_label and the recovery settings (restore_command,
recovery_target_*) into DIR/postgresql.auto.conf with recovery.signal, or
standby.signal with --standby. Start Postgres on DIR to recover.

Each tablespace is restored to its original location (which must be
missing or empty) unless --tablespace NAME_OR_OID=DIR puts it elsewhere;
pg_tblspc/<oid> is made a symlink to where it went, and no tablespace_map
is written. pg_wal is a folder inside DIR unless --waldir DIR moves it
(a symlink, as initdb --waldir makes).

DIR is created (0700) if missing; an existing DIR must be empty unless
--overwrite is given. Every partition, the manifest and each file are
checked against their sha256; a failed restore removes what it wrote, so
it never leaves a directory Postgres could start on. Flags may come before
or after DIR.

The restore_command written runs this walgo binary with --storage naming
the repository the backup came from (however it was given: flag,
environment or config file), the --s3-* settings and the age identity
file's path, after --config FILE when a config file was used (for what it
holds beyond these). Secrets are never written: AWS credentials must come
from the server's environment or the config file.

Where forks (or point-in-time restores that were promoted) archive into
the same repository, it holds several histories, or lineages (backup-list
shows each backup's). The backup is chosen within the lineage --lineage
(WALGO_LINEAGE) names, and the restored cluster follows that lineage's
timeline only (recovery_target_timeline = its timeline, never 'latest'):
a restore or follower of the primary never replays a fork's WAL. Without
--lineage, the backup and target must leave one lineage (NAME on one
history, an LSN or time before the histories parted); otherwise the
restore is refused (exit 2), listing them.

--target-time takes RFC 3339 ("2026-11-24T10:00:00Z",
"2026-11-24T12:00:00+02:00") or "YYYY-MM-DD HH:MM:SS[.frac][+TZ]"
("2026-11-24 10:00:00+00"); a time without a zone is UTC.
--target-immediate stops recovery as soon as the backup is consistent:
the database as of the end of the backup.
--target-name and --target-xid are looked up in the archived WAL (the
restore point's record, the transaction's commit or abort), and the backup
is the newest that finished before it; Postgres compares only the low 32
bits of an xid. Before anything is restored, a name or xid the archive
does not hold, a name used twice where recovery would see both, and a
--target-time or --target-lsn past the end of the archived WAL are refused
(exit 2) with how far the archive reaches.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "target-time", Usage: "recover to this `TIME` (RFC 3339, or YYYY-MM-DD HH:MM:SS[+TZ]; UTC without a zone)"},
			&cli.StringFlag{Name: "target-lsn", Usage: "recover to this WAL location, e.g. 16/B374D848"},
			&cli.StringFlag{Name: "target-xid", Usage: "recover until this transaction `ID` commits"},
			&cli.StringFlag{Name: "target-name", Usage: "recover to this restore point (pg_create_restore_point)"},
			&cli.BoolFlag{Name: "target-immediate", Usage: "recover only to the end of the backup (recovery_target = 'immediate'), whatever WAL the archive holds after it"},
			&cli.StringFlag{Name: "target-action", Usage: "at the target: promote, pause or shutdown (default promote when a target is given)"},
			&cli.StringFlag{Name: "target-timeline", Usage: "override recovery_target_timeline: latest, current or a timeline id (default: the timeline of the lineage restored; an id with no --lineage also picks the backup in that lineage)"},
			&cli.BoolFlag{Name: "standby", Usage: "make the restored cluster a standby that keeps replaying archived WAL (standby.signal)"},
			&cli.BoolFlag{Name: "overwrite", Usage: "empty a non-empty DIR first (refused while it holds postmaster.pid)"},
			&cli.GenericFlag{Name: "tablespace", Value: &dirMap{}, Usage: "restore a tablespace elsewhere than its original location: `NAME_OR_OID=DIR` (repeatable)"},
			&cli.StringFlag{Name: "waldir", Usage: "make pg_wal a symlink to `DIR` (missing or empty) instead of a folder inside the data directory"},
		},
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) < 1 || len(args) > 2 {
				return fmt.Errorf("%w: backup-fetch takes DIR and an optional NAME or LATEST", errUsage)
			}
			target, err := targetFromFlags(c)
			if err != nil {
				return err
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			cmdline, err := restoreCommandLine(e.set, e.log)
			if err != nil {
				return err
			}
			dir, name := args[0], ""
			if len(args) == 2 {
				name = args[1]
			}
			progress := newProgress("backup-fetch", e.log)
			res, err := restore.BackupFetch(c.Context, e.store, restore.BackupFetchOptions{
				Dir:            dir,
				Name:           name,
				Target:         target,
				Lineage:        e.set.lineage,
				Standby:        c.Bool("standby"),
				Overwrite:      c.Bool("overwrite"),
				Tablespaces:    *c.Generic("tablespace").(*dirMap),
				WALDir:         c.String("waldir"),
				Concurrency:    e.set.downloadConc,
				Codec:          e.set.codec,
				RestoreCommand: cmdline,
				Log:            e.log,
				Progress:       progress.update,
			})
			progress.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "restored %s into %s: %d files, %s (%s downloaded) in %s\n",
				res.Backup, dir, res.Files, humanBytes(res.Written), humanBytes(res.Downloaded), res.Duration.Round(time.Millisecond))
			links := make([]string, 0, len(res.Outside))
			for p := range res.Outside {
				links = append(links, p)
			}
			sort.Strings(links)
			for _, p := range links {
				fmt.Fprintf(c.App.Writer, "%s is a symlink to %s\n", p, res.Outside[p])
			}
			fmt.Fprintf(c.App.Writer, "recovery follows lineage %s (recovery_target_timeline = '%s')\n", res.Lineage, res.Timeline)
			fmt.Fprintf(c.App.Writer, "start Postgres on it to recover; it fetches WAL with: %s\n", cmdline)
			return nil
		},
	}
}

// dirMap is the value of a repeatable NAME=DIR flag. Unlike a string
// slice flag it never splits a value at commas, which paths may hold; the
// name ends at the first "=".
type dirMap map[string]string

func (m *dirMap) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return fmt.Errorf("want NAME_OR_OID=DIR, not %q", s)
	}
	if *m == nil {
		*m = dirMap{}
	}
	if _, dup := (*m)[k]; dup {
		return fmt.Errorf("%s is given twice", k)
	}
	(*m)[k] = v
	return nil
}

func (m *dirMap) String() string {
	var parts []string
	for k, v := range *m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// interspersedFlags applies the flags that follow the first argument
// (urfave/cli stops parsing flags there) and returns the other arguments.
// "--" ends the flags.
func interspersedFlags(c *cli.Context) ([]string, error) {
	takes := takesValue(append(c.App.Flags, c.Command.Flags...))
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		name, value, hasValue, ok := flagArg(a)
		if !ok {
			pos = append(pos, a)
			continue
		}
		if !hasValue {
			if v, known := takes[name]; known && !v {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				return nil, fmt.Errorf("%w: flag %s needs a value", errUsage, a)
			}
		}
		if err := c.Set(name, value); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errUsage, a, err)
		}
	}
	return pos, nil
}

// targetFromFlags reads the --target-* flags.
func targetFromFlags(c *cli.Context) (restore.Target, error) {
	t := restore.Target{
		Immediate: c.Bool("target-immediate"),
		Name:      c.String("target-name"),
		Action:    c.String("target-action"),
		Timeline:  c.String("target-timeline"),
	}
	if s := c.String("target-time"); s != "" {
		tm, err := restore.ParseTargetTime(s)
		if err != nil {
			return t, err
		}
		t.Time = &tm
	}
	if s := c.String("target-lsn"); s != "" {
		l, err := wal.ParseLSN(s)
		if err != nil {
			return t, fmt.Errorf("%w: --target-lsn: %v", errUsage, err)
		}
		t.LSN = &l
	}
	if s := c.String("target-xid"); s != "" {
		x, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return t, fmt.Errorf("%w: --target-xid %q: want a transaction id", errUsage, s)
		}
		t.XID = &x
	}
	return t, nil
}

// restoreCommandLine is the restore_command for a restored cluster: this
// binary (absolute) with what reaches the repository this run reads,
// however it was given (flag, environment, config file): the storage URL,
// the S3 endpoint, addressing and region, the age identity file's path. A
// config file is passed too, for what it holds beyond these (AWS
// credentials among them), but the flags written after it win over it, so
// the restored cluster reads this repository even if the file says another.
// Secrets are never written.
func restoreCommandLine(set *settings, log *zap.Logger) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("restore_command: locate walgo: %w", err)
	}
	if strings.Contains(self, string(filepath.Separator)+"go-build") {
		log.Warn("restore_command runs a temporary binary (go run?): install walgo and restore again", zap.String("binary", self))
	}
	argv := []string{self}
	if set.configFile != "" {
		abs, err := filepath.Abs(set.configFile)
		if err != nil {
			return "", fmt.Errorf("%w: config file %s: %v", errUsage, set.configFile, err)
		}
		argv = append(argv, "--config", abs)
	}
	argv = append(argv, "--storage", set.storageURL)
	if set.identityFile != "" {
		// The path, never the key: the file stays where it is.
		argv = append(argv, "--age-identity-file", set.identityFile)
	}
	if strings.HasPrefix(set.storageURL, "s3:") {
		// The endpoint names the repository as much as the URL does; the
		// AWS SDK reads it from the environment when walgo has none.
		endpoint := set.s3Endpoint
		for _, v := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
			if endpoint == "" {
				endpoint = os.Getenv(v)
			}
		}
		if endpoint != "" {
			argv = append(argv, "--s3-endpoint", endpoint)
		}
		if set.s3PathStyle {
			argv = append(argv, "--s3-path-style")
		}
		region := set.s3Region
		for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
			if region == "" {
				region = os.Getenv(v)
			}
		}
		if region != "" {
			argv = append(argv, "--s3-region", region)
		}
	}
	return restore.RestoreCommand(argv...), nil
}

func backupListCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup-list",
		Usage: "list finished base backups, oldest first, with the lineages (histories) each restores along",
		Description: `Lists the finished backups this walgo can restore, oldest finish first
(with --lineage, those of that lineage only), then the ones it cannot
("foreign"): WAL-G's and WAL-E's backups sharing the folder (with their
start LSN and times when their sentinel has them), sentinels of a newer
walgo, and damaged sentinels, each with its key and what to do. Foreign
backups are never restored, never chosen as LATEST or as a delta parent,
and never deleted but by delete everything. --json prints walgo's own
backups; --json --foreign the foreign ones.

LINEAGE names the histories a backup restores along: its own timeline's,
and those of forks (or promoted point-in-time restores) that left its
timeline after it finished, as the .history files say. These are the
values backup-fetch --lineage takes.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "detail", Usage: "add delta parent (or why a delta was refused), tablespaces (JSON), Postgres version, system id, host, file count and walgo version"},
			&cli.BoolFlag{Name: "foreign", Usage: "with --json: print the backups walgo cannot restore instead"},
		},
		Action: func(c *cli.Context) error {
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			all, err := catalog.ListAllBackups(c.Context, e.store)
			if err != nil {
				return err
			}
			objs, err := catalog.ListWAL(c.Context, e.store)
			if err != nil {
				return err
			}
			h, err := catalog.ReadHistories(c.Context, e.store, e.set.codec, objs)
			if err != nil {
				return err
			}
			x := catalog.NewLineageIndex(all.Own, objs, h)
			list := x.Backups()
			if e.set.lineage != "" {
				l, err := x.Find(e.set.lineage)
				if err != nil {
					return err
				}
				list = x.BackupsOf(l)
			}
			lineages := func(sn *catalog.Sentinel) []string { return x.Names(x.Of(sn)) }
			detail := c.Bool("detail")
			if c.Bool("json") && c.Bool("foreign") {
				out := all.Foreign
				if out == nil {
					out = []catalog.ForeignBackup{}
				}
				return writeJSON(c.App.Writer, out)
			}
			if c.Bool("json") {
				for _, f := range all.Foreign {
					e.log.Warn("backup walgo cannot restore (backup-list --json --foreign lists them)", zap.String("backup", f.Name), zap.String("kind", f.Kind), zap.String("problem", f.Problem))
				}
				out := make([]any, 0, len(list))
				for _, sn := range list {
					if detail {
						out = append(out, backupDetailOf(sn, lineages(sn)))
					} else {
						out = append(out, backupRowOf(sn, lineages(sn)))
					}
				}
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if len(list) == 0 {
				fmt.Fprintf(c.App.Writer, "no backups in %s\n", e.store)
				return printForeign(c.App.Writer, all.Foreign)
			}
			const timeFmt = "2006-01-02 15:04:05"
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			head := "NAME\tSTARTED (UTC)\tFINISHED (UTC)\tSTART LSN\tFINISH LSN\tTIMELINE\tLINEAGE\tSTORED\tSIZE\tPERMANENT"
			if detail {
				head += "\tPARENT\tPOSTGRES\tSYSTEM ID\tHOST\tFILES\tWALGO"
			}
			fmt.Fprintln(w, head)
			for _, sn := range list {
				perm := "-"
				if sn.Permanent {
					perm = "yes"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s", sn.Name,
					sn.StartTime.UTC().Format(timeFmt), sn.FinishTime.UTC().Format(timeFmt),
					sn.StartLSN, sn.FinishLSN, sn.Timeline, orDash(strings.Join(lineages(sn), ",")),
					humanBytes(sn.CompressedSize), humanBytes(sn.UncompressedSize), perm)
				if detail {
					parent := orDash(sn.DeltaParent)
					if sn.DeltaRefused != "" {
						parent = "- (delta refused)"
					}
					host := orDash(sn.Hostname)
					if sn.FromStandby {
						host += " (standby)"
					}
					fmt.Fprintf(w, "\t%s\t%s\t%s\t%s\t%d\t%s", parent, pgVersionString(sn.PGVersion),
						orDash(sn.SystemID), host, sn.FileCount, orDash(sn.WalgoVersion))
				}
				fmt.Fprintln(w)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			return printForeign(c.App.Writer, all.Foreign)
		},
	}
}

// printForeign lists the backups walgo cannot restore after backup-list's
// table.
func printForeign(out io.Writer, fs []catalog.ForeignBackup) error {
	if len(fs) == 0 {
		return nil
	}
	const timeFmt = "2006-01-02 15:04:05"
	fmt.Fprintf(out, "\n%d backup(s) walgo cannot restore (never chosen, never deleted but by delete everything):\n", len(fs))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tSTARTED (UTC)\tFINISHED (UTC)\tSTART LSN\tFINISH LSN\tTIMELINE")
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(timeFmt)
	}
	for _, f := range fs {
		start, finish, tli := "-", "-", "-"
		if f.StartKnown {
			start, tli = f.StartLSN.String(), strconv.FormatUint(uint64(f.Timeline), 10)
		}
		if f.FinishLSN != 0 {
			finish = f.FinishLSN.String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, f.Kind, when(f.StartTime), when(f.FinishTime), start, finish, tli)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, f := range fs {
		fmt.Fprintf(out, "%s (%s): %s\n", f.Name, f.Key, f.Problem)
	}
	return nil
}

// backupRow is one backup in backup-list --json.
type backupRow struct {
	Name             string    `json:"name"`
	StartTime        time.Time `json:"start_time"`
	FinishTime       time.Time `json:"finish_time"`
	StartLSN         wal.LSN   `json:"start_lsn"`
	FinishLSN        wal.LSN   `json:"finish_lsn"`
	Timeline         uint32    `json:"timeline"`
	Lineages         []string  `json:"lineages"` // the histories it restores along (--lineage values)
	CompressedSize   int64     `json:"compressed_size"`
	UncompressedSize int64     `json:"uncompressed_size"`
	Permanent        bool      `json:"permanent"`
}

// backupDetail is one backup in backup-list --json --detail.
type backupDetail struct {
	backupRow
	DeltaParent  string               `json:"delta_parent"`
	DeltaRefused string               `json:"delta_refused,omitempty"` // why a delta was asked for and a full backup taken
	Tablespaces  []catalog.Tablespace `json:"tablespaces"`             // what backup-fetch --tablespace names
	WALDir       string               `json:"wal_directory,omitempty"` // where pg_wal pointed, if a symlink
	FromStandby  bool                 `json:"from_standby"`            // taken on a hot standby
	PGVersion    int                  `json:"pg_version"`
	SystemID     string               `json:"system_identifier"`
	Hostname     string               `json:"hostname"`
	FileCount    int                  `json:"file_count"`
	WalgoVersion string               `json:"walgo_version"`
}

func backupRowOf(sn *catalog.Sentinel, lineages []string) backupRow {
	if lineages == nil {
		lineages = []string{}
	}
	return backupRow{
		Lineages:         lineages,
		Name:             sn.Name,
		StartTime:        sn.StartTime.UTC(),
		FinishTime:       sn.FinishTime.UTC(),
		StartLSN:         sn.StartLSN,
		FinishLSN:        sn.FinishLSN,
		Timeline:         sn.Timeline,
		CompressedSize:   sn.CompressedSize,
		UncompressedSize: sn.UncompressedSize,
		Permanent:        sn.Permanent,
	}
}

func backupDetailOf(sn *catalog.Sentinel, lineages []string) backupDetail {
	return backupDetail{
		backupRow:    backupRowOf(sn, lineages),
		DeltaParent:  sn.DeltaParent,
		DeltaRefused: sn.DeltaRefused,
		Tablespaces:  sn.Tablespaces,
		WALDir:       sn.WALDir,
		FromStandby:  sn.FromStandby,
		PGVersion:    sn.PGVersion,
		SystemID:     sn.SystemID,
		Hostname:     sn.Hostname,
		FileCount:    sn.FileCount,
		WalgoVersion: sn.WalgoVersion,
	}
}

// pgVersionString turns server_version_num into "16.4" (or "9.6.24").
func pgVersionString(v int) string {
	switch {
	case v <= 0:
		return "-"
	case v >= 100000:
		return fmt.Sprintf("%d.%d", v/10000, v%10000)
	}
	return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
}
