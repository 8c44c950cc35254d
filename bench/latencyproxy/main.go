// Command latencyproxy stands between walgo and an S3 server on the
// loopback interface for bench/s3.sh: it holds every request a fixed delay
// (a far object store's round trip) and counts requests by S3 operation
// kind and body bytes each way (internal/faultproxy does both).
//
//	latencyproxy -target http://127.0.0.1:7070 -delay 10ms
//
// It prints "proxy URL" and "control URL" lines, then serves until it
// gets SIGTERM or SIGINT. The control URL answers GET /stats (JSON:
// requests, by_op, bytes_in, bytes_out), POST /reset (counters to zero)
// and POST /delay?d=30ms.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/walgo/walgo/internal/faultproxy"
)

func main() {
	target := flag.String("target", "", "the S3 server's base URL (loopback only)")
	delay := flag.Duration("delay", 0, "hold every request this long")
	flag.Parse()
	p, err := faultproxy.Start(faultproxy.Config{Target: *target, Delay: *delay, MaxInFlight: 1024})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		s := p.Stats()
		json.NewEncoder(w).Encode(map[string]any{
			"requests": s.Requests, "by_op": s.ByOp, "bytes_in": s.BytesIn, "bytes_out": s.BytesOut,
		})
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) { p.ResetStats() })
	mux.HandleFunc("POST /delay", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.SetDelay(d)
	})
	go http.Serve(ln, mux)
	fmt.Printf("proxy %s\ncontrol http://%s\n", p.URL, ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
