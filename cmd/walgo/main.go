// Command walgo is the CLI: it parses settings once and wires them to the
// library packages. Only this package exits, mapping error kinds to the
// exit codes documented in `walgo help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/walgo/walgo/archive"
	"github.com/walgo/walgo/basebackup"
	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/logical"
	"github.com/walgo/walgo/pgserver"
	"github.com/walgo/walgo/restore"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/wal"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// errUsage marks bad flags, arguments or settings.
var errUsage = errors.New("usage")

// Exit codes. wal-fetch and wal-prefetch add 128 to every failure but "not
// found" (see guard.exit), because Postgres stops recovery on a
// restore_command exit status above 125 instead of taking it as the end of
// the archive.
const (
	exitOK         = 0
	exitNotFound   = 1
	exitUsage      = 2
	exitConflict   = 3
	exitStorage    = 4
	exitCorrupt    = 5
	exitOther      = 6
	walFetchOffset = 128
)

const exitCodesHelp = `EXIT CODES:
   0  success
   1  not found (wal-fetch: the archive does not hold this file)
   2  bad usage, settings or input (wrong path, not a WAL file, a missing or wrong age key,
      a recovery target the archived WAL does not reach, a lineage that is unknown or
      must be named with --lineage,
      no repository at WALGO_STORAGE: create one with walgo init)
   3  conflict: the archive holds this WAL file with different content (nothing overwritten)
      init: the storage holds a repository already
      dump-restore, copy: the target database is not empty and --confirm is missing (nothing changed)
      backup-push: another backup-push of this cluster holds the repository's lock
   4  storage unreachable, full or failing after retries
   5  corrupt or truncated data; wal-verify or backup-verify found a problem
   6  any other failure
   wal-fetch (and its background wal-prefetch) adds 128 to codes 2-6 (130,
   132, 133, 134) for every failure, from the command line, the environment
   or the config file to a panic or a signal, so that Postgres stops
   recovery rather than taking it for the end of the archive; 1 means only
   that the archive does not hold the file. In standby mode (standby.signal
   in the data directory) every failure exits 1 and Postgres retries later.
   wal-push catches every signal it can and fails with its own code.`

func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, storage.ErrNotFound):
		return exitNotFound
	case errors.Is(err, errUsage), errors.Is(err, catalog.ErrNoRepository), errors.Is(err, archive.ErrInvalid), errors.Is(err, restore.ErrInvalid),
		errors.Is(err, wal.ErrBadName), errors.Is(err, codec.ErrUnknown),
		errors.Is(err, codec.ErrNoKey), errors.Is(err, codec.ErrWrongKey),
		errors.Is(err, basebackup.ErrArchivingOff), errors.Is(err, basebackup.ErrBadDataDir), errors.Is(err, basebackup.ErrUnsupported),
		errors.Is(err, pgserver.ErrRoot), errors.Is(err, pgserver.ErrNoServer),
		errors.Is(err, logical.ErrInvalid), errors.Is(err, catalog.ErrForeign), errors.Is(err, catalog.ErrLineage):
		return exitUsage
	case errors.Is(err, archive.ErrConflict), errors.Is(err, catalog.ErrRepositoryExists), errors.Is(err, logical.ErrNotEmpty), errors.Is(err, logical.ErrExists),
		errors.Is(err, catalog.ErrLocked), errors.Is(err, catalog.ErrNameTaken):
		return exitConflict
	case errors.Is(err, codec.ErrCorrupt), errors.Is(err, wal.ErrBadHeader):
		return exitCorrupt
	case errors.Is(err, storage.ErrUnreachable), errors.Is(err, storage.ErrPermanent), errors.Is(err, storage.ErrFull), errors.Is(err, catalog.ErrVanished):
		return exitStorage
	}
	return exitOther
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newLogger(level string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: log level %q", errUsage, level)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(os.Stderr), lvl)
	return zap.New(core).Named("walgo"), nil
}

func main() {
	os.Exit(run(os.Args))
}

// run runs one command line and returns its exit status, which the guard
// decides (see guard.go) whatever happens: bad flags, environment or
// config file, a failed command, a panic, a signal.
func run(args []string) (code int) {
	g := &guard{}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "walgo: panic: %v\n%s", r, debug.Stack())
			code = g.exit(fmt.Errorf("panic: %v", r))
		}
	}()
	app := newApp(g)
	*g = *guardFor(args, app.Commands)
	if g.hook != notHook {
		// A hook's stdout is Postgres' log, or nothing: even help and
		// the version go to stderr.
		app.Writer = os.Stderr
	}
	g.arm()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	defer g.catchSignals(cancel)()
	testPanic("argv")

	known := knownVariables(app)
	warnUnknownVariables(os.Stderr, os.Environ(), known)
	err := loadConfigFile(g.config, known)
	if err == nil {
		err = app.RunContext(ctx, hoistGlobalFlags(args, app))
	}
	if err != nil && !g.started && !errors.Is(err, errUsage) {
		// Anything that fails before a command starts is the command
		// line's, the environment's or the config file's fault.
		err = fmt.Errorf("%w: %w", errUsage, err)
	}
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, errSignal) && !errors.Is(err, errSignal) {
		err = fmt.Errorf("%w: %w", cause, err)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "walgo:", err)
	}
	return g.exit(err)
}

// flagArg splits a command-line word that is a flag ("-name", "--name",
// "--name=value") into its name and inline value; ok is false for any
// other word, "-" and "--" among them. The guard, the hoisting of global
// flags and the flags after a command's arguments all read argv with it.
func flagArg(a string) (name, value string, hasValue, ok bool) {
	if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
		return "", "", false, false
	}
	name, value, hasValue = strings.Cut(strings.TrimLeft(a, "-"), "=")
	return name, value, hasValue, true
}

// takesValue maps every name of flags to whether it takes a value: a flag
// that is not a bool takes the next word unless written --name=value.
func takesValue(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, fl := range flags {
		_, isBool := fl.(*cli.BoolFlag)
		for _, n := range fl.Names() {
			m[n] = !isBool
		}
	}
	return m
}

// hoistGlobalFlags moves the global flags written after the command name
// (`walgo backup-list --storage URL`, as git and WAL-G take them) to just
// before it, where urfave/cli parses them; it would refuse them there as
// "flag provided but not defined". A flag that the command or one of its
// subcommands defines itself stays where it is, and "--" ends the flags.
func hoistGlobalFlags(args []string, app *cli.App) []string {
	global := takesValue(app.Flags)
	// The command is the first word that is not a global flag or its value.
	at := -1
	var cmd *cli.Command
	for i := 1; i < len(args) && at < 0; i++ {
		name, _, hasValue, ok := flagArg(args[i])
		switch {
		case args[i] == "--":
			return args
		case ok:
			if global[name] && !hasValue {
				i++
			}
		default:
			if cmd = app.Command(args[i]); cmd == nil {
				return args
			}
			at = i
		}
	}
	if cmd == nil {
		return args
	}
	own := map[string]bool{}
	var walk func(cs ...*cli.Command)
	walk = func(cs ...*cli.Command) {
		for _, c := range cs {
			for n := range takesValue(c.Flags) {
				own[n] = true
			}
			walk(c.Subcommands...)
		}
	}
	walk(cmd)
	var hoisted, rest []string
	for i := at + 1; i < len(args); i++ {
		if args[i] == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, _, hasValue, ok := flagArg(args[i])
		value, isGlobal := global[name]
		if !ok || own[name] || !isGlobal {
			rest = append(rest, args[i])
			continue
		}
		hoisted = append(hoisted, args[i])
		if value && !hasValue && i+1 < len(args) {
			i++
			hoisted = append(hoisted, args[i])
		}
	}
	out := make([]string, 0, len(args))
	out = append(out, args[:at]...)
	out = append(out, hoisted...)
	out = append(out, args[at])
	return append(out, rest...)
}

func newApp(g *guard) *cli.App {
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintln(c.App.Writer, "walgo", c.App.Version) }
	app := &cli.App{
		Name:    "walgo",
		Usage:   "continuous protection for PostgreSQL: WAL archiving, base backups, point-in-time restore",
		Version: buildVersion(),
		Flags:   globalFlags,
		// urfave/cli prints the error itself unless told not to; run() does it.
		ExitErrHandler:        func(*cli.Context, error) {},
		OnUsageError:          usageError,
		CustomAppHelpTemplate: cli.AppHelpTemplate + "\n" + exitCodesHelp + "\n",
		Action: func(c *cli.Context) error {
			if !c.Args().Present() {
				return cli.ShowAppHelp(c)
			}
			var names []string
			for _, cmd := range c.App.Commands {
				names = append(names, cmd.Names()...)
			}
			hint := ""
			if n := closest(c.Args().First(), names); n != "" {
				hint = fmt.Sprintf(" (did you mean %s?)", n)
			}
			return fmt.Errorf("%w: unknown command %q%s; see walgo --help", errUsage, c.Args().First(), hint)
		},
		Commands: []*cli.Command{
			initCommand(),
			walPushCommand(),
			walFetchCommand(g),
			walPrefetchCommand(),
			walPushAheadCommand(),
			walListCommand(),
			backupPushCommand(),
			backupFetchCommand(),
			backupListCommand(),
			walVerifyCommand(), backupVerifyCommand(),
			deleteCommand(), backupMarkCommand(),
			restoreTestCommand(),
			scheduleCommand(),
			dumpPushCommand(), dumpListCommand(), dumpFetchCommand(), dumpRestoreCommand(), dumpDeleteCommand(), copyCommand(),
		},
	}
	g.guardActions(app.Commands)
	return app
}

// env holds what every command needs, built from the parsed flags.
type env struct {
	set   *settings
	log   *zap.Logger
	store storage.Store
	repo  catalog.Repository // set by setup with needRepo
}

// setup parses the settings and, with needRepo, opens the repository: a
// storage that holds none is refused (catalog.ErrNoRepository), so that no
// command but init ever writes into, or reads "nothing" from, a place that
// is not a repository.
func setup(c *cli.Context, needRepo bool) (*env, error) {
	e, err := setupStore(c, needRepo)
	if err != nil || !needRepo {
		return e, err
	}
	if e.repo, err = catalog.ReadRepository(c.Context, e.store); err != nil {
		return nil, err
	}
	e.store = e.repo.Store(e.store, e.log)
	return e, nil
}

// setupStore is setup that opens the storage, if needStore, without
// reading the repository: for init, and for the hooks, which check the
// repository their own cheaper way.
func setupStore(c *cli.Context, needStore bool) (*env, error) {
	set, err := parseSettings(c)
	if err != nil {
		return nil, err
	}
	log, err := newLogger(c.String("log-level"))
	if err != nil {
		return nil, err
	}
	e := &env{set: set, log: log}
	if needStore {
		if e.store, err = set.openStore(c.Context, log); err != nil {
			return nil, err
		}
	}
	return e, nil
}
