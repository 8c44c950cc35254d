// Package torture is walgo's randomized, seeded restore-equivalence harness.
//
// A seed makes a plan (Generate): a workload of SQL steps on a source
// cluster, interleaved with full and delta backup-push runs, recorded
// points, and forks on new timelines that archive into the same repository.
// Run executes the plan against real PostgreSQL and the walgo binary,
// takes a fingerprint of the database at every point and at every backup,
// then restores each point with walgo for every kind of recovery target
// (time, LSN, xid, restore point name, end of backup, end of the archive),
// once letting walgo choose the backup and once from named backups, starts
// Postgres on each restore, waits for the target and compares
// fingerprints. A difference is a Failure that carries the seed, the plan
// and the command that runs the same seed again.
//
// The plan is a pure function of the seed, the scale and the features, so
// the same command replays the same workload; what Postgres does with it
// (LSNs, page layout) may vary slightly from run to run, which is why a
// failure also lists the steps.
package torture

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
)

// Feature is one part of the workload that a run may leave out (while the
// walgo fix it needs is not in yet). AllFeatures has every one.
type Feature string

// The features. Every one is on in AllFeatures.
const (
	// Tablespace: a tablespace outside PGDATA; tables are created in it
	// and moved in and out (ALTER TABLE SET TABLESPACE). Restores map it
	// to a fresh folder.
	Tablespace Feature = "tablespace"
	// ChecksumsOff: some seeds run a source without data checksums and
	// with wal_log_hints off.
	ChecksumsOff Feature = "checksums-off"
	// Deltas: backup-push --delta, in chains of at least three deltas.
	Deltas Feature = "deltas"
	// ColdChanges: UPDATE and DELETE on rows of pages frozen by VACUUM
	// (FREEZE), and deleting a table's tail so VACUUM truncates it.
	ColdChanges Feature = "cold-changes"
	// Unlogged: unlogged tables (empty after a restore).
	Unlogged Feature = "unlogged"
	// Prepared: prepared transactions, committed or rolled back later.
	Prepared Feature = "prepared"
	// Toast: large values stored out of line.
	Toast Feature = "toast"
	// DDL: CREATE/DROP TABLE, TRUNCATE and CREATE INDEX during the run
	// (the first tables and their primary keys are always made).
	DDL Feature = "ddl"
	// Fork: a point restored with walgo, promoted on a new timeline,
	// archiving into the same repository, with its own load and backups
	// while the primary goes on.
	Fork Feature = "fork"
	// NameTargets: restores to restore points (recovery_target_name).
	NameTargets Feature = "name-targets"
	// Immediate: restores to the end of each backup
	// (backup-fetch --target-immediate).
	Immediate Feature = "immediate"
	// NamedBackups: restores from each backup that covers a point, named
	// on the command line, besides the one walgo chooses.
	NamedBackups Feature = "named-backups"
	// LoadDuringBackup: some backups run while another session keeps
	// updating rows of a table (torture_load) on many pages, so pages
	// change while backup-push reads them. Such a backup has no
	// end-of-backup restore: what it holds at its end is whatever the load
	// had committed then; the points after it are restored through it.
	LoadDuringBackup Feature = "load-during-backup"
	// Follower: a standby restored with backup-fetch --standby replays
	// the primary's archive (forks archiving into the same repository)
	// while the run goes on; at the end it must have the primary's state.
	Follower Feature = "follower"
	// Databases: databases made from a template holding a table
	// (CREATE DATABASE with STRATEGY FILE_COPY, whose files keep the
	// template's page LSNs, or WAL_LOG), moved between tablespaces (ALTER
	// DATABASE SET TABLESPACE, a file copy too) and dropped.
	Databases Feature = "databases"
	// S3: some seeds keep the repository on a real S3 server
	// (versitygw) instead of in a folder.
	S3 Feature = "s3"
	// BeyondArchive: restores to a time, an LSN and a restore point name
	// that the archive does not reach must be refused by backup-fetch,
	// before anything is restored.
	BeyondArchive Feature = "beyond-archive"
)

// Features is a set of features.
type Features map[Feature]bool

// AllFeatures is every feature.
func AllFeatures() Features {
	f := Features{}
	for _, x := range []Feature{Tablespace, ChecksumsOff, Deltas, ColdChanges, Unlogged, Prepared, Toast,
		DDL, Fork, NameTargets, Immediate, NamedBackups, BeyondArchive, LoadDuringBackup, S3, Follower, Databases} {
		f[x] = true
	}
	return f
}

// Without returns a copy of f without the given features.
func (f Features) Without(xs ...Feature) Features {
	g := Features{}
	for k, v := range f {
		g[k] = v
	}
	for _, x := range xs {
		delete(g, x)
	}
	return g
}

// String lists the features, sorted, comma separated.
func (f Features) String() string {
	var s []string
	for k, v := range f {
		if v {
			s = append(s, string(k))
		}
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// ParseFeatures reads a String back; "all" is AllFeatures, "" is none.
func ParseFeatures(s string) (Features, error) {
	if s == "all" {
		return AllFeatures(), nil
	}
	f := Features{}
	all := AllFeatures()
	for x := range strings.SplitSeq(s, ",") {
		if x = strings.TrimSpace(x); x == "" {
			continue
		}
		if !all[Feature(x)] {
			return nil, fmt.Errorf("unknown torture feature %q (known: %s)", x, all)
		}
		f[Feature(x)] = true
	}
	return f, nil
}

// Kind is what a step does.
type Kind string

// The step kinds.
const (
	KindSQL    Kind = "sql"    // run Step.SQL in one session (one or more statements)
	KindBackup Kind = "backup" // walgo backup-push, with --delta if Step.Delta
	KindPoint  Kind = "point"  // commit a marker, make restore point Step.Name, record the point and its fingerprint
	KindFork   Kind = "fork"   // restore point Step.Origin with walgo (target Step.Target), promote, archive into the repository
	// KindFollower starts a standby of Step.Cluster restored with walgo
	// (backup-fetch --standby) that replays the archive until the run
	// ends, when it must hold the cluster's last state.
	KindFollower Kind = "follower"
)

// TargetKind is a kind of recovery target.
type TargetKind string

// The recovery target kinds.
const (
	TargetTime      TargetKind = "time"
	TargetLSN       TargetKind = "lsn"
	TargetXID       TargetKind = "xid"
	TargetName      TargetKind = "name"
	TargetImmediate TargetKind = "immediate" // the end of one backup
	TargetEnd       TargetKind = "end"       // no target: replay to the end of the archive
)

// Step is one step of a plan.
type Step struct {
	N       int    // position in the plan, from 1
	Cluster int    // 0 is the primary, i is fork i
	Kind    Kind   //
	SQL     string // KindSQL
	What    string // KindSQL: a short description
	Delta   bool   // KindBackup: --delta
	Load    bool   // KindBackup: torture_load is updated while it runs
	Backup  int    // KindBackup: the backup's number, from 1
	Point   int    // KindPoint: the point's number, from 1
	Name    string // KindPoint: the restore point's name
	// KindFork: the point the fork restores, and how.
	Origin int
	Target TargetKind
}

// String is the step as one line of the plan.
func (s Step) String() string {
	on := ClusterName(s.Cluster)
	switch s.Kind {
	case KindBackup:
		cmd := "walgo backup-push"
		if s.Delta {
			cmd += " --delta"
		}
		if s.Load {
			cmd += ", while another session updates torture_load"
		}
		return fmt.Sprintf("%3d %s: backup %d: %s", s.N, on, s.Backup, cmd)
	case KindPoint:
		return fmt.Sprintf("%3d %s: point %d (marker commit, restore point %q, fingerprint)", s.N, on, s.Point, s.Name)
	case KindFork:
		return fmt.Sprintf("%3d %s: fork: walgo backup-fetch to point %d by %s, promote, archive into the same repository", s.N, on, s.Origin, s.Target)
	case KindFollower:
		return fmt.Sprintf("%3d %s: follower: walgo backup-fetch --standby, replaying the archive until the end", s.N, on)
	}
	return fmt.Sprintf("%3d %s: %s: %s", s.N, on, s.What, oneLine(s.SQL))
}

// ClusterName names cluster i of a plan: "primary", "fork1", ...
func ClusterName(i int) string {
	if i == 0 {
		return "primary"
	}
	return fmt.Sprintf("fork%d", i)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Plan is a workload: the source's settings and the steps.
type Plan struct {
	Seed      uint64
	Scale     int
	Features  Features
	Checksums bool // initdb -k; false also sets wal_log_hints = off
	S3        bool // the repository is on an S3 server, not in a folder
	Steps     []Step
}

// String lists the plan, one step a line.
func (p *Plan) String() string {
	var b strings.Builder
	repo := "file"
	if p.S3 {
		repo = "s3"
	}
	fmt.Fprintf(&b, "seed %d, scale %d, data checksums %v, %s repository, features %s\n", p.Seed, p.Scale, p.Checksums, repo, p.Features)
	for _, s := range p.Steps {
		b.WriteString(s.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TablespaceName is the tablespace outside PGDATA the workload uses.
const TablespaceName = "torture_ts"

// TemplateDatabase is the database the workload's other databases are
// copied from: it holds one table, tpl_t.
const TemplateDatabase = "torture_tpl"

// table is the generator's model of one table: enough to write SQL that
// never blocks and always touches rows that exist.
type table struct {
	name      string
	nextID    int64 // ids below were handed out
	minLive   int64 // ids below are gone (TRUNCATE)
	frozen    int64 // ids in [minLive, frozen) were frozen by VACUUM (FREEZE): cold
	unlogged  bool
	inTS      bool // in TablespaceName
	kIndex    bool
	heldBy    string // a prepared transaction holds a lock on the table
	heldLo    int64  // ... and row locks on ids [heldLo, heldHi]
	heldHi    int64
	toast     bool // has large values
	fillfactr int
}

func (t *table) clone() *table { c := *t; return &c }

// model is the generator's view of one cluster.
type model struct {
	tables   []*table
	prepared []string // open prepared transactions, oldest first
	// horizon: while any is open, the ids each table had when the oldest
	// was prepared; VACUUM (FREEZE) freezes no row newer.
	horizon map[string]int64
	dbs     map[string]bool // the databases made from TemplateDatabase: in TablespaceName?
}

func (m *model) clone() *model {
	c := &model{prepared: append([]string(nil), m.prepared...), dbs: map[string]bool{}}
	if m.horizon != nil {
		c.horizon = map[string]int64{}
		for t, id := range m.horizon {
			c.horizon[t] = id
		}
	}
	for db, inTS := range m.dbs {
		c.dbs[db] = inTS
	}
	for _, t := range m.tables {
		c.tables = append(c.tables, t.clone())
	}
	return c
}

type gen struct {
	rng      *rand.Rand
	p        *Plan
	f        Features
	scale    int
	models   []*model       // per cluster
	atPoint  map[int]*model // the model right after each point
	chainLen []int          // per cluster: deltas since the last full backup (-1: no backup yet)
	todo     []string       // kinds of step not made yet
	tries    map[string]int // prerequisites made for each
	dbNo     int
	tableNo  int
	gidNo    int
	pointNo  int
	backupNo int
}

// Generate makes the plan of a seed. scale (at least 1) sets how many
// rounds of load and backups there are and how many rows they touch; only
// the features in f appear.
func Generate(seed uint64, scale int, f Features) *Plan {
	scale = max(scale, 1)
	g := &gen{
		rng:     rand.New(rand.NewPCG(seed, 0x746f7274757265)),
		p:       &Plan{Seed: seed, Scale: scale, Features: f, Checksums: true},
		f:       f,
		scale:   scale,
		atPoint: map[int]*model{},
		tries:   map[string]int{},
	}
	if f[ChecksumsOff] && g.rng.IntN(3) == 0 {
		g.p.Checksums = false
	}
	if f[S3] && g.rng.IntN(3) == 0 {
		g.p.S3 = true
	}
	g.addCluster(&model{dbs: map[string]bool{}}, -1)

	// The first tables, loaded and frozen, before the first backup.
	for range 2 + g.rng.IntN(2) {
		t := g.createTable(0, false)
		g.insert(0, t, g.rows(), t.toast)
	}
	for _, t := range g.models[0].tables {
		if g.rng.IntN(3) > 0 {
			g.vacuum(0, t, true)
		}
	}
	g.sql(0, "checkpoint", "checkpoint")
	g.backup(0)

	rounds := 2 + scale
	forkAt, followAt := -1, -1
	if f[Fork] {
		forkAt = 1 + g.rng.IntN(rounds-2)
	}
	if f[Follower] {
		followAt = g.rng.IntN(rounds - 1)
	}
	for r := range rounds {
		for c := range g.models {
			// At least one point a round, before or after the backup.
			for range 2 + g.rng.IntN(3+scale) {
				g.op(c)
			}
			before := g.rng.IntN(2) == 0
			if before {
				g.point(c)
			}
			g.backup(c)
			if !before || g.rng.IntN(4) == 0 {
				g.op(c)
				g.point(c)
			}
		}
		if r == followAt {
			g.add(Step{Cluster: 0, Kind: KindFollower})
		}
		if r == forkAt {
			g.fork()
		}
	}
	// What the rounds did not get to, the primary does now.
	for range 3 * len(g.todo) {
		if len(g.todo) == 0 {
			break
		}
		g.op(0)
	}
	for c := range g.models {
		g.op(c)
		g.point(c)
	}
	return g.p
}

func (g *gen) addCluster(m *model, chain int) int {
	g.models = append(g.models, m)
	g.chainLen = append(g.chainLen, chain)
	return len(g.models) - 1
}

func (g *gen) add(s Step) {
	s.N = len(g.p.Steps) + 1
	g.p.Steps = append(g.p.Steps, s)
}

func (g *gen) sql(c int, what, sql string) {
	g.add(Step{Cluster: c, Kind: KindSQL, What: what, SQL: sql})
}

// rows is how many rows one insert adds.
func (g *gen) rows() int {
	return 200*g.scale + g.rng.IntN(800*g.scale)
}

// backup adds a backup-push on cluster c: the first of a cluster is full
// (a fork's first may be a delta on the chain it inherited), then at least
// three deltas, then a full one now and then.
func (g *gen) backup(c int) {
	g.backupNo++
	delta := false
	if g.f[Deltas] && g.chainLen[c] >= 0 {
		delta = g.chainLen[c] < 3 || g.rng.IntN(4) > 0
	}
	if delta {
		g.chainLen[c]++
	} else {
		g.chainLen[c] = 0
	}
	load := g.f[LoadDuringBackup] && g.backupNo > 1 && g.rng.IntN(3) == 0
	g.add(Step{Cluster: c, Kind: KindBackup, Delta: delta, Backup: g.backupNo, Load: load})
}

// point adds a recorded point on cluster c.
func (g *gen) point(c int) {
	g.pointNo++
	name := fmt.Sprintf("torture_s%d_p%d", g.p.Seed, g.pointNo)
	g.add(Step{Cluster: c, Kind: KindPoint, Point: g.pointNo, Name: name})
	g.atPoint[g.pointNo] = g.models[c].clone()
}

// fork restores a point of the primary that a backup covers into a new
// cluster, which then takes load and backups of its own.
//
// The point has no prepared transaction open: PostgreSQL 15 cannot replay
// across the fork's timeline switch with hot_standby on while a
// transaction prepared before the switch is still open (it reads the
// PREPARE record back from the old timeline's copy of the switch segment,
// which recovery fetched only under the new timeline's name: "FATAL:
// requested WAL segment pg_wal/... has already been removed"; the same
// with cp as restore_command), so no restore of the fork's points from a
// backup taken before the fork could work.
func (g *gen) fork() {
	var cands []int
	for _, s := range g.p.Steps {
		if s.Kind == KindBackup && s.Cluster == 0 {
			for _, t := range g.p.Steps[s.N:] {
				if t.Kind == KindPoint && t.Cluster == 0 && len(g.atPoint[t.Point].prepared) == 0 {
					cands = append(cands, t.Point)
				}
			}
			break
		}
	}
	if len(cands) == 0 {
		for len(g.models[0].prepared) > 0 {
			g.finishPrepared(0, g.rng.IntN(2) == 0)
		}
		g.op(0)
		for len(g.models[0].prepared) > 0 { // the op may have prepared one
			g.finishPrepared(0, true)
		}
		g.point(0)
		cands = append(cands, g.pointNo)
	}
	origin := cands[g.rng.IntN(len(cands))]
	kinds := []TargetKind{TargetTime, TargetLSN, TargetXID}
	if g.f[NameTargets] {
		kinds = append(kinds, TargetName)
	}
	m := g.atPoint[origin].clone()
	// The fork's unlogged tables come back empty.
	for _, t := range m.tables {
		if t.unlogged {
			t.minLive, t.frozen = t.nextID, t.nextID
		}
	}
	// The fork's chain: a delta on it may build on the primary's chain.
	c := g.addCluster(m, g.chainAt(origin))
	g.add(Step{Cluster: c, Kind: KindFork, Origin: origin, Target: kinds[g.rng.IntN(len(kinds))]})
}

// chainAt is the primary's delta chain length at a point.
func (g *gen) chainAt(point int) int {
	n := -1
	for _, s := range g.p.Steps {
		if s.Kind == KindPoint && s.Point == point {
			break
		}
		if s.Kind == KindBackup && s.Cluster == 0 {
			if s.Delta {
				n++
			} else {
				n = 0
			}
		}
	}
	return n
}

// op adds one random load or maintenance step on cluster c.
func (g *gen) op(c int) {
	m := g.models[c]
	type choice struct {
		name string
		w    int
		do   func() bool
	}
	choices := []choice{
		{"insert", 30, func() bool { return g.insertAny(c, false) }},
		{"update hot", 10, func() bool { return g.change(c, "update", false) }},
		{"delete hot", 8, func() bool { return g.change(c, "delete", false) }},
		{"vacuum", 6, func() bool { return g.vacuumAny(c, false) }},
		{"vacuum freeze", 6, func() bool { return g.vacuumAny(c, true) }},
		{"checkpoint", 4, func() bool { g.sql(c, "checkpoint", "checkpoint"); return true }},
		{"switch wal", 3, func() bool { g.sql(c, "switch wal", "select pg_switch_wal()"); return true }},
		{"sequence", 3, func() bool {
			g.sql(c, "sequence", fmt.Sprintf("select count(nextval('torture_seq')) from generate_series(1, %d)", 1+g.rng.IntN(100)))
			return true
		}},
	}
	if g.f[Toast] {
		choices = append(choices, choice{"insert large values", 6, func() bool { return g.insertAny(c, true) }})
	}
	if g.f[ColdChanges] {
		choices = append(choices,
			choice{"update cold", 10, func() bool { return g.change(c, "update", true) }},
			choice{"delete cold", 10, func() bool { return g.change(c, "delete", true) }},
			choice{"delete tail", 4, func() bool { return g.deleteTail(c) }})
	}
	if g.f[DDL] {
		choices = append(choices,
			choice{"create table", 5, func() bool { return g.newTable(c, false) }},
			choice{"drop table", 2, func() bool { return g.dropTable(c) }},
			choice{"truncate", 3, func() bool { return g.truncate(c) }},
			choice{"create index", 4, func() bool { return g.createIndex(c) }})
		if g.f[Unlogged] {
			choices = append(choices, choice{"create unlogged table", 2, func() bool { return g.newTable(c, true) }})
		}
	}
	if g.f[Tablespace] {
		choices = append(choices, choice{"set tablespace", 4, func() bool { return g.moveTable(c) }})
	}
	if g.f[Databases] {
		choices = append(choices,
			choice{"create database", 3, func() bool { return g.createDatabase(c) }},
			choice{"drop database", 1, func() bool { return g.dropDatabase(c) }})
		if g.f[Tablespace] {
			choices = append(choices, choice{"move database", 2, func() bool { return g.moveDatabase(c) }})
		}
	}
	if g.f[Prepared] {
		choices = append(choices,
			choice{"prepare", 4, func() bool { return g.prepare(c) }},
			choice{"commit prepared", 3, func() bool { return g.finishPrepared(c, true) }},
			choice{"rollback prepared", 2, func() bool { return g.finishPrepared(c, false) }})
	}
	// Every kind of step comes at least once, early, in an order the seed
	// chooses; then the mix is random.
	if g.todo == nil {
		for _, ch := range choices {
			g.todo = append(g.todo, ch.name)
		}
		g.rng.Shuffle(len(g.todo), func(i, j int) { g.todo[i], g.todo[j] = g.todo[j], g.todo[i] })
	}
	// A step that cannot be made yet gets what it needs first.
	needs := map[string]string{"drop database": "create database", "move database": "create database", "update hot": "insert", "delete hot": "insert", "update cold": "vacuum freeze",
		"delete cold": "vacuum freeze", "commit prepared": "prepare", "rollback prepared": "prepare"}
	byName := map[string]choice{}
	for _, ch := range choices {
		byName[ch.name] = ch
	}
	for i, name := range g.todo {
		if byName[name].do() {
			g.todo = append(g.todo[:i:i], g.todo[i+1:]...)
			return
		}
		if g.tries[name] < 3 {
			if pre, ok := byName[needs[name]]; ok && pre.do() {
				g.tries[name]++
				return
			}
		}
	}
	total := 0
	for _, ch := range choices {
		total += ch.w
	}
	for range 20 {
		n := g.rng.IntN(total)
		for _, ch := range choices {
			if n < ch.w {
				if ch.do() {
					return
				}
				break
			}
			n -= ch.w
		}
	}
	_ = m
	g.sql(c, "checkpoint", "checkpoint")
}

func (g *gen) pick(c int, ok func(*table) bool) *table {
	var ts []*table
	for _, t := range g.models[c].tables {
		if ok(t) {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return nil
	}
	return ts[g.rng.IntN(len(ts))]
}

// newTable creates a table (at most six) and fills it.
func (g *gen) newTable(c int, unlogged bool) bool {
	if len(g.models[c].tables) >= 6 {
		return false
	}
	t := g.createTable(c, unlogged)
	g.insert(c, t, g.rows(), false)
	return true
}

func (g *gen) createTable(c int, unlogged bool) *table {
	g.tableNo++
	t := &table{name: fmt.Sprintf("t%d", g.tableNo), nextID: 1, minLive: 1, frozen: 1,
		fillfactr: 70 + 10*g.rng.IntN(4)}
	// The primary and its forks share table names up to the fork; a
	// cluster's own new tables get names no other cluster uses.
	if c > 0 {
		t.name = fmt.Sprintf("f%d_t%d", c, g.tableNo)
	}
	t.unlogged = unlogged
	t.inTS = g.f[Tablespace] && g.rng.IntN(3) == 0
	t.toast = g.f[Toast] && (g.tableNo == 1 || g.rng.IntN(2) == 0)
	kind := "table"
	if t.unlogged {
		kind = "unlogged table"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "create %s %s (id bigint primary key, k int not null, v text not null, s bigint not null default nextval('torture_seq'), big text) with (autovacuum_enabled = off, fillfactor = %d)",
		kind, t.name, t.fillfactr)
	if t.inTS {
		fmt.Fprintf(&b, " tablespace %s", TablespaceName)
	}
	fmt.Fprintf(&b, "; alter table %s alter column big set storage external", t.name)
	g.models[c].tables = append(g.models[c].tables, t)
	g.sql(c, "create "+kind, b.String())
	return t
}

func (g *gen) insertAny(c int, big bool) bool {
	t := g.pick(c, func(t *table) bool { return !big || t.toast })
	if t == nil {
		return false
	}
	g.insert(c, t, g.rows(), big)
	return true
}

// insertSQL inserts ids [from, to) into t; every row is a function of its
// id, and a tenth of them carry a large value when the table has those.
func insertSQL(t *table, from, to int64, big bool) string {
	bigExpr := "null"
	if big {
		// ~4 KiB of md5 hex, stored out of line (storage external).
		bigExpr = "case when g % 10 = 0 then (select string_agg(md5(g::text || ':' || i::text), '') from generate_series(1, 128) i) end"
	}
	return fmt.Sprintf("insert into %s (id, k, v, big) select g, (g * 7919) %% 1000, md5(g::text), %s from generate_series(%d, %d) g",
		t.name, bigExpr, from, to-1)
}

func (g *gen) insert(c int, t *table, n int, big bool) {
	from := t.nextID
	t.nextID += int64(n)
	what := "insert"
	if big {
		what = "insert with large values"
	}
	g.sql(c, what, insertSQL(t, from, t.nextID, big))
}

// change updates or deletes every m-th row of a range of t: cold rows
// (frozen pages) or hot ones (the newest).
func (g *gen) change(c int, op string, cold bool) bool {
	t := g.pick(c, func(t *table) bool {
		if cold {
			return t.frozen-t.minLive > 20
		}
		return t.nextID-max(t.frozen, t.minLive) > 20
	})
	if t == nil {
		return false
	}
	lo, hi := max(t.frozen, t.minLive), t.nextID-1
	if cold {
		lo, hi = t.minLive, t.frozen-1
	}
	span := hi - lo + 1
	a := lo + g.rng.Int64N(span/2+1)
	b := min(hi, a+span/4+g.rng.Int64N(span/2+1))
	mod := 2 + g.rng.IntN(9)
	where := fmt.Sprintf("id between %d and %d and id %% %d = %d%s", a, b, mod, g.rng.IntN(mod), g.notHeld(t))
	heat := "hot"
	if cold {
		heat = "cold"
	}
	switch {
	case op == "delete":
		g.sql(c, "delete "+heat, fmt.Sprintf("delete from %s where %s", t.name, where))
	case g.rng.IntN(2) == 0:
		// Only a column no index covers: a HOT update where the page has room.
		g.sql(c, "update "+heat+" (v)", fmt.Sprintf("update %s set v = md5(v) where %s", t.name, where))
	default:
		g.sql(c, "update "+heat+" (k, v)", fmt.Sprintf("update %s set k = k + 1, v = v || 'u' where %s", t.name, where))
	}
	return true
}

// notHeld keeps a statement off the rows a prepared transaction locked.
func (g *gen) notHeld(t *table) string {
	if t.heldBy == "" || t.heldHi < t.heldLo {
		return ""
	}
	return fmt.Sprintf(" and id not between %d and %d", t.heldLo, t.heldHi)
}

// deleteTail deletes the newest rows of a table and vacuums it, so the
// vacuum truncates its tail pages; later inserts extend it again.
func (g *gen) deleteTail(c int) bool {
	t := g.pick(c, func(t *table) bool { return t.nextID-t.minLive > 100 && t.heldBy == "" })
	if t == nil {
		return false
	}
	from := t.nextID - 1 - g.rng.Int64N((t.nextID-t.minLive)/2)
	g.sql(c, "delete tail", fmt.Sprintf("delete from %s where id >= %d", t.name, from))
	g.vacuum(c, t, false)
	return true
}

func (g *gen) vacuumAny(c int, freeze bool) bool {
	t := g.pick(c, func(*table) bool { return true })
	if t == nil {
		return false
	}
	g.vacuum(c, t, freeze)
	return true
}

func (g *gen) vacuum(c int, t *table, freeze bool) {
	if !freeze {
		g.sql(c, "vacuum", "vacuum "+t.name)
		return
	}
	// An open prepared transaction holds the freeze horizon back: only
	// the rows that were there when the oldest open one was prepared get
	// frozen.
	if limit, held := g.models[c].horizon[t.name]; held {
		t.frozen = max(t.frozen, min(limit, t.nextID))
	} else if len(g.models[c].prepared) == 0 {
		t.frozen = t.nextID
	}
	g.sql(c, "vacuum freeze", "vacuum (freeze) "+t.name)
}

func (g *gen) dropTable(c int) bool {
	m := g.models[c]
	if len(m.tables) <= 2 {
		return false
	}
	t := g.pick(c, func(t *table) bool { return t.heldBy == "" })
	if t == nil {
		return false
	}
	for i, x := range m.tables {
		if x == t {
			m.tables = append(m.tables[:i], m.tables[i+1:]...)
			break
		}
	}
	g.sql(c, "drop table", "drop table "+t.name)
	return true
}

func (g *gen) truncate(c int) bool {
	t := g.pick(c, func(t *table) bool { return t.heldBy == "" && t.nextID > t.minLive })
	if t == nil {
		return false
	}
	t.minLive, t.frozen = t.nextID, t.nextID
	g.sql(c, "truncate", "truncate "+t.name)
	if g.rng.IntN(2) == 0 {
		g.insert(c, t, g.rows(), false)
	}
	return true
}

func (g *gen) createIndex(c int) bool {
	t := g.pick(c, func(t *table) bool { return t.heldBy == "" && !t.kIndex })
	if t == nil {
		return false
	}
	t.kIndex = true
	ts := ""
	if g.f[Tablespace] && g.rng.IntN(3) == 0 {
		ts = " tablespace " + TablespaceName
	}
	g.sql(c, "create index", fmt.Sprintf("create index %s_k on %s (k)%s", t.name, t.name, ts))
	return true
}

func (g *gen) moveTable(c int) bool {
	t := g.pick(c, func(t *table) bool { return t.heldBy == "" })
	if t == nil {
		return false
	}
	t.inTS = !t.inTS
	to := "pg_default"
	if t.inTS {
		to = TablespaceName
	}
	g.sql(c, "set tablespace", fmt.Sprintf("alter table %s set tablespace %s", t.name, to))
	return true
}

// prepare opens a prepared transaction that inserts new rows into a table
// and updates a few existing ones; the table is then off limits for DDL
// and those rows for other changes until it is finished.
func (g *gen) prepare(c int) bool {
	m := g.models[c]
	if len(m.prepared) >= 2 {
		return false
	}
	t := g.pick(c, func(t *table) bool { return t.heldBy == "" && t.nextID-t.minLive > 10 })
	if t == nil {
		return false
	}
	g.gidNo++
	gid := fmt.Sprintf("torture_g%d", g.gidNo)
	from := t.nextID
	t.nextID += int64(1 + g.rng.IntN(50))
	lo := t.minLive + g.rng.Int64N(from-t.minLive)
	hi := min(from-1, lo+int64(g.rng.IntN(20)))
	t.heldBy, t.heldLo, t.heldHi = gid, lo, hi
	if len(m.prepared) == 0 {
		m.horizon = map[string]int64{}
		for _, x := range m.tables {
			m.horizon[x.name] = x.nextID
		}
		m.horizon[t.name] = from
	}
	m.prepared = append(m.prepared, gid)
	g.sql(c, "prepare transaction", fmt.Sprintf("begin; %s; update %s set v = v || 'p' where id between %d and %d; prepare transaction '%s'",
		insertSQL(t, from, t.nextID, false), t.name, lo, hi, gid))
	return true
}

// finishPrepared commits or rolls back the oldest open prepared
// transaction.
func (g *gen) finishPrepared(c int, commit bool) bool {
	m := g.models[c]
	if len(m.prepared) == 0 {
		return false
	}
	gid := m.prepared[0]
	m.prepared = m.prepared[1:]
	if len(m.prepared) == 0 {
		m.horizon = nil
	}
	for _, t := range m.tables {
		if t.heldBy == gid {
			t.heldBy = ""
		}
	}
	if !commit {
		g.sql(c, "rollback prepared", fmt.Sprintf("rollback prepared '%s'", gid))
	} else {
		g.sql(c, "commit prepared", fmt.Sprintf("commit prepared '%s'", gid))
	}
	return true
}

// createDatabase copies TemplateDatabase into a new database, by a file
// copy or through WAL, sometimes straight into the tablespace.
func (g *gen) createDatabase(c int) bool {
	m := g.models[c]
	if len(m.dbs) >= 3 {
		return false
	}
	g.dbNo++
	db := fmt.Sprintf("%s_db%d", Database, g.dbNo)
	strategy := []string{"file_copy", "wal_log"}[g.rng.IntN(2)]
	inTS := g.f[Tablespace] && g.rng.IntN(3) == 0
	sql := fmt.Sprintf("create database %s template %s strategy %s", db, TemplateDatabase, strategy)
	if inTS {
		sql += " tablespace " + TablespaceName
	}
	m.dbs[db] = inTS
	g.sql(c, "create database", sql)
	return true
}

func (g *gen) pickDB(c int) string {
	var dbs []string
	for db := range g.models[c].dbs {
		dbs = append(dbs, db)
	}
	if len(dbs) == 0 {
		return ""
	}
	sort.Strings(dbs)
	return dbs[g.rng.IntN(len(dbs))]
}

func (g *gen) dropDatabase(c int) bool {
	db := g.pickDB(c)
	if db == "" {
		return false
	}
	delete(g.models[c].dbs, db)
	g.sql(c, "drop database", "drop database "+db)
	return true
}

// moveDatabase moves a database to the other tablespace: Postgres copies
// its files, page LSNs and all.
func (g *gen) moveDatabase(c int) bool {
	db := g.pickDB(c)
	if db == "" {
		return false
	}
	m := g.models[c]
	m.dbs[db] = !m.dbs[db]
	to := "pg_default"
	if m.dbs[db] {
		to = TablespaceName
	}
	g.sql(c, "move database", fmt.Sprintf("alter database %s set tablespace %s", db, to))
	return true
}
