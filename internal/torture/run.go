package torture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/internal/s3test"
	"github.com/walgo/walgo/wal"
)

// Coverage says how many restores a run makes.
type Coverage int

const (
	// Sample restores every point once per target kind letting walgo
	// choose the backup, every backup once by name to a point it covers
	// (a target kind picked by the seed) and once to its own end, and the
	// end of every cluster's archive. For CI.
	Sample Coverage = iota
	// Exhaustive also restores every point from every backup that covers
	// it, for every target kind. For bench/torture.sh.
	Exhaustive
)

// Config is one run of the harness.
type Config struct {
	Seed     uint64
	Scale    int      // see Generate; 0 means 1
	Features Features // the workload's features; nil means AllFeatures
	// Plan, when set, is run instead of Generate(Seed, Scale, Features).
	Plan *Plan
	// Walgo is the walgo binary, which the Postgres user must be able to run.
	Walgo string
	// Repro is the command that runs this seed again; every failure
	// prints it.
	Repro    string
	Coverage Coverage
	// Parallel is how many restores run at once; 0 means 3.
	Parallel int
	// Fault, when set, breaks restores on purpose between backup-fetch
	// and the start of Postgres (see fault.go): the harness's own check
	// that it notices a wrong restore.
	Fault Fault
}

// Failure is one difference or error the harness found.
type Failure struct {
	Where  string // the step or restore case
	What   string // one line
	Detail string // differences, command output, server log
	// Faulted: the restore was broken on purpose by Config.Fault.
	Faulted bool
}

// Report is the outcome of one run.
type Report struct {
	Seed      uint64
	Plan      *Plan
	Points    int
	Backups   []BackupInfo
	Restores  int                // restores started and checked
	Targets   map[TargetKind]int // restores by target kind
	Refusals  int                // targets beyond the archive tried (each must be refused)
	Followers int                // standbys checked at the end
	Faulted   int                // restores Config.Fault changed
	Failures  []Failure
	Repro     string
	Workload  time.Duration // the source's steps, up to the first restore
	StepTime  map[Kind]time.Duration
	Took      time.Duration
}

// BackupInfo is one backup the run took, as walgo lists it.
type BackupInfo struct {
	Number    int // Step.Backup
	Step      int
	Cluster   int
	Name      string
	Parent    string
	Timeline  uint32
	StartLSN  wal.LSN
	FinishLSN wal.LSN
}

// Failed reports whether the run found anything.
func (r *Report) Failed() bool { return len(r.Failures) > 0 }

// Summary is one line: seed, counts, failures, time.
func (r *Report) Summary() string {
	kinds := []string{}
	for _, k := range []TargetKind{TargetTime, TargetLSN, TargetXID, TargetName, TargetImmediate, TargetEnd} {
		if n := r.Targets[k]; n > 0 {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
		}
	}
	var steps []string
	for _, k := range []Kind{KindSQL, KindPoint, KindBackup, KindFork} {
		if d := r.StepTime[k]; d > 0 {
			steps = append(steps, fmt.Sprintf("%s %s", k, d.Round(100*time.Millisecond)))
		}
	}
	sums, repo := "on", "file"
	if !r.Plan.Checksums {
		sums = "off"
	}
	if r.Plan.S3 {
		repo = "s3"
	}
	deltas := 0
	for _, b := range r.Backups {
		if b.Parent != "" {
			deltas++
		}
	}
	return fmt.Sprintf("torture: seed %d: checksums %s, %s repository, %d steps, %d points, %d backups (%d deltas), %d restores (%s), %d beyond the archive, %d followers, %d faulted, %d failures, %s (workload %s: %s)",
		r.Seed, sums, repo, len(r.Plan.Steps), r.Points, len(r.Backups), deltas, r.Restores, strings.Join(kinds, ", "), r.Refusals, r.Followers, r.Faulted,
		len(r.Failures), r.Took.Round(time.Second), r.Workload.Round(time.Second), strings.Join(steps, ", "))
}

// String is the whole report: the summary, and for a failed run every
// failure, the backups, the plan and the command that reproduces it.
func (r *Report) String() string {
	var b strings.Builder
	b.WriteString(r.Summary())
	b.WriteByte('\n')
	if !r.Failed() {
		return b.String()
	}
	for i, f := range r.Failures {
		fault := ""
		if f.Faulted {
			fault = " [broken on purpose]"
		}
		fmt.Fprintf(&b, "\nFAILURE %d%s: %s: %s\n", i+1, fault, f.Where, f.What)
		if f.Detail != "" {
			b.WriteString(indent(f.Detail))
		}
	}
	b.WriteString("\nbackups:\n")
	for _, k := range r.Backups {
		fmt.Fprintf(&b, "  backup %d (step %d, %s): %s parent %q timeline %d, %s..%s\n", k.Number, k.Step, ClusterName(k.Cluster),
			k.Name, k.Parent, k.Timeline, k.StartLSN, k.FinishLSN)
	}
	b.WriteString("\nplan: ")
	b.WriteString(r.Plan.String())
	fmt.Fprintf(&b, "\nreproduce with: %s\n", r.Repro)
	return b.String()
}

func indent(s string) string {
	var b strings.Builder
	for l := range strings.Lines(strings.TrimRight(s, "\n")) {
		b.WriteString("    ")
		b.WriteString(l)
	}
	b.WriteByte('\n')
	return b.String()
}

// point is a recorded moment.
type point struct {
	n       int
	step    int
	cluster int
	tl      uint32
	time    time.Time
	lsn     wal.LSN
	xid     uint64
	name    string
	fp      *Fingerprint
}

// backup is a backup the run took.
type backup struct {
	BackupInfo
	fp    *Fingerprint      // the state while it ran (nothing commits during a backup)
	files map[string]string // table -> its main fork's path (pg_relation_filepath) when it ran
}

type cluster struct {
	idx    int
	pg     *pgtest.Cluster
	conn   *pgx.Conn
	ts     string       // the tablespace's folder
	parent int          // the cluster it was forked from (-1 for the primary)
	origin int          // the step of the point it was forked at
	dead   bool         // it failed; its later steps are skipped
	end    *Fingerprint // its state at the end of the run
	// Where its archived WAL ends, once the run is over.
	endTime    time.Time
	endLSN     wal.LSN
	lastCommit wal.LSN // right after its last commit
}

// follower is a standby restored from the repository during the run.
type follower struct {
	step    Step
	pg      *pgtest.Cluster
	fetched cmdResult
}

type runner struct {
	t         *testing.T
	cfg       Config
	plan      *Plan
	repoEnv   []string
	clusters  []*cluster
	points    []*point
	backups   []*backup
	followers []*follower
	rep       *Report
	mu        sync.Mutex
}

// Run executes a plan (Config.Plan, or the seed's), restores every
// recorded point and compares. Failures are in the report; Run fails t
// only when the harness itself cannot work (no Postgres, a folder it
// cannot make). Restores run as subtests of t, so each one's folders and
// server are gone when it ends.
func Run(t *testing.T, cfg Config) *Report {
	start := time.Now()
	if cfg.Features == nil {
		cfg.Features = AllFeatures()
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 3
	}
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	plan := cfg.Plan
	if plan == nil {
		plan = Generate(cfg.Seed, cfg.Scale, cfg.Features)
	}
	for i := range plan.Steps {
		plan.Steps[i].N = i + 1
	}
	r := &runner{t: t, cfg: cfg, plan: plan,
		rep: &Report{Seed: plan.Seed, Plan: plan, Targets: map[TargetKind]int{}, StepTime: map[Kind]time.Duration{}, Repro: cfg.Repro}}
	defer func() { r.rep.Took = time.Since(start) }()
	ctx := context.Background()

	if err := r.setup(ctx); err != nil {
		r.fail("setup", "the source cluster could not be set up", err.Error(), false)
		return r.rep
	}
	for _, st := range plan.Steps {
		for len(r.clusters) <= st.Cluster { // a fork's, until its fork step runs
			r.clusters = append(r.clusters, &cluster{idx: len(r.clusters), dead: true})
		}
		cl := r.clusters[st.Cluster]
		if cl.dead && st.Kind != KindFork {
			continue
		}
		t0 := time.Now()
		err := r.step(ctx, st)
		r.rep.StepTime[st.Kind] += time.Since(t0)
		if err != nil {
			r.fail(st.String(), "step failed", err.Error(), false)
			cl.dead = true
		}
	}
	for _, cl := range r.clusters {
		if !cl.dead {
			// A recovery to a time stops at the first commit after it, and
			// fails at the end of the WAL: every point needs a commit after it.
			var lsn string
			_, err := cl.conn.Exec(ctx, "insert into torture_marker values (0, 'the end', clock_timestamp())")
			if err == nil {
				err = cl.conn.QueryRow(ctx, "select pg_current_wal_insert_lsn()::text").Scan(&lsn)
			}
			if err == nil {
				cl.lastCommit, err = wal.ParseLSN(lsn)
			}
			if err != nil {
				r.fail(ClusterName(cl.idx), "the last commit failed", err.Error(), false)
				continue
			}
			fp, err := r.fingerprint(ctx, cl)
			if err != nil {
				r.fail(ClusterName(cl.idx), "the last fingerprint failed", err.Error(), false)
				continue
			}
			cl.end = fp
			if err := archiveAll(ctx, cl.conn); err != nil {
				r.fail(ClusterName(cl.idx), "WAL not archived", err.Error(), false)
				continue
			}
			// Where the archive ends: a target beyond must be refused.
			if err := cl.conn.QueryRow(ctx, "select clock_timestamp(), pg_current_wal_insert_lsn()::text").Scan(&cl.endTime, &lsn); err != nil {
				r.fail(ClusterName(cl.idx), "the end of its WAL", err.Error(), false)
				continue
			}
			if cl.endLSN, err = wal.ParseLSN(lsn); err != nil {
				r.fail(ClusterName(cl.idx), "the end of its WAL", err.Error(), false)
			}
		}
	}
	for _, fo := range r.followers {
		r.checkFollower(ctx, fo)
	}
	r.rep.Workload = time.Since(start)
	r.restoreAll(r.cases())
	r.rep.Points = len(r.points)
	return r.rep
}

func (r *runner) fail(where, what, detail string, faulted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Failures = append(r.rep.Failures, Failure{Where: where, What: what, Detail: detail, Faulted: faulted})
}

// setup starts the primary: an archiving cluster, the workload database,
// its extensions, sequence, marker table and tablespace.
func (r *runner) setup(ctx context.Context) error {
	if r.plan.S3 {
		srv := s3test.Start(r.t)
		r.repoEnv = append(srv.Env(), "WALGO_STORAGE=s3://"+srv.Bucket(r.t)+"/torture")
	} else {
		r.repoEnv = []string{"WALGO_STORAGE=file://" + pgtest.OwnedDir(r.t, "torture-repo")}
	}
	if res, err := r.walgo(ctx, nil, "init"); err != nil || res.code != 0 {
		return fmt.Errorf("walgo init: %v (exit %d): %s", err, res.code, res.stderr)
	}
	ts := pgtest.OwnedDir(r.t, "torture-ts")
	var initdb []string
	conf := []string{
		"archive_mode = on",
		fmt.Sprintf("archive_command = '%s wal-push %%p'", r.cfg.Walgo),
		"autovacuum = off", // the plan vacuums; nothing else changes pages behind its back
		"max_prepared_transactions = 10",
		"fsync = off", // the source never crashes; recovery of restores does not depend on it
	}
	if r.plan.Checksums {
		initdb = append(initdb, "-k")
	} else {
		conf = append(conf, "wal_log_hints = off")
	}
	pg := pgtest.New(r.t, pgtest.Options{InitdbArgs: initdb, Env: r.repoEnv, Conf: conf})
	if err := pg.TryStart(); err != nil {
		return err
	}
	if err := psqlExec(ctx, pg, "postgres", "create database "+Database); err != nil {
		return err
	}
	conn, err := connect(ctx, pg)
	if err != nil {
		return err
	}
	cl := &cluster{idx: 0, pg: pg, conn: conn, ts: ts, parent: -1}
	r.t.Cleanup(func() { conn.Close(context.Background()) })
	r.clusters = append(r.clusters, cl)
	stmts := []string{
		"create extension pg_visibility",
		"create extension amcheck",
		"create sequence torture_seq",
		"create table torture_marker (id int primary key, name text not null, at timestamptz not null) with (autovacuum_enabled = off)",
	}
	if r.plan.Features[Tablespace] {
		stmts = append(stmts, fmt.Sprintf("create tablespace %s location '%s'", TablespaceName, ts))
	}
	if r.plan.Features[Databases] {
		if err := psqlExec(ctx, pg, "postgres", "create database "+TemplateDatabase); err != nil {
			return err
		}
		tpl, err := connectDB(ctx, pg, TemplateDatabase)
		if err != nil {
			return err
		}
		for _, s := range []string{
			"create extension pg_visibility",
			"create table tpl_t (id bigint primary key, v text not null) with (autovacuum_enabled = off)",
			"insert into tpl_t select g, md5(g::text) from generate_series(1, 3000) g",
			"vacuum (freeze) tpl_t",
		} {
			if _, err := tpl.Exec(ctx, s); err != nil {
				tpl.Close(ctx)
				return fmt.Errorf("%s: %s: %w", TemplateDatabase, s, err)
			}
		}
		tpl.Close(ctx)
	}
	if r.plan.Features[LoadDuringBackup] {
		stmts = append(stmts, "create table torture_load (id int primary key, n bigint not null, pad text not null) with (autovacuum_enabled = off, fillfactor = 50)",
			fmt.Sprintf("insert into torture_load select g, 0, md5(g::text) from generate_series(1, %d) g", loadRows))
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func connect(ctx context.Context, pg *pgtest.Cluster) (*pgx.Conn, error) {
	return connectDB(ctx, pg, Database)
}

// opener connects to other databases of a cluster, for fingerprints.
func opener(pg *pgtest.Cluster) func(context.Context, string) (*pgx.Conn, error) {
	return func(ctx context.Context, db string) (*pgx.Conn, error) { return connectDB(ctx, pg, db) }
}

func connectDB(ctx context.Context, pg *pgtest.Cluster, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", pg.Port(), pgtest.Superuser, db))
	if err != nil {
		return nil, err
	}
	// A plan that would wait on a lock is a harness bug: fail, never hang.
	cfg.RuntimeParams["lock_timeout"] = "60s"
	cfg.RuntimeParams["statement_timeout"] = "10min"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to port %d: %w", pg.Port(), err)
	}
	return conn, nil
}

// psqlExec runs one statement outside a transaction through psql.
func psqlExec(ctx context.Context, pg *pgtest.Cluster, db, sql string) error {
	cmd := pg.Command(ctx, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("psql %s: %v: %s", sql, err, out)
	}
	return nil
}

// amcheck runs pg_amcheck --heapallindexed on the workload database;
// it returns its complaints, or "" when it found nothing.
func amcheck(pg *pgtest.Cluster) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		cmd := pg.Command(ctx, "pg_amcheck", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port()), "-U", pgtest.Superuser,
			"-d", Database+"*", "--heapallindexed")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return "", nil
		case errors.As(err, &ee) && ee.ExitCode() == 2:
			// 2: corruption found; anything else: it could not run.
			return strings.TrimSpace(string(out)), nil
		}
		return "", fmt.Errorf("pg_amcheck: %v: %s", err, out)
	}
}

func (r *runner) fingerprint(ctx context.Context, cl *cluster) (*Fingerprint, error) {
	return takeFingerprint(ctx, cl.conn, opener(cl.pg), amcheck(cl.pg))
}

// cmdResult is one walgo run.
type cmdResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (c cmdResult) String() string {
	return fmt.Sprintf("walgo %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), c.code,
		strings.TrimSpace(c.stdout), tailLines(c.stderr, 30))
}

// walgo runs the binary as the Postgres user with the repository's
// settings plus env.
func (r *runner) walgo(ctx context.Context, env []string, args ...string) (cmdResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := pgtest.AsUser(ctx, append(slices.Clone(r.repoEnv), env...), r.cfg.Walgo, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cmdResult{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		return res, fmt.Errorf("run walgo %s: %w", strings.Join(args, " "), err)
	}
	return res, nil
}

func (r *runner) step(ctx context.Context, st Step) error {
	cl := r.clusters[st.Cluster]
	switch st.Kind {
	case KindSQL:
		if _, err := cl.conn.Exec(ctx, st.SQL); err != nil {
			return fmt.Errorf("%s: %w", oneLine(st.SQL), err)
		}
		return nil
	case KindPoint:
		return r.recordPoint(ctx, cl, st)
	case KindBackup:
		return r.backup(ctx, cl, st)
	case KindFork:
		return r.fork(ctx, st)
	case KindFollower:
		return r.startFollower(ctx, cl, st)
	}
	return fmt.Errorf("unknown step kind %q", st.Kind)
}

// recordPoint commits a marker row, makes a restore point, and records
// the moment right after both and the database's fingerprint. Nothing
// commits between the marker and the next step, so a recovery to the
// point's time, LSN, xid or restore point must show exactly this state.
func (r *runner) recordPoint(ctx context.Context, cl *cluster, st Step) error {
	p := &point{n: st.Point, step: st.N, cluster: cl.idx, name: st.Name}
	tx, err := cl.conn.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "insert into torture_marker values ($1, $2, clock_timestamp())", st.Point, st.Name); err != nil {
		tx.Rollback(ctx)
		return fmt.Errorf("marker: %w", err)
	}
	var xid string
	if err := tx.QueryRow(ctx, "select pg_current_xact_id()::text").Scan(&xid); err != nil {
		tx.Rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("marker commit: %w", err)
	}
	if p.xid, err = strconv.ParseUint(xid, 10, 64); err != nil {
		return fmt.Errorf("xid %q: %w", xid, err)
	}
	if _, err := cl.conn.Exec(ctx, "select pg_create_restore_point($1)", st.Name); err != nil {
		return err
	}
	// Commit timestamps have microseconds; keep clear of both neighbours.
	time.Sleep(2 * time.Millisecond)
	var lsn, seg string
	if err := cl.conn.QueryRow(ctx, "select clock_timestamp(), pg_current_wal_insert_lsn()::text, pg_walfile_name(pg_current_wal_insert_lsn())").
		Scan(&p.time, &lsn, &seg); err != nil {
		return err
	}
	if p.lsn, err = wal.ParseLSN(lsn); err != nil {
		return err
	}
	tl, err := strconv.ParseUint(seg[:8], 16, 32)
	if err != nil {
		return fmt.Errorf("timeline of %s: %w", seg, err)
	}
	p.tl = uint32(tl)
	// A recovery to an LSN also applies the first record that starts at or
	// after it: make that one a record that changes nothing.
	if _, err := cl.conn.Exec(ctx, "select pg_logical_emit_message(false, 'walgo-torture', $1)", "after point "+st.Name); err != nil {
		return err
	}
	time.Sleep(2 * time.Millisecond)
	if p.fp, err = r.fingerprint(ctx, cl); err != nil {
		return err
	}
	// A recovery to a time stops before the first transaction end after
	// it and replays what comes before, sequence updates included, which
	// no transaction holds back: make the first one a commit that follows
	// the point at once and changes nothing.
	if _, err := cl.conn.Exec(ctx, "begin; select pg_current_xact_id(); commit"); err != nil {
		return err
	}
	r.points = append(r.points, p)
	if probs := p.fp.Problems(); len(probs) > 0 {
		r.fail(st.String(), "the source itself is inconsistent", strings.Join(probs, "\n"), false)
	}
	return nil
}

// backupRow is one backup in walgo backup-list --json --detail.
type backupRow struct {
	Name        string  `json:"name"`
	StartLSN    wal.LSN `json:"start_lsn"`
	FinishLSN   wal.LSN `json:"finish_lsn"`
	Timeline    uint32  `json:"timeline"`
	DeltaParent string  `json:"delta_parent"`
}

func (r *runner) listBackups(ctx context.Context) ([]backupRow, error) {
	res, err := r.walgo(ctx, nil, "backup-list", "--json", "--detail")
	if err != nil {
		return nil, err
	}
	if res.code != 0 {
		return nil, errors.New(res.String())
	}
	var rows []backupRow
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil {
		return nil, fmt.Errorf("backup-list --json: %v\n%s", err, res.stdout)
	}
	return rows, nil
}

// loadRows is the size of torture_load: a few dozen pages.
const loadRows = 4000

// backup runs backup-push. On a quiet cluster its fingerprint before the
// push is the state a restore to the end of the backup must show; with
// Step.Load another session updates torture_load until the push is done,
// and there is no such state to compare with.
func (r *runner) backup(ctx context.Context, cl *cluster, st Step) error {
	var fp *Fingerprint
	var err error
	if !st.Load {
		if fp, err = r.fingerprint(ctx, cl); err != nil {
			return err
		}
	}
	files, err := relationFiles(ctx, cl.conn)
	if err != nil {
		return err
	}
	before, err := r.listBackups(ctx)
	if err != nil {
		return err
	}
	args := []string{"backup-push"}
	if st.Delta {
		args = append(args, "--delta")
	}
	var stopLoad func() (int, error)
	if st.Load {
		if stopLoad, err = startLoad(ctx, cl.pg, r.plan.Seed+uint64(st.N)); err != nil {
			return err
		}
	}
	res, err := r.walgo(ctx, append(cl.pg.ConnEnv(), "WALGO_DISK_RATE_LIMIT=0"), args...)
	if stopLoad != nil {
		n, lerr := stopLoad()
		if lerr != nil {
			return fmt.Errorf("load during the backup: %w", lerr)
		}
		if n == 0 {
			return errors.New("load during the backup: not one update committed")
		}
	}
	if err != nil {
		return err
	}
	if res.code != 0 {
		r.fail(st.String(), "backup-push failed", res.String(), false)
		return nil
	}
	after, err := r.listBackups(ctx)
	if err != nil {
		return err
	}
	old := map[string]backupRow{}
	for _, b := range before {
		old[b.Name] = b
	}
	var fresh []backupRow
	for _, b := range after {
		if o, ok := old[b.Name]; !ok {
			fresh = append(fresh, b)
		} else if o != b {
			r.fail(st.String(), "backup-push replaced an existing backup", fmt.Sprintf("%s was %+v, is now %+v\n%s", b.Name, o, b, res), false)
		}
	}
	if len(fresh) != 1 {
		r.fail(st.String(), fmt.Sprintf("backup-push exited 0 but the repository lists %d new backups", len(fresh)),
			fmt.Sprintf("new: %+v\n%s", fresh, res), false)
		return nil
	}
	b := &backup{fp: fp, files: files, BackupInfo: BackupInfo{Number: st.Backup, Step: st.N, Cluster: cl.idx,
		Name: fresh[0].Name, Parent: fresh[0].DeltaParent, Timeline: fresh[0].Timeline,
		StartLSN: fresh[0].StartLSN, FinishLSN: fresh[0].FinishLSN}}
	r.backups = append(r.backups, b)
	r.rep.Backups = append(r.rep.Backups, b.BackupInfo)

	// A delta's parent is the newest backup of this cluster's own history.
	if b.Parent != "" || (st.Delta && r.plan.Checksums) {
		var want *backup
		for _, o := range r.backups[:len(r.backups)-1] {
			if r.inHistory(o.Cluster, o.Step, cl.idx, st.N) {
				want = o
			}
		}
		switch {
		case want == nil:
			r.fail(st.String(), "a delta backup without any earlier backup in its history", res.String(), false)
		case b.Parent != want.Name:
			r.fail(st.String(), fmt.Sprintf("delta backup %s has parent %q; the newest backup in its history is %s (backup %d)",
				b.Name, b.Parent, want.Name, want.Number), res.String(), false)
		}
	}
	return nil
}

// startLoad updates random rows of torture_load, one transaction each,
// in its own session, until the returned stop is called; stop says how
// many it committed.
func startLoad(ctx context.Context, pg *pgtest.Cluster, seed uint64) (stop func() (int, error), err error) {
	conn, err := connect(ctx, pg)
	if err != nil {
		return nil, err
	}
	var quit atomic.Bool
	done := make(chan struct{})
	var n int
	var lerr error
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(seed, 0x6c6f6164))
		for !quit.Load() {
			id := 1 + rng.IntN(loadRows)
			if _, err := conn.Exec(ctx, "update torture_load set n = n + 1, pad = md5(pad) where id = $1", id); err != nil {
				lerr = err
				return
			}
			n++
		}
	}()
	return func() (int, error) {
		quit.Store(true)
		<-done
		conn.Close(ctx)
		return n, lerr
	}, nil
}

// relationFiles maps each table to its main fork's path in the data
// directory.
func relationFiles(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	rows, err := conn.Query(ctx, `select relname::text, pg_relation_filepath(oid) from pg_class
		where relnamespace = 'public'::regnamespace and relkind = 'r'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var n, p string
		if err := rows.Scan(&n, &p); err != nil {
			return nil, err
		}
		m[n] = p
	}
	return m, rows.Err()
}

// inHistory reports whether what happened at step s1 of cluster c1 is in
// the past of step s2 of cluster c2: the same cluster earlier, or earlier
// than the point a fork of it started from.
func (r *runner) inHistory(c1, s1, c2, s2 int) bool {
	for {
		if c1 == c2 {
			return s1 < s2
		}
		cl := r.clusters[c2]
		if cl.parent < 0 {
			return false
		}
		c2, s2 = cl.parent, cl.origin
	}
}

// archiveAll switches to a new WAL segment and waits until the cluster
// has archived everything before it.
func archiveAll(ctx context.Context, conn *pgx.Conn) error {
	var last string
	if err := conn.QueryRow(ctx, "select pg_walfile_name(pg_switch_wal())").Scan(&last); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var done bool
		var failed string
		if err := conn.QueryRow(ctx, "select coalesce(last_archived_wal, '') >= $1, coalesce(last_failed_wal, '') from pg_stat_archiver", last).
			Scan(&done, &failed); err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("segment %s not archived after 3 minutes (last failed: %q)", last, failed)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *runner) pointByNumber(n int) *point {
	for _, p := range r.points {
		if p.n == n {
			return p
		}
	}
	return nil
}

// fork restores a point of the primary with walgo into a new cluster that
// keeps archiving into the same repository on its new timeline.
func (r *runner) fork(ctx context.Context, st Step) error {
	origin := r.pointByNumber(st.Origin)
	if origin == nil {
		return fmt.Errorf("fork: point %d was not recorded", st.Origin)
	}
	from := r.clusters[origin.cluster]
	if from.dead {
		return fmt.Errorf("fork: cluster %s failed earlier", ClusterName(from.idx))
	}
	if err := archiveAll(ctx, from.conn); err != nil {
		return err
	}
	ts := pgtest.OwnedDir(r.t, fmt.Sprintf("torture-fork%d-ts", st.Cluster))
	dir := filepath.Join(pgtest.OwnedDir(r.t, fmt.Sprintf("torture-fork%d", st.Cluster)), "data")
	rc := &restoreCase{id: "fork", point: origin, kind: st.Target, want: origin.fp.Restored(), timeline: origin.tl}
	res, err := r.walgo(ctx, nil, r.fetchArgs(rc, dir, ts)...)
	if err != nil {
		return err
	}
	if res.code != 0 {
		return fmt.Errorf("fork: %s", res)
	}
	pgtest.Chown(r.t, dir)
	// The restored postgresql.conf archives into the same repository.
	pg := pgtest.OpenExisting(r.t, dir, pgtest.Options{Env: r.repoEnv})
	if err := pg.TryStart(); err != nil {
		return fmt.Errorf("fork: %w", err)
	}
	if err := waitPromoted(ctx, pg); err != nil {
		return fmt.Errorf("fork: %w", err)
	}
	conn, err := connect(ctx, pg)
	if err != nil {
		return err
	}
	r.t.Cleanup(func() { conn.Close(context.Background()) })
	cl := &cluster{idx: st.Cluster, pg: pg, conn: conn, ts: ts, parent: origin.cluster, origin: origin.step}
	r.clusters[st.Cluster] = cl
	got, err := r.fingerprint(ctx, cl)
	if err != nil {
		return err
	}
	if d := Diff(rc.want, got); len(d) > 0 {
		r.fail(st.String(), fmt.Sprintf("the fork differs from point %d", origin.n), strings.Join(d, "\n")+"\n"+res.String(), false)
	}
	return nil
}

// waitPromoted waits until a restored server has reached its target and
// promoted, or has stopped (recovery failed).
func waitPromoted(ctx context.Context, pg *pgtest.Cluster) error {
	deadline := time.Now().Add(5 * time.Minute)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(ctx)
		}
	}()
	for {
		if conn == nil {
			conn, _ = connect(ctx, pg) // refused until the server is consistent
		}
		if conn != nil {
			var inRecovery bool
			if err := conn.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil {
				conn.Close(ctx)
				conn = nil
			} else if !inRecovery {
				return nil
			}
		}
		if conn == nil && !pg.Running() {
			return fmt.Errorf("the server stopped before it promoted; its log:\n%s", tailFile(pg.LogFile(), 40))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not promoted after 5 minutes; its log:\n%s", tailFile(pg.LogFile(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return tailLines(string(b), n)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startFollower restores the newest backup of a cluster's history as a
// standby (backup-fetch --standby) and starts it: it replays the
// archive as the run goes on.
func (r *runner) startFollower(ctx context.Context, cl *cluster, st Step) error {
	tl, err := currentTimeline(ctx, cl.conn)
	if err != nil {
		return err
	}
	ts := pgtest.OwnedDir(r.t, fmt.Sprintf("torture-follower%d-ts", st.N))
	dir := filepath.Join(pgtest.OwnedDir(r.t, fmt.Sprintf("torture-follower%d", st.N)), "data")
	rc := &restoreCase{id: "follower", kind: TargetEnd, timeline: tl}
	res, err := r.walgo(ctx, nil, append(r.fetchArgs(rc, dir, ts), "--standby")...)
	if err != nil {
		return err
	}
	if res.code != 0 {
		return fmt.Errorf("follower: %s", res)
	}
	pgtest.Chown(r.t, dir)
	pg := pgtest.OpenExisting(r.t, dir, pgtest.Options{Env: r.repoEnv, Conf: []string{"archive_mode = off", "hot_standby = on"}})
	if err := pg.TryStart(); err != nil {
		return fmt.Errorf("follower: %w\n%s", err, res)
	}
	r.followers = append(r.followers, &follower{step: st, pg: pg, fetched: res})
	return nil
}

// checkFollower waits until a follower has replayed past its cluster's
// last commit, promotes it and compares it with the cluster's last state.
func (r *runner) checkFollower(ctx context.Context, fo *follower) {
	cl := r.clusters[fo.step.Cluster]
	where := fo.step.String()
	if cl.end == nil || cl.lastCommit == 0 {
		return
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var replayed string
		out, err := fo.pg.Exec(ctx, "select coalesce(pg_last_wal_replay_lsn()::text, '0/0')")
		if err == nil {
			replayed = out
		}
		if l, err := wal.ParseLSN(replayed); err == nil && l >= cl.lastCommit {
			break
		}
		if !fo.pg.Running() || time.Now().After(deadline) {
			r.fail(where, fmt.Sprintf("the follower did not replay up to %s's last commit at %s (replayed: %q)", ClusterName(cl.idx), cl.lastCommit, replayed),
				fo.fetched.String()+"\nserver log:\n"+tailFile(fo.pg.LogFile(), 40), false)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := fo.pg.Exec(ctx, "select pg_promote()"); err != nil {
		r.fail(where, "the follower did not promote", err.Error(), false)
		return
	}
	if err := waitPromoted(ctx, fo.pg); err != nil {
		r.fail(where, "the follower did not promote", err.Error(), false)
		return
	}
	conn, err := connect(ctx, fo.pg)
	if err != nil {
		r.fail(where, "cannot connect to the follower", err.Error(), false)
		return
	}
	defer conn.Close(ctx)
	got, err := takeFingerprint(ctx, conn, opener(fo.pg), amcheck(fo.pg))
	if err != nil {
		r.fail(where, "cannot read the follower", err.Error(), false)
		return
	}
	r.rep.Followers++
	if d := Diff(cl.end.Restored(), got); len(d) > 0 {
		r.fail(where, fmt.Sprintf("the follower differs from %s's last state", ClusterName(cl.idx)),
			strings.Join(d, "\n")+"\n"+fo.fetched.String()+"\nserver log:\n"+tailFile(fo.pg.LogFile(), 25), false)
	}
}

// currentTimeline is the timeline a cluster writes WAL on.
func currentTimeline(ctx context.Context, conn *pgx.Conn) (uint32, error) {
	var seg string
	if err := conn.QueryRow(ctx, "select pg_walfile_name(pg_current_wal_insert_lsn())").Scan(&seg); err != nil {
		return 0, err
	}
	tl, err := strconv.ParseUint(seg[:8], 16, 32)
	if err != nil {
		return 0, fmt.Errorf("timeline of %s: %w", seg, err)
	}
	return uint32(tl), nil
}
