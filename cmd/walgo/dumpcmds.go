package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/drill"
	"github.com/walgo/walgo/logical"
	"github.com/walgo/walgo/ratelimit"
	"github.com/walgo/walgo/storage"
)

const dumpExitCodes = `Exit codes: 0 success; 1 no such dump; 2 bad usage or settings (a missing
or wrong age key too); 3 refused: the target database is not empty and
--confirm is missing, the output file exists, or a dump of that name exists
(nothing was changed); 4 storage failing; 5 the stored dump is damaged
(checksum mismatch: the message names the object); 6 anything else, such as
pg_dump or pg_restore failing (their messages are in the error).`

// clientBinDirFlag is where pg_dump and pg_restore come from; the same
// setting as drill's server binaries.
func clientBinDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "pg-bindir", EnvVars: []string{"WALGO_PG_BINDIR"},
		Usage: "take pg_dump and pg_restore from `DIR` (default: PATH); they must be at least as new as the server"}
}

func dumpPushCommand() *cli.Command {
	// A fork needs drill's settings, but it is never checked with
	// pg_amcheck, and --pg-bindir says where pg_dump comes from too.
	flags := slices.DeleteFunc(drillFlags(), func(f cli.Flag) bool {
		return slices.Contains(f.Names(), "heapallindexed") || slices.Contains(f.Names(), "pg-bindir")
	})
	flags = append(flags,
		&cli.StringFlag{Name: "from-backup", Usage: "dump a private copy restored from base backup `NAME` or LATEST instead of the live database"},
		&cli.StringFlag{Name: "pg-bindir", EnvVars: []string{"WALGO_PG_BINDIR"},
			Usage: "take pg_dump, and with --from-backup the server binaries, from `DIR` (default: pg_dump from PATH; with --from-backup, the backup's version's binaries)"})
	return &cli.Command{
		Name:      "dump-push",
		Usage:     "store a logical backup (pg_dump) of one database",
		ArgsUsage: "[flags] [DSN]",
		Description: `Runs pg_dump -Fc --no-acl --no-owner against DSN (a libpq connection
string or postgres:// URL; default: the PG* environment) and streams its
output through the configured compression and age encryption into
dumps_005/<name>/ in the repository, then writes the dump's sentinel: a
dump is listed only once all of it is stored. pg_dump's custom format
already compresses the table data (zlib, its default level); walgo's codec
runs on top so that every object in the repository is checksummed and, with
WALGO_AGE_RECIPIENTS, encrypted. The name is dump_<UTC start second>_<6
random hex digits>, so dump-push runs may overlap, even from several hosts.

--from-backup NAME|LATEST leaves the live database alone, as advised for
large databases: walgo restores that base backup into a temporary folder
(--work-dir), starts a private Postgres on it (loopback only, archive_mode
off), dumps the database DSN names (or PGDATABASE, or postgres) from it,
then stops it and removes the folder. The dump records the backup's name.
It must run as the database's OS user (e.g. postgres): Postgres refuses
root. The folder needs room for the whole cluster.

A password in DSN is passed to pg_dump in PGPASSWORD, never on its command
line.

` + dumpExitCodes,
		Flags: flags,
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) > 1 {
				return fmt.Errorf("%w: dump-push takes at most one DSN", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			opts := logical.PushOptions{
				BinDir:       c.String("pg-bindir"),
				Codec:        e.set.codec,
				Log:          e.log,
				WalgoVersion: buildVersion(),
			}
			if len(args) == 1 {
				opts.DSN = args[0]
			}
			var sn *catalog.DumpSentinel
			if b := c.String("from-backup"); b != "" {
				sn, err = dumpFromBackup(c, e, b, opts)
			} else {
				sn, err = pushWithProgress(c, e, opts)
			}
			if err != nil {
				return err
			}
			from := ""
			if sn.FromBackup != "" {
				from = " (restored from base backup " + sn.FromBackup + ")"
			}
			fmt.Fprintf(c.App.Writer, "stored dump %s of database %q%s: %s, %s stored, in %s\n", sn.Name, sn.Database, from,
				humanBytes(sn.Size), humanBytes(sn.StoredSize), sn.FinishTime.Sub(sn.StartTime).Round(time.Millisecond))
			return nil
		},
	}
}

// pushWithProgress runs logical.Push with a progress display of the bytes
// pg_dump wrote (their total is unknown until it ends).
func pushWithProgress(c *cli.Context, e *env, opts logical.PushOptions) (*catalog.DumpSentinel, error) {
	progress := newProgress("dump-push", e.log)
	defer progress.done()
	opts.Progress = func(n int64) { progress.update(n, -1) }
	return logical.Push(c.Context, e.store, opts)
}

// dumpFromBackup forks backup, dumps the database opts.DSN names from the
// fork, and always removes the fork.
func dumpFromBackup(c *cli.Context, e *env, backup string, opts logical.PushOptions) (sn *catalog.DumpSentinel, err error) {
	db, err := logical.DatabaseOf(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	dopts, err := drillOptions(c, e, backup)
	if err != nil {
		return nil, err
	}
	fork, err := drill.Fork(c.Context, e.store, dopts)
	if err != nil {
		return nil, fmt.Errorf("restore base backup %s: %w", backup, err)
	}
	defer func() {
		if cerr := fork.Close(context.WithoutCancel(c.Context)); cerr != nil {
			e.log.Error("could not remove the restored copy", zap.String("dir", fork.Dir), zap.Error(cerr))
			if err == nil {
				err = fmt.Errorf("dump %s stored, but removing the restored copy failed: %w", sn.Name, cerr)
			}
		}
	}()
	e.log.Info("dumping the restored copy", zap.String("backup", fork.Report.Backup), zap.String("database", db),
		zap.Duration("restore", fork.Report.Total.Round(time.Millisecond)))
	if opts.DSN, err = logical.WithDatabase(fork.Server.DSN(), db); err != nil {
		return nil, err
	}
	// pg_dump of the restored server's own version.
	opts.BinDir = fork.Server.BinDir()
	opts.FromBackup = fork.Report.Backup
	return pushWithProgress(c, e, opts)
}

func dumpListCommand() *cli.Command {
	return &cli.Command{
		Name:  "dump-list",
		Usage: "list stored logical backups (dumps), oldest first",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print every dump's sentinel as JSON"}},
		Action: func(c *cli.Context) error {
			if err := noArgs(c, "dump-list"); err != nil {
				return err
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			list, err := catalog.ListDumps(c.Context, e.store)
			if err != nil {
				return err
			}
			x, err := catalog.ReadLineageIndex(c.Context, e.store, e.set.codec)
			if err != nil {
				return err
			}
			type dumpRow struct {
				*catalog.DumpSentinel
				Lineages []string `json:"lineages"` // of the dumped server's history
			}
			rows := []dumpRow{}
			for _, d := range list {
				rows = append(rows, dumpRow{d, append([]string{}, x.Names(x.OfDump(d))...)})
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, rows)
			}
			if len(list) == 0 {
				fmt.Fprintf(c.App.Writer, "no dumps in %s\n", e.store)
				return nil
			}
			const timeFmt = "2006-01-02 15:04:05"
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tDATABASE\tFINISHED (UTC)\tSIZE\tSTORED\tFROM BACKUP\tLINEAGE\tPOSTGRES")
			for _, r := range rows {
				d := r.DumpSentinel
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Database, d.FinishTime.UTC().Format(timeFmt),
					humanBytes(d.Size), humanBytes(d.StoredSize), orDash(d.FromBackup), orDash(strings.Join(r.Lineages, ",")), pgVersionString(d.PGVersion))
			}
			return w.Flush()
		},
	}
}

func dumpFetchCommand() *cli.Command {
	return &cli.Command{
		Name:      "dump-fetch",
		Usage:     "write a stored dump (pg_dump custom format) to FILE, or to standard output with -",
		ArgsUsage: "NAME|LATEST FILE|-",
		Description: `Downloads dump NAME (LATEST: the one that finished last, of lineage
--lineage when one is named), decrypts and
decompresses it, and checks the stored bytes and pg_dump's output against
the sizes and sha256 sums in its sentinel. The result is what pg_dump -Fc
wrote: read it with pg_restore.

FILE must not exist. The data goes to a temporary file next to it, which
becomes FILE only when every checksum matched: a damaged dump never leaves
a FILE behind. With -, the data is streamed to standard output as it is
decoded, so a mismatch is only known at the end: walgo then exits 5 after
everything was written, and the output must be thrown away.

` + dumpExitCodes,
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 2 {
				return fmt.Errorf("%w: dump-fetch takes a dump NAME (or LATEST) and a FILE (or - for standard output)", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			name, path := args[0], args[1]
			if name, err = logical.Resolve(c.Context, e.store, e.set.codec, name, e.set.lineage); err != nil {
				return err
			}
			if path == "-" {
				bw := bufio.NewWriterSize(c.App.Writer, 256<<10)
				_, err := logical.Fetch(c.Context, e.store, e.set.codec, name, bw)
				if ferr := bw.Flush(); err == nil && ferr != nil {
					err = fmt.Errorf("write standard output: %w", ferr)
				}
				return err
			}
			sn, err := logical.FetchFile(c.Context, e.store, e.set.codec, name, path)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "fetched dump %s of database %q into %s: %s, checksums match\n", sn.Name, sn.Database, path, humanBytes(sn.Size))
			return nil
		},
	}
}

func dumpRestoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "dump-restore",
		Usage:     "restore a stored dump into a database with pg_restore (drops the objects it replaces: needs --confirm on a non-empty database)",
		ArgsUsage: "[flags] NAME|LATEST DSN",
		Description: `Downloads dump NAME (LATEST: the one that finished last, of lineage
--lineage when one is named) into a temporary
file (--temp-dir; parallel pg_restore cannot read a pipe), checks every
checksum, then runs pg_restore --no-owner --no-acl --clean --if-exists
--jobs N against DSN, and removes the file.

Restoring DROPS every object of the target that the dump also contains,
with its data, before recreating it. So when the target database holds
any table, view or sequence outside the system schemas, dump-restore
refuses (exit 3) before downloading anything, unless --confirm is given.
An empty database, e.g. one just made with createdb, needs no --confirm.
Objects that are not in the dump are left as they are.

pg_restore must be at least as new as the pg_dump that made the dump (see
dump-list). A password in DSN is passed to pg_restore in PGPASSWORD.

` + dumpExitCodes,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: 1, Usage: "restore `N` tables at once (pg_restore --jobs)"},
			&cli.BoolFlag{Name: "confirm", Usage: "restore even though the target database holds objects: those the dump contains are dropped and replaced"},
			&cli.StringFlag{Name: "temp-dir", EnvVars: []string{"WALGO_TEMP_DIR"}, Usage: "download the dump into `DIR` (default: the system temp folder); it needs room for the whole dump"},
			clientBinDirFlag(),
		},
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 2 {
				return fmt.Errorf("%w: dump-restore takes a dump NAME (or LATEST) and the target DSN", errUsage)
			}
			if c.Int("jobs") < 1 {
				return fmt.Errorf("%w: --jobs must be at least 1", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			name, err := logical.Resolve(c.Context, e.store, e.set.codec, args[0], e.set.lineage)
			if err != nil {
				return err
			}
			res, err := logical.Restore(c.Context, e.store, logical.RestoreOptions{
				Name:    name,
				DSN:     args[1],
				Jobs:    c.Int("jobs"),
				Confirm: c.Bool("confirm"),
				TempDir: c.String("temp-dir"),
				BinDir:  c.String("pg-bindir"),
				Codec:   e.set.codec,
				Log:     e.log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "restored dump %s (database %q) into database %q: download %s, pg_restore %s\n",
				res.Dump.Name, res.Dump.Database, res.Database, res.Download.Round(time.Millisecond), res.Restore.Round(time.Millisecond))
			return nil
		},
	}
}

func copyCommand() *cli.Command {
	return &cli.Command{
		Name:      "copy",
		Usage:     "copy a database into another: pg_dump piped into pg_restore, with progress (needs --confirm on a non-empty destination)",
		ArgsUsage: "[flags] SRC_DSN DST_DSN",
		Description: `Runs pg_dump -Fc --no-acl --no-owner on SRC_DSN and pipes its output into
pg_restore --no-owner --no-acl on DST_DSN, showing the bytes passed and
the rate. Once pg_dump has sent everything, a last line says that
pg_restore is building indexes and constraints: that phase can take as
long as the data, and no byte count shows it.

When the destination holds any table, view or sequence outside the system
schemas, copy refuses (exit 3) before anything runs, unless --confirm is
given: then pg_restore runs with --clean --if-exists, which DROPS the
destination's objects that the source also has, with their data, before
recreating them. Source and destination must be different databases.

When either program fails, walgo stops the other and reports both
programs' messages; the destination may then be partly restored.
Passwords in the DSNs are passed in PGPASSWORD, never on a command line.
No repository is needed.

` + dumpExitCodes,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "confirm", Usage: "copy even though the destination holds objects: those the source has are dropped and replaced"},
			clientBinDirFlag(),
		},
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 2 {
				return fmt.Errorf("%w: copy takes SRC_DSN and DST_DSN", errUsage)
			}
			e, err := setup(c, false)
			if err != nil {
				return err
			}
			progress := newProgress("copy", e.log)
			phaseShown := false
			var sent int64 // the bar is redrawn at most 5 times a second: the last count may not show
			res, err := logical.Copy(c.Context, logical.CopyOptions{
				SrcDSN:  args[0],
				DstDSN:  args[1],
				Confirm: c.Bool("confirm"),
				Progress: func(n int64) {
					sent = n
					progress.update(n, -1)
				},
				Phase: func(phase string) {
					progress.done()
					phaseShown = true
					fmt.Fprintf(os.Stderr, "copy: %s (%s in %s)\n", phase, humanBytes(sent), time.Since(progress.start).Round(100*time.Millisecond))
				},
				BinDir:  c.String("pg-bindir"),
				Limiter: ratelimit.New(e.set.netRate),
				Log:     e.log,
			})
			if !phaseShown {
				progress.done()
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "copied database %q into %q: %s in %s (data %s, indexes and constraints %s)\n",
				res.Source, res.Destination, humanBytes(res.Bytes), res.Total.Round(time.Millisecond),
				res.Data.Round(time.Millisecond), (res.Total - res.Data).Round(time.Millisecond))
			return nil
		},
	}
}

const dumpDeleteHelp = `Every dump-delete command is a dry run unless --confirm is given: it
prints exactly what it would delete (each dump with its object keys and
bytes) and why everything else stays. Add --json for the same as JSON.

Ages come from the finish times in the dumps' sentinels, never from names.
Dumps do not depend on base backups or WAL, and the delete command never
touches dumps: this one is the only way to delete them.

A confirmed delete removes the sentinels first (a dump is no longer listed
before its data goes), then the data, then unfinished dumps' leftovers.
Running it again after an interruption finishes the job.`

func dumpMinAgeFlag() cli.Flag {
	return &cli.DurationFlag{Name: "min-age", Value: defaultMinAge,
		Usage: "an unfinished dump whose newest object is younger than this may still be running: leave it alone"}
}

func dumpDeleteCommand() *cli.Command {
	return &cli.Command{
		Name:        "dump-delete",
		Usage:       "delete old dumps (a dry run unless --confirm)",
		Description: dumpDeleteHelp,
		Subcommands: []*cli.Command{
			{
				Name:        "retain",
				Usage:       "keep the N newest dumps, by finish time",
				ArgsUsage:   "N",
				Description: "Keeps the N newest dumps by finish time and deletes the others.\n\n" + dumpDeleteHelp,
				Flags:       deleteFlags(dumpMinAgeFlag()),
				Action: func(c *cli.Context) error {
					req, err := retainArgs(c, "dump-delete", false)
					if err != nil {
						return err
					}
					return runDumpDelete(c, req)
				},
			},
			{
				Name:      "before",
				Usage:     "delete the dumps that finished before dump NAME finished, or before TIME",
				ArgsUsage: "NAME|TIME",
				Description: `Deletes every dump that finished before NAME's finish time (NAME itself is
kept) or before TIME, RFC 3339 ("2026-11-24T10:00:00Z") or
"YYYY-MM-DD HH:MM:SS[+TZ]" (UTC without a zone). It refuses to delete
every dump: use dump-delete everything for that.

` + dumpDeleteHelp,
				Flags: deleteFlags(dumpMinAgeFlag()),
				Action: func(c *cli.Context) error {
					req, err := beforeArgs(c, "dump-delete", "dump", catalog.ValidDumpName)
					if err != nil {
						return err
					}
					return runDumpDelete(c, req)
				},
			},
			{
				Name:        "everything",
				Usage:       "delete every dump, unfinished ones included",
				Description: "Deletes every dump and every unfinished dump's objects, however young:\nstop dump-push first.\n\n" + dumpDeleteHelp,
				Flags:       deleteFlags(),
				Action: func(c *cli.Context) error {
					if err := noArgs(c, "dump-delete everything"); err != nil {
						return err
					}
					return runDumpDelete(c, catalog.DeleteRequest{Mode: catalog.DeleteEverything})
				},
			},
			{
				Name:  "garbage",
				Usage: "delete what failed or killed dump-push runs left (objects without a sentinel); every dump stays",
				Description: `Deletes the objects of every dump that has no sentinel and whose newest
object is older than --min-age. Every finished dump is kept.

` + dumpDeleteHelp,
				Flags: deleteFlags(dumpMinAgeFlag()),
				Action: func(c *cli.Context) error {
					if err := noArgs(c, "dump-delete garbage"); err != nil {
						return err
					}
					return runDumpDelete(c, catalog.DeleteRequest{Mode: catalog.DeleteGarbage})
				},
			},
		},
	}
}

// dumpDeleteReport is what dump-delete --json prints.
type dumpDeleteReport struct {
	DryRun bool `json:"dry_run"`
	*catalog.DumpPlan
	Deleted *catalog.DumpApplyResult `json:"deleted,omitempty"`
}

// runDumpDelete plans req against the repository's dumps, prints the plan,
// and with --confirm carries it out.
func runDumpDelete(c *cli.Context, req catalog.DeleteRequest) error {
	e, err := setup(c, true)
	if err != nil {
		return err
	}
	req.Now = time.Now()
	req.MinAge = defaultMinAge
	if c.IsSet("min-age") {
		req.MinAge = c.Duration("min-age")
	}
	inv, err := catalog.ReadDumpInventory(c.Context, e.store)
	if err != nil {
		return err
	}
	plan, err := catalog.PlanDumpDelete(inv, req)
	if errors.Is(err, catalog.ErrBadRequest) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	confirm, asJSON, w := c.Bool("confirm"), c.Bool("json"), c.App.Writer
	report := dumpDeleteReport{DryRun: !confirm, DumpPlan: plan}
	if !asJSON {
		printDumpPlan(w, plan, confirm, e.store)
	}
	if confirm && plan.Totals.DeleteObjects > 0 {
		res, aerr := catalog.ApplyDumpPlan(c.Context, e.store, plan, catalog.ApplyOptions{
			Concurrency: deleteConcurrency,
			OnDelete:    func(key string) { e.log.Debug("deleted", zap.String("key", key)) },
		})
		report.Deleted = &res
		if !asJSON {
			fmt.Fprintf(w, "deleted %d dump(s) and %d unfinished dump(s): %d objects, %s\n", res.Dumps, res.Unfinished, res.Objects, humanBytes(res.Bytes))
			for _, n := range res.Skipped {
				fmt.Fprintf(w, "left alone %s: it finished while the plan was made\n", n)
			}
		}
		if aerr != nil {
			if asJSON {
				_ = writeJSON(w, report)
			}
			return fmt.Errorf("dump-delete %s: %w", plan.Mode, aerr)
		}
		e.log.Info("dump-delete finished", zap.String("mode", plan.Mode), zap.Int("dumps", res.Dumps),
			zap.Int("unfinished", res.Unfinished), zap.Int64("bytes", res.Bytes))
	} else if confirm && !asJSON {
		fmt.Fprintln(w, "nothing to delete")
	}
	if asJSON {
		return writeJSON(w, report)
	}
	return nil
}

// printDumpPlan writes a dump plan as a table, each deleted dump's
// objects, unfinished dumps, notes and totals.
func printDumpPlan(w io.Writer, p *catalog.DumpPlan, confirm bool, store storage.Store) {
	if confirm {
		fmt.Fprintf(w, "dump-delete %s in %s:\n\n", p.Mode, store)
	} else {
		fmt.Fprintf(w, "dump-delete %s in %s: DRY RUN, nothing is deleted (add --confirm to delete)\n\n", p.Mode, store)
	}
	action := func(del bool) string {
		if del {
			return "delete"
		}
		return "keep"
	}
	const timeFmt = "2006-01-02 15:04:05"
	if len(p.Dumps) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DUMP\tDATABASE\tFINISHED (UTC)\tFROM BACKUP\tACTION\tREASON")
		for _, d := range p.Dumps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Database, d.FinishTime.Format(timeFmt), orDash(d.FromBackup), action(d.Delete), d.Reason)
		}
		tw.Flush()
		for _, d := range p.Dumps {
			if !d.Delete {
				continue
			}
			fmt.Fprintf(w, "\ndump %s: %d objects, %s\n", d.Name, len(d.Keys), humanBytes(d.Bytes))
			for _, k := range d.Keys {
				fmt.Fprintf(w, "  %s\n", k)
			}
		}
	} else {
		fmt.Fprintln(w, "no finished dumps")
	}
	for _, u := range p.Unfinished {
		fmt.Fprintf(w, "\nunfinished dump %s (newest object %s UTC): %s, %d objects, %s\n", u.Name,
			u.Newest.Format(timeFmt), action(u.Delete), len(u.Keys), humanBytes(u.Bytes))
		fmt.Fprintf(w, "  %s\n", u.Reason)
		if u.Delete {
			for _, k := range u.Keys {
				fmt.Fprintf(w, "  %s\n", k)
			}
		}
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
	t := p.Totals
	verb := "would delete"
	if confirm {
		verb = "deleting"
	}
	fmt.Fprintf(w, "\n%s %d dump(s) and %d unfinished dump(s): %d objects, %s; keeping %d dump(s)\n",
		verb, t.DeleteDumps, t.DeleteUnfinished, t.DeleteObjects, humanBytes(t.DeleteBytes), t.KeepDumps)
}
