package schedule

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReadArchiver reads pg_stat_archiver over a new connection (dsn empty:
// the PG* environment), for one scrape: an agent that holds no connection
// between scrapes never keeps Postgres from restarting.
func ReadArchiver(ctx context.Context, dsn string) (ArchiverStats, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return ArchiverStats{}, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.Background())
	var st ArchiverStats
	var archived, failed *time.Time
	err = conn.QueryRow(ctx, `select archived_count, failed_count, last_archived_time, last_failed_time from pg_stat_archiver`).
		Scan(&st.ArchivedCount, &st.FailedCount, &archived, &failed)
	if err != nil {
		return ArchiverStats{}, fmt.Errorf("read pg_stat_archiver: %w", err)
	}
	if archived != nil {
		st.LastArchivedTime = *archived
	}
	if failed != nil {
		st.LastFailedTime = *failed
	}
	return st, nil
}
