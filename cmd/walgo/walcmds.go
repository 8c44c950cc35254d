package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"syscall"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/walgo/walgo/archive"
	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/ratelimit"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage"
)

func walPushCommand() *cli.Command {
	return &cli.Command{
		Name:      "wal-push",
		Usage:     "archive one WAL file (archive_command = 'walgo wal-push %p')",
		ArgsUsage: "PATH",
		Description: `Compresses the WAL file and stores it; exits 0 only once it is durable.
Pushing a file the archive already holds with identical content succeeds;
with different content it fails (exit 3) and overwrites nothing. While
pushing, it also pushes up to WALGO_UPLOAD_CONCURRENCY-1 further .ready files
so that Postgres' next calls return at once.`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: wal-push takes one PATH (archive_command's %%p)", errUsage)
			}
			// A push lives for milliseconds and allocates a few pooled
			// blocks: collect only if the heap nears 48 MiB, instead of
			// several times per segment.
			debug.SetGCPercent(-1)
			debug.SetMemoryLimit(48 << 20)
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			p := archive.New(e.store, archive.Config{
				Codec:       e.set.codec,
				Concurrency: e.set.uploadConc,
				Limiter:     ratelimit.New(e.set.netRate),
			}, e.log)
			_, err = p.Push(c.Context, c.Args().First())
			return err
		},
	}
}

func walFetchCommand(code *int) *cli.Command {
	return &cli.Command{
		Name:      "wal-fetch",
		Usage:     "restore one WAL file (restore_command = 'walgo wal-fetch %f %p')",
		ArgsUsage: "NAME DEST",
		Description: `Writes the archived WAL file NAME to DEST (a temp file, fsynced, renamed).
With WALGO_PREFETCH > 0 it then starts one background process that fetches
the next segments into pg_wal/walgo/prefetch, so replay need not wait.
One GET when the file is stored with the configured codec; otherwise one
LIST finds it under any codec walgo reads (its own, WAL-G's and WAL-E's).

Exit codes (Postgres acts on them):
   0    fetched
   1    not in the archive: quiet and fast; Postgres asks for files that do
        not exist at every timeline check and at the end of recovery
   130  bad arguments or destination; the file is stored only with an
        extension walgo does not read (the object is named)
   132  storage unreachable or failing after retries; a copy listed, then
        gone when read
   133  corrupt or truncated object (or a wrong codec); a segment whose
        header does not match its name, or of another database system than
        the data directory's global/pg_control
   134  any other failure
Codes above 125 make Postgres stop recovery instead of ending it early and
dropping later WAL. In standby mode (standby.signal in the data directory)
every failure exits 1 instead, so the standby retries and keeps running.`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("%w: wal-fetch takes NAME and DEST (restore_command's %%f %%p)", errUsage)
			}
			name, dest := c.Args().Get(0), c.Args().Get(1)
			err := walFetch(c, name, dest)
			*code = walFetchExit(err, dest)
			if errors.Is(err, storage.ErrNotFound) {
				// Expected by Postgres: exit 1 and say nothing on stderr.
				return nil
			}
			return err
		},
	}
}

func walFetch(c *cli.Context, name, dest string) error {
	e, err := setup(c, true)
	if err != nil {
		return err
	}
	return newFetcher(e, startPrefetch).Fetch(c.Context, name, dest)
}

// newFetcher is the Fetcher both wal-fetch and its background prefetch use;
// only wal-fetch starts a prefetch.
func newFetcher(e *env, start func(seg, walDir string, segSize int64) error) *restore.Fetcher {
	return restore.NewFetcher(e.store, restore.FetchConfig{
		Codec:         e.set.codec,
		Prefetch:      e.set.prefetch,
		Concurrency:   e.set.downloadConc,
		StartPrefetch: start,
	}, e.log)
}

// walFetchExit maps a wal-fetch error to the exit status Postgres needs.
func walFetchExit(err error, dest string) int {
	code := exitCode(err)
	if code == exitOK || code == exitNotFound {
		return code
	}
	if restore.InStandby(dest) {
		return exitNotFound
	}
	return walFetchOffset + code
}

// startPrefetch launches `walgo wal-prefetch` detached (own session, no
// stdin/stdout) so it outlives this restore_command call. It inherits the
// environment, and with it every setting, including a config file's.
func startPrefetch(seg, walDir string, segSize int64) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "wal-prefetch", "--segment-size", strconv.FormatInt(segSize, 10), seg, walDir)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

func walPrefetchCommand() *cli.Command {
	return &cli.Command{
		Name:      "wal-prefetch",
		Hidden:    true,
		Usage:     "fetch the segments after SEGMENT into WALDIR/walgo/prefetch (started by wal-fetch)",
		ArgsUsage: "SEGMENT WALDIR",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "segment-size", Value: 16 << 20},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("%w: wal-prefetch takes SEGMENT and WALDIR", errUsage)
			}
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			return newFetcher(e, nil).Prefetch(c.Context, c.Args().Get(0), c.Args().Get(1), c.Int64("segment-size"))
		},
	}
}

func walListCommand() *cli.Command {
	return &cli.Command{
		Name:    "wal-list",
		Aliases: []string{"wal-show"},
		Usage:   "show archived WAL per timeline: first, last, count, gaps",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			e, err := setup(c, true)
			if err != nil {
				return err
			}
			objs, err := catalog.ListWAL(c.Context, e.store)
			if err != nil {
				return err
			}
			tls := catalog.Summarize(objs, e.set.segSize)
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if tls == nil {
					tls = []catalog.Timeline{}
				}
				return enc.Encode(tls)
			}
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TIMELINE\tFIRST\tLAST\tSEGMENTS\tSTORED\tGAPS\tHISTORY")
			for _, tl := range tls {
				hist := "-"
				if tl.History {
					hist = "yes"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%d\t%s\n", tl.ID, orDash(tl.First), orDash(tl.Last), tl.Count, humanBytes(tl.Bytes), len(tl.Gaps), hist)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			for _, tl := range tls {
				for _, g := range tl.Gaps {
					fmt.Fprintf(c.App.Writer, "gap on timeline %d: %s .. %s (%d segments missing)\n", tl.ID, g.First, g.Last, g.Count)
				}
			}
			if len(tls) == 0 {
				fmt.Fprintf(c.App.Writer, "no WAL archived in %s\n", e.store)
			}
			return nil
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
