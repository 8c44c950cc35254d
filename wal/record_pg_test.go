package wal_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walgo/walgo/internal/pgtest"
	"github.com/walgo/walgo/wal"
)

// realWAL is the archive of a real Postgres cluster after a known workload.
type realWAL struct {
	dir      string // archived segments
	segSize  int64
	segments []wal.Segment // in order
	// What the workload did, as Postgres said.
	restorePoints map[string]wal.LSN // name: pg_create_restore_point's result (the record's end)
	commits       map[uint32]bool
	aborts        map[uint32]bool
	prepared      uint32 // committed with COMMIT PREPARED
	bigMessage    int    // bytes of the largest logical message
	start, end    time.Time
}

// makeRealWAL runs a workload on a fresh cluster with segments of segMB
// MiB and returns its archived WAL: restore points, commits (plain, with
// subtransactions, dropping relations, prepared), aborts, and logical
// messages large enough to cross many pages and, with 1 MiB segments, a
// segment boundary.
func makeRealWAL(t *testing.T, segMB int) *realWAL {
	t.Helper()
	arch := pgtest.OwnedDir(t, "wal-archive")
	c := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{fmt.Sprintf("--wal-segsize=%d", segMB)},
		Conf: []string{
			"archive_mode = on",
			fmt.Sprintf("archive_command = 'cp %%p %s/%%f'", arch),
			"max_prepared_transactions = 5",
			"wal_compression = on", // compressed full-page images
		},
	})
	c.Start(t)
	w := &realWAL{dir: arch, segSize: int64(segMB) << 20, restorePoints: map[string]wal.LSN{},
		commits: map[uint32]bool{}, aborts: map[uint32]bool{}}
	sql := func(q string) string { return c.SQL(t, q) }
	xid := func(q string) uint32 {
		out := sql("begin; " + q + "; select txid_current(); commit;")
		v, err := strconv.ParseUint(strings.TrimSpace(out), 10, 32)
		if err != nil {
			t.Fatalf("xid of %q: %q", q, out)
		}
		return uint32(v)
	}
	rp := func(name string) {
		l, err := wal.ParseLSN(sql(fmt.Sprintf("select pg_create_restore_point('%s')", name)))
		if err != nil {
			t.Fatal(err)
		}
		w.restorePoints[name] = l
	}
	w.start = time.Now().Add(-time.Second)
	sql("create table t (id int primary key, pad text)")
	sql("checkpoint") // full-page images follow
	rp("before_load")
	for i := range 20 {
		w.commits[xid(fmt.Sprintf("insert into t select g, repeat('p', %d) from generate_series(%d, %d) g", 10+i*37, i*500, i*500+499))] = true
	}
	rp("after_load")
	sql("select pg_switch_wal()") // a switch record in the middle of the archive
	// Records of many pages; with 1 MiB segments one crosses a segment.
	w.bigMessage = 3 << 19
	for _, n := range []int{100, 9000, 70000, w.bigMessage} {
		sql(fmt.Sprintf("select pg_logical_emit_message(false, 'walgo', repeat('m', %d))", n))
	}
	w.commits[xid("savepoint a; insert into t values (-1, 'sub'); savepoint b; insert into t values (-2, 'sub'); release b")] = true
	w.commits[xid("create table gone (x int); insert into gone values (1); drop table gone")] = true
	ab := sql("begin; insert into t values (-3, 'rolled back'); select txid_current(); rollback;")
	v, _ := strconv.ParseUint(strings.TrimSpace(ab), 10, 32)
	w.aborts[uint32(v)] = true
	pv := sql("begin; insert into t values (-4, 'prepared'); select txid_current(); prepare transaction 'p1';")
	v, _ = strconv.ParseUint(strings.TrimSpace(pv), 10, 32)
	w.prepared = uint32(v)
	sql("commit prepared 'p1'")
	rp(strings.Repeat("r", 63)) // the longest name Postgres keeps
	rp("after_load")            // a name used twice
	sql("update t set pad = pad || 'u' where id % 7 = 0")
	w.end = time.Now().Add(time.Second)
	last := sql("select pg_walfile_name(pg_switch_wal())")
	pgtest.WaitFor(t, time.Minute, func() bool {
		return sql("select coalesce(last_archived_wal, '') >= '"+last+"' from pg_stat_archiver") == "t"
	}, "WAL archived")
	c.Stop(t)

	ents, err := os.ReadDir(arch)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if wal.Classify(e.Name()) == wal.KindSegment {
			s, _ := wal.ParseSegment(e.Name())
			w.segments = append(w.segments, s)
		}
	}
	sort.Slice(w.segments, func(i, j int) bool { return w.segments[i].No(w.segSize) < w.segments[j].No(w.segSize) })
	if len(w.segments) < 2 {
		t.Fatalf("only %d segments archived", len(w.segments))
	}
	return w
}

// read feeds segments through a wal.Reader and returns every record (copies,
// without data) and the reader.
func (w *realWAL) read(t *testing.T, segs []wal.Segment, maxBuf int, each func(*wal.Record)) ([]wal.Record, *wal.Reader) {
	t.Helper()
	r := wal.NewReader(w.segSize)
	r.MaxBuffered = maxBuf
	var out []wal.Record
	for _, s := range segs {
		f, err := os.Open(filepath.Join(w.dir, s.Name()))
		if err != nil {
			t.Fatal(err)
		}
		err = r.ReadSegment(s, bufio.NewReader(f), func(rec *wal.Record) error {
			if each != nil {
				each(rec)
			}
			c := *rec
			c.Data = nil
			out = append(out, c)
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
	}
	return out, r
}

// waldumpRecord is one line of pg_waldump's output.
type waldumpRecord struct {
	rmgr string
	tot  uint32
	xid  uint32
	lsn  wal.LSN
	prev wal.LSN
}

var waldumpLine = regexp.MustCompile(`^rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+), tx:\s+(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev ([0-9A-F]+/[0-9A-F]+),`)

// waldump runs Postgres' own pg_waldump over the segments.
func (w *realWAL) waldump(t *testing.T, first, last wal.Segment) []waldumpRecord {
	t.Helper()
	bin := filepath.Join(pgtest.BinDir(t), "pg_waldump")
	cmd := exec.CommandContext(context.Background(), bin, "-p", w.dir, first.Name(), last.Name())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && !strings.Contains(errb.String(), "error in WAL record") && !strings.Contains(errb.String(), "invalid record length") {
		t.Fatalf("pg_waldump: %v\n%s", err, errb.String())
	}
	var recs []waldumpRecord
	for _, line := range strings.Split(out.String(), "\n") {
		m := waldumpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		tot, _ := strconv.ParseUint(m[2], 10, 32)
		xid, _ := strconv.ParseUint(m[3], 10, 32)
		lsn, _ := wal.ParseLSN(m[4])
		prev, _ := wal.ParseLSN(m[5])
		recs = append(recs, waldumpRecord{rmgr: m[1], tot: uint32(tot), xid: uint32(xid), lsn: lsn, prev: prev})
	}
	if len(recs) == 0 {
		t.Fatalf("pg_waldump printed no records\n%s", errb.String())
	}
	return recs
}

var rmgrNames = map[string]uint8{"XLOG": 0, "Transaction": 1, "Storage": 2, "CLOG": 3, "Database": 4, "Tablespace": 5,
	"MultiXact": 6, "RelMap": 7, "Standby": 8, "Heap2": 9, "Heap": 10, "Btree": 11, "Hash": 12, "Gin": 13, "Gist": 14,
	"Sequence": 15, "SPGist": 16, "BRIN": 17, "CommitTs": 18, "ReplicationOrigin": 19, "Generic": 20, "LogicalMessage": 21}

func sameAsWaldump(t *testing.T, got []wal.Record, want []waldumpRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d records, pg_waldump shows %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.LSN != w.lsn || g.Prev != w.prev || g.TotalLen != w.tot || g.XID != w.xid || g.RMID != rmgrNames[w.rmgr] {
			t.Fatalf("record %d: got lsn %s prev %s len %d xid %d rmgr %d; pg_waldump: lsn %s prev %s len %d xid %d rmgr %s",
				i, g.LSN, g.Prev, g.TotalLen, g.XID, g.RMID, w.lsn, w.prev, w.tot, w.xid, w.rmgr)
		}
	}
}

// TestReaderRealWAL reads the WAL of a real Postgres, with 1 MiB and the
// default 16 MiB segments, and must see exactly the records pg_waldump
// sees (position, back link, length, xid, resource manager), the restore
// points pg_create_restore_point made where it said, and every commit and
// abort of the workload with its xid and a time within the run.
func TestReaderRealWAL(t *testing.T) {
	for _, mb := range []int{1, 16} {
		t.Run(fmt.Sprintf("%dMiB", mb), func(t *testing.T) {
			w := makeRealWAL(t, mb)
			rps := map[string][]wal.RestorePoint{}
			commits, aborts := map[uint32]wal.XactEnd{}, map[uint32]wal.XactEnd{}
			longest := uint32(0)
			crossed := false
			recs, r := w.read(t, w.segments, 0, func(rec *wal.Record) {
				longest = max(longest, rec.TotalLen)
				if wal.SegmentAt(1, rec.LSN, w.segSize) != wal.SegmentAt(1, rec.LSN+wal.LSN(rec.TotalLen)-1, w.segSize) {
					crossed = true
				}
				if rec.Data == nil {
					t.Errorf("record at %s not kept", rec.LSN)
				}
				if _, err := rec.MainData(); err != nil {
					t.Errorf("main data: %v", err)
				}
				switch {
				case rec.IsRestorePoint():
					rp, err := rec.RestorePoint()
					if err != nil {
						t.Fatal(err)
					}
					rps[rp.Name] = append(rps[rp.Name], rp)
				case rec.IsXactEnd():
					x, err := rec.XactEnd()
					if err != nil {
						t.Fatal(err)
					}
					ours := w.commits[x.XID] || w.aborts[x.XID] || x.XID == w.prepared
					if ours && (x.Time.Before(w.start) || x.Time.After(w.end)) {
						t.Errorf("xact %d at %s: time %s outside the run", x.XID, x.LSN, x.Time)
					}
					if x.Commit {
						commits[x.XID] = x
					} else {
						aborts[x.XID] = x
					}
				}
			})
			sameAsWaldump(t, recs, w.waldump(t, w.segments[0], w.segments[len(w.segments)-1]))

			for name, end := range w.restorePoints {
				found := rps[name]
				if len(found) == 0 {
					t.Errorf("restore point %q not found", name)
					continue
				}
				if got := found[len(found)-1].End; got != end {
					t.Errorf("restore point %q ends at %s, Postgres said %s", name, got, end)
				}
			}
			if n := len(rps["after_load"]); n != 2 {
				t.Errorf("restore point after_load found %d times, want 2", n)
			}
			for x := range w.commits {
				if _, ok := commits[x]; !ok {
					t.Errorf("commit of xid %d not found", x)
				}
			}
			for x := range w.aborts {
				if _, ok := aborts[x]; !ok {
					t.Errorf("abort of xid %d not found", x)
				}
			}
			if p, ok := commits[w.prepared]; !ok || !p.Prepared {
				t.Errorf("COMMIT PREPARED of xid %d: %+v, %v", w.prepared, p, ok)
			}
			if longest < uint32(w.bigMessage) {
				t.Errorf("longest record %d bytes, want one of at least %d", longest, w.bigMessage)
			}
			if mb == 1 && !crossed {
				t.Error("no record crossed a segment boundary")
			}
			st := r.State()
			if st.Records != int64(len(recs)) || st.LastStart != recs[len(recs)-1].LSN || st.Magic != 0xD110 {
				t.Errorf("state %+v", st)
			}

			// Records longer than the buffer come without data, the same
			// records in the same places.
			small, _ := w.read(t, w.segments, 4096, nil)
			truncated := 0
			for i := range small {
				if small[i].Truncated {
					truncated++
				}
				small[i].Truncated = false
			}
			if truncated == 0 || !slicesEqualRecords(small, recs) {
				t.Errorf("with a 4 KiB buffer: %d truncated, same records: %v", truncated, slicesEqualRecords(small, recs))
			}

			// Starting in the middle (a segment that does not follow the
			// previous one) skips the tail of the record it starts in.
			mid := w.segments[len(w.segments)/2:]
			part, _ := w.read(t, append([]wal.Segment{w.segments[0]}, mid...), 0, nil)
			want := w.waldump(t, mid[0], mid[len(mid)-1])
			var after []wal.Record
			for _, rec := range part {
				if rec.LSN >= want[0].lsn {
					after = append(after, rec)
				}
			}
			sameAsWaldump(t, after, want)
		})
	}
}

func slicesEqualRecords(a, b []wal.Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.LSN != y.LSN || x.End != y.End || x.TotalLen != y.TotalLen || x.XID != y.XID || x.Prev != y.Prev || x.RMID != y.RMID || x.Info != y.Info {
			return false
		}
	}
	return true
}
