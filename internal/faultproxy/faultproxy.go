// Package faultproxy is an HTTP reverse proxy for tests that stands in
// front of an S3 server on the loopback interface and makes some requests
// fail the way a real network and a busy object store do: 500
// InternalError, 503 SlowDown, connections reset, requests that stall, and
// response bodies cut short after their Content-Length was sent.
//
// Which request gets which fault is drawn from a math/rand generator seeded
// by Config.Seed, in the order requests arrive: a run with the same seed
// and the same arrival order injects the same faults. Counters of requests
// and of every fault injected are kept for the test's report (Stats).
//
// The proxy listens only on 127.0.0.1 and forwards only to a loopback
// target. Everything it holds is bounded: the number of requests handled at
// once (Config.MaxInFlight), how long a stall lasts (Config.StallFor), and
// Close, which ends stalls, cuts every connection and waits for the
// handlers to return.
package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is one kind of failure the proxy injects.
type Fault int

const (
	// None forwards the request untouched.
	None Fault = iota
	// InternalError answers 500 with an S3 InternalError XML body; the
	// request never reaches the server.
	InternalError
	// SlowDown answers 503 with an S3 SlowDown XML body; the request never
	// reaches the server.
	SlowDown
	// Reset closes the client's connection abruptly (TCP RST), either
	// before the request reaches the server or after the server handled
	// it (the client never learns that it succeeded).
	Reset
	// Stall holds the request without reading it or answering for
	// Config.StallFor, then forwards it if the client is still there, or
	// closes the connection if not.
	Stall
	// Truncate forwards the request, sends the response's headers with
	// its full Content-Length, then only part of the body (possibly none
	// of it), and closes the connection. A response without a body (HEAD,
	// most PUTs) is cut in its header instead.
	Truncate
)

func (f Fault) String() string {
	switch f {
	case None:
		return "none"
	case InternalError:
		return "500"
	case SlowDown:
		return "503"
	case Reset:
		return "reset"
	case Stall:
		return "stall"
	case Truncate:
		return "truncate"
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// Rates are the probabilities (0 to 1, summing to at most 1) that a
// request meets each fault.
type Rates struct {
	InternalError float64
	SlowDown      float64
	Reset         float64
	Stall         float64
	Truncate      float64
}

// Total is the probability that a request meets some fault.
func (r Rates) Total() float64 {
	return r.InternalError + r.SlowDown + r.Reset + r.Stall + r.Truncate
}

func (r Rates) validate() error {
	for _, v := range []float64{r.InternalError, r.SlowDown, r.Reset, r.Stall, r.Truncate} {
		if v < 0 || v > 1 || v != v {
			return fmt.Errorf("faultproxy: rate %v out of [0, 1]", v)
		}
	}
	if t := r.Total(); t > 1+1e-9 {
		return fmt.Errorf("faultproxy: rates sum to %v, more than 1", t)
	}
	return nil
}

// Config configures a Proxy.
type Config struct {
	// Target is the base URL of the server to forward to, such as
	// "http://127.0.0.1:7070". Its host must be a loopback address or
	// "localhost".
	Target string
	// Seed seeds the generator that picks faults.
	Seed uint64
	// Rates are the initial fault probabilities (see SetRates).
	Rates Rates
	// StallFor is how long a stalled request is held (default 10s). Make
	// it longer than the client's timeouts so the client gives up first.
	StallFor time.Duration
	// MaxInFlight bounds the requests handled at once (default 256);
	// further requests wait for a slot.
	MaxInFlight int
	// Delay holds every request this long before anything else happens
	// to it: the round trip of a far object store (see SetDelay).
	Delay time.Duration
	// Observe, if set, is called with every request and the fault drawn
	// for it (None for a request passed through; a Truncate that found no
	// body of a known length to cut is reported as drawn), before the fault
	// is applied.
	// afterServer says whether a Reset comes after the server handled the
	// request. It may be called from several goroutines at once.
	Observe func(r *http.Request, f Fault, afterServer bool)
	// Answer, if set, may answer a request that meets no fault itself, in
	// place of the server (a server that refuses an API): it returns true
	// when it wrote the answer. It may be called from several goroutines.
	Answer func(w http.ResponseWriter, r *http.Request) bool
	// Rewrite, if set, changes each request on its way to the server (a
	// server or middlebox that ignores a header). It may be called from
	// several goroutines at once.
	Rewrite func(out *http.Request) error
}

// Stats are the proxy's counters.
type Stats struct {
	Requests      int64 // requests received
	Forwarded     int64 // requests that reached the server (including resets after it and truncated answers)
	InternalError int64
	SlowDown      int64
	Reset         int64 // all resets
	ResetAfter    int64 // of which after the server had handled the request
	Stall         int64
	Truncate      int64
	// ByOp counts the requests by S3 operation kind: GET (an object),
	// LIST (ListObjects), HEAD, PUT, POST (multipart steps, DeleteObjects),
	// DELETE, and the method itself for anything else.
	ByOp map[string]int64
	// BytesIn and BytesOut count request and response body bytes the proxy
	// passed on.
	BytesIn, BytesOut int64
	// LostUploadIDs counts S3 CreateMultipartUpload requests the server
	// handled whose answer (the upload id) a reset or a truncation kept
	// from the client: each can leave an incomplete multipart upload that
	// the client cannot abort, since it never learnt the id.
	LostUploadIDs int64
}

// Faults is the number of requests that met a fault.
func (s Stats) Faults() int64 {
	return s.InternalError + s.SlowDown + s.Reset + s.Stall + s.Truncate
}

// String is a one-line summary for logs and reports.
func (s Stats) String() string {
	pct := 0.0
	if s.Requests > 0 {
		pct = 100 * float64(s.Faults()) / float64(s.Requests)
	}
	return fmt.Sprintf("requests=%d faults=%d (%.1f%%): 500=%d 503=%d reset=%d (after server %d) stall=%d truncated=%d lost_upload_ids=%d",
		s.Requests, s.Faults(), pct, s.InternalError, s.SlowDown, s.Reset, s.ResetAfter, s.Stall, s.Truncate, s.LostUploadIDs)
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// URL is the proxy's base URL ("http://127.0.0.1:PORT"): point the
	// client's endpoint here.
	URL string

	target   *url.URL
	stallFor time.Duration
	observe  func(*http.Request, Fault, bool)
	answer   func(http.ResponseWriter, *http.Request) bool
	rewrite  func(*http.Request) error
	ln       net.Listener
	srv      *http.Server
	tr       *http.Transport
	slots    chan struct{}
	ctx      context.Context // ends when the proxy closes
	cancel   context.CancelFunc
	handlers sync.WaitGroup
	served   chan struct{}

	mu    sync.Mutex
	rng   *rand.Rand
	rates Rates
	delay time.Duration
	byOp  map[string]int64

	bytesIn, bytesOut atomic.Int64

	requests, forwarded                 atomic.Int64
	internalError, slowDown             atomic.Int64
	reset, resetAfter, stall, truncated atomic.Int64
	lostUploadIDs                       atomic.Int64
	closeOnce                           sync.Once
	closeErr                            error
}

// Start starts a proxy on a free port of 127.0.0.1.
func Start(cfg Config) (*Proxy, error) {
	target, err := url.Parse(cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: target: %w", err)
	}
	if target.Scheme != "http" || target.Host == "" {
		return nil, fmt.Errorf("faultproxy: target %q: want http://host:port", cfg.Target)
	}
	if !isLoopback(target.Hostname()) {
		return nil, fmt.Errorf("faultproxy: target %q is not on the loopback interface", cfg.Target)
	}
	if err := cfg.Rates.validate(); err != nil {
		return nil, err
	}
	if cfg.StallFor <= 0 {
		cfg.StallFor = 10 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		URL:      "http://" + ln.Addr().String(),
		target:   target,
		stallFor: cfg.StallFor,
		observe:  cfg.Observe,
		answer:   cfg.Answer,
		rewrite:  cfg.Rewrite,
		ln:       ln,
		slots:    make(chan struct{}, cfg.MaxInFlight),
		ctx:      ctx,
		cancel:   cancel,
		served:   make(chan struct{}),
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x5eed_fa17)),
		rates:    cfg.Rates,
		delay:    cfg.Delay,
		byOp:     map[string]int64{},
		tr: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			MaxIdleConns:          cfg.MaxInFlight,
			MaxIdleConnsPerHost:   cfg.MaxInFlight,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			DisableCompression:    true,
		},
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		defer close(p.served)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SetRates changes the fault probabilities for the requests that arrive
// from now on; Rates{} turns faults off.
func (p *Proxy) SetRates(r Rates) error {
	if err := r.validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.rates = r
	p.mu.Unlock()
	return nil
}

// SetDelay changes how long each request that arrives from now on is
// held before it is handled.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// ResetStats sets every counter back to zero.
func (p *Proxy) ResetStats() {
	p.mu.Lock()
	p.byOp = map[string]int64{}
	p.mu.Unlock()
	for _, c := range []*atomic.Int64{&p.requests, &p.forwarded, &p.internalError, &p.slowDown, &p.reset,
		&p.resetAfter, &p.stall, &p.truncated, &p.lostUploadIDs, &p.bytesIn, &p.bytesOut} {
		c.Store(0)
	}
}

// opKind names a request's S3 operation kind for Stats.ByOp.
func opKind(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodGet && (q.Has("list-type") || q.Has("prefix") || q.Has("delimiter") || q.Has("uploads") || strings.Trim(r.URL.Path, "/") == "" || !strings.Contains(strings.Trim(r.URL.Path, "/"), "/")):
		return "LIST"
	case r.Method == http.MethodGet:
		return "GET"
	}
	return r.Method
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	byOp := make(map[string]int64, len(p.byOp))
	for k, v := range p.byOp {
		byOp[k] = v
	}
	p.mu.Unlock()
	return Stats{
		ByOp:          byOp,
		BytesIn:       p.bytesIn.Load(),
		BytesOut:      p.bytesOut.Load(),
		Requests:      p.requests.Load(),
		Forwarded:     p.forwarded.Load(),
		InternalError: p.internalError.Load(),
		SlowDown:      p.slowDown.Load(),
		Reset:         p.reset.Load(),
		ResetAfter:    p.resetAfter.Load(),
		Stall:         p.stall.Load(),
		Truncate:      p.truncated.Load(),
		LostUploadIDs: p.lostUploadIDs.Load(),
	}
}

// Close stops the proxy: it stops listening, ends stalls, closes every
// connection and waits (at most a few seconds) for the handlers to return.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.cancel()
		p.closeErr = p.srv.Close()
		<-p.served
		done := make(chan struct{})
		go func() { p.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			if p.closeErr == nil {
				p.closeErr = errors.New("faultproxy: handlers still running 10s after close")
			}
		}
		p.tr.CloseIdleConnections()
	})
	return p.closeErr
}

// pick draws the fault for one request, and for a reset or a truncation
// the detail: reset after the server (coin), cut point (fraction).
func (p *Proxy) pick() (f Fault, after bool, frac float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.rng.Float64()
	after = p.rng.IntN(2) == 1
	frac = p.rng.Float64()
	r := p.rates
	for _, c := range []struct {
		f Fault
		p float64
	}{{InternalError, r.InternalError}, {SlowDown, r.SlowDown}, {Reset, r.Reset}, {Stall, r.Stall}, {Truncate, r.Truncate}} {
		if u < c.p {
			return c.f, after, frac
		}
		u -= c.p
	}
	return None, false, 0
}

// ServeHTTP handles one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.handlers.Add(1)
	defer p.handlers.Done()
	select {
	case p.slots <- struct{}{}:
	case <-r.Context().Done():
		abort(w)
		return
	}
	defer func() { <-p.slots }()
	p.requests.Add(1)
	p.mu.Lock()
	p.byOp[opKind(r)]++
	delay := p.delay
	p.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			abort(w)
			return
		}
	}

	f, after, frac := p.pick()
	if p.observe != nil {
		p.observe(r, f, f == Reset && after)
	}
	switch f {
	case InternalError:
		p.internalError.Add(1)
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case SlowDown:
		p.slowDown.Add(1)
		s3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case Reset:
		p.reset.Add(1)
		if after {
			p.resetAfter.Add(1)
			if resp, err := p.forward(p.ctx, r); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				p.lostAnswer(r, resp)
			}
		}
		reset(w)
	case Stall:
		p.stall.Add(1)
		t := time.NewTimer(p.stallFor)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		if r.Context().Err() != nil {
			abort(w)
			return
		}
		p.pass(w, r, -1)
	case Truncate:
		p.pass(w, r, frac)
	default:
		if p.answer != nil && p.answer(w, r) {
			return
		}
		p.pass(w, r, -1)
	}
}

// hop-by-hop headers, which a proxy must not pass on.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// forward sends r to the target under ctx. The Host header is kept: S3 signatures
// (SigV4) cover it, so the server must see the host the client signed.
func (p *Proxy) forward(ctx context.Context, r *http.Request) (*http.Response, error) {
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL = &url.URL{
		Scheme:   p.target.Scheme,
		Host:     p.target.Host,
		Path:     r.URL.Path,
		RawPath:  r.URL.RawPath,
		RawQuery: r.URL.RawQuery,
	}
	out.Host = r.Host
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	// The server sends "100 Continue" to the client as soon as the body is
	// read; the target gets the body right away.
	out.Header.Del("Expect")
	out.ContentLength = r.ContentLength
	if r.ContentLength == 0 {
		out.Body = nil
	} else if out.Body != nil {
		out.Body = &countingBody{ReadCloser: out.Body, n: &p.bytesIn}
	}
	out.Close = false
	if p.rewrite != nil {
		if err := p.rewrite(out); err != nil {
			return nil, err
		}
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	p.forwarded.Add(1)
	return resp, nil
}

// pass forwards r and copies the answer back. With frac in [0, 1), the
// answer is cut after that fraction of its body's Content-Length (never all
// of it), or of its header if it has no body, and the connection closed.
func (p *Proxy) pass(w http.ResponseWriter, r *http.Request, frac float64) {
	resp, err := p.forward(r.Context(), r)
	if err != nil {
		if r.Context().Err() != nil {
			abort(w)
			return
		}
		http.Error(w, "faultproxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = append([]string(nil), vs...)
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	hasBody := r.Method != http.MethodHead && resp.ContentLength != 0
	if frac >= 0 && !hasBody {
		// Nothing to cut in the body: cut the header instead.
		p.truncated.Add(1)
		p.lostAnswer(r, resp)
		cutHeader(w, resp, frac)
		return
	}
	cut := int64(-1)
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		if frac >= 0 {
			cut = int64(frac * float64(resp.ContentLength))
			cut = min(cut, resp.ContentLength-1)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if cut < 0 {
		n, err := io.Copy(w, resp.Body)
		p.bytesOut.Add(n)
		if err != nil {
			abort(w)
		}
		return
	}
	p.truncated.Add(1)
	p.lostAnswer(r, resp)
	_, _ = io.CopyN(w, resp.Body, cut)
	_ = http.NewResponseController(w).Flush()
	abort(w)
}

// cutHeader sends the first part of resp's status line and header on the
// client's connection, then closes it.
func cutHeader(w http.ResponseWriter, resp *http.Response, frac float64) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "HTTP/1.1 %s\r\n", resp.Status)
	_ = resp.Header.Write(&buf)
	buf.WriteString("\r\n")
	conn, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		abort(w)
		return
	}
	n := min(int(frac*float64(buf.Len())), buf.Len()-1)
	_, _ = bw.Write(buf.Bytes()[:n])
	_ = bw.Flush()
	_ = conn.Close()
}

// lostAnswer counts a successful CreateMultipartUpload whose answer the
// client does not get.
func (p *Proxy) lostAnswer(r *http.Request, resp *http.Response) {
	if r.Method == http.MethodPost && r.URL.Query().Has("uploads") && resp.StatusCode == http.StatusOK {
		p.lostUploadIDs.Add(1)
	}
}

// s3Error answers with an S3 error document, as the service does.
func s3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`,
		code, msg, xmlEscape(r.URL.Path))
	h := w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("x-amz-request-id", "faultproxy")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	// The request body is left unread; the server closes the connection
	// when too much of it remains, as S3 does.
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, body)
	}
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace(s)
}

// reset closes the client's connection with a TCP RST.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		abort(w)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// abort ends the handler and makes the server close the connection
// without completing the response.
func abort(http.ResponseWriter) {
	panic(http.ErrAbortHandler)
}

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}
