package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap/zaptest"

	"github.com/walgo/walgo/internal/s3test"
	"github.com/walgo/walgo/storage"
	"github.com/walgo/walgo/storage/s3"
	"github.com/walgo/walgo/storage/storagetest"
)

func newStore(t *testing.T, cfg s3.Config) *s3.Store {
	t.Helper()
	s, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	t.Run("bucket root", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Store {
			cfg := srv.Config(srv.Bucket(t), "")
			cfg.PartSize = 5 << 20 // the S3 minimum, so the suite's big objects go multipart
			return newStore(t, cfg)
		})
	})
	t.Run("prefix", func(t *testing.T) {
		bucket := srv.Bucket(t)
		var n atomic.Int64
		storagetest.Run(t, func(t *testing.T) storage.Store {
			return newStore(t, srv.Config(bucket, fmt.Sprintf("cluster/%d", n.Add(1))))
		})
	})
}

func TestConformanceWrapped(t *testing.T) {
	srv := s3test.Start(t)
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return storagetest.Wrap(t, newStore(t, srv.Config(srv.Bucket(t), "wrapped")))
	})
}

// TestPrefixIsolation checks that stores sharing a bucket see only their
// own keys, relative to their prefix.
func TestPrefixIsolation(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	ctx := context.Background()
	a := newStore(t, srv.Config(bucket, "/team/a")) // leading slash ignored, trailing one added
	ab := newStore(t, srv.Config(bucket, "team/ab/"))
	root := newStore(t, srv.Config(bucket, ""))
	if err := a.Put(ctx, "wal/1", strings.NewReader("a1")); err != nil {
		t.Fatal(err)
	}
	if err := ab.Put(ctx, "wal/1", strings.NewReader("ab1")); err != nil {
		t.Fatal(err)
	}
	listKeys := func(s storage.Store) []string {
		var out []string
		if err := s.List(ctx, "", func(oi storage.ObjectInfo) error {
			out = append(out, oi.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := listKeys(a); !slices.Equal(got, []string{"wal/1"}) {
		t.Errorf("store a lists %q, want [wal/1]", got)
	}
	if got := listKeys(root); !slices.Equal(got, []string{"team/a/wal/1", "team/ab/wal/1"}) {
		t.Errorf("bucket root lists %q", got)
	}
	rc, err := a.Get(ctx, "wal/1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "a1" {
		t.Errorf("store a reads %q, want a1", b)
	}
}

// TestMissingBucket: a wrong bucket must never pass for a missing object,
// or wal-fetch would tell Postgres that WAL ended.
func TestMissingBucket(t *testing.T) {
	srv := s3test.Start(t)
	s := newStore(t, srv.Config("no-such-bucket-here", "p"))
	ctx := context.Background()
	_, getErr := s.Get(ctx, "k")
	_, statErr := s.Stat(ctx, "k")
	for op, err := range map[string]error{
		"get":    getErr,
		"stat":   statErr,
		"put":    s.Put(ctx, "k", strings.NewReader("x")),
		"list":   s.List(ctx, "", func(storage.ObjectInfo) error { return nil }),
		"delete": s.Delete(ctx, "k"),
	} {
		if !errors.Is(err, storage.ErrPermanent) || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: got %v, want ErrPermanent", op, err)
		}
	}
}

// TestWrongCredentials: refused credentials are permanent errors that
// name the S3 error code and what to check, a HEAD (whose 403 has no body)
// included.
func TestWrongCredentials(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	for _, tc := range []struct {
		name       string
		edit       func(*s3.Config)
		code, hint string
	}{
		{"wrong secret", func(c *s3.Config) { c.SecretKey = "wrong-secret" }, "SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"},
		// versitygw says XAdminUserNotFound (404) where AWS says
		// InvalidAccessKeyId (403): never "object not found".
		{"unknown key", func(c *s3.Config) { c.AccessKey = "nobody" }, "XAdminUserNotFound", "AWS_ACCESS_KEY_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := srv.Config(bucket, "")
			tc.edit(&cfg)
			s := newStore(t, cfg)
			ctx := context.Background()
			_, getErr := s.Get(ctx, "k")
			_, statErr := s.Stat(ctx, "k")
			for op, err := range map[string]error{
				"get":    getErr,
				"stat":   statErr,
				"put":    s.Put(ctx, "k", strings.NewReader("x")),
				"create": s.Create(ctx, "k", strings.NewReader("x"), nil),
				"list":   s.List(ctx, "", func(storage.ObjectInfo) error { return nil }),
			} {
				if !errors.Is(err, storage.ErrPermanent) || !strings.Contains(err.Error(), tc.code) || !strings.Contains(err.Error(), tc.hint) {
					t.Errorf("%s: got %v, want ErrPermanent naming %s and %s", op, err, tc.code, tc.hint)
				}
			}
		})
	}
}

// TestFailedPutsLeaveNoUploads checks that failed and cancelled multipart
// uploads are aborted, not left behind as hidden parts.
func TestFailedPutsLeaveNoUploads(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	cfg := srv.Config(bucket, "")
	cfg.PartSize = 5 << 20
	s := newStore(t, cfg)

	big := bytes.Repeat([]byte{7}, 12<<20)
	boom := errors.New("boom")
	err := s.Put(context.Background(), "failed", io.MultiReader(bytes.NewReader(big), &errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("failing put: got %v, want %v", err, boom)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = s.Put(ctx, "cancelled", io.MultiReader(bytes.NewReader(big), readerFunc(func(p []byte) (int, error) {
		cancel()
		return copy(p, "more"), nil
	}), bytes.NewReader(big)))
	if err == nil {
		t.Fatal("cancelled put succeeded")
	}

	out, err := srv.Client().ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range out.Uploads {
		t.Errorf("multipart upload left behind: key %s id %s", aws.ToString(u.Key), aws.ToString(u.UploadId))
	}
}

// closedAddr returns a local address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachableEndpoint(t *testing.T) {
	cfg := s3.Config{
		Bucket: "b", Endpoint: "http://" + closedAddr(t), PathStyle: true,
		AccessKey: "k", SecretKey: "s", HTTPTimeout: 2 * time.Second,
	}
	opts := storage.RetryOptions{Attempts: 2, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	s := storage.WithRetry(newStore(t, cfg), opts, zaptest.NewLogger(t))
	ctx := context.Background()
	_, getErr := s.Get(ctx, "k")
	_, statErr := s.Stat(ctx, "k")
	for op, err := range map[string]error{
		"get":    getErr,
		"stat":   statErr,
		"put":    s.Put(ctx, "k", strings.NewReader("x")),
		"list":   s.List(ctx, "", func(storage.ObjectInfo) error { return nil }),
		"delete": s.Delete(ctx, "k"),
	} {
		if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), "2 attempts") {
			t.Errorf("%s: got %v, want ErrUnreachable after 2 attempts", op, err)
		}
	}
}

// TestStalledServer: a server that accepts requests and then goes silent
// must not hang the client; it fails as unreachable.
func TestStalledServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/body") {
			// Headers and the start of the body, then silence.
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	}))
	defer srv.Close()
	defer srv.CloseClientConnections()

	s := newStore(t, s3.Config{
		Bucket: "b", Endpoint: srv.URL, PathStyle: true,
		AccessKey: "k", SecretKey: "s", HTTPTimeout: 100 * time.Millisecond,
	})
	ctx := context.Background()
	if _, err := s.Stat(ctx, "head"); !errors.Is(err, storage.ErrUnreachable) {
		t.Errorf("stat: got %v, want ErrUnreachable", err)
	}
	rc, err := s.Get(ctx, "body")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if !errors.Is(err, storage.ErrUnreachable) || !strings.Contains(err.Error(), "stalled") {
		t.Errorf("read body: got %v after %d bytes, want a stall wrapping ErrUnreachable", err, n)
	}
	if n != 10 {
		t.Errorf("read %d bytes before the stall, want 10", n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  s3.Config
	}{
		{"no bucket", s3.Config{}},
		{"endpoint without scheme", s3.Config{Bucket: "b", Endpoint: "minio:9000"}},
		{"part size too small", s3.Config{Bucket: "b", PartSize: 1 << 20}},
		{"half credentials", s3.Config{Bucket: "b", AccessKey: "k"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s3.New(context.Background(), tc.cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		in             string
		bucket, prefix string
		ok             bool
	}{
		{"s3://bucket", "bucket", "", true},
		{"s3://bucket/", "bucket", "", true},
		{"s3://bucket/some/prefix", "bucket", "some/prefix", true},
		{"s3://bucket/some/prefix/", "bucket", "some/prefix", true},
		{"s3://my.bucket-1/p", "my.bucket-1", "p", true},
		{"s3://", "", "", false},
		{"s3:///prefix", "", "", false},
		{"file:///var/lib/walgo", "", "", false},
		{"bucket/prefix", "", "", false},
		{"s3://key:secret@bucket/p", "", "", false},
		{"s3://bucket/p?region=x", "", "", false},
		{"s3://bucket:9000/p", "", "", false},
		{"s3://bucket/a//b", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			bucket, prefix, err := s3.ParseURL(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if bucket != tc.bucket || prefix != tc.prefix {
				t.Errorf("got (%q, %q), want (%q, %q)", bucket, prefix, tc.bucket, tc.prefix)
			}
		})
	}
	if _, _, err := s3.ParseURL("s3://key:secret@bucket/p"); err != nil && strings.Contains(err.Error(), "secret") {
		t.Errorf("error repeats the secret: %v", err)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestLeftovers: a multipart upload nobody completed (a Put killed
// mid-upload) is listed under the store's prefix with its key, and
// removing it aborts it; uploads of other prefixes are not touched.
func TestLeftovers(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.Bucket(t)
	ctx := context.Background()
	s := storage.WithRetry(newStore(t, srv.Config(bucket, "repo")), storage.RetryOptions{}, zaptest.NewLogger(t))
	start := func(key string) string {
		out, err := srv.Client().CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.UploadId)
	}
	mine := start("repo/basebackups_005/b/part_001.tar.zst")
	other := start("elsewhere/part_001.tar.zst")
	if err := s.Put(ctx, "wal_005/x.zst", strings.NewReader("done")); err != nil {
		t.Fatal(err)
	}
	list := func(prefix string) []storage.Leftover {
		var got []storage.Leftover
		if err := storage.LeftoversOf(ctx, s, prefix, func(l storage.Leftover) error {
			got = append(got, l)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	tests := []struct {
		prefix string
		want   int
	}{{"", 1}, {"basebackups_005/", 1}, {"wal_005/", 0}}
	for _, tt := range tests {
		if got := list(tt.prefix); len(got) != tt.want {
			t.Errorf("leftovers under %q: %+v, want %d", tt.prefix, got, tt.want)
		}
	}
	l := list("")[0]
	if l.Key != "basebackups_005/b/part_001.tar.zst" || l.ID != mine || time.Since(l.ModTime) > time.Hour {
		t.Errorf("leftover %+v: want key basebackups_005/b/part_001.tar.zst, upload %s, started just now", l, mine)
	}
	for range 2 { // a second removal finds it gone, which is fine
		if err := storage.RemoveLeftover(ctx, s, l); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(""); len(got) != 0 {
		t.Errorf("still listed after removal: %+v", got)
	}
	out, err := srv.Client().ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 1 || aws.ToString(out.Uploads[0].UploadId) != other {
		t.Errorf("uploads in the bucket: %d, want only the other prefix's", len(out.Uploads))
	}
}

// TestObjectsOfAnySize: with the part limit lowered to 4 (as 10,000 is for
// S3), a stream of unknown size far beyond 4 parts of the first size is
// stored whole, because the parts grow; one beyond what the limits allow
// fails before completing, leaving nothing.
func TestObjectsOfAnySize(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config(srv.Bucket(t), "big")
	cfg.PartSize, cfg.MaxParts = s3.MinPartSize, 4 // 5+10+20+40 MiB
	s := newStore(t, cfg)
	ctx := context.Background()
	const size = 60 << 20 // 3 parts of 5 MiB would hold 20
	if err := s.Create(ctx, "dump", &countingReader{n: size}, storage.Metadata{"k": "v"}); err != nil {
		t.Fatalf("create of %d MiB in at most 4 parts: %v", size>>20, err)
	}
	rc, err := s.Get(ctx, "dump")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(&checkingWriter{}, rc)
	rc.Close()
	if err != nil || n != size {
		t.Fatalf("read back %d bytes (%v), want %d", n, err, size)
	}
	err = s.Put(ctx, "toobig", &countingReader{n: 76 << 20})
	if !errors.Is(err, storage.ErrPermanent) || !strings.Contains(err.Error(), "more than 4 parts") {
		t.Errorf("put beyond 4 growing parts: got %v, want a clear refusal", err)
	}
	if _, err := s.Stat(ctx, "toobig"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat after the refusal: %v, want ErrNotFound", err)
	}
	uploads := 0
	storage.LeftoversOf(ctx, s, "", func(storage.Leftover) error { uploads++; return nil })
	if uploads != 0 {
		t.Errorf("%d multipart uploads left behind", uploads)
	}
}

// countingReader yields n bytes: byte i is i mod 251.
type countingReader struct{ n, i int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	if c.i >= c.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), c.n-c.i)]
	for k := range p {
		p[k] = byte((c.i + int64(k)) % 251)
	}
	c.i += int64(len(p))
	return len(p), nil
}

// checkingWriter fails unless it gets countingReader's bytes.
type checkingWriter struct{ i int64 }

func (c *checkingWriter) Write(p []byte) (int, error) {
	for k, b := range p {
		if b != byte((c.i+int64(k))%251) {
			return k, fmt.Errorf("byte %d differs", c.i+int64(k))
		}
	}
	c.i += int64(len(p))
	return len(p), nil
}
