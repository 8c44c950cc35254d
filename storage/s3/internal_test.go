package s3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/aws/smithy-go"
	"github.com/walgo/walgo/storage"
)

func TestPartPlan(t *testing.T) {
	mib := int64(1 << 20)
	s3 := partPlan{base: 8 * mib, maxPart: MaxPartSize, maxObject: MaxObjectSize, maxParts: MaxParts}
	tests := []struct {
		plan partPlan
		part int
		want int64
	}{
		{s3, 1, 8 * mib},
		{s3, 1000, 8 * mib},
		{s3, 1001, 16 * mib},
		{s3, 9000, 2048 * mib},
		{s3, 9001, 4096 * mib},
		{s3, 10000, 4096 * mib},
		{partPlan{base: 5 * mib, maxPart: 12 * mib, maxParts: 3}, 1, 5 * mib},
		{partPlan{base: 5 * mib, maxPart: 12 * mib, maxParts: 3}, 2, 10 * mib},
		{partPlan{base: 5 * mib, maxPart: 12 * mib, maxParts: 3}, 3, 12 * mib},
	}
	for _, tc := range tests {
		if got := tc.plan.size(tc.part); got != tc.want {
			t.Errorf("%+v: part %d = %d MiB, want %d MiB", tc.plan, tc.part, got/mib, tc.want/mib)
		}
	}
	// S3's limits: 10,000 parts starting at 8 MiB hold more than the
	// largest object S3 allows, and no part exceeds 5 GiB.
	var total int64
	for n := 1; n <= MaxParts; n++ {
		if sz := s3.size(n); sz > MaxPartSize {
			t.Fatalf("part %d is %d bytes", n, sz)
		}
		total += s3.size(n)
	}
	if total < MaxObjectSize {
		t.Errorf("10,000 parts hold %d bytes, less than S3's %d", total, MaxObjectSize)
	}
}

// TestPathStyleHint: a virtual-hosted endpoint whose bucket.host name does
// not resolve, while host does, says to set WALGO_S3_PATH_STYLE; other DNS
// failures do not.
func TestPathStyleHint(t *testing.T) {
	orig := lookupHost
	t.Cleanup(func() { lookupHost = orig })
	lookupHost = func(_ context.Context, host string) ([]string, error) {
		if host == "minio.lan" {
			return []string{"10.0.0.5"}, nil
		}
		return nil, &net.DNSError{Name: host, IsNotFound: true}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		endpoint  string
		pathStyle bool
		failed    string
		want      bool
	}{
		{"bucket host missing", "http://minio.lan:9000", false, "walgo.minio.lan", true},
		{"path style already", "http://minio.lan:9000", true, "walgo.minio.lan", false},
		{"endpoint host missing too", "http://nothere.lan:9000", false, "walgo.nothere.lan", false},
		{"another name", "http://minio.lan:9000", false, "sts.amazonaws.com", false},
		{"aws", "", false, "walgo.s3.amazonaws.com", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(ctx, Config{Bucket: "walgo", Endpoint: tc.endpoint, PathStyle: tc.pathStyle, AccessKey: "a", SecretKey: "b"})
			if err != nil {
				t.Fatal(err)
			}
			dns := fmt.Errorf("request send failed: dial tcp: %w", &net.DNSError{Name: tc.failed, IsNotFound: true})
			err = s.fail(ctx, "get", "k", dns)
			has := strings.Contains(err.Error(), "WALGO_S3_PATH_STYLE=true")
			if has != tc.want || has && !errors.Is(err, storage.ErrPermanent) {
				t.Errorf("fail(%s) = %v; want the path-style hint: %v", tc.failed, err, tc.want)
			}
		})
	}
}

// TestHints: the S3 error codes a user can act on say what to check.
func TestHints(t *testing.T) {
	s, err := New(context.Background(), Config{Bucket: "walgo", AccessKey: "a", SecretKey: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for code, want := range map[string]string{
		"AccessDenied":          "s3:ListBucket",
		"SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY",
		"InvalidAccessKeyId":    "AWS_ACCESS_KEY_ID",
		"NoSuchBucket":          "bucket name",
	} {
		err := s.fail(context.Background(), "get", "k", &smithy.GenericAPIError{Code: code, Message: "refused"})
		if !errors.Is(err, storage.ErrPermanent) || !strings.Contains(err.Error(), code) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want ErrPermanent naming the code and %q", code, err, want)
		}
	}
}

// TestConnectOnFirstRequest: New reads no SDK configuration (a wal-fetch
// served from its prefetch folder pays nothing for a client it never
// uses); a broken configuration fails the first request, clearly, and
// every later one the same way.
func TestConnectOnFirstRequest(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "walgo-no-such-profile")
	st, err := New(context.Background(), Config{Bucket: "b", Endpoint: "http://127.0.0.1:1", PathStyle: true})
	if err != nil {
		t.Fatalf("New read the SDK configuration: %v", err)
	}
	if st.client != nil {
		t.Fatal("New built the SDK client")
	}
	for i := 0; i < 2; i++ {
		_, err = st.Get(context.Background(), "k")
		if err == nil || !strings.Contains(err.Error(), "load aws config") || errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Get with a missing AWS profile: %v, want the configuration error", err)
		}
	}
}
