package faultproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/walgo/walgo/internal/s3test"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/s3"
)

// upstream is a plain HTTP server that echoes what it got: GET /blob
// answers 1000 bytes, anything else echoes method, host, query and body.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if r.URL.Path == "/blob" {
			w.Header().Set("Content-Length", "1000")
			w.Write(bytes.Repeat([]byte("x"), 1000))
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.Host, r.URL.RawQuery, body)
	}))
	t.Cleanup(u.Close)
	return u
}

func start(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// client never reuses connections, so a fault on one request cannot
// spill into the next.
func client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

func TestPassThrough(t *testing.T) {
	u := newUpstream(t)
	p := start(t, Config{Target: u.URL})
	req, _ := http.NewRequest(http.MethodPut, p.URL+"/bucket/key?partNumber=2&uploadId=a%2Fb", strings.NewReader("payload"))
	req.Host = "signed.example:1234"
	resp, err := client(10 * time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "PUT signed.example:1234 partNumber=2&uploadId=a%2Fb payload"; string(b) != want {
		t.Fatalf("upstream saw %q, want %q", b, want)
	}
	if s := p.Stats(); s.Requests != 1 || s.Forwarded != 1 || s.Faults() != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestS3Errors(t *testing.T) {
	for _, tc := range []struct {
		rates  Rates
		status int
		code   string
	}{
		{Rates{InternalError: 1}, 500, "<Code>InternalError</Code>"},
		{Rates{SlowDown: 1}, 503, "<Code>SlowDown</Code>"},
	} {
		u := newUpstream(t)
		p := start(t, Config{Target: u.URL, Rates: tc.rates})
		resp, err := client(10*time.Second).Post(p.URL+"/b/k", "application/octet-stream", strings.NewReader("data"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.code) {
			t.Errorf("got %d %q, want %d with %s", resp.StatusCode, b, tc.status, tc.code)
		}
		if u.hits.Load() != 0 {
			t.Errorf("an error answer reached the server")
		}
		s := p.Stats()
		if s.Faults() != 1 || s.Forwarded != 0 {
			t.Errorf("stats %+v", s)
		}
	}
}

func TestReset(t *testing.T) {
	u := newUpstream(t)
	p := start(t, Config{Target: u.URL, Rates: Rates{Reset: 1}, Seed: 1})
	c := client(10 * time.Second)
	for range 20 {
		resp, err := c.Get(p.URL + "/b/k")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a reset request got an answer: %s", resp.Status)
		}
	}
	s := p.Stats()
	if s.Reset != 20 || s.ResetAfter == 0 || s.ResetAfter == 20 {
		t.Fatalf("stats %+v: want 20 resets, some after the server", s)
	}
	if u.hits.Load() != s.ResetAfter {
		t.Fatalf("server saw %d requests, %d resets were after it", u.hits.Load(), s.ResetAfter)
	}
}

func TestTruncate(t *testing.T) {
	u := newUpstream(t)
	p := start(t, Config{Target: u.URL, Rates: Rates{Truncate: 1}, Seed: 2})
	c := client(10 * time.Second)
	for range 10 {
		resp, err := c.Get(p.URL + "/blob")
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != 1000 {
			t.Fatalf("Content-Length %d, want 1000", resp.ContentLength)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(b) >= 1000 {
			t.Fatalf("read %d bytes, err %v: want part of the body and io.ErrUnexpectedEOF", len(b), err)
		}
	}
	// A response without a body is cut in its header.
	for range 10 {
		if resp, err := c.Head(p.URL + "/blob"); err == nil {
			resp.Body.Close()
			t.Fatalf("a HEAD cut in its header got an answer: %s", resp.Status)
		}
	}
	if s := p.Stats(); s.Truncate != 20 || s.Requests != 20 || s.Forwarded != 20 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStall(t *testing.T) {
	u := newUpstream(t)
	p := start(t, Config{Target: u.URL, Rates: Rates{Stall: 1}, StallFor: 300 * time.Millisecond})
	// An impatient client gives up.
	if resp, err := client(50 * time.Millisecond).Get(p.URL + "/b/k"); err == nil {
		resp.Body.Close()
		t.Fatal("a stalled request was answered before the client's timeout")
	}
	// A patient one gets the answer after the stall.
	resp, err := client(10 * time.Second).Get(p.URL + "/b/k?x=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "GET ") {
		t.Fatalf("after the stall: %q", b)
	}
	if s := p.Stats(); s.Stall != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestCloseEndsStalls: Close returns promptly even with requests held for
// an hour, and their clients get an error.
func TestCloseEndsStalls(t *testing.T) {
	u := newUpstream(t)
	p, err := Start(Config{Target: u.URL, Rates: Rates{Stall: 1}, StallFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Go(func() {
			resp, err := client(0).Get(p.URL + "/b/k")
			if err == nil {
				resp.Body.Close()
			}
			errs <- err
		})
	}
	for p.Stats().Stall < 5 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Error("a stalled request got an answer after Close")
		}
	}
	if _, err := client(time.Second).Get(p.URL + "/b/k"); err == nil {
		t.Error("the proxy still answers after Close")
	}
}

// TestSeeded: the same seed gives the same faults for the same sequence of
// requests, and the share of faults follows the rates.
func TestSeeded(t *testing.T) {
	u := newUpstream(t)
	rates := Rates{InternalError: 0.1, SlowDown: 0.1}
	run := func(seed uint64) string {
		p := start(t, Config{Target: u.URL, Rates: rates, Seed: seed})
		var out strings.Builder
		c := &http.Client{Timeout: 10 * time.Second}
		for range 1000 {
			resp, err := c.Get(p.URL + "/b/k")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Fprintf(&out, "%d,", resp.StatusCode)
		}
		s := p.Stats()
		if s.Requests != 1000 || s.Faults() < 150 || s.Faults() > 250 {
			t.Errorf("seed %d: %v; want about 20%% faults", seed, s)
		}
		return out.String()
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Error("the same seed gave different faults")
	}
	if a == c {
		t.Error("different seeds gave the same faults")
	}
}

func TestSetRates(t *testing.T) {
	u := newUpstream(t)
	p := start(t, Config{Target: u.URL, Rates: Rates{InternalError: 1}})
	if err := p.SetRates(Rates{}); err != nil {
		t.Fatal(err)
	}
	resp, err := client(10 * time.Second).Get(p.URL + "/b/k")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("faults off: %s", resp.Status)
	}
	if err := p.SetRates(Rates{Reset: 0.7, Stall: 0.7}); err == nil {
		t.Fatal("rates summing to 1.4 accepted")
	}
}

func TestRefusals(t *testing.T) {
	for _, cfg := range []Config{
		{Target: "http://10.1.2.3:9000"},
		{Target: "http://example.com"},
		{Target: "https://127.0.0.1:9000"},
		{Target: "127.0.0.1:9000"},
		{Target: "http://127.0.0.1:9000", Rates: Rates{Reset: -0.1}},
		{Target: "http://127.0.0.1:9000", Rates: Rates{Reset: 0.6, Truncate: 0.6}},
	} {
		if p, err := Start(cfg); err == nil {
			p.Close()
			t.Errorf("Start(%+v) accepted", cfg)
		}
	}
	u := newUpstream(t)
	p := start(t, Config{Target: strings.Replace(u.URL, "127.0.0.1", "localhost", 1)})
	if !strings.HasPrefix(p.URL, "http://127.0.0.1:") {
		t.Errorf("proxy listens on %s, want 127.0.0.1", p.URL)
	}
}

// TestS3StoreThroughFaults: walgo's S3 backend with its retry wrapper, through
// the proxy failing a quarter of the requests, stores and reads back every
// object intact, single-part and multipart, and leaves no multipart upload
// behind.
func TestS3StoreThroughFaults(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	p := start(t, Config{
		Target:   srv.Endpoint,
		Seed:     42,
		Rates:    Rates{InternalError: 0.05, SlowDown: 0.05, Reset: 0.05, Truncate: 0.05, Stall: 0.05},
		StallFor: 3 * time.Second,
		Observe: func(r *http.Request, f Fault, after bool) {
			if f != None {
				t.Logf("fault %v (after server: %v): %s %s?%s", f, after, r.Method, r.URL.Path, r.URL.RawQuery)
			}
		},
	})
	cfg := srv.Config(bucket, "faults")
	cfg.Endpoint = p.URL
	cfg.HTTPTimeout = 500 * time.Millisecond
	cfg.PartSize = 5 << 20
	ctx := context.Background()
	st, err := s3.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs := storage.WithRetry(st, storage.RetryOptions{
		Attempts:    8,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
		OpTimeout:   time.Second,
		IdleTimeout: time.Second,
	}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))

	objects := map[string][]byte{}
	for i := range 24 {
		size := 1 + i*4099
		if i%8 == 7 {
			size = 11<<20 + i // multipart: three parts
		}
		b := make([]byte, size)
		rand.Read(b)
		objects[fmt.Sprintf("obj/%02d", i)] = b
	}
	failedPuts := 0
	for k, b := range objects {
		if err := rs.Put(ctx, k, bytes.NewReader(b)); err != nil {
			// Possible after 8 attempts, if rare: say so, and store it
			// again so the reads below have something to check.
			failedPuts++
			t.Logf("put %s: %v", k, err)
			if err := rs.Put(ctx, k, bytes.NewReader(b)); err != nil {
				t.Fatalf("put %s twice: %v", k, err)
			}
		}
	}
	// Reads are not retried by the wrapper (the caller starts over): do so.
	readFailures := 0
	for k, want := range objects {
		var got []byte
		for attempt := 0; ; attempt++ {
			rc, err := rs.Get(ctx, k)
			if err == nil {
				got, err = io.ReadAll(rc)
				rc.Close()
			}
			if err == nil {
				break
			}
			if !errors.Is(err, storage.ErrUnreachable) {
				t.Fatalf("get %s: %v: a network fault must read as storage.ErrUnreachable", k, err)
			}
			readFailures++
			if attempt == 10 {
				t.Fatalf("get %s: %v", k, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read back %d bytes that differ from the %d stored", k, len(got), len(want))
		}
	}
	n := 0
	if err := rs.List(ctx, "obj/", func(oi storage.ObjectInfo) error {
		n++
		if len(objects[oi.Key]) != int(oi.Size) {
			t.Errorf("listed %s with size %d, want %d", oi.Key, oi.Size, len(objects[oi.Key]))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != len(objects) {
		t.Errorf("listed %d objects, want %d", n, len(objects))
	}
	// Every failed upload is aborted, except those whose id never reached
	// the client: S3 leaves those behind until a lifecycle rule or a
	// cleanup that lists uploads removes them.
	ups, err := srv.Client().ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("proxy: %v; puts failed after all attempts: %d; reads started over: %d; multipart uploads left: %d",
		p.Stats(), failedPuts, readFailures, len(ups.Uploads))
	for _, u := range ups.Uploads {
		t.Logf("left: %s %s", *u.Key, *u.UploadId)
	}
	if lost := p.Stats().LostUploadIDs; int64(len(ups.Uploads)) > lost {
		t.Errorf("%d incomplete multipart uploads left, but only %d upload ids were lost on the way", len(ups.Uploads), lost)
	}
	if p.Stats().Faults() == 0 {
		t.Error("no fault injected")
	}
}

// TestDelayAndCounts: every request waits the delay; requests are counted
// by S3 operation kind, with the body bytes each way; ResetStats zeroes.
func TestDelayAndCounts(t *testing.T) {
	u := newUpstream(t)
	p := start(t, Config{Target: u.URL, Delay: 30 * time.Millisecond})
	c := client(10 * time.Second)
	do := func(method, path, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, p.URL+path, strings.NewReader(body))
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Errorf("%s %s answered after %v, before the delay", method, path, d)
		}
	}
	do(http.MethodGet, "/blob", "")
	do(http.MethodGet, "/bucket?list-type=2&prefix=wal_005/", "")
	do(http.MethodHead, "/bucket/key", "")
	do(http.MethodPut, "/bucket/key", "12345")
	do(http.MethodGet, "/bucket/key", "")
	s := p.Stats()
	// "/blob" has no bucket/key shape: a LIST by its path, as the
	// bucket's own GET is.
	want := map[string]int64{"LIST": 2, "HEAD": 1, "PUT": 1, "GET": 1}
	for op, n := range want {
		if s.ByOp[op] != n {
			t.Errorf("%s: %d requests, want %d (%v)", op, s.ByOp[op], n, s.ByOp)
		}
	}
	if s.BytesIn != 5 || s.BytesOut < 1000 {
		t.Errorf("bytes in %d (want 5), out %d (want at least 1000)", s.BytesIn, s.BytesOut)
	}
	p.ResetStats()
	p.SetDelay(0)
	if s := p.Stats(); s.Requests != 0 || len(s.ByOp) != 0 || s.BytesOut != 0 {
		t.Errorf("after ResetStats: %+v", s)
	}
}

// TestAnswerAndRewrite: Answer replies in the server's place to what it
// takes, Rewrite changes what reaches the server.
func TestAnswerAndRewrite(t *testing.T) {
	u := newUpstream(t)
	p := start(t, Config{Target: u.URL,
		Answer: func(w http.ResponseWriter, r *http.Request) bool {
			if !r.URL.Query().Has("delete") {
				return false
			}
			w.WriteHeader(http.StatusNotImplemented)
			return true
		},
		Rewrite: func(out *http.Request) error {
			out.URL.RawQuery = "rewritten"
			return nil
		},
	})
	for _, tc := range []struct {
		query string
		code  int
		body  string
	}{
		{"delete", http.StatusNotImplemented, ""},
		{"x=1", http.StatusOK, "POST " + strings.TrimPrefix(p.URL, "http://") + " rewritten payload"},
	} {
		resp, err := client(10*time.Second).Post(p.URL+"/bucket?"+tc.query, "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || string(b) != tc.body {
			t.Errorf("?%s: %d %q, want %d %q", tc.query, resp.StatusCode, b, tc.code, tc.body)
		}
	}
	if n := u.hits.Load(); n != 1 {
		t.Errorf("upstream got %d requests, want 1 (the answered one never reaches it)", n)
	}
}
