package schedule

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestMetricsText: the exposition text, whole, at each stage of the
// agent's life, with HELP/TYPE lines and escaped label values.
func TestMetricsText(t *testing.T) {
	finished := time.Date(2026, 3, 8, 10, 4, 5, 250_000_000, time.UTC)
	archived := time.Date(2026, 3, 8, 10, 4, 0, 0, time.UTC)
	stats := ArchiverStats{ArchivedCount: 42, FailedCount: 1, LastArchivedTime: archived}
	tests := []struct {
		name     string
		build    func(m *Metrics)
		archiver func(ctx context.Context) (ArchiverStats, error)
		want     string
	}{
		{
			name: "just started, archiver down",
			build: func(m *Metrics) {
				m.SetNext(time.Date(2026, 3, 9, 9, 30, 0, 0, time.UTC))
			},
			archiver: func(ctx context.Context) (ArchiverStats, error) {
				return ArchiverStats{}, errors.New("connection refused")
			},
			want: `# HELP walgo_schedule_info The schedule agent's settings, as labels; always 1.
# TYPE walgo_schedule_info gauge
walgo_schedule_info{backup_at="02:30 PDT (America/Los_Angeles)",odd="a\\b \"c\"\nd"} 1
# HELP walgo_next_backup_timestamp_seconds When the next scheduled backup is due, in seconds since the Unix epoch.
# TYPE walgo_next_backup_timestamp_seconds gauge
walgo_next_backup_timestamp_seconds 1773048600
# HELP walgo_backups_total Scheduled backup attempts since the agent started, by result.
# TYPE walgo_backups_total counter
walgo_backups_total{result="success"} 0
walgo_backups_total{result="failure"} 0
# HELP walgo_archiver_up 1 if pg_stat_archiver could be read at this scrape, 0 if not.
# TYPE walgo_archiver_up gauge
walgo_archiver_up 0
`,
		},
		{
			name: "a good backup, then a failed one, a drill",
			build: func(m *Metrics) {
				m.BackupDone(BackupResult{Finished: finished, Duration: 1500 * time.Millisecond, Name: "base_000000010000000000000002",
					CompressedSize: 4_123_456, UncompressedSize: 23_456_789_012})
				m.RetentionDone(true)
				m.BackupDone(BackupResult{Finished: finished.Add(24 * time.Hour), Duration: 3 * time.Second, Err: errors.New("boom")})
				m.DrillDone(finished.Add(time.Minute), true)
			},
			archiver: func(ctx context.Context) (ArchiverStats, error) { return stats, nil },
			want: `# HELP walgo_schedule_info The schedule agent's settings, as labels; always 1.
# TYPE walgo_schedule_info gauge
walgo_schedule_info{backup_at="02:30 PDT (America/Los_Angeles)",odd="a\\b \"c\"\nd"} 1
# HELP walgo_backups_total Scheduled backup attempts since the agent started, by result.
# TYPE walgo_backups_total counter
walgo_backups_total{result="success"} 1
walgo_backups_total{result="failure"} 1
# HELP walgo_last_backup_timestamp_seconds When the last backup attempt ended, in seconds since the Unix epoch.
# TYPE walgo_last_backup_timestamp_seconds gauge
walgo_last_backup_timestamp_seconds 1773050645.25
# HELP walgo_last_backup_duration_seconds How long the last backup attempt took.
# TYPE walgo_last_backup_duration_seconds gauge
walgo_last_backup_duration_seconds 3
# HELP walgo_last_backup_success 1 if the last backup attempt succeeded, 0 if it failed.
# TYPE walgo_last_backup_success gauge
walgo_last_backup_success 0
# HELP walgo_last_successful_backup_timestamp_seconds When the last successful backup finished, in seconds since the Unix epoch.
# TYPE walgo_last_successful_backup_timestamp_seconds gauge
walgo_last_successful_backup_timestamp_seconds 1772964245.25
# HELP walgo_last_backup_size_bytes Stored (compressed, maybe encrypted) size of the last successful backup.
# TYPE walgo_last_backup_size_bytes gauge
walgo_last_backup_size_bytes 4123456
# HELP walgo_last_backup_uncompressed_size_bytes Uncompressed size of the last successful backup.
# TYPE walgo_last_backup_uncompressed_size_bytes gauge
walgo_last_backup_uncompressed_size_bytes 23456789012
# HELP walgo_last_retention_success 1 if the retention policy applied after the last successful backup succeeded, 0 if it failed.
# TYPE walgo_last_retention_success gauge
walgo_last_retention_success 1
# HELP walgo_last_drill_success 1 if the last restore drill passed, 0 if it failed.
# TYPE walgo_last_drill_success gauge
walgo_last_drill_success 1
# HELP walgo_last_drill_timestamp_seconds When the last restore drill ended, in seconds since the Unix epoch.
# TYPE walgo_last_drill_timestamp_seconds gauge
walgo_last_drill_timestamp_seconds 1772964305.25
# HELP walgo_drills_total Restore drills since the agent started, by result.
# TYPE walgo_drills_total counter
walgo_drills_total{result="success"} 1
walgo_drills_total{result="failure"} 0
# HELP walgo_archiver_up 1 if pg_stat_archiver could be read at this scrape, 0 if not.
# TYPE walgo_archiver_up gauge
walgo_archiver_up 1
# HELP walgo_pg_archiver_archived_total WAL files Postgres archived successfully (pg_stat_archiver.archived_count).
# TYPE walgo_pg_archiver_archived_total counter
walgo_pg_archiver_archived_total 42
# HELP walgo_pg_archiver_failed_total Failed WAL archiving attempts (pg_stat_archiver.failed_count).
# TYPE walgo_pg_archiver_failed_total counter
walgo_pg_archiver_failed_total 1
# HELP walgo_pg_archiver_last_archived_time_seconds When the last WAL file was archived, in seconds since the Unix epoch; 0 if never.
# TYPE walgo_pg_archiver_last_archived_time_seconds gauge
walgo_pg_archiver_last_archived_time_seconds 1772964240
# HELP walgo_pg_archiver_last_failed_time_seconds When WAL archiving last failed, in seconds since the Unix epoch; 0 if never.
# TYPE walgo_pg_archiver_last_failed_time_seconds gauge
walgo_pg_archiver_last_failed_time_seconds 0
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Metrics{
				Info:     map[string]string{"backup_at": "02:30 PDT (America/Los_Angeles)", "odd": "a\\b \"c\"\nd"},
				Archiver: tt.archiver,
			}
			tt.build(m)
			var b strings.Builder
			if err := m.Write(context.Background(), &b); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("got:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}

// TestMetricsArchiverTimeout: a hanging pg_stat_archiver read is cut off
// and shown as down, instead of hanging the scrape.
func TestMetricsArchiverTimeout(t *testing.T) {
	m := &Metrics{ArchiverTimeout: 20 * time.Millisecond, Archiver: func(ctx context.Context) (ArchiverStats, error) {
		<-ctx.Done()
		return ArchiverStats{}, ctx.Err()
	}}
	var b strings.Builder
	if err := m.Write(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\nwalgo_archiver_up 0\n") {
		t.Fatalf("no walgo_archiver_up 0 in:\n%s", b.String())
	}
}

func TestMetricsHTTP(t *testing.T) {
	m := &Metrics{}
	m.BackupDone(BackupResult{Finished: time.Unix(1, 0), CompressedSize: 7})
	srv := httptest.NewServer(m)
	defer srv.Close()
	tests := []struct {
		method   string
		code     int
		wantBody string
	}{
		{http.MethodGet, http.StatusOK, "walgo_last_backup_size_bytes 7\n"},
		{http.MethodHead, http.StatusOK, ""},
		{http.MethodPost, http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tt.code {
			t.Fatalf("%s: status %d, want %d", tt.method, resp.StatusCode, tt.code)
		}
		if tt.code == http.StatusOK && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
			t.Fatalf("%s: Content-Type %q", tt.method, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(body), tt.wantBody) {
			t.Fatalf("%s: body lacks %q:\n%s", tt.method, tt.wantBody, body)
		}
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1, "1"}, {-3, "-3"}, {1.5, "1.5"}, {1e15, "1000000000000000"}, {1e20, "100000000000000000000"},
		{0.000123, "0.000123"},
	}
	for _, tt := range tests {
		if got := formatValue(tt.v); got != tt.want {
			t.Errorf("formatValue(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
