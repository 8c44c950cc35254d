package integration

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/walgo/walgo/internal/faultproxy"
)

// s3Proxy stands between walgo and r's S3 server and counts what passes
// (faultproxy's Stats: requests by operation, body bytes).
type s3Proxy struct {
	*faultproxy.Proxy
	env []string // r.env pointing at the proxy
}

// s3ProxyOptions change what the server behind the proxy seems to do.
type s3ProxyOptions struct {
	// ignoreIfNoneMatch: the server ignores the create-only condition (as
	// some S3-compatible servers do): the header is dropped and the request
	// signed again.
	ignoreIfNoneMatch bool
	// refuseIfNoneMatch: the server answers a conditional write with 501
	// NotImplemented.
	refuseIfNoneMatch bool
	// refuseBatchDelete: DeleteObjects answers 501 NotImplemented.
	refuseBatchDelete bool
}

func startS3Proxy(t *testing.T, r repo, o s3ProxyOptions) *s3Proxy {
	t.Helper()
	cfg := faultproxy.Config{Target: r.s3.Endpoint}
	if o.refuseBatchDelete || o.refuseIfNoneMatch {
		cfg.Answer = func(w http.ResponseWriter, req *http.Request) bool {
			batch := req.Method == http.MethodPost && req.URL.Query().Has("delete")
			if !(o.refuseBatchDelete && batch) && !(o.refuseIfNoneMatch && req.Header.Get("If-None-Match") != "") {
				return false
			}
			io.Copy(io.Discard, req.Body) // the client sees the answer, not a reset
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotImplemented)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>`))
			return true
		}
	}
	if o.ignoreIfNoneMatch {
		signer := v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true })
		creds := aws.Credentials{AccessKeyID: r.s3.AccessKey, SecretAccessKey: r.s3.SecretKey}
		cfg.Rewrite = func(out *http.Request) error {
			if out.Header.Get("If-None-Match") == "" {
				return nil
			}
			out.Header.Del("If-None-Match")
			out.Header.Del("Authorization")
			return signer.SignHTTP(out.Context(), creds, out, out.Header.Get("X-Amz-Content-Sha256"), "s3", r.s3.Region, time.Now())
		}
	}
	fp, err := faultproxy.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.Close() })
	return &s3Proxy{Proxy: fp, env: withEnv(r.env, "WALGO_S3_ENDPOINT="+fp.URL)}
}

// take returns the requests by operation since the last take, and the
// request body bytes (uploads) passed on.
func (p *s3Proxy) take() (map[string]int64, int64) {
	s := p.Stats()
	p.ResetStats()
	return s.ByOp, s.BytesIn
}

// total is the number of requests in ops.
func total(ops map[string]int64) int64 {
	var n int64
	for _, c := range ops {
		n += c
	}
	return n
}
