package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/walgo/walgo/archive"
	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create the repository WALGO_STORAGE names (once, before archiving starts)",
		Description: `Creates the repository: for file://, the folder (0700) if it is missing;
then walgo_repository.json, which holds the repository's id, its creation
time and format, and what the storage was found to do (a probe object is
written twice: does the second create-only write fail, as it must? is its
metadata kept?). Every other command refuses a storage without it, so an
unmounted volume or a mistyped prefix is never written to, nor taken for an
empty archive. A prefix that holds WAL-G's or an older walgo's objects may
be initialised in place: nothing else is touched. Exits 3 if the storage
holds a repository already.`,
		Action: func(c *cli.Context) error {
			if len(cmdArgs(c)) != 0 {
				return fmt.Errorf("%w: init takes no arguments (the repository is WALGO_STORAGE)", errUsage)
			}
			e, err := setupStore(c, false)
			if err != nil {
				return err
			}
			st, err := e.set.createStore(c.Context, e.log)
			if err != nil {
				return err
			}
			r, err := catalog.InitRepository(c.Context, st, buildVersion(), time.Now())
			if err != nil {
				return err
			}
			switch {
			case r.Storage.CreateRefused:
				e.log.Warn("this storage server refuses create-only writes (If-None-Match): walgo checks before each write and writes without the condition and without metadata instead, and two writers racing for one name can still replace each other; use a server that honours conditional writes")
			case !r.Storage.CreateOnly:
				e.log.Warn("this storage server ignores create-only writes (If-None-Match): walgo checks before each write instead, and two writers racing for one name can still replace each other; use a server that honours conditional writes")
			}
			if !r.Storage.Metadata {
				e.log.Warn("this storage keeps no object metadata: a repeated wal-push compares by reading the archived copy back (with an age identity when encrypted)")
			}
			fmt.Fprintf(c.App.Writer, "created repository %s in %s (create-only writes: %v, metadata: %v)\n",
				r.ID, st, r.Storage.CreateOnly, r.Storage.Metadata)
			return nil
		},
	}
}

func walPushCommand() *cli.Command {
	return &cli.Command{
		Name:      "wal-push",
		Usage:     "archive one WAL file (archive_command = 'walgo wal-push %p')",
		ArgsUsage: "PATH",
		Description: `Compresses the WAL file and stores it; exits 0 only once it is durable.
Pushing a file the archive already holds with identical content succeeds;
with different content it fails (exit 3) and overwrites nothing. When more
.ready files wait, a successful push starts one background process for the
pg_wal (wal-push-ahead, its own session, this run's settings) that pushes
them WALGO_UPLOAD_CONCURRENCY at once, so that Postgres' next calls return
at once; it exits once no new .ready file came for 2 seconds.`,
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 1 {
				return fmt.Errorf("%w: wal-push takes one PATH (archive_command's %%p)", errUsage)
			}
			// A push lives for milliseconds and allocates a few pooled
			// blocks: collect only if the heap nears 48 MiB, instead of
			// several times per segment.
			debug.SetGCPercent(-1)
			debug.SetMemoryLimit(48 << 20)
			// The pusher checks the repository itself, without a read
			// per call (see archive.Pusher.Push).
			e, err := setupStore(c, true)
			if err != nil {
				return err
			}
			if _, err = newPusher(e, aheadStarter(c, e)).Push(c.Context, args[0]); err != nil {
				return err
			}
			// After promotion nothing fetches WAL any more: what a
			// restore left in pg_wal for wal-fetch is only in the way.
			restore.SweepAfterRecovery(filepath.Dir(args[0]), e.log)
			return nil
		},
	}
}

func walFetchCommand(g *guard) *cli.Command {
	return &cli.Command{
		Name:      "wal-fetch",
		Usage:     "restore one WAL file (restore_command = 'walgo wal-fetch %f %p')",
		ArgsUsage: "NAME DEST",
		Description: `Writes the archived WAL file NAME to DEST (a temp file, fsynced, renamed).
With WALGO_PREFETCH > 0 it then starts one background process that fetches
the next segments into pg_wal/walgo/prefetch, so replay need not wait; that
process gets this run's settings, never the environment's.
One GET when the file is stored with the configured codec; otherwise one
LIST finds it under any codec walgo reads (its own, WAL-G's and WAL-E's).

Exit codes (Postgres acts on them):
   0    fetched
   1    not in the archive: quiet and fast; Postgres asks for files that do
        not exist at every timeline check and at the end of recovery
   130  bad arguments, flags, environment variables or config file, or
        destination; the file is stored only with an extension walgo does
        not read (the object is named)
   132  storage unreachable, full or failing after retries; a copy listed,
        then gone when read
   133  corrupt or truncated object (or a wrong codec); a segment whose
        header does not match its name, or of another database system than
        the data directory's global/pg_control
   134  any other failure: a panic, a signal
Codes above 125 make Postgres stop recovery instead of ending it early and
dropping later WAL; a crash of the Go runtime kills walgo with SIGABRT,
which stops it too. In standby mode (standby.signal in the data directory)
every failure exits 1 instead, so the standby retries and keeps running.`,
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 2 {
				return fmt.Errorf("%w: wal-fetch takes NAME and DEST (restore_command's %%f %%p)", errUsage)
			}
			// The repository is checked only on a miss (below): a hit
			// stays one request.
			e, err := setupStore(c, true)
			if err != nil {
				return err
			}
			err = newFetcher(e, prefetchStarter(c, e)).Fetch(c.Context, args[0], args[1])
			if errors.Is(err, storage.ErrNotFound) {
				// "Not in the archive" ends recovery: say it only of a
				// repository that exists, never of a mistyped prefix.
				// pg_wal/walgo/repository caches the answer, as for
				// wal-push: a miss is two requests, not three.
				cache := catalog.RepositoryCache{Path: filepath.Join(filepath.Dir(args[1]), "walgo", "repository")}
				if _, rerr := cache.Read(c.Context, e.store, false, e.log); rerr != nil {
					return fmt.Errorf("wal-fetch %s: %w", args[0], rerr)
				}
			}
			if errors.Is(err, storage.ErrNotFound) {
				// Expected by Postgres: exit 1 and say nothing on stderr.
				g.notFound = true
				return nil
			}
			return err
		},
	}
}

// newPusher is the Pusher both wal-push and its background pusher use; only
// wal-push starts a background pusher.
func newPusher(e *env, start func(walDir string) error) *archive.Pusher {
	return archive.New(e.store, archive.Config{
		Codec:       e.set.codec,
		Concurrency: e.set.uploadConc,
		StartAhead:  start,
	}, e.log)
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

// detachedSettings is what a hook hands the background process it starts
// (wal-fetch its prefetch, wal-push its pusher) on stdin: the value of every global flag as this run resolved it from its
// flags, environment and config file. The prefetch applies exactly these,
// so it reads the repository this run read, with its codec, keys, S3
// settings and limits, whatever the environment or a config file (which may
// have changed since) says. No secret is in it: the age identity is a file
// name, AWS credentials stay in the environment the prefetch inherits.
type detachedSettings struct {
	Flags map[string]string `json:"flags"`
}

// maxDetachedSettings bounds what a background process reads from stdin.
const maxDetachedSettings = 1 << 20

// prefetchStarter returns the function with which wal-fetch starts its
// background prefetch (walgo wal-prefetch, see startDetached).
func prefetchStarter(c *cli.Context, e *env) func(seg, walDir string, segSize int64) error {
	return func(seg, walDir string, segSize int64) error {
		return startDetached(c, e, backgroundNice, "wal-prefetch", "--segment-size", strconv.FormatInt(segSize, 10), seg, walDir)
	}
}

// aheadStarter returns the function with which wal-push starts the
// background pusher (walgo wal-push-ahead, see startDetached).
func aheadStarter(c *cli.Context, e *env) func(walDir string) error {
	return func(walDir string) error {
		return startDetached(c, e, 0, "wal-push-ahead", walDir)
	}
}

// startDetached launches `walgo ARGS...` detached (own session, so it
// outlives this hook's call and Postgres' signals to it), with this run's
// settings on stdin (see setupDetached) and an environment without
// WALGO_* variables. Its log goes where this run's does. A nice value
// above 0 starts it at that priority (see startAtNice).
func startDetached(c *cli.Context, e *env, nice int, args ...string) error {
	ps := detachedSettings{Flags: map[string]string{}}
	for _, fl := range c.App.Flags {
		name := fl.Names()[0]
		switch name {
		case "config", "help", "version":
			continue
		}
		switch v := c.Value(name).(type) {
		case nil:
		case []string: // a slice flag takes comma-separated values
			ps.Flags[name] = strings.Join(v, ",")
		default:
			ps.Flags[name] = fmt.Sprint(v)
		}
	}
	if e.set.identityFile != "" {
		ps.Flags["age-identity-file"] = e.set.identityFile // absolute
	}
	body, err := json.Marshal(ps)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WALGO_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer w.Close()
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if nice != 0 {
		err = startAtNice(cmd, nice)
	} else {
		err = cmd.Start()
	}
	r.Close()
	if err != nil {
		return err
	}
	// The settings are far smaller than a pipe's buffer: the write
	// never waits for the child to read them.
	if _, err := w.Write(body); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// setupDetached is setupStore for a background process: first it applies
// the settings startDetached wrote on stdin to c, before anything reads
// them.
func setupDetached(c *cli.Context) (*env, error) {
	var ps detachedSettings
	body, err := io.ReadAll(io.LimitReader(os.Stdin, maxDetachedSettings))
	if err == nil {
		err = json.Unmarshal(body, &ps)
	}
	if err != nil || ps.Flags == nil {
		return nil, fmt.Errorf("%w: %s reads its settings on stdin from the hook that starts it: %v", errUsage, c.Command.Name, err)
	}
	for name, v := range ps.Flags {
		if err := c.Set(name, v); err != nil {
			return nil, fmt.Errorf("%w: %s setting %s: %v", errUsage, c.Command.Name, name, err)
		}
	}
	return setupStore(c, true)
}

func walPushAheadCommand() *cli.Command {
	return &cli.Command{
		Name:      "wal-push-ahead",
		Hidden:    true,
		Usage:     "push the .ready files of WALDIR ahead of Postgres' archive_command calls (started by wal-push, settings on stdin)",
		ArgsUsage: "WALDIR",
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 1 {
				return fmt.Errorf("%w: wal-push-ahead takes WALDIR", errUsage)
			}
			// It may live for a whole backlog: collect as the heap nears
			// what a wal-push allows itself, instead of letting every
			// worker's garbage double it.
			debug.SetMemoryLimit(48 << 20)
			e, err := setupDetached(c)
			if err != nil {
				return err
			}
			return newPusher(e, nil).PushAhead(c.Context, args[0])
		},
	}
}

func walPrefetchCommand() *cli.Command {
	return &cli.Command{
		Name:      "wal-prefetch",
		Hidden:    true,
		Usage:     "fetch the segments after SEGMENT into WALDIR/walgo/prefetch (started by wal-fetch, settings on stdin)",
		ArgsUsage: "SEGMENT WALDIR",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "segment-size", Value: 16 << 20},
		},
		Action: func(c *cli.Context) error {
			args := cmdArgs(c)
			if len(args) != 2 {
				return fmt.Errorf("%w: wal-prefetch takes SEGMENT and WALDIR", errUsage)
			}
			e, err := setupDetached(c)
			if err != nil {
				return err
			}
			// startDetached starts it at backgroundNice already; this
			// covers a prefetch started any other way.
			if err := lowerPriority(backgroundNice); err != nil {
				e.log.Debug("lower the prefetch's priority", zap.Error(err))
			}
			return newFetcher(e, nil).Prefetch(c.Context, args[0], args[1], c.Int64("segment-size"))
		},
	}
}

func walListCommand() *cli.Command {
	return &cli.Command{
		Name:    "wal-list",
		Aliases: []string{"wal-show"},
		Usage:   "show archived WAL per timeline: first, last, count, gaps, ancestry and the lineages that replay it",
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
			backups, err := catalog.ListBackups(c.Context, e.store)
			if err != nil {
				// The WAL can be listed without them.
				e.log.Warn("backups not listed; the segment size comes from a stored segment", zap.Error(err))
				backups = nil
			}
			segSize, err := repositorySegmentSize(c, e, backups, objs)
			if err != nil {
				return err
			}
			h, err := catalog.ReadHistories(c.Context, e.store, e.set.codec, objs)
			if err != nil {
				return err
			}
			x := catalog.NewLineageIndex(backups, objs, h)
			rows := []walListRow{}
			for _, tl := range catalog.Summarize(objs, segSize) {
				row := walListRow{Timeline: tl, Parents: h.Parents[tl.ID], Lineages: []walListLineage{}}
				ls, ends := x.OnTimeline(tl.ID)
				for i, l := range ls {
					wl := walListLineage{Lineage: x.Name(l)}
					if l.Timeline != tl.ID {
						end := ends[i]
						wl.UpTo = &end
					}
					row.Lineages = append(row.Lineages, wl)
				}
				rows = append(rows, row)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TIMELINE\tFIRST\tLAST\tSEGMENTS\tSTORED\tGAPS\tHISTORY\tLINEAGES")
			for _, r := range rows {
				tl := r.Timeline
				hist := "-"
				switch {
				case len(r.Parents) > 0:
					p := r.Parents[len(r.Parents)-1]
					hist = fmt.Sprintf("from %d at %s", p.Timeline, p.Switch)
				case tl.History:
					hist = "yes"
				}
				var ls []string
				for _, l := range r.Lineages {
					if l.UpTo != nil {
						ls = append(ls, fmt.Sprintf("%s (to %s)", l.Lineage, l.UpTo))
					} else {
						ls = append(ls, l.Lineage)
					}
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", tl.ID, orDash(tl.First), orDash(tl.Last), tl.Count, humanBytes(tl.Bytes), len(tl.Gaps), hist, orDash(strings.Join(ls, ", ")))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			for _, r := range rows {
				for _, g := range r.Gaps {
					fmt.Fprintf(c.App.Writer, "gap on timeline %d: %s .. %s (%d segments missing)\n", r.ID, g.First, g.Last, g.Count)
				}
			}
			if len(rows) == 0 {
				fmt.Fprintf(c.App.Writer, "no WAL archived in %s\n", e.store)
			}
			return nil
		},
	}
}

// repositorySegmentSize is the wal_segment_size to read the repository's
// WAL with: the repository's own (its backups', else a stored segment's
// header: see catalog.SegmentSize), else --wal-segment-size. A
// --wal-segment-size that disagrees with the repository is ignored, with a
// warning: the segments are what they are.
func repositorySegmentSize(c *cli.Context, e *env, backups []*catalog.Sentinel, objs []catalog.WALObject) (int64, error) {
	size, err := catalog.SegmentSize(c.Context, e.store, e.set.codec, backups, objs)
	if err != nil {
		e.log.Warn("segment size not read from the repository; using --wal-segment-size", zap.Int64("wal_segment_size", e.set.segSize), zap.Error(err))
	}
	switch {
	case size == 0:
		size = e.set.segSize
	case c.IsSet("wal-segment-size") && size != e.set.segSize:
		e.log.Warn("ignoring --wal-segment-size (WALGO_WAL_SEGMENT_SIZE): the repository's segments are another size",
			zap.Int64("setting", e.set.segSize), zap.Int64("repository", size))
	}
	if !wal.ValidSegmentSize(size) {
		return 0, fmt.Errorf("%w: wal segment size %d: want a power of two from 1MiB to 1GiB", errUsage, size)
	}
	return size, nil
}

// walListRow is one timeline in wal-list: its segments, its ancestry,
// and the lineages (histories) that replay its WAL.
type walListRow struct {
	catalog.Timeline
	Parents  []catalog.HistoryEntry `json:"parents,omitempty"`
	Lineages []walListLineage       `json:"lineages"`
}

// walListLineage is a lineage that replays a timeline's WAL: all of it, or
// up to UpTo, where the lineage leaves it for a later timeline.
type walListLineage struct {
	Lineage string   `json:"lineage"`
	UpTo    *wal.LSN `json:"up_to_lsn,omitempty"`
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
