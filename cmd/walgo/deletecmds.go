package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage"
)

// defaultMinAge is how recently an unfinished backup must have written an
// object to count as possibly still running.
const defaultMinAge = 24 * time.Hour

// deleteConcurrency is how many objects a confirmed delete removes at once.
const deleteConcurrency = 16

const deleteHelp = `Every delete command is a dry run unless --confirm is given: it prints
exactly what it would delete (each backup with its object keys, WAL ranges,
counts and bytes) and why everything else stays. Add --json for the same
as JSON.

Where forks (or promoted point-in-time restores) archive into the same
repository, it holds several lineages (histories; backup-list shows each
backup's). retain and before then count every lineage on its own: "retain
7" keeps the 7 newest backups of each, and before keeps the newest backup
of a lineage it would otherwise empty, so that a fork's newer backups never
cost the primary its own. With --lineage (WALGO_LINEAGE) they count that
lineage alone, as if it were the only one, and keep every backup not on it:
after a failover, "delete retain 7 --lineage 2" lets the old timeline's
last backups go.

retain, before and everything also delete the WAL that no kept backup
needs, by the same rule as garbage: a WAL file is kept when some kept
backup can replay through it along a lineage it is kept for: on the
backup's timeline and the lineage's later ones, from the segment holding
the backup's start, up to where the lineage leaves each (a backup kept
whatever the lineage, such as a permanent one, keeps every timeline
descending from its own that forked after it started). A timeline whose
.history file is missing or unreadable is kept from the oldest kept
backup's start on. .history files are always kept, except by everything.
When no finished backup is kept, WAL is left alone.

Rules that no command breaks:
  - ages come from the sentinels' finish times, never from backup names;
  - a kept delta keeps its whole chain back to its full backup;
  - a permanent backup (backup-push --permanent, backup-mark) is kept with
    its chain; only "delete everything --force" deletes it;
  - an unfinished backup (no sentinel) whose newest object is younger than
    --min-age may still be running: it is left alone and its WAL is kept;
  - fewer backups than asked for is not an error;
  - a backup walgo cannot restore (WAL-G's or WAL-E's, a newer walgo's, a
    damaged sentinel: backup-list shows them) is deleted only by
    "delete everything", and the WAL from its start is kept for it unless
    --include-foreign is given (with an unknown start, all WAL is kept).

A confirmed delete removes, in this order: the sentinels of the deleted
backups (deltas before their parents, so an interrupted delete never leaves
a listed backup without its parent), their other objects, unfinished
backups' objects, then WAL, oldest first. Before deleting anything it
checks that no backup it deletes was marked permanent, and that no new
backup builds on one, since the plan was made. Running it again after an
interruption finishes the job; delete garbage removes what an interrupted
delete left.`

func deleteFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.BoolFlag{Name: "confirm", Usage: "delete; without it, only print what would be deleted"},
		&cli.BoolFlag{Name: "json", Usage: "print the plan (and what was deleted) as JSON"},
	}, extra...)
}

// includeForeignFlag is for the backup delete commands only.
func includeForeignFlag() cli.Flag {
	return &cli.BoolFlag{Name: "include-foreign", Usage: "do not keep WAL for the backups walgo cannot restore (WAL-G's, WAL-E's, damaged sentinels); they stay themselves"}
}

func minAgeFlag() cli.Flag {
	return &cli.DurationFlag{Name: "min-age", Value: defaultMinAge,
		Usage: "an unfinished backup whose newest object is younger than this may still be running: leave it and the WAL it needs alone"}
}

func deleteCommand() *cli.Command {
	return &cli.Command{
		Name:        "delete",
		Usage:       "delete old backups and the WAL no kept backup needs (a dry run unless --confirm)",
		Description: deleteHelp,
		Subcommands: []*cli.Command{
			{
				Name:      "retain",
				Usage:     "keep the N newest backups (or, with FULL, the N newest full backups and every delta based on them)",
				ArgsUsage: "[FULL] N",
				Description: `"retain N" keeps the N newest backups by finish time, full or delta,
with the chains they need. "retain FULL N" keeps the N newest full backups
and every delta built on them. Permanent backups are kept as well. Older
backups, and the WAL no kept backup needs, are deleted.

` + deleteHelp,
				Flags: deleteFlags(minAgeFlag(), includeForeignFlag()),
				Action: func(c *cli.Context) error {
					req, err := retainArgs(c, "delete", true)
					if err != nil {
						return err
					}
					return runDelete(c, req)
				},
			},
			{
				Name:      "before",
				Usage:     "delete the backups that finished before backup NAME finished, or before TIME",
				ArgsUsage: "NAME|TIME",
				Description: `Deletes every backup that finished before NAME's finish time (NAME itself
is kept) or before TIME, RFC 3339 ("2026-11-24T10:00:00Z") or
"YYYY-MM-DD HH:MM:SS[+TZ]" (UTC without a zone), except permanent backups
and the parents of kept deltas; and the WAL no kept backup needs. It
refuses to delete every backup: use delete everything for that. After it,
no point in time before the oldest kept backup's finish can be restored.

` + deleteHelp,
				Flags: deleteFlags(minAgeFlag(), includeForeignFlag()),
				Action: func(c *cli.Context) error {
					req, err := beforeArgs(c, "delete", "backup", catalog.ValidBackupName)
					if err != nil {
						return err
					}
					return runDelete(c, req)
				},
			},
			{
				Name:      "window",
				Usage:     "keep every backup and all WAL needed to restore to any moment of the last DURATION (a recovery window: 7d, 2w, 36h)",
				ArgsUsage: "DURATION",
				Description: `A recovery window, as Barman's RECOVERY WINDOW OF 7 DAYS: every moment
from DURATION ago until now stays restorable. It keeps every backup that
finished inside the window, the newest backup that finished before the
window starts (recoveries to the window's first moments start from it),
permanent backups, the chains of all of them, and the WAL they need; it
deletes older backups and the WAL no kept backup needs. DURATION is a
whole number of weeks (w), days (d), hours (h) or minutes (m), or a sum of
them ("7d", "1w3d", "36h", "90m"). Ages come from the sentinels' finish
times.

` + deleteHelp,
				Flags: deleteFlags(minAgeFlag(), includeForeignFlag()),
				Action: func(c *cli.Context) error {
					args := cmdArgs(c)
					if len(args) != 1 {
						return fmt.Errorf("%w: delete window takes one DURATION, e.g. 7d", errUsage)
					}
					w, err := parseWindow(args[0])
					if err != nil {
						return fmt.Errorf("%w: delete window: %v", errUsage, err)
					}
					return runDelete(c, catalog.DeleteRequest{Mode: catalog.DeleteWindow, Window: w})
				},
			},
			{
				Name:  "everything",
				Usage: "delete every backup and all WAL (permanent backups and what they need stay unless --force)",
				Description: `Deletes every backup, every unfinished backup's objects and all WAL,
.history files included. Permanent backups stay, with their chains and the
WAL and .history files they need, unless --force is given. Stop
backup-push first: an unfinished backup is deleted however young it is.

` + deleteHelp,
				Flags: deleteFlags(&cli.BoolFlag{Name: "force", Usage: "delete permanent backups too"}, includeForeignFlag()),
				Action: func(c *cli.Context) error {
					if err := noArgs(c, "delete everything"); err != nil {
						return err
					}
					return runDelete(c, catalog.DeleteRequest{Mode: catalog.DeleteEverything, Force: c.Bool("force")})
				},
			},
			{
				Name:  "garbage",
				Usage: "delete unfinished backups' objects, what interrupted writes left, and the WAL no backup needs; every finished backup stays",
				Description: `Deletes the objects of every backup that has no sentinel (killed or failed
backup-push, interrupted delete) and whose newest object is older than
--min-age, and the WAL no finished backup needs. Every finished backup
is kept. It also removes what writes killed mid-way left where listings
do not show it, once older than --min-age: the file backend's
.walgo-tmp-* files, and S3 multipart uploads never completed (their parts
are stored, and billed, until aborted).

` + deleteHelp,
				Flags: deleteFlags(minAgeFlag(), includeForeignFlag()),
				Action: func(c *cli.Context) error {
					if err := noArgs(c, "delete garbage"); err != nil {
						return err
					}
					return runDelete(c, catalog.DeleteRequest{Mode: catalog.DeleteGarbage})
				},
			},
		},
	}
}

// parseWindow reads a recovery window: a sum of whole weeks, days, hours
// and minutes ("7d", "1w3d", "36h"), more than zero.
func parseWindow(s string) (time.Duration, error) {
	units := map[byte]time.Duration{'w': 7 * 24 * time.Hour, 'd': 24 * time.Hour, 'h': time.Hour, 'm': time.Minute}
	var total time.Duration
	rest := strings.ToLower(strings.TrimSpace(s))
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) || units[rest[i]] == 0 || i > 6 {
			return 0, fmt.Errorf("%q is not a duration such as 7d, 2w, 1w3d, 36h or 90m", s)
		}
		n, _ := strconv.Atoi(rest[:i])
		total += time.Duration(n) * units[rest[i]]
		rest = rest[i+1:]
	}
	if total <= 0 {
		return 0, fmt.Errorf("%q: the window must be longer than 0", s)
	}
	return total, nil
}

// retainArgs reads the arguments of "CMD retain N", or of "CMD retain
// [FULL] N" when full backups can be told apart.
func retainArgs(c *cli.Context, cmd string, allowFull bool) (catalog.DeleteRequest, error) {
	req := catalog.DeleteRequest{Mode: catalog.DeleteRetain}
	args := cmdArgs(c)
	want := "N"
	if allowFull {
		want = "[FULL] N"
		if len(args) == 2 && strings.EqualFold(args[0], "FULL") {
			req.Mode, args = catalog.DeleteRetainFull, args[1:]
		}
	}
	if len(args) != 1 {
		return req, fmt.Errorf("%w: %s retain takes %s", errUsage, cmd, want)
	}
	var err error
	if req.N, err = strconv.Atoi(args[0]); err != nil || req.N < 1 {
		return req, fmt.Errorf("%w: %s retain: N must be a whole number of at least 1, not %q", errUsage, cmd, args[0])
	}
	return req, nil
}

// beforeArgs reads the argument of "CMD before NAME|TIME": a name when
// validName accepts it, else a time.
func beforeArgs(c *cli.Context, cmd, noun string, validName func(string) bool) (catalog.DeleteRequest, error) {
	req := catalog.DeleteRequest{Mode: catalog.DeleteBefore}
	args := cmdArgs(c)
	if len(args) == 0 {
		return req, fmt.Errorf("%w: %s before takes a %s NAME or a TIME", errUsage, cmd, noun)
	}
	arg := strings.Join(args, " ")
	var err error
	if validName(arg) {
		req.BeforeName = arg
	} else if req.Before, err = restore.ParseTargetTime(arg); err != nil {
		return req, fmt.Errorf("%w: %s before: %q is neither a %s name nor a time (RFC 3339 or YYYY-MM-DD HH:MM:SS[+TZ])", errUsage, cmd, arg, noun)
	}
	return req, nil
}

// deleteReport is what delete --json prints.
type deleteReport struct {
	DryRun bool `json:"dry_run"`
	*catalog.Plan
	Deleted *catalog.ApplyResult `json:"deleted,omitempty"`
}

// runDelete plans req against the repository, prints the plan, and with
// --confirm carries it out.
func runDelete(c *cli.Context, req catalog.DeleteRequest) error {
	e, err := setup(c, true)
	if err != nil {
		return err
	}
	req.MinAge = defaultMinAge
	if c.IsSet("min-age") {
		req.MinAge = c.Duration("min-age")
	}
	req.IncludeForeign = c.Bool("include-foreign")
	return applyDelete(c.Context, e, req, c.Bool("confirm"), c.Bool("json"), c.App.Writer)
}

// applyDelete plans req (with its MinAge set) against the repository,
// prints the plan to w (as JSON with asJSON), and with confirm carries it
// out: the delete commands' work once their flags are read.
func applyDelete(ctx context.Context, e *env, req catalog.DeleteRequest, confirm, asJSON bool, w io.Writer) error {
	req.Now = time.Now()
	req.SegmentSize = e.set.segSize
	if req.Mode == catalog.DeleteRetain || req.Mode == catalog.DeleteRetainFull || req.Mode == catalog.DeleteBefore {
		req.Lineage = e.set.lineage
	}
	inv, err := catalog.ReadInventory(ctx, e.store, e.set.codec)
	if err != nil {
		return err
	}
	plan, err := catalog.PlanDelete(inv, req)
	if errors.Is(err, catalog.ErrBadRequest) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	report := deleteReport{DryRun: !confirm, Plan: plan}
	if !asJSON {
		printPlan(w, plan, confirm, e.store)
	}
	if confirm && plan.Totals.DeleteObjects+plan.Totals.DeleteLeftovers > 0 {
		res, aerr := catalog.Apply(ctx, e.store, plan, catalog.ApplyOptions{
			Concurrency: deleteConcurrency,
			OnDelete:    func(key string) { e.log.Debug("deleted", zap.String("key", key)) },
		})
		report.Deleted = &res
		if !asJSON {
			fmt.Fprintf(w, "deleted %d backup(s), %d unfinished backup(s), %d WAL file(s), %d leftover(s): %d objects, %s\n",
				res.Backups, res.Unfinished, res.WALFiles, res.Leftovers, res.Objects, humanBytes(res.Bytes))
			for _, n := range res.Skipped {
				fmt.Fprintf(w, "left alone %s: it finished while the plan was made\n", n)
			}
		}
		if aerr != nil {
			if asJSON {
				_ = writeJSON(w, report)
			}
			return fmt.Errorf("delete %s: %w", plan.Mode, aerr)
		}
		e.log.Info("delete finished", zap.String("mode", plan.Mode), zap.Int("backups", res.Backups),
			zap.Int("unfinished", res.Unfinished), zap.Int("wal_files", res.WALFiles), zap.Int64("bytes", res.Bytes))
	} else if confirm && !asJSON {
		fmt.Fprintln(w, "nothing to delete")
	}
	if asJSON {
		return writeJSON(w, report)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printPlan writes the plan as tables: backups, their objects, unfinished
// backups, WAL ranges, notes and totals.
func printPlan(w io.Writer, p *catalog.Plan, confirm bool, store storage.Store) {
	if confirm {
		fmt.Fprintf(w, "delete %s in %s:\n\n", p.Mode, store)
	} else {
		fmt.Fprintf(w, "delete %s in %s: DRY RUN, nothing is deleted (add --confirm to delete)\n\n", p.Mode, store)
	}
	action := func(del bool) string {
		if del {
			return "delete"
		}
		return "keep"
	}
	const timeFmt = "2006-01-02 15:04:05"
	if len(p.Backups) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BACKUP\tFINISHED (UTC)\tTIMELINE\tPARENT\tPERMANENT\tACTION\tREASON")
		for _, b := range p.Backups {
			perm := "-"
			if b.Permanent {
				perm = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", b.Name, b.FinishTime.Format(timeFmt), b.Timeline,
				orDash(b.DeltaParent), perm, action(b.Delete), b.Reason)
		}
		tw.Flush()
		fmt.Fprintln(w)
		for _, b := range p.Backups {
			if !b.Delete {
				continue
			}
			fmt.Fprintf(w, "backup %s: %d objects, %s\n", b.Name, len(b.Keys), humanBytes(b.Bytes))
			for _, k := range b.Keys {
				fmt.Fprintf(w, "  %s\n", k)
			}
		}
	} else {
		fmt.Fprintln(w, "no finished backups")
	}
	for _, f := range p.Foreign {
		fmt.Fprintf(w, "%s backup %s (walgo cannot restore it): %s, %d objects, %s\n", f.Kind, f.Name, action(f.Delete), len(f.Keys), humanBytes(f.Bytes))
		fmt.Fprintf(w, "  %s\n", f.Reason)
		if f.Delete {
			for _, k := range f.Keys {
				fmt.Fprintf(w, "  %s\n", k)
			}
		}
	}
	for _, u := range p.Unfinished {
		fmt.Fprintf(w, "unfinished backup %s (newest object %s UTC): %s, %d objects, %s\n", u.Name,
			u.Newest.Format(timeFmt), action(u.Delete), len(u.Keys), humanBytes(u.Bytes))
		fmt.Fprintf(w, "  %s\n", u.Reason)
		if u.Delete {
			for _, k := range u.Keys {
				fmt.Fprintf(w, "  %s\n", k)
			}
		}
	}
	fmt.Fprintln(w)
	if len(p.WAL) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIMELINE\tFIRST\tLAST\tFILES\tSTORED\tACTION\tREASON")
		for _, r := range p.WAL {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Timeline, r.First, r.Last, r.Files, humanBytes(r.Bytes), action(r.Delete), r.Reason)
		}
		tw.Flush()
	} else {
		fmt.Fprintln(w, "no WAL archived")
	}
	if len(p.Leftovers) > 0 {
		fmt.Fprintln(w, "\nleft by interrupted writes (temp files, unfinished multipart uploads):")
		for _, l := range p.Leftovers {
			fmt.Fprintf(w, "  %s  %s (%s, last written %s UTC): %s\n", action(l.Delete), l.Key, l.ID,
				l.ModTime.UTC().Format(timeFmt), l.Reason)
		}
	}
	if len(p.Locks) > 0 {
		fmt.Fprintln(w, "\nbackup-push locks:")
		for _, l := range p.Locks {
			fmt.Fprintf(w, "  %s  %s (%s): %s\n", action(l.Delete), l.Key, orDash(l.Holder), l.Reason)
		}
	}
	if len(p.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range p.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	t := p.Totals
	verb := "would delete"
	if confirm {
		verb = "deleting"
	}
	fmt.Fprintf(w, "\n%s %d backup(s), %d unfinished backup(s), %d WAL file(s) and %d leftover(s): %d objects, %s; keeping %d backup(s) and %d WAL file(s)\n",
		verb, t.DeleteBackups, t.DeleteUnfinished, t.DeleteWALFiles, t.DeleteLeftovers, t.DeleteObjects, humanBytes(t.DeleteBytes), t.KeepBackups, t.KeepWALFiles)
}

func backupMarkCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup-mark",
		Usage:     "mark a backup permanent (retention never deletes it or its delta chain), or --unmark it",
		ArgsUsage: "NAME",
		Description: `Sets the permanent flag in backup NAME's sentinel (rewritten atomically);
--unmark clears it. Delete commands keep a permanent backup and the whole
delta chain it needs, and the WAL from its start on; only
"delete everything --force" removes it.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "unmark", Usage: "clear the permanent flag instead"},
		},
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 1 {
				return fmt.Errorf("%w: backup-mark takes one backup NAME", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			name, permanent := args[0], !c.Bool("unmark")
			sn, err := catalog.ReadSentinel(c.Context, e.store, name)
			if err != nil {
				return err
			}
			if sn.Permanent != permanent {
				sn.Permanent = permanent
				if err := catalog.WriteSentinel(c.Context, e.store, sn); err != nil {
					return fmt.Errorf("mark %s: %w", name, err)
				}
			}
			if !permanent {
				fmt.Fprintf(c.App.Writer, "%s is not permanent (a permanent delta built on it still keeps it)\n", name)
				return nil
			}
			chain := []string{name}
			for cur := sn; cur.DeltaParent != "" && len(chain) <= 1000; {
				p, err := catalog.ReadSentinel(c.Context, e.store, cur.DeltaParent)
				if err != nil {
					return fmt.Errorf("mark %s: delta parent: %w", name, err)
				}
				chain = append(chain, p.Name)
				cur = p
			}
			fmt.Fprintf(c.App.Writer, "%s is permanent", name)
			if len(chain) > 1 {
				fmt.Fprintf(c.App.Writer, "; retention also keeps its chain: %s", strings.Join(chain[1:], ", "))
			}
			fmt.Fprintln(c.App.Writer)
			return nil
		},
	}
}

// noArgs refuses positional arguments to a command that takes none.
func noArgs(c *cli.Context, what string) error {
	args := cmdArgs(c)
	if len(args) != 0 {
		return fmt.Errorf("%w: %s takes no arguments", errUsage, what)
	}
	return nil
}
