package drill

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/pgserver"
)

// indexCheck is the check for servers whose amcheck has no heap check
// (Postgres 13): in every database that allows connections, the amcheck
// extension is created if missing and every valid B-tree index of a
// permanent or unlogged relation is checked with bt_index_check, with
// heapallindexed as opts says. An amcheck error (SQLSTATE class XX:
// index or data corrupted) is corruption.
func indexCheck(ctx context.Context, srv *pgserver.Server, opts Options) error {
	cfg, err := pgx.ParseConfig(srv.DSN())
	if err != nil {
		return fmt.Errorf("amcheck: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("amcheck: %w", err)
	}
	rows, err := conn.Query(ctx, `select datname from pg_database where datallowconn order by datname`)
	var dbs []string
	if err == nil {
		dbs, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("amcheck: list databases: %w", err)
	}
	opts.Log.Info("checking the restored copy: every B-tree index against its table (bt_index_check; this server's amcheck has no heap check)",
		zap.Strings("databases", dbs), zap.Bool("heapallindexed", opts.HeapAllIndexed))
	var found []error
	for _, db := range dbs {
		c := cfg.Copy()
		c.Database = db
		n, err := checkIndexes(ctx, c, opts.HeapAllIndexed)
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && len(pe.Code) == 5 && pe.Code[:2] == "XX":
			found = append(found, fmt.Errorf("database %s: %s", db, pe.Message))
		case err != nil:
			return fmt.Errorf("amcheck: database %s: %w", db, err)
		default:
			opts.Log.Debug("indexes checked", zap.String("database", db), zap.Int("indexes", n))
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("%w: amcheck found corruption in the restored copy: %w", codec.ErrCorrupt, errors.Join(found...))
	}
	return nil
}

// checkIndexes runs bt_index_check on every index of one database and
// returns how many it checked.
func checkIndexes(ctx context.Context, cfg *pgx.ConnConfig, heapAllIndexed bool) (int, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `create extension if not exists amcheck`); err != nil {
		return 0, err
	}
	var schema string
	if err := conn.QueryRow(ctx, `select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'amcheck'`).Scan(&schema); err != nil {
		return 0, err
	}
	fn := pgx.Identifier{schema, "bt_index_check"}.Sanitize()
	var n int
	err = conn.QueryRow(ctx, `select count(`+fn+`(i.indexrelid, $1))
		from pg_index i join pg_class c on c.oid = i.indexrelid join pg_am a on a.oid = c.relam
		where a.amname = 'btree' and i.indisvalid and i.indisready and c.relpersistence <> 't'`, heapAllIndexed).Scan(&n)
	return n, err
}
