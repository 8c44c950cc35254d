package torture

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Database is the database the workload writes; fingerprints cover it.
const Database = "torture"

// TableFP is what a fingerprint knows of one table.
type TableFP struct {
	Name        string
	Unlogged    bool
	Tablespace  string
	Rows        int64  // count(*) by a sequential scan
	Hash        string // sum over the rows of the first 64 bits of md5(row::text): order does not matter
	IndexRows   int64  // count(*) by an index-only scan of the primary key (it trusts the visibility map)
	IndexSum    string // sum(id) by that scan
	NotVisible  int64  // pg_check_visible: tuples on pages marked all-visible that are not
	NotFrozen   int64  // pg_check_frozen: tuples on pages marked all-frozen that are not
	IndexChecks string // "" or why the index-only scan could not be used
}

// SequenceFP is one sequence's state.
type SequenceFP struct {
	Name      string
	LastValue int64
	LogCnt    int64
	IsCalled  bool
}

// Fingerprint is the state of the workload's database at one moment.
type Fingerprint struct {
	Tables    []TableFP
	Sequences []SequenceFP
	// Prepared lists the prepared transactions as "gid xid owner
	// database prepared-at". A restore brings them back prepared, with
	// the same ids and time: equal means this list is equal (the rows they
	// wrote stay invisible, so they do not show in Tables).
	Prepared []string
	Amcheck  string // pg_amcheck --heapallindexed output when it found a problem, else ""
}

// querier is what a fingerprint needs of a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// takeFingerprint reads the workload's database through conn, and the
// other databases the workload made (named torture_...) through
// connections open makes; amcheck runs pg_amcheck --heapallindexed on
// them all and returns its complaints ("" when clean).
func takeFingerprint(ctx context.Context, conn querier, open func(ctx context.Context, db string) (*pgx.Conn, error),
	amcheck func(context.Context) (string, error)) (*Fingerprint, error) {
	fp := &Fingerprint{}
	// pg_amcheck runs meanwhile: it only reads.
	type checked struct {
		out string
		err error
	}
	amchecked := make(chan checked, 1)
	go func() {
		out, err := amcheck(ctx)
		amchecked <- checked{out, err}
	}()
	defer func() { <-amchecked }() // on an early return: do not leave it running
	var err error
	if fp.Tables, err = tablesFingerprint(ctx, conn, ""); err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `select datname::text from pg_database where starts_with(datname, $1) order by 1`, Database+"_")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	for _, db := range dbs {
		c, err := open(ctx, db)
		if err != nil {
			return nil, err
		}
		ts, err := tablesFingerprint(ctx, c, db+"/")
		c.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("database %s: %w", db, err)
		}
		fp.Tables = append(fp.Tables, ts...)
	}

	rows, err = conn.Query(ctx, `select relname::text from pg_class where relnamespace = 'public'::regnamespace and relkind = 'S' order by 1`)
	if err != nil {
		return nil, fmt.Errorf("list sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list sequences: %w", err)
	}
	for _, s := range seqs {
		sq := SequenceFP{Name: s}
		if err := conn.QueryRow(ctx, "select last_value, log_cnt, is_called from "+pgx.Identifier{s}.Sanitize()).
			Scan(&sq.LastValue, &sq.LogCnt, &sq.IsCalled); err != nil {
			return nil, fmt.Errorf("sequence %s: %w", s, err)
		}
		fp.Sequences = append(fp.Sequences, sq)
	}

	rows, err = conn.Query(ctx, `select gid || ' ' || transaction::text || ' ' || owner::text || ' ' || database::text || ' ' ||
		to_char(prepared at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') from pg_prepared_xacts order by gid`)
	if err != nil {
		return nil, fmt.Errorf("prepared transactions: %w", err)
	}
	if fp.Prepared, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, fmt.Errorf("prepared transactions: %w", err)
	}

	a := <-amchecked
	amchecked <- a // for the deferred receive
	if a.err != nil {
		return nil, a.err
	}
	fp.Amcheck = a.out
	return fp, nil
}

// tablesFingerprint fingerprints the tables of one database; their names
// get prefix.
func tablesFingerprint(ctx context.Context, conn querier, prefix string) ([]TableFP, error) {
	rows, err := conn.Query(ctx, `select c.relname::text, c.relpersistence = 'u', coalesce(ts.spcname::text, 'pg_default')
		from pg_class c left join pg_tablespace ts on ts.oid = c.reltablespace
		where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' order by 1`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var tables []TableFP
	for rows.Next() {
		var t TableFP
		if err := rows.Scan(&t.Name, &t.Unlogged, &t.Tablespace); err != nil {
			rows.Close()
			return nil, err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for i := range tables {
		if err := tableFingerprint(ctx, conn, &tables[i]); err != nil {
			return nil, fmt.Errorf("table %s: %w", tables[i].Name, err)
		}
		tables[i].Name = prefix + tables[i].Name
	}
	return tables, nil
}

func tableFingerprint(ctx context.Context, conn querier, t *TableFP) error {
	name := pgx.Identifier{t.Name}.Sanitize()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	// The rows by a sequential scan only.
	for _, s := range []string{"set local enable_indexscan = off", "set local enable_indexonlyscan = off", "set local enable_bitmapscan = off"} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	if err := tx.QueryRow(ctx, `select count(*), coalesce(sum(('x' || left(md5(x::text), 16))::bit(64)::bigint::numeric), 0)::text from `+name+` x`).
		Scan(&t.Rows, &t.Hash); err != nil {
		return fmt.Errorf("sequential scan: %w", err)
	}
	// The same through an index-only scan, which takes a page's rows as
	// visible when the visibility map says all-visible.
	// (enable_indexscan = off would also rule out index-only scans.)
	for _, s := range []string{"set local enable_indexscan = on", "set local enable_indexonlyscan = on",
		"set local enable_seqscan = off"} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	q := `select count(*), coalesce(sum(id), 0)::text from ` + name + ` where id is not null`
	rows, err := tx.Query(ctx, "explain "+q)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	if !strings.Contains(strings.Join(plan, "\n"), "Index Only Scan") {
		t.IndexChecks = "no index-only scan: " + strings.Join(plan, " / ")
	}
	if err := tx.QueryRow(ctx, q).Scan(&t.IndexRows, &t.IndexSum); err != nil {
		return fmt.Errorf("index-only scan: %w", err)
	}
	if err := tx.QueryRow(ctx, `select (select count(*) from pg_check_visible($1::regclass)), (select count(*) from pg_check_frozen($1::regclass))`, name).
		Scan(&t.NotVisible, &t.NotFrozen); err != nil {
		return fmt.Errorf("pg_visibility: %w", err)
	}
	return nil
}

// Restored is what a restore of the moment fp was taken at must show: the
// same, except that unlogged tables are empty (Postgres resets them to
// their init fork after any recovery). Sequences are compared by
// sequenceRestored.
func (fp *Fingerprint) Restored() *Fingerprint {
	r := &Fingerprint{Prepared: slices.Clone(fp.Prepared), Sequences: slices.Clone(fp.Sequences), Amcheck: fp.Amcheck}
	for _, t := range fp.Tables {
		if t.Unlogged {
			t.Rows, t.Hash, t.IndexRows, t.IndexSum = 0, "0", 0, "0"
		}
		r.Tables = append(r.Tables, t)
	}
	return r
}

// sequenceRestored reports whether got is a state a recovery to the
// moment of want may leave a sequence in. nextval hands out log_cnt values
// ahead of its last WAL record, which logs last_value + log_cnt with
// log_cnt 0, and after a checkpoint the next nextval always writes such a
// record. So a recovery either replayed that record (last_value +
// log_cnt, 0) or none was needed because nothing called nextval since the
// redo point: then the page is exactly as the source had it. Either way
// the restored sequence never hands out a value the source had handed out
// before the moment.
func sequenceRestored(want, got SequenceFP) bool {
	if got == want {
		return true
	}
	return want.IsCalled && got.IsCalled && got.Name == want.Name &&
		got.LastValue == want.LastValue+want.LogCnt && got.LogCnt == 0
}

// Problems lists what is wrong with a fingerprint on its own: index-only
// scans that disagree with sequential scans, pg_visibility complaints,
// pg_amcheck findings.
func (fp *Fingerprint) Problems() []string {
	var p []string
	for _, t := range fp.Tables {
		if t.IndexChecks != "" {
			p = append(p, fmt.Sprintf("table %s: %s", t.Name, t.IndexChecks))
		}
		if t.IndexRows != t.Rows {
			p = append(p, fmt.Sprintf("table %s: %d rows by a sequential scan, %d by an index-only scan", t.Name, t.Rows, t.IndexRows))
		}
		if t.NotVisible != 0 {
			p = append(p, fmt.Sprintf("table %s: pg_check_visible: %d tuples on all-visible pages are not visible to all", t.Name, t.NotVisible))
		}
		if t.NotFrozen != 0 {
			p = append(p, fmt.Sprintf("table %s: pg_check_frozen: %d tuples on all-frozen pages are not frozen", t.Name, t.NotFrozen))
		}
	}
	if fp.Amcheck != "" {
		p = append(p, "pg_amcheck --heapallindexed: "+fp.Amcheck)
	}
	return p
}

// Diff lists how got differs from want, one line each; nil when equal.
func Diff(want, got *Fingerprint) []string {
	var d []string
	wt := map[string]TableFP{}
	for _, t := range want.Tables {
		wt[t.Name] = t
	}
	gt := map[string]TableFP{}
	for _, t := range got.Tables {
		gt[t.Name] = t
		w, ok := wt[t.Name]
		if !ok {
			d = append(d, fmt.Sprintf("table %s: should not exist (%d rows)", t.Name, t.Rows))
			continue
		}
		if w.Unlogged != t.Unlogged || w.Tablespace != t.Tablespace {
			d = append(d, fmt.Sprintf("table %s: unlogged %v in tablespace %s, want unlogged %v in %s", t.Name, t.Unlogged, t.Tablespace, w.Unlogged, w.Tablespace))
		}
		if w.Rows != t.Rows || w.Hash != t.Hash {
			d = append(d, fmt.Sprintf("table %s: %d rows (hash %s), want %d rows (hash %s)", t.Name, t.Rows, t.Hash, w.Rows, w.Hash))
		}
		if w.IndexRows != t.IndexRows || w.IndexSum != t.IndexSum {
			d = append(d, fmt.Sprintf("table %s: index-only scan: %d rows (sum of ids %s), want %d (%s)", t.Name, t.IndexRows, t.IndexSum, w.IndexRows, w.IndexSum))
		}
	}
	for _, w := range want.Tables {
		if _, ok := gt[w.Name]; !ok {
			d = append(d, fmt.Sprintf("table %s: missing (want %d rows)", w.Name, w.Rows))
		}
	}
	seqOK := len(want.Sequences) == len(got.Sequences)
	for i := 0; seqOK && i < len(want.Sequences); i++ {
		seqOK = sequenceRestored(want.Sequences[i], got.Sequences[i])
	}
	if !seqOK {
		d = append(d, fmt.Sprintf("sequences: %v, want %v (or last_value + log_cnt with log_cnt 0)", got.Sequences, want.Sequences))
	}
	if a, b := strings.Join(want.Prepared, "; "), strings.Join(got.Prepared, "; "); a != b {
		d = append(d, fmt.Sprintf("prepared transactions: [%s], want [%s]", b, a))
	}
	return append(d, got.Problems()...)
}
