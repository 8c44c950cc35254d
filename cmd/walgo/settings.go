package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"filippo.io/age"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/walgo/walgo/catalog"
	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/ratelimit"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/storage/s3"
)

// loadConfigFile applies the KEY=VALUE lines of the config file at path
// (--config or WALGO_CONFIG, found in argv by the guard) to the
// environment, under what is already set there, so the order of precedence
// is: flag, environment, config file, default. It runs before flags are
// parsed. A key that is neither a walgo setting (in known) nor an AWS_* or
// PG* variable is refused, naming the closest setting: a typo must not
// quietly leave a setting at its default.
func loadConfigFile(path string, known map[string]bool) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: config file: %v", errUsage, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	set := map[string]string{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			k, v, ok = strings.Cut(line, ":")
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || strings.ContainsFunc(k, unicode.IsSpace) {
			return fmt.Errorf("%w: config file %s line %d: want KEY=VALUE", errUsage, path, n)
		}
		if !known[k] && !isForeignVariable(k) {
			hint := ""
			if c := closestVariable(k, known); c != "" {
				hint = fmt.Sprintf(" (did you mean %s?)", c)
			}
			return fmt.Errorf("%w: config file %s line %d: unknown setting %s%s; walgo reads WALGO_* settings (see walgo --help), AWS_* and PG* variables", errUsage, path, n, k, hint)
		}
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		set[k] = v
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: config file %s: %v", errUsage, path, err)
	}
	// Only a whole, valid file is applied.
	for k, v := range set {
		if _, inEnv := os.LookupEnv(k); !inEnv {
			os.Setenv(k, v)
		}
	}
	return nil
}

// isForeignVariable: a variable a config file may set for the libraries
// walgo uses: the AWS SDK's (AWS_*) and libpq's (PG*, upper case).
func isForeignVariable(k string) bool {
	if strings.HasPrefix(k, "AWS_") {
		return true
	}
	rest, ok := strings.CutPrefix(k, "PG")
	return ok && rest != "" && strings.IndexFunc(rest, func(r rune) bool { return !(r >= 'A' && r <= 'Z' || r == '_') }) < 0
}

// knownVariables are the WALGO_* names of every flag of app, its commands
// and their subcommands, and WALGO_CONFIG.
func knownVariables(app *cli.App) map[string]bool {
	known := map[string]bool{"WALGO_CONFIG": true}
	var walk func([]cli.Flag, []*cli.Command)
	walk = func(flags []cli.Flag, cmds []*cli.Command) {
		for _, fl := range flags {
			if ev, ok := fl.(interface{ GetEnvVars() []string }); ok {
				for _, v := range ev.GetEnvVars() {
					known[v] = true
				}
			}
		}
		for _, c := range cmds {
			walk(c.Flags, c.Subcommands)
		}
	}
	walk(app.Flags, app.Commands)
	return known
}

// testVariablePrefix names variables of walgo's own test suite, never a
// setting.
const testVariablePrefix = "WALGO_TEST_"

// warnUnknownVariables warns about every WALGO_* variable in environ that
// is no setting, naming the closest one: WALGO_AGE_RECIPIENT (for
// WALGO_AGE_RECIPIENTS) would otherwise store WAL unencrypted with exit 0.
func warnUnknownVariables(w io.Writer, environ []string, known map[string]bool) {
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "WALGO_") || known[k] || strings.HasPrefix(k, testVariablePrefix) {
			continue
		}
		hint := ""
		if c := closestVariable(k, known); c != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", c)
		}
		fmt.Fprintf(w, "walgo: warning: %s is not a walgo setting and is ignored%s\n", k, hint)
	}
}

// closestVariable is the known name nearest to k, if near enough to be a
// typo of it.
func closestVariable(k string, known map[string]bool) string {
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	slices.Sort(names) // ties go the same way every time
	return closest(k, names)
}

// parseSize reads a byte count: "0", "1048576", "10MB", "512KiB", "1.5GB".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}[strings.ToLower(unit)]
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || f < 0 {
		return 0, fmt.Errorf("%w: invalid size %q (want e.g. 0, 1048576, 10MB, 512KiB)", errUsage, s)
	}
	return int64(f * mult), nil
}

// Shared flags: every one has a WALGO_* variable.
var globalFlags = []cli.Flag{
	&cli.StringFlag{Name: "config", EnvVars: []string{"WALGO_CONFIG"}, Usage: "read WALGO_* settings (KEY=VALUE lines) from `FILE`"},
	&cli.StringFlag{Name: "storage", EnvVars: []string{"WALGO_STORAGE"}, Usage: "repository `URL`: file:///var/lib/walgo/main or s3://bucket/prefix"},
	&cli.StringFlag{Name: "compression", EnvVars: []string{"WALGO_COMPRESSION"}, Value: "zstd", Usage: "zstd, lz4, gzip or none"},
	&cli.IntFlag{Name: "upload-concurrency", EnvVars: []string{"WALGO_UPLOAD_CONCURRENCY"}, Value: 4, Usage: "files pushed at once (wal-push look-ahead)"},
	&cli.IntFlag{Name: "download-concurrency", EnvVars: []string{"WALGO_DOWNLOAD_CONCURRENCY"}, Value: 4, Usage: "files fetched at once"},
	&cli.IntFlag{Name: "prefetch", EnvVars: []string{"WALGO_PREFETCH"}, Value: 8, Usage: "segments wal-fetch prefetches in the background (0 = off)"},
	&cli.StringFlag{Name: "network-rate-limit", EnvVars: []string{"WALGO_NETWORK_RATE_LIMIT"}, Value: "0", Usage: "upload `BYTES` per second, e.g. 50MB (0 = unlimited)"},
	&cli.StringFlag{Name: "age-recipients", EnvVars: []string{"WALGO_AGE_RECIPIENTS"}, Usage: "encrypt everything written to these age public `KEYS` (age1..., comma separated)"},
	&cli.StringFlag{Name: "age-identity-file", EnvVars: []string{"WALGO_AGE_IDENTITY_FILE"}, Usage: "age identity `FILE` (AGE-SECRET-KEY-1... lines) to read encrypted objects"},
	&cli.StringFlag{Name: "s3-endpoint", EnvVars: []string{"WALGO_S3_ENDPOINT"}, Usage: "S3-compatible endpoint `URL` (default: AWS, or AWS_ENDPOINT_URL)"},
	&cli.BoolFlag{Name: "s3-path-style", EnvVars: []string{"WALGO_S3_PATH_STYLE"}, Usage: "path-style S3 addressing (most S3-compatible servers)"},
	&cli.StringFlag{Name: "s3-region", EnvVars: []string{"WALGO_S3_REGION"}, Usage: "S3 region (default: AWS_REGION, or us-east-1)"},
	// For tests: S3's 10,000-part limit, lowered, shows that objects of any
	// size fit (the parts grow) without uploading 78 GiB.
	&cli.IntFlag{Name: "s3-max-parts", EnvVars: []string{"WALGO_S3_MAX_PARTS"}, Hidden: true},
	&cli.DurationFlag{Name: "storage-timeout", EnvVars: []string{"WALGO_STORAGE_TIMEOUT"}, Value: 30 * time.Second, Usage: "limit for one storage request, and for a transfer that makes no progress"},
	&cli.IntFlag{Name: "storage-retries", EnvVars: []string{"WALGO_STORAGE_RETRIES"}, Value: 5, Usage: "attempts per storage request before giving up"},
	&cli.StringFlag{Name: "wal-segment-size", EnvVars: []string{"WALGO_WAL_SEGMENT_SIZE"}, Value: "16MiB", Usage: "the cluster's wal_segment_size, for gap detection"},
	&cli.StringFlag{Name: "log-level", EnvVars: []string{"WALGO_LOG_LEVEL"}, Value: "info", Usage: "debug, info, warn or error"},
	&cli.StringFlag{Name: "lineage", EnvVars: []string{"WALGO_LINEAGE"}, Usage: "the history to restore, list or delete in, where forks share the repository: its `TIMELINE` as backup-list shows it (SYSTEM_ID:TIMELINE with several clusters)"},
}

// settings are the shared flags, parsed once and passed down.
type settings struct {
	storageURL   string
	compression  codec.Compression
	codec        *codec.Codec // compression plus age keys
	identityFile string
	uploadConc   int
	downloadConc int
	prefetch     int
	netRate      int64
	s3Endpoint   string
	s3PathStyle  bool
	s3Region     string
	s3MaxParts   int
	timeout      time.Duration
	retries      int
	segSize      int64
	configFile   string
	lineage      string // "" = the one the command's choice allows
}

func parseSettings(c *cli.Context) (*settings, error) {
	comp, err := codec.ByName(c.String("compression"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	rate, err := parseSize(c.String("network-rate-limit"))
	if err != nil {
		return nil, err
	}
	seg, err := parseSize(c.String("wal-segment-size"))
	if err != nil {
		return nil, err
	}
	recipients, err := codec.ParseRecipients(c.String("age-recipients"))
	if err != nil {
		return nil, fmt.Errorf("%w: WALGO_AGE_RECIPIENTS: %v", errUsage, err)
	}
	idFile := c.String("age-identity-file")
	var ids []age.Identity
	if idFile != "" {
		if ids, err = codec.ReadIdentities(idFile); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if idFile, err = filepath.Abs(idFile); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	s := &settings{
		codec:        codec.New(comp, recipients, ids),
		identityFile: idFile,
		storageURL:   c.String("storage"),
		compression:  comp,
		uploadConc:   max(1, c.Int("upload-concurrency")),
		downloadConc: max(1, c.Int("download-concurrency")),
		prefetch:     max(0, c.Int("prefetch")),
		netRate:      rate,
		s3Endpoint:   c.String("s3-endpoint"),
		s3PathStyle:  c.Bool("s3-path-style"),
		s3Region:     c.String("s3-region"),
		s3MaxParts:   c.Int("s3-max-parts"),
		timeout:      c.Duration("storage-timeout"),
		retries:      max(1, c.Int("storage-retries")),
		segSize:      seg,
		configFile:   c.String("config"),
		lineage:      strings.TrimSpace(c.String("lineage")),
	}
	return s, nil
}

// openStore builds the Store the settings name, wrapped in the network
// rate limit (every upload), debug logging, and retries with timeouts. A
// file:// folder that does not exist is catalog.ErrNoRepository: it is
// never created but by init.
func (s *settings) openStore(ctx context.Context, log *zap.Logger) (storage.Store, error) {
	return s.store(ctx, log, false)
}

// createStore is openStore for init, which creates a missing file:// folder.
func (s *settings) createStore(ctx context.Context, log *zap.Logger) (storage.Store, error) {
	return s.store(ctx, log, true)
}

func (s *settings) store(ctx context.Context, log *zap.Logger, create bool) (storage.Store, error) {
	if s.storageURL == "" {
		return nil, fmt.Errorf("%w: no storage configured: set WALGO_STORAGE (or --storage), e.g. file:///var/lib/walgo/main or s3://bucket/prefix", errUsage)
	}
	u, err := url.Parse(s.storageURL)
	if err != nil {
		return nil, fmt.Errorf("%w: storage URL %q: %v", errUsage, s.storageURL, err)
	}
	var st storage.Store
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("%w: storage URL %q: want file:///absolute/path", errUsage, s.storageURL)
		}
		if create {
			st, err = file.Init(u.Path)
		} else if st, err = file.New(u.Path); errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w at %s: the folder does not exist (a volume not mounted?): create a repository with `walgo init`", catalog.ErrNoRepository, s.storageURL)
		}
	case "s3":
		bucket, prefix, perr := s3.ParseURL(s.storageURL)
		if perr != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, perr)
		}
		st, err = s3.New(ctx, s3.Config{
			Bucket:    bucket,
			Prefix:    prefix,
			Endpoint:  s.s3Endpoint,
			PathStyle: s.s3PathStyle,
			Region:    s.s3Region,
			MaxParts:  s.s3MaxParts,
			// Shorter than the wrapper's idle timeout, so the SDK resends
			// a stalled part before the wrapper gives up on the whole Put.
			HTTPTimeout: s.timeout / 2,
		})
	default:
		return nil, fmt.Errorf("%w: storage URL %q: scheme must be file:// or s3://", errUsage, s.storageURL)
	}
	if err != nil {
		return nil, err
	}
	st = storage.WithRateLimit(st, ratelimit.New(s.netRate))
	st = storage.WithLogging(st, log)
	return storage.WithRetry(st, storage.RetryOptions{
		Attempts:    s.retries,
		OpTimeout:   s.timeout,
		IdleTimeout: s.timeout,
	}, log), nil
}
