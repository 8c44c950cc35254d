package schedule

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BackupResult is one scheduled backup attempt.
type BackupResult struct {
	Finished time.Time
	Duration time.Duration
	Err      error
	// Name and sizes of the backup, when it succeeded.
	Name             string
	CompressedSize   int64
	UncompressedSize int64
}

// ArchiverStats is the row of pg_stat_archiver the metrics expose.
type ArchiverStats struct {
	ArchivedCount    int64
	FailedCount      int64
	LastArchivedTime time.Time // zero if never
	LastFailedTime   time.Time // zero if never
}

// Metrics holds what the agent exposes at /metrics. Its methods are safe
// for concurrent use.
type Metrics struct {
	// Info labels walgo_schedule_info (e.g. backup_at, zone, version).
	Info map[string]string
	// Archiver, if set, is read at every scrape; an error exposes
	// walgo_archiver_up 0.
	Archiver func(ctx context.Context) (ArchiverStats, error)
	// ArchiverTimeout bounds one Archiver call (5 s if zero).
	ArchiverTimeout time.Duration

	mu          sync.Mutex
	last        *BackupResult
	lastOK      *BackupResult
	backups     map[string]int64 // by result
	retentionOK *bool
	drillAt     time.Time
	drillOK     *bool
	drills      map[string]int64
	next        time.Time
}

// BackupDone records a backup attempt.
func (m *Metrics) BackupDone(r BackupResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.backups == nil {
		m.backups = map[string]int64{}
	}
	m.last = &r
	if r.Err == nil {
		m.lastOK = &r
		m.backups["success"]++
	} else {
		m.backups["failure"]++
	}
}

// RetentionDone records whether the retention after a backup succeeded.
func (m *Metrics) RetentionDone(ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retentionOK = &ok
}

// DrillDone records a restore drill.
func (m *Metrics) DrillDone(finished time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.drills == nil {
		m.drills = map[string]int64{}
	}
	m.drillAt, m.drillOK = finished, &ok
	if ok {
		m.drills["success"]++
	} else {
		m.drills["failure"]++
	}
}

// SetNext records the next backup's time.
func (m *Metrics) SetNext(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next = t
}

// ServeHTTP writes the metrics in the Prometheus text exposition format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_ = m.Write(r.Context(), w)
}

// Write writes the metrics in the Prometheus text exposition format
// (version 0.0.4). Gauges of things that have not happened yet (no backup
// attempt, no drill) are left out rather than shown as 0; the backup
// counters are always there, from 0.
func (m *Metrics) Write(ctx context.Context, w io.Writer) error {
	var arch *ArchiverStats
	if m.Archiver != nil {
		timeout := m.ArchiverTimeout
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		st, err := m.Archiver(actx)
		cancel()
		if err == nil {
			arch = &st
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	e := &expo{w: bufio.NewWriter(w)}
	if len(m.Info) > 0 {
		e.family("walgo_schedule_info", "gauge", "The schedule agent's settings, as labels; always 1.")
		e.sample("walgo_schedule_info", m.Info, 1)
	}
	if !m.next.IsZero() {
		e.one("walgo_next_backup_timestamp_seconds", "gauge", "When the next scheduled backup is due, in seconds since the Unix epoch.", unixSeconds(m.next))
	}
	e.family("walgo_backups_total", "counter", "Scheduled backup attempts since the agent started, by result.")
	for _, res := range []string{"success", "failure"} {
		e.sample("walgo_backups_total", map[string]string{"result": res}, float64(m.backups[res]))
	}
	if l := m.last; l != nil {
		e.one("walgo_last_backup_timestamp_seconds", "gauge", "When the last backup attempt ended, in seconds since the Unix epoch.", unixSeconds(l.Finished))
		e.one("walgo_last_backup_duration_seconds", "gauge", "How long the last backup attempt took.", l.Duration.Seconds())
		e.one("walgo_last_backup_success", "gauge", "1 if the last backup attempt succeeded, 0 if it failed.", b2f(l.Err == nil))
	}
	if l := m.lastOK; l != nil {
		e.one("walgo_last_successful_backup_timestamp_seconds", "gauge", "When the last successful backup finished, in seconds since the Unix epoch.", unixSeconds(l.Finished))
		e.one("walgo_last_backup_size_bytes", "gauge", "Stored (compressed, maybe encrypted) size of the last successful backup.", float64(l.CompressedSize))
		e.one("walgo_last_backup_uncompressed_size_bytes", "gauge", "Uncompressed size of the last successful backup.", float64(l.UncompressedSize))
	}
	if m.retentionOK != nil {
		e.one("walgo_last_retention_success", "gauge", "1 if the retention policy applied after the last successful backup succeeded, 0 if it failed.", b2f(*m.retentionOK))
	}
	if m.drillOK != nil {
		e.one("walgo_last_drill_success", "gauge", "1 if the last restore drill passed, 0 if it failed.", b2f(*m.drillOK))
		e.one("walgo_last_drill_timestamp_seconds", "gauge", "When the last restore drill ended, in seconds since the Unix epoch.", unixSeconds(m.drillAt))
		e.family("walgo_drills_total", "counter", "Restore drills since the agent started, by result.")
		for _, res := range []string{"success", "failure"} {
			e.sample("walgo_drills_total", map[string]string{"result": res}, float64(m.drills[res]))
		}
	}
	if m.Archiver != nil {
		e.one("walgo_archiver_up", "gauge", "1 if pg_stat_archiver could be read at this scrape, 0 if not.", b2f(arch != nil))
		if arch != nil {
			e.one("walgo_pg_archiver_archived_total", "counter", "WAL files Postgres archived successfully (pg_stat_archiver.archived_count).", float64(arch.ArchivedCount))
			e.one("walgo_pg_archiver_failed_total", "counter", "Failed WAL archiving attempts (pg_stat_archiver.failed_count).", float64(arch.FailedCount))
			e.one("walgo_pg_archiver_last_archived_time_seconds", "gauge", "When the last WAL file was archived, in seconds since the Unix epoch; 0 if never.", unixSeconds(arch.LastArchivedTime))
			e.one("walgo_pg_archiver_last_failed_time_seconds", "gauge", "When WAL archiving last failed, in seconds since the Unix epoch; 0 if never.", unixSeconds(arch.LastFailedTime))
		}
	}
	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}

// expo writes the text exposition format, keeping the first write error.
type expo struct {
	w   *bufio.Writer
	err error
}

func (e *expo) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func (e *expo) family(name, typ, help string) {
	e.printf("# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

func (e *expo) sample(name string, labels map[string]string, v float64) {
	e.printf("%s%s %s\n", name, formatLabels(labels), formatValue(v))
}

func (e *expo) one(name, typ, help string, v float64) {
	e.family(name, typ, help)
	e.sample(name, nil, v)
}

// escapeHelp escapes a HELP text: backslash and line feed.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// escapeLabel escapes a label value: backslash, double quote, line feed.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// formatLabels renders {k="v",...} with keys sorted, or "" for none.
func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteString(`="`)
		b.WriteString(escapeLabel(labels[k]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// formatValue writes whole numbers without an exponent, as people read
// them, and the rest in Go's shortest float form, which Prometheus parses.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// unixSeconds is t in seconds since the Unix epoch, to the millisecond
// (which prints short), 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli()) / 1e3
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
