// Package s3test starts a real S3 server (versitygw, posix backend) for
// tests. Each Start runs its own server on a free local port with its data
// under t.TempDir(); Bucket hands out fresh buckets.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/walgo/walgo/storage/s3"
)

// InstallHint says how to get the server binary.
const InstallHint = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Server is a running versitygw.
type Server struct {
	Endpoint  string // "http://127.0.0.1:PORT"
	AccessKey string
	SecretKey string
	Region    string

	client *awss3.Client
	n      atomic.Int64
}

// Start runs versitygw until the test ends. Without the binary the test is
// skipped, or fails when CI=true or WALGO_TEST_NO_SKIP=1.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := findBinary()
	if err != nil {
		msg := fmt.Sprintf("versitygw not found (%v); install it with: %s", err, InstallHint)
		if os.Getenv("CI") == "true" || os.Getenv("WALGO_TEST_NO_SKIP") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	s := &Server{
		AccessKey: "walgo" + randHex(6),
		SecretKey: randHex(20),
		Region:    "us-east-1",
	}
	root := t.TempDir()
	// Metadata goes to a sidecar folder rather than xattrs, so the server
	// runs on any filesystem (tmpfs and overlayfs often lack user xattrs).
	data, meta := filepath.Join(root, "data"), filepath.Join(root, "meta")
	for _, d := range []string{data, meta} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(root, "versitygw.log")

	// The port is picked by binding :0 and released for versitygw, which
	// leaves a small window for another process; try a few times.
	var lastErr error
	for range 3 {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.run(t, bin, addr, data, meta, logPath); err != nil {
			lastErr = err
			continue
		}
		s.Endpoint = "http://" + addr
		s.client = awss3.New(awss3.Options{
			Region:       s.Region,
			BaseEndpoint: aws.String(s.Endpoint),
			UsePathStyle: true,
			Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		})
		return s
	}
	t.Fatalf("start versitygw: %v\n%s", lastErr, tail(logPath))
	return nil
}

// run starts the server and waits until its port answers.
func (s *Server) run(t testing.TB, bin, addr, data, meta, logPath string) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin,
		"--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", s.Region, "--port", addr, "--quiet",
		"posix", "--sidecar", meta, data)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("versitygw did not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("versitygw log:\n%s", tail(logPath))
		}
	})
	return nil
}

// Bucket creates a new empty bucket and returns its name.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("walgo-test-%d-%s", s.n.Add(1), randHex(4))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// Config returns an s3.Config for bucket and prefix on this server, with
// explicit credentials so parallel tests need no environment.
func (s *Server) Config(bucket, prefix string) s3.Config {
	return s3.Config{
		Bucket:    bucket,
		Prefix:    prefix,
		Endpoint:  s.Endpoint,
		PathStyle: true,
		Region:    s.Region,
		AccessKey: s.AccessKey,
		SecretKey: s.SecretKey,
	}
}

// Env returns environment variables that point a walgo process at this
// server: the AWS SDK's credentials and region, and the S3 endpoint
// settings walgo reads.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"WALGO_S3_ENDPOINT=" + s.Endpoint,
		"WALGO_S3_PATH_STYLE=true",
	}
}

// Client returns a raw SDK client for the server, for checks the Store
// interface cannot make (such as listing multipart uploads).
func (s *Server) Client() *awss3.Client { return s.client }

func findBinary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, p := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not in PATH, $GOBIN or $(go env GOPATH)/bin")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the end of the server log for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(bytes.TrimSpace(b))
}
