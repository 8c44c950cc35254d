package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walgo/walgo/codec"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/file"
	"github.com/walgo/walgo/wal"
)

// walgoSentinel is a consistent walgo sentinel starting in segment seg.
func walgoSentinel(seg string, finish time.Time) *Sentinel {
	s, _ := wal.ParseSegment(seg)
	name := "base_" + seg
	return &Sentinel{
		Format: SentinelFormat, Name: name, Timeline: s.Timeline,
		StartLSN: s.StartLSN(wal.DefaultSegmentSize) + 0x28, FinishLSN: s.StartLSN(wal.DefaultSegmentSize) + 0x1000,
		StartTime: finish.Add(-time.Minute), FinishTime: finish, SegmentSize: wal.DefaultSegmentSize,
		SystemID: "7300000000000000001", PGVersion: 150000,
		Parts:       []Part{{Key: BackupFolder(name) + "part_001.tar.zst"}},
		ManifestKey: BackupFolder(name) + "manifest.json.zst",
	}
}

// A WAL-G V2 sentinel as WAL-G 3.x writes it (BackupSentinelDtoV2).
const walgV2 = `{"LSN":83886120,"FinishLSN":83886384,"PgVersion":150018,"SystemIdentifier":7314440012783153259,
"UncompressedSize":31551207,"CompressedSize":4152381,"DataCatalogSize":31540000,"UserData":null,"ChkpNum":null,
"Version":2,"StartTime":"2026-11-30T09:12:00.123456Z","FinishTime":"2026-11-30T09:12:31.5Z",
"DateFmt":"%Y-%m-%dT%H:%M:%S.%fZ","Hostname":"db-1","DataDir":"/var/lib/postgresql/15/main","IsPermanent":true}`

func putString(t *testing.T, s storage.Store, key, v string) {
	t.Helper()
	if err := s.Put(context.Background(), key, strings.NewReader(v)); err != nil {
		t.Fatal(err)
	}
}

func putSentinel(t *testing.T, s storage.Store, key string, sn *Sentinel) {
	t.Helper()
	b, err := EncodeSentinel(sn)
	if err != nil {
		t.Fatal(err)
	}
	putString(t, s, key, string(b))
}

// bigWALG is an old WAL-G sentinel that embeds every file: larger than any
// walgo sentinel may be, streamed past.
func bigWALG(files int) string {
	var b strings.Builder
	b.WriteString(`{"Files":{`)
	for i := range files {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"/base/16384/%d":{"IsIncremented":false,"IsSkipped":false,"MTime":"2026-01-01T00:00:00Z"}`, 100000+i)
	}
	b.WriteString(`},"LSN":50331688,"FinishLSN":50332000,"PgVersion":140005}`)
	return b.String()
}

// One foreign or damaged sentinel no longer fails every listing (issue 10
// items 4 and 14): the others are listed, each foreign one is described,
// and a damaged one is named with what to do.
func TestListAllBackupsForeign(t *testing.T) {
	ctx := context.Background()
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	b1 := walgoSentinel("000000010000000000000010", now.Add(-2*time.Hour))
	b2 := walgoSentinel("000000010000000000000020", now.Add(-time.Hour))
	putSentinel(t, s, SentinelKey(b1.Name), b1)
	putSentinel(t, s, SentinelKey(b2.Name), b2)
	putString(t, s, SentinelKey("base_000000010000000000000005"), walgV2)
	putString(t, s, BackupFolder("base_000000010000000000000005")+"tar_partitions/part_1.tar.lz4", "x")
	putString(t, s, SentinelKey("base_000000010000000000000003"), bigWALG(200000))
	putString(t, s, SentinelKey("base_000000010000000000000002_00000028"),
		`{"wal_segment_backup_start":"000000010000000000000002","wal_segment_offset_backup_start":"00000028",`+
			`"wal_segment_backup_stop":"000000010000000000000002","wal_segment_offset_backup_stop":"00000130","expanded_size_bytes":23000000}`)
	newer := walgoSentinel("000000010000000000000030", now)
	newer.Format = SentinelFormat + 1
	putSentinel(t, s, SentinelKey(newer.Name), newer)
	putString(t, s, SentinelKey("base_000000010000000000000031"), `{"format":1,"name":"base_0000000100000`) // cut short
	putString(t, s, SentinelKey("base_000000010000000000000032"), `{"format":0}`)
	putString(t, s, SentinelKey("base_000000010000000000000033"), `[1,2,3]`)
	// B1's sentinel copied over B3's key.
	putSentinel(t, s, SentinelKey("base_000000010000000000000040"), b1)
	// A sentinel whose own fields disagree with its name.
	wrongTL := walgoSentinel("000000010000000000000041", now)
	wrongTL.Timeline = 2
	putSentinel(t, s, SentinelKey(wrongTL.Name), wrongTL)
	putString(t, s, SentinelKey("notabackup"), `{"hello":"world"}`)

	all, err := ListAllBackups(ctx, s)
	if err != nil {
		t.Fatalf("one foreign sentinel must not fail the listing: %v", err)
	}
	if len(all.Own) != 2 || all.Own[0].Name != b1.Name || all.Own[1].Name != b2.Name {
		t.Fatalf("own backups: %v", sentinelNames(all.Own))
	}
	got := map[string]ForeignBackup{}
	for _, f := range all.Foreign {
		got[f.Name] = f
		if f.Problem == "" || f.Key != SentinelKey(f.Name) {
			t.Errorf("%s: key %q problem %q", f.Name, f.Key, f.Problem)
		}
	}
	want := []struct {
		name, kind string
		tli        uint32
		start      wal.LSN
		known      bool
		problem    string
	}{
		{"base_000000010000000000000005", ForeignWALG, 1, 83886120, true, "WAL-G"},
		{"base_000000010000000000000003", ForeignWALG, 1, 50331688, true, "WAL-G"},
		{"base_000000010000000000000002_00000028", ForeignWALE, 1, 0x2000028, true, "WAL-E"},
		{newer.Name, ForeignNewer, 1, newer.StartLSN, true, "upgrade walgo"},
		{"base_000000010000000000000031", ForeignDamaged, 1, 0x31000000, true, SentinelKey("base_000000010000000000000031")},
		{"base_000000010000000000000032", ForeignDamaged, 1, 0x32000000, true, "format 0"},
		{"base_000000010000000000000033", ForeignDamaged, 1, 0x33000000, true, "not a JSON object"},
		{"base_000000010000000000000040", ForeignDamaged, 1, 0x40000000, true, "describes backup " + b1.Name},
		{wrongTL.Name, ForeignDamaged, 1, 0x41000000, true, "timeline 2"},
		{"notabackup", ForeignUnknown, 0, 0, false, "does not recognise"},
	}
	for _, w := range want {
		f, ok := got[w.name]
		switch {
		case !ok:
			t.Errorf("%s: not listed as foreign", w.name)
		case f.Kind != w.kind || f.Timeline != w.tli || f.StartLSN != w.start || f.StartKnown != w.known || !strings.Contains(f.Problem, w.problem):
			t.Errorf("%s: %+v; want kind %s, timeline %d, start %s (%v), problem naming %q", w.name, f, w.kind, w.tli, w.start, w.known, w.problem)
		}
	}
	if len(all.Foreign) != len(want) {
		t.Errorf("%d foreign, want %d", len(all.Foreign), len(want))
	}
	g := got["base_000000010000000000000005"]
	if g.SystemID != "7314440012783153259" || g.PGVersion != 150018 || !g.Permanent || g.Hostname != "db-1" ||
		!g.StartTime.Equal(time.Date(2026, 11, 30, 9, 12, 0, 123456000, time.UTC)) || g.FinishLSN != 83886384 {
		t.Errorf("WAL-G fields: %+v", g)
	}

	// Reading one by name says what it is; only walgo's own are restored.
	for name, want := range map[string]error{
		"base_000000010000000000000005": ErrForeign,
		newer.Name:                      ErrForeign,
		"base_000000010000000000000040": codec.ErrCorrupt,
		"base_000000010000000000000031": codec.ErrCorrupt,
		"base_000000010000000000000099": storage.ErrNotFound,
	} {
		if _, err := ReadSentinel(ctx, s, name); !errors.Is(err, want) {
			t.Errorf("ReadSentinel(%s) = %v, want %v", name, err, want)
		}
	}
	if sn, err := ReadSentinel(ctx, s, b2.Name); err != nil || sn.Name != b2.Name {
		t.Errorf("ReadSentinel(%s) = %v, %v", b2.Name, sn, err)
	}
	// The store failing still fails the listing.
	if _, err := ListAllBackups(ctx, failingGets{s}); !errors.Is(err, storage.ErrUnreachable) {
		t.Errorf("failing store: %v", err)
	}
}

func sentinelNames(ss []*Sentinel) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

type failingGets struct{ storage.Store }

func (failingGets) Get(context.Context, string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("get: %w", storage.ErrUnreachable)
}

func TestCheckSentinelKey(t *testing.T) {
	now := time.Now()
	ok := walgoSentinel("000000020000000300000004", now)
	if err := CheckSentinelKey(ok.Name, ok); err != nil {
		t.Fatal(err)
	}
	delta := walgoSentinel("000000020000000300000008", now)
	delta.Name += "_D_000000020000000300000004"
	delta.DeltaParent = ok.Name
	delta.Parts[0].Key = BackupFolder(delta.Name) + "part_001.tar.zst"
	delta.ManifestKey = BackupFolder(delta.Name) + "manifest.json.zst"
	if err := CheckSentinelKey(delta.Name, delta); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(s *Sentinel){
		"name":         func(s *Sentinel) { s.Name = "base_000000020000000300000005" },
		"timeline":     func(s *Sentinel) { s.Timeline = 3 },
		"start":        func(s *Sentinel) { s.StartLSN += 16 << 20 },
		"system id":    func(s *Sentinel) { s.SystemID = "-1" },
		"part":         func(s *Sentinel) { s.Parts[0].Key = BackupFolder("base_000000020000000300000005") + "part_001.tar.zst" },
		"manifest":     func(s *Sentinel) { s.ManifestKey = "basebackups_005/x/manifest.json.zst" },
		"delta parent": func(s *Sentinel) { s.DeltaParent = "base_000000020000000300000001" },
	} {
		c := *delta
		c.Parts = append([]Part(nil), delta.Parts...)
		mutate(&c)
		if err := CheckSentinelKey(delta.Name, &c); !errors.Is(err, codec.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

// slowGets holds every Get for a while and records how many run at once,
// as a far object store would.
type slowGets struct {
	storage.Store
	hold           time.Duration
	in, max, calls atomic.Int64
	mu             sync.Mutex
}

func (s *slowGets) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	s.calls.Add(1)
	n := s.in.Add(1)
	defer s.in.Add(-1)
	s.mu.Lock()
	if n > s.max.Load() {
		s.max.Store(n)
	}
	s.mu.Unlock()
	time.Sleep(s.hold)
	return s.Store.Get(ctx, key)
}

// backup-list reads sentinels in parallel (issue 11 item 4), at most
// sentinelConcurrency at once, one GET each.
func TestListBackupsParallel(t *testing.T) {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	seg, _ := wal.ParseSegment("000000010000000100000000")
	now := time.Now()
	for i := range n {
		sn := walgoSentinel(seg.Name(), now.Add(time.Duration(i)*time.Second))
		var buf bytes.Buffer
		b, _ := EncodeSentinel(sn)
		buf.Write(b)
		if err := s.Put(context.Background(), SentinelKey(sn.Name), &buf); err != nil {
			t.Fatal(err)
		}
		seg = seg.Next(wal.DefaultSegmentSize)
	}
	slow := &slowGets{Store: s, hold: 20 * time.Millisecond}
	start := time.Now()
	list, err := ListBackups(context.Background(), slow)
	took := time.Since(start)
	if err != nil || len(list) != n {
		t.Fatalf("%d backups, %v", len(list), err)
	}
	for i := 1; i < n; i++ {
		if list[i].FinishTime.Before(list[i-1].FinishTime) {
			t.Fatal("not sorted by finish time")
		}
	}
	if got := slow.calls.Load(); got != n {
		t.Errorf("%d GETs for %d sentinels", got, n)
	}
	if m := slow.max.Load(); m < 2 || m > int64(sentinelConcurrency) {
		t.Errorf("at most %d sentinels read at once, want 2..%d", m, sentinelConcurrency)
	}
	t.Logf("%d sentinels at %s per GET: %s (%d at once at most; one after the other: %s)", n, slow.hold, took.Round(time.Millisecond), slow.max.Load(), time.Duration(n)*slow.hold)
}

// BenchmarkListBackups1000: backup-list of 1,000 backups on a store that
// takes 20 ms per GET, as a far object store does (issue 11 item 4), at
// several read concurrencies, and with no delay (the floor: the listing's
// own work): go test ./catalog -run X -bench ListBackups1000 -benchtime 5x
func BenchmarkListBackups1000(b *testing.B) {
	s, err := file.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	seg, _ := wal.ParseSegment("000000010000000100000000")
	now := time.Now()
	for i := range 1000 {
		sn := walgoSentinel(seg.Name(), now.Add(time.Duration(i)*time.Second))
		enc, _ := EncodeSentinel(sn)
		if err := s.Put(context.Background(), SentinelKey(sn.Name), bytes.NewReader(enc)); err != nil {
			b.Fatal(err)
		}
		seg = seg.Next(wal.DefaultSegmentSize)
	}
	def := sentinelConcurrency
	defer func() { sentinelConcurrency = def }()
	for _, c := range []struct {
		conc int
		hold time.Duration
	}{{def, 0}, {32, 20 * time.Millisecond}, {64, 20 * time.Millisecond}, {128, 20 * time.Millisecond}, {256, 20 * time.Millisecond}} {
		b.Run(fmt.Sprintf("conc=%d/get=%v", c.conc, c.hold), func(b *testing.B) {
			sentinelConcurrency = c.conc
			slow := &slowGets{Store: s, hold: c.hold}
			for b.Loop() {
				if list, err := ListBackups(context.Background(), slow); err != nil || len(list) != 1000 {
					b.Fatalf("%d, %v", len(list), err)
				}
			}
			b.ReportMetric(float64(slow.max.Load()), "max-in-flight")
			b.ReportMetric(float64(slow.calls.Load())/float64(b.N), "GETs/op")
		})
	}
}
