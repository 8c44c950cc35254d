package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/walgo/walgo/restore"
)

// Postgres reads two numbers from walgo. restore_command's exit status: 0
// is "fetched", 1 to 125 is "the archive does not hold this file", so
// recovery ends there and the cluster promotes, and anything above 125 (or
// a death by a signal other than SIGTERM) stops recovery with a FATAL. And
// archive_command's: 0 is "stored", any other status is retried later, but
// a death by a signal makes the archiver itself FATAL.
//
// The guard is the one place that turns every outcome of a run into its
// exit status. It is decided from the command line alone, before anything
// is parsed (config file, environment, flags), so that a failure at any
// stage, a panic or a signal still exits as the hook's contract says.

// hook says which of Postgres' hooks a run serves.
type hook int

const (
	notHook     hook = iota
	archiveHook      // wal-push: fail with a plain status, never die of a signal
	restoreHook      // wal-fetch and its background wal-prefetch
)

// hardStop bounds how long a hook keeps running after a signal asked it to
// stop (a write stuck in the kernel, a storage call that ignores its
// context): then it exits with the status the signal deserves.
const hardStop = 10 * time.Second

// errSignal: the run was stopped by a signal.
var errSignal = errors.New("stopped by signal")

type guard struct {
	hook    hook
	command string   // the command argv names ("" if none)
	args    []string // the command's arguments as argv shows them, flags left out
	config  string   // the --config FILE argv names, "" if none
	// standby: the cluster the hook serves is a standby (standby.signal
	// in its data directory), which retries a failed restore_command; any
	// other cluster must stop.
	standby bool
	// notFound is set by wal-fetch, and only by it, when the archive does
	// not hold the file: the one failure that exits 1 outside standby mode.
	notFound bool
	// started is set once a command's action runs: an error before it
	// comes from the command line, the environment or the config file.
	started bool
}

// hookCommands are the commands Postgres runs as its hooks.
var hookCommands = map[string]hook{
	"wal-push":     archiveHook,
	"wal-fetch":    restoreHook,
	"wal-prefetch": restoreHook,
	// the background pusher wal-push starts: stopped by a signal, it
	// finishes cleanly rather than dying with a file half sent
	"wal-push-ahead": archiveHook,
}

// guardFor reads argv (args[0] is the program) without parsing it: it
// skips the global flags (and the values of those that take one) to find
// the first word that names a command, and takes the words after it that
// are not flags as its arguments. A first word that is no command but
// nearly spells a restore hook ("wal-fecth") is taken for it, so that a
// typo in restore_command stops recovery instead of ending it.
func guardFor(args []string, commands []*cli.Command) *guard {
	g := &guard{}
	valueFlags := takesValue(globalFlags)
	names := map[string]bool{"help": true, "h": true}
	for _, c := range commands {
		for _, n := range c.Names() {
			names[n] = true
		}
	}
	if len(args) > 0 {
		args = args[1:]
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if g.command != "" {
				g.args = append(g.args, args[i+1:]...)
			}
			break
		}
		if name, value, hasValue, ok := flagArg(a); ok {
			if !hasValue && (valueFlags[name] || g.command == "wal-prefetch" && name == "segment-size") && i+1 < len(args) {
				i++
				value = args[i]
			}
			if name == "config" {
				g.config = value
			}
			continue
		}
		switch {
		case g.command != "":
			g.args = append(g.args, a)
		case names[a]:
			g.command = a
		case closest(a, []string{"wal-fetch", "wal-prefetch"}) != "":
			g.command = "wal-fetch"
		}
		// Any other word before the command is the value of a flag
		// walgo does not know; the parser will refuse it.
	}
	if g.config == "" {
		g.config = os.Getenv("WALGO_CONFIG")
	}
	g.hook = hookCommands[g.command]
	if g.hook == restoreHook {
		g.standby = restore.InStandby(g.dest())
	}
	return g
}

// dest is the path under pg_wal that tells the data directory: wal-fetch's
// DEST, or a file in wal-prefetch's WALDIR. Postgres runs restore_command
// in the data directory, which InStandby looks at too.
func (g *guard) dest() string {
	switch {
	case g.command == "wal-prefetch" && len(g.args) >= 2:
		return filepath.Join(g.args[1], "RECOVERYXLOG")
	case g.command == "wal-fetch" && len(g.args) >= 2:
		return g.args[1]
	}
	return filepath.Join("pg_wal", "RECOVERYXLOG")
}

// exit is the status of a run that ended with err.
func (g *guard) exit(err error) int {
	if g.hook != restoreHook {
		return exitCode(err)
	}
	if err == nil && !g.started {
		// Help or the version was shown: nothing was fetched, and Postgres
		// takes a 0 whose file is missing for the end of the archive.
		err = fmt.Errorf("%w: %s did not run", errUsage, g.command)
		fmt.Fprintln(os.Stderr, "walgo:", err)
	}
	if err == nil {
		if g.notFound {
			return exitNotFound
		}
		return exitOK
	}
	if g.standby {
		return exitNotFound
	}
	code := exitCode(err)
	if code == exitOK || code == exitNotFound {
		// "Not found" from anywhere but the archive lookup (a config
		// file, an identity file) must not end recovery.
		code = exitOther
	}
	return walFetchOffset + code
}

// arm prepares the process for the hook's contract. A panic in a goroutine
// other than main's cannot be recovered, and Go exits 2 on it, which
// Postgres takes for "not in the archive": a restore hook outside standby
// mode dies of SIGABRT instead (no core file), which stops recovery. In
// standby mode the 2 is what is wanted (try again later).
func (g *guard) arm() {
	if g.hook == restoreHook && !g.standby {
		syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
		debug.SetTraceback("crash")
	}
}

// hookSignals are the signals that end a Go program by default (the
// runtime ignores the others, SIGUSR1 and SIGALRM among them): a hook
// catches them and fails with its own status instead. SIGABRT is left
// alone: it is how a restore hook crashes (see arm).
var hookSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGSTKFLT}

// catchSignals cancels ctx (with errSignal as its cause) on SIGINT or
// SIGTERM, and a hook on every signal in hookSignals; a hook ignores
// SIGPIPE (a closed log pipe must not kill a fetch) and, if its work does
// not stop within hardStop of the signal, exits with the guard's status
// for it. The returned function undoes it.
func (g *guard) catchSignals(cancel context.CancelCauseFunc) func() {
	sigs := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if g.hook != notHook {
		signal.Ignore(syscall.SIGPIPE)
		sigs = hookSignals
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case s := <-ch:
			err := fmt.Errorf("%w %v", errSignal, s)
			cancel(err)
			if g.hook == notHook {
				return
			}
			select {
			case <-done:
			case <-time.After(hardStop):
				fmt.Fprintf(os.Stderr, "walgo: %v and still running after %v: exiting\n", err, hardStop)
				os.Exit(g.exit(err))
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// guardActions wraps the action of every command (and subcommand): it
// applies the flags that follow the arguments, records that the command
// started, and hands the arguments on (see cmdArgs).
func (g *guard) guardActions(cmds []*cli.Command) {
	for _, cmd := range cmds {
		g.guardActions(cmd.Subcommands)
		cmd.OnUsageError = usageError
		if cmd.Action == nil {
			continue
		}
		act := cmd.Action
		cmd.Action = func(c *cli.Context) error {
			pos, err := interspersedFlags(c)
			if err != nil {
				return err
			}
			c.Context = context.WithValue(c.Context, argsKey{}, pos)
			g.started = true
			testPanic(c.Command.Name)
			return act(c)
		}
	}
}

// usageError reports a flag urfave/cli could not parse (or an environment
// variable it could not read into a flag) as bad usage, without printing
// the help text on stdout, which may be a pipe or Postgres' log.
func usageError(c *cli.Context, err error, _ bool) error {
	help := "walgo --help"
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		help = "walgo " + c.Command.Name + " --help"
	}
	return fmt.Errorf("%w: %v (see %s)", errUsage, err, help)
}

// testPanic is a no-op but in the test build (testpanic_walgotest.go).
var testPanic = func(stage string) {}

type argsKey struct{}

// cmdArgs returns the command's arguments, the flags among them applied.
func cmdArgs(c *cli.Context) []string {
	if a, ok := c.Context.Value(argsKey{}).([]string); ok {
		return a
	}
	return c.Args().Slice()
}

// closest returns the name in names nearest to s, if it is near enough to
// be a typo of it: at most a third of its letters wrong (two at most).
func closest(s string, names []string) string {
	best, bestD := "", 0
	for _, n := range names {
		d := editDistance(s, n)
		if d <= min(2, max(1, len(n)/3)) && (best == "" || d < bestD) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the number of single-letter insertions, deletions,
// substitutions and swaps of neighbours that turn a into b.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
