package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage"
)

// verifyFailed: a verify command found a problem. It exits with the code
// of corrupt data (5), without "corrupt data" in its message: the report
// above it says what is wrong.
type verifyFailed struct{ msg string }

func (e verifyFailed) Error() string { return e.msg }
func (e verifyFailed) Unwrap() error { return codec.ErrCorrupt }

func walVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "wal-verify",
		Usage: "check that the archived WAL lets every backup be restored along each of its lineages, and how far (gaps, timelines, history files)",
		Description: `For each backup and each lineage (history) it belongs to, walks the WAL a
recovery along that lineage replays: from the segment holding its start
LSN, on its timeline, then along the lineage's timelines as their .history
files say (the parent's segments up to the switch point's segment, the
child's from there). A primary that a fork left is checked along its own
timeline as well as the fork's. Reports each timeline (first, last,
segments, gaps, history file) and each backup and lineage: whether it is
restorable (every segment to its finish LSN archived) and up to which LSN
point-in-time recovery can go without a gap. A lineage whose timeline the
archive holds nothing of after a descendant left it (a failover) is only
the start of that descendant's and is not listed on its own.

It also reads the page header at the start of every archived segment: a
segment whose header says another address, a newer timeline, another
segment size or another cluster's system identifier (the backups', or the
one most segments carry) is reported and counts as missing.

Exits 5 when a gap or a wrong segment breaks recovery from any backup,
when a segment's header does not match its name, or when a timeline
above 1 (with segments or .partial files, or named in another history) has
no readable .history file: Postgres finds the newest timeline by probing
them. Gaps no backup needs are shown but do not fail the check. Backups
walgo cannot restore (backup-list shows them) are listed, not checked.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			if len(cmdArgs(c)) > 0 {
				return fmt.Errorf("%w: wal-verify takes no arguments", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			all, err := catalog.ListAllBackups(c.Context, e.store)
			if err != nil {
				return err
			}
			backups := all.Own
			var objs []catalog.WALObject
			if catalog.BackupsSegmentSize(backups) == 0 {
				// Only a stored segment can tell the segment size.
				if objs, err = catalog.ListWAL(c.Context, e.store); err != nil {
					return err
				}
			}
			segSize, err := repositorySegmentSize(c, e, backups, objs)
			if err != nil {
				return err
			}
			rep, err := catalog.VerifyWAL(c.Context, e.store, e.set.codec, backups, segSize)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := printWALReport(c.App.Writer, rep, e.store); err != nil {
				return err
			}
			for _, f := range all.Foreign {
				e.log.Warn("not checked: a backup walgo cannot restore", zap.String("backup", f.Name), zap.String("kind", f.Kind), zap.String("problem", f.Problem))
			}
			if !rep.OK {
				return verifyFailed{fmt.Sprintf("wal-verify: %s in %s", countOf(len(rep.Problems), "problem"), e.store)}
			}
			return nil
		},
	}
}

func printWALReport(out io.Writer, rep *catalog.WALReport, store storage.Store) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if len(rep.Timelines) > 0 {
		fmt.Fprintln(w, "TIMELINE\tFIRST\tLAST\tSEGMENTS\tGAPS\tHISTORY")
	}
	segs := 0
	missing := 0
	for _, tl := range rep.Timelines {
		segs += tl.Count
		hist := "-"
		switch {
		case tl.HistoryError != "":
			hist, missing = "UNREADABLE", missing+1
		case tl.HistoryMissing:
			hist, missing = "MISSING", missing+1
		case len(tl.Parents) > 0:
			p := tl.Parents[len(tl.Parents)-1]
			hist = fmt.Sprintf("from %d at %s", p.Timeline, p.Switch)
		case tl.History:
			hist = "yes"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%s\n", tl.ID, orDash(tl.First), orDash(tl.Last), tl.Count, len(tl.Gaps), hist)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, tl := range rep.Timelines {
		for _, g := range tl.Gaps {
			fmt.Fprintf(out, "gap on timeline %d: %s .. %s (%s missing)\n", tl.ID, g.First, g.Last, countOf(int(g.Count), "segment"))
		}
	}
	if len(rep.Timelines) == 0 {
		fmt.Fprintf(out, "no WAL archived in %s\n", store)
	}

	fmt.Fprintln(out)
	ok := 0
	if len(rep.Backups) == 0 {
		fmt.Fprintf(out, "no backups in %s: nothing to recover from\n", store)
	} else {
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "BACKUP\tTIMELINE\tSTART LSN\tFINISH LSN\tLINEAGE\tRESTORABLE\tPITR UP TO\tSTATUS")
		for _, b := range rep.Backups {
			restorable, upTo, status := "NO", "-", "PROBLEMS"
			if b.Restorable {
				restorable = "yes"
				upTo = fmt.Sprintf("%s (%s)", b.PITRUpTo, b.PITRUpToSegment)
			}
			if b.OK {
				status = "OK"
				ok++
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Backup, b.Timeline, b.StartLSN, b.FinishLSN, b.Lineage, restorable, upTo, status)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		noted := map[string]bool{}
		for _, b := range rep.Backups {
			for _, n := range b.Notes {
				if line := fmt.Sprintf("note: %s: %s\n", b.Backup, n); !noted[line] {
					noted[line] = true
					fmt.Fprint(out, line)
				}
			}
		}
	}
	if h := rep.Headers; h != nil {
		fmt.Fprintf(out, "\nsegment headers: %d read, %d wrong", h.Checked, len(h.Bad))
		if h.SystemID != "" {
			fmt.Fprintf(out, " (held to system identifier %s)", h.SystemID)
		}
		fmt.Fprintln(out)
		for _, sk := range h.Skipped {
			fmt.Fprintf(out, "note: %s\n", sk)
		}
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintln(out, "\nproblems:")
		for _, p := range rep.Problems {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
	verdict := "OK"
	if !rep.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(out, "\nwal-verify: %s, %s; %s: %d OK, %d with problems; %s missing or unreadable: %s\n",
		countOf(len(rep.Timelines), "timeline"), countOf(segs, "segment"), countOf(len(rep.Backups), "backup"),
		ok, len(rep.Backups)-ok, countOf(missing, "history file"), verdict)
	return nil
}

func backupVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup-verify",
		Usage:     "read a backup back and check everything it stores, without restoring it",
		ArgsUsage: "NAME|LATEST",
		Description: `Downloads every object of the backup (or of every backup with --all) and
checks, writing nothing to disk: that its delta parents exist; the
manifest's sha256 against the sentinel; each partition's sha256 and size
against the sentinel; each whole file's size and sha256 against the
manifest; that the tars hold exactly what the manifest lists (files a
delta takes unchanged from its parent have no tar entry; a page delta
holds 8 KiB per listed page). With --pages it also checks the Postgres
checksum of every relation page, when the cluster has data checksums
(initdb -k; read from pg_control in the backup). Pages whose LSN is at or
after the backup's start are skipped: a backup of a live cluster may hold
them torn, and recovery rewrites them from WAL.

Exits 5 when any backup has a problem; each is reported with the object
key and the file it concerns.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "verify every backup"},
			&cli.BoolFlag{Name: "pages", Usage: "also check Postgres page checksums of relation files"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			all := c.Bool("all")
			if all && len(args) > 0 || !all && len(args) != 1 {
				return fmt.Errorf("%w: backup-verify takes a backup NAME, LATEST, or --all", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			var backups []*catalog.Sentinel
			var damaged []catalog.ForeignBackup
			switch {
			case all || strings.EqualFold(args[0], restore.Latest):
				list, err := catalog.ListAllBackups(c.Context, e.store)
				if err != nil {
					return err
				}
				backups = list.Own
				for _, f := range list.Foreign {
					if f.Kind == catalog.ForeignDamaged && all {
						damaged = append(damaged, f)
					} else {
						e.log.Warn("not verified: a backup walgo cannot restore", zap.String("backup", f.Name), zap.String("kind", f.Kind), zap.String("problem", f.Problem))
					}
				}
				if len(backups) == 0 && !all {
					return fmt.Errorf("no backups: %w in %s", storage.ErrNotFound, e.store)
				}
				if !all {
					backups = backups[len(backups)-1:]
				}
			default:
				sn, err := catalog.ReadSentinel(c.Context, e.store, args[0])
				if errors.Is(err, storage.ErrNotFound) {
					return fmt.Errorf("backup %q: %w in %s", args[0], storage.ErrNotFound, e.store)
				}
				if err != nil {
					return err
				}
				backups = []*catalog.Sentinel{sn}
			}
			reports := make([]*restore.VerifyReport, 0, len(backups)+len(damaged))
			failed := len(damaged)
			for _, f := range damaged {
				rep := &restore.VerifyReport{Backup: f.Name, Problems: []restore.Problem{{Key: f.Key, Msg: f.Problem}}}
				reports = append(reports, rep)
				if !c.Bool("json") {
					printBackupReport(c.App.Writer, rep)
				}
			}
			for _, sn := range backups {
				rep, err := restore.VerifyBackup(c.Context, e.store, sn, restore.VerifyOptions{
					Codec:       e.set.codec,
					Concurrency: e.set.downloadConc,
					Pages:       c.Bool("pages"),
					Log:         e.log,
				})
				if err != nil {
					return fmt.Errorf("verify %s: %w", sn.Name, err)
				}
				if !rep.OK {
					failed++
				}
				reports = append(reports, rep)
				if !c.Bool("json") {
					printBackupReport(c.App.Writer, rep)
				}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(reports); err != nil {
					return err
				}
			} else {
				if len(backups) == 0 {
					fmt.Fprintf(c.App.Writer, "no backups in %s\n", e.store)
				}
				verdict := "OK"
				if failed > 0 {
					verdict = "FAILED"
				}
				fmt.Fprintf(c.App.Writer, "backup-verify: %s: %d OK, %d with problems: %s\n", countOf(len(reports), "backup"), len(reports)-failed, failed, verdict)
			}
			if failed > 0 {
				return verifyFailed{fmt.Sprintf("backup-verify: %d of %d backups have problems", failed, len(reports))}
			}
			return nil
		},
	}
}

func printBackupReport(out io.Writer, rep *restore.VerifyReport) {
	status := "OK"
	if n := len(rep.Problems) + rep.MoreProblems; n > 0 {
		status = strings.ToUpper(countOf(n, "problem"))
	}
	detail := fmt.Sprintf("%s, %s stored, %s, %s", countOf(rep.Partitions, "partition"), humanBytes(rep.StoredBytes), countOf(rep.Files, "file"), humanBytes(rep.PlainBytes))
	if rep.DeltaParent != "" {
		detail += ", delta of " + rep.DeltaParent
	}
	if p := rep.Pages; p != nil {
		if p.Checksums == "on" {
			detail += fmt.Sprintf("; pages: %d checked, %d wrong, %d new, %d skipped as written after the start", p.Checked, p.Mismatches, p.New, p.AfterStart)
		} else {
			detail += "; pages: data checksums " + p.Checksums
		}
	}
	fmt.Fprintf(out, "%s: %s (%s)\n", rep.Backup, status, detail)
	for _, n := range rep.Notes {
		fmt.Fprintf(out, "  note: %s\n", n)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(out, "  %s\n", p)
	}
	if rep.MoreProblems > 0 {
		fmt.Fprintf(out, "  ... and %s more\n", countOf(rep.MoreProblems, "problem"))
	}
}

// countOf is "1 backup", "2 backups".
func countOf(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
