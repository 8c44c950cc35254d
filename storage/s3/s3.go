// Package s3 is the backend for Amazon S3 and S3-compatible servers
// (MinIO, Ceph RGW, versitygw, ...). It is a thin translation of the Store
// interface to the S3 API; retries, timeouts and logging come from the
// wrappers in package storage.
//
// An interrupted multipart upload leaves no object, but a process killed in
// the middle of one leaves its parts behind, invisible and billed: give the
// bucket a lifecycle rule that aborts incomplete multipart uploads.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/walgo/walgo/storage"
)

// Defaults for the zero values of Config.
const (
	DefaultPartSize    = 8 << 20
	DefaultConcurrency = 2
	DefaultHTTPTimeout = 30 * time.Second
	DefaultRegion      = "us-east-1"
)

// partAttempts is how often the SDK itself sends one part of an upload.
// See New for why only parts are retried here.
const partAttempts = 4

// abortAttempts is how often Put sends the AbortMultipartUpload of a failed
// multipart upload.
const abortAttempts = 6

// Config says which bucket to use and how. Credentials, and the region and
// endpoint when not set here, come from the AWS SDK's default chain
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL,
// shared config and credentials files, instance roles).
type Config struct {
	// Bucket is required.
	Bucket string
	// Prefix is prepended to every key; a "/" is added if it lacks one.
	Prefix string
	// Endpoint is the base URL of an S3-compatible server, with its scheme
	// ("http://127.0.0.1:7070"). Empty means AWS or AWS_ENDPOINT_URL.
	Endpoint string
	// PathStyle addresses buckets as endpoint/bucket rather than as
	// bucket.endpoint; most S3-compatible servers need it.
	PathStyle bool
	// Region overrides the SDK chain; if neither sets one, us-east-1.
	Region string
	// AccessKey and SecretKey, if both set, are used instead of the SDK
	// chain's credentials.
	AccessKey string
	SecretKey string
	// PartSize is the size of each part of a multipart upload (default
	// 8 MiB, at least 5 MiB). Objects smaller than one part are sent with
	// one PutObject. A Put holds up to Concurrency+1 parts in memory.
	PartSize int64
	// Concurrency is the number of parts of one Put in flight (default 2).
	Concurrency int
	// HTTPTimeout bounds every wait of one HTTP request: connecting, the
	// TLS handshake, the response headers, and any gap in which no byte
	// of the request or response body moves (default 30s).
	HTTPTimeout time.Duration
}

// Store keeps objects in one bucket under a key prefix. It is safe for
// concurrent use.
type Store struct {
	client   *s3.Client
	uploader *manager.Uploader
	bucket   string
	prefix   string
	name     string

	bucketSeen atomic.Bool // a HeadBucket proved the bucket exists

	abortRetryer aws.Retryer // for AbortMultipartUpload, see abort
}

var _ storage.Store = (*Store)(nil)

// New returns a store for cfg.Bucket. It reads the SDK's configuration
// chain but sends no request.
//
// Retries: the SDK's own retryer is disabled for every call the Store makes
// directly, because storage.WithRetry retries whole operations (rewinding
// Put bodies, logging each retry, with timeouts that bound the total time);
// retrying inside as well would multiply the attempts and hide failures.
// The one exception is the requests of an upload (PutObject of the buffered
// body, the parts of a multipart upload): their bodies sit in memory, so
// the SDK can resend one cheaply, while a whole Put of a streamed base
// backup cannot be retried at all. Those get partAttempts tries, with
// backoff of at most a few seconds and no retry quota; each try is bounded
// by HTTPTimeout, so a Put still ends in bounded time when the network
// stays down.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 storage: empty bucket")
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("s3 storage: access key and secret key must be set together")
	}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("s3 storage: endpoint %q: want http://host[:port] or https://host[:port]", cfg.Endpoint)
		}
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < manager.MinUploadPartSize {
		return nil, fmt.Errorf("s3 storage: part size %d is below the S3 minimum of %d", cfg.PartSize, manager.MinUploadPartSize)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.HTTPTimeout <= 0 {
		cfg.HTTPTimeout = DefaultHTTPTimeout
	}
	prefix := strings.TrimLeft(cfg.Prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}

	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		// Only send and check checksums the API requires: many S3-compatible
		// servers reject the SDK's default trailing CRC checksums.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 storage: load aws config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	// Start from the SDK's client, which carries AWS_CA_BUNDLE's roots.
	base, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient)
	if !ok {
		base = awshttp.NewBuildableClient()
	}
	awsCfg.HTTPClient = newHTTPClient(base, cfg.HTTPTimeout)
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// AWS_MAX_ATTEMPTS must not turn the SDK's retries back on.
		o.Retryer = aws.NopRetryer{}
		o.RetryMaxAttempts = 0
	})
	partRetryer := retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = partAttempts
		o.MaxBackoff = 5 * time.Second
		o.RateLimiter = ratelimit.None
	})
	// feature/s3/manager is marked deprecated in favour of transfermanager,
	// which is still v0.x; manager is the proven streaming uploader.
	uploader := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = cfg.PartSize
		u.Concurrency = cfg.Concurrency
		u.LeavePartsOnError = false
		u.ClientOptions = append(u.ClientOptions, func(o *s3.Options) {
			o.Retryer = partRetryer
			o.RetryMaxAttempts = 0
			// Content-MD5 on every body (parts are in memory, so seekable):
			// the server rejects a part damaged on the way.
			o.APIOptions = append(o.APIOptions, smithyhttp.AddContentChecksumMiddleware)
		})
	})

	name := "s3://" + cfg.Bucket + "/" + prefix
	if cfg.Endpoint != "" {
		if u, err := url.Parse(cfg.Endpoint); err == nil {
			name += " at " + u.Host // never the userinfo
		}
	}
	// An abort that fails leaves the upload's parts stored and billed, and
	// nothing else will ever abort it: retry it like a part.
	abortRetryer := retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = abortAttempts
		o.MaxBackoff = 5 * time.Second
		o.RateLimiter = ratelimit.None
	})
	return &Store{client: client, uploader: uploader, bucket: cfg.Bucket, prefix: prefix, name: name, abortRetryer: abortRetryer}, nil
}

// ParseURL splits "s3://bucket/some/prefix" into its bucket and its prefix
// ("some/prefix", without leading or trailing slash).
func ParseURL(raw string) (bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("parse s3 url: %w", err)
	}
	if u.Scheme != "s3" {
		return "", "", fmt.Errorf("parse s3 url %q: scheme must be s3://", raw)
	}
	if u.User != nil {
		return "", "", fmt.Errorf("parse s3 url: credentials do not belong in the url; use the AWS SDK's (AWS_ACCESS_KEY_ID, profiles)")
	}
	if u.Host == "" {
		return "", "", fmt.Errorf("parse s3 url %q: missing bucket", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", fmt.Errorf("parse s3 url %q: unexpected query or fragment", raw)
	}
	for _, c := range u.Host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "", "", fmt.Errorf("parse s3 url %q: invalid bucket name %q", raw, u.Host)
		}
	}
	prefix = strings.Trim(u.Path, "/")
	if strings.Contains(prefix, "//") {
		return "", "", fmt.Errorf("parse s3 url %q: empty path segment in prefix", raw)
	}
	return u.Host, prefix, nil
}

// String names the bucket, prefix and endpoint host (no credentials).
func (s *Store) String() string { return s.name }

// objectKey maps a store key to the S3 key. It refuses the keys the file
// backend refuses, so both backends accept the same keys.
func (s *Store) objectKey(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") {
		return "", fmt.Errorf("%w: invalid key %q", storage.ErrPermanent, key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("%w: invalid key %q", storage.ErrPermanent, key)
		}
	}
	return s.prefix + key, nil
}

// Put uploads everything r yields: one PutObject for objects smaller than
// PartSize, a multipart upload otherwise, with at most Concurrency+1 parts
// in memory. S3 makes the object visible only when the upload completes; a
// failed or cancelled Put aborts its multipart upload and leaves any
// earlier object under key untouched. An error from r is returned wrapped,
// with no sentinel.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	k, err := s.objectKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	body := &storage.BodyReader{R: r}
	_, err = s.uploader.Upload(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(s.bucket),
		Key:         aws.String(k),
		Body:        body,
		ContentType: aws.String("application/octet-stream"),
	})
	if err == nil {
		return nil
	}
	var mu manager.MultiUploadFailure
	if errors.As(err, &mu) && mu.UploadID() != "" {
		// The uploader aborts with ctx, which fails if ctx is what ended
		// the upload; abort again on a context of our own.
		if aerr := s.abort(ctx, k, mu.UploadID()); aerr != nil {
			err = fmt.Errorf("%w (abort of upload %s failed too: %v)", err, mu.UploadID(), aerr)
		}
	}
	if rerr := body.Err(); rerr != nil {
		return fmt.Errorf("put %s: read body: %w", key, rerr)
	}
	return s.fail(ctx, "put", key, err)
}

func (s *Store) abort(ctx context.Context, k, uploadID string) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	_, err := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(s.bucket),
		Key:      aws.String(k),
		UploadId: aws.String(uploadID),
	}, func(o *s3.Options) {
		o.Retryer = s.abortRetryer
		o.RetryMaxAttempts = 0
	})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload" {
		return nil // the uploader's own abort went through
	}
	return err
}

// Get returns the object's body. ctx must stay alive while the body is
// read; a read that fails on the network returns an error wrapping
// storage.ErrUnreachable, and a body shorter than the object fails with
// io.ErrUnexpectedEOF rather than ending early.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		return nil, s.fail(ctx, "get", key, err)
	}
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return &objectBody{rc: out.Body, ctx: ctx, key: key, size: size}, nil
}

type objectBody struct {
	rc   io.ReadCloser
	ctx  context.Context
	key  string
	size int64 // -1 if unknown
	n    int64
}

func (b *objectBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if err == io.EOF && b.size >= 0 && b.n != b.size {
		err = fmt.Errorf("got %d of %d bytes: %w", b.n, b.size, io.ErrUnexpectedEOF)
	}
	if err != nil && err != io.EOF {
		if b.ctx.Err() != nil {
			return n, fmt.Errorf("get %s: read: %w", b.key, err)
		}
		return n, fmt.Errorf("get %s: read: %w: %w", b.key, storage.ErrUnreachable, err)
	}
	return n, err
}

// Close releases the connection.
func (b *objectBody) Close() error { return b.rc.Close() }

// Stat returns the object's size and modification time. S3 answers a
// HEAD on a missing bucket like one on a missing key, so the first
// not-found also checks the bucket, which must never pass for not-found.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		err = s.fail(ctx, "stat", key, err)
		if errors.Is(err, storage.ErrNotFound) {
			if berr := s.checkBucket(ctx); berr != nil {
				return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, berr)
			}
		}
		return storage.ObjectInfo{}, err
	}
	oi := storage.ObjectInfo{Key: key}
	if out.ContentLength != nil {
		oi.Size = *out.ContentLength
	}
	if out.LastModified != nil {
		oi.ModTime = *out.LastModified
	}
	return oi, nil
}

// checkBucket fails with storage.ErrPermanent if the bucket does not
// exist. Any other answer counts as "exists": a policy that allows
// listing only under a prefix forbids HeadBucket.
func (s *Store) checkBucket(ctx context.Context) error {
	if s.bucketSeen.Load() {
		return nil
	}
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err == nil {
		s.bucketSeen.Store(true)
		return nil
	}
	if kind(err) == kindNotFound {
		return fmt.Errorf("%w: bucket %s does not exist: %w", storage.ErrPermanent, s.bucket, err)
	}
	if kind(err) == kindPermanent {
		return nil
	}
	return s.fail(ctx, "head bucket", s.bucket, err)
}

// List pages through ListObjectsV2 and calls fn with keys relative to the
// prefix, in the lexical order S3 returns them.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.fail(ctx, "list", prefix, err)
		}
		for _, obj := range page.Contents {
			key, ok := strings.CutPrefix(aws.ToString(obj.Key), s.prefix)
			if !ok {
				continue
			}
			oi := storage.ObjectInfo{Key: key, Size: aws.ToInt64(obj.Size)}
			if obj.LastModified != nil {
				oi.ModTime = *obj.LastModified
			}
			if err := fn(oi); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes the object; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.objectKey(key)
	if err != nil {
		return err
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		err = s.fail(ctx, "delete", key, err)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// Leftovers lists multipart uploads under prefix that were started and
// neither completed nor aborted: a Put killed mid-upload (or whose abort
// was lost) leaves its parts stored, and billed, where List does not show
// them. A running Put's upload shows as well, with a recent ModTime (its
// start). The ID is the upload ID; Size is not known without listing parts.
func (s *Store) Leftovers(ctx context.Context, prefix string, fn func(storage.Leftover) error) error {
	p := s3.NewListMultipartUploadsPaginator(s.client, &s3.ListMultipartUploadsInput{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.fail(ctx, "leftovers", prefix, err)
		}
		for _, u := range page.Uploads {
			key, ok := strings.CutPrefix(aws.ToString(u.Key), s.prefix)
			if !ok {
				continue
			}
			if err := fn(storage.Leftover{Key: key, ID: aws.ToString(u.UploadId), ModTime: aws.ToTime(u.Initiated)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveLeftover aborts the multipart upload, which deletes its parts.
func (s *Store) RemoveLeftover(ctx context.Context, l storage.Leftover) error {
	k, err := s.objectKey(l.Key)
	if err != nil {
		return err
	}
	if l.ID == "" {
		return fmt.Errorf("%w: leftover of %s without an upload ID", storage.ErrPermanent, l.Key)
	}
	_, err = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(s.bucket),
		Key:      aws.String(k),
		UploadId: aws.String(l.ID),
	})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload" {
		return nil
	}
	if err != nil {
		return s.fail(ctx, "abort upload", l.Key, err)
	}
	return nil
}

var _ storage.Sweeper = (*Store)(nil)

// fail wraps an SDK error with the operation, the key and the sentinel
// that says what the caller can do about it.
func (s *Store) fail(ctx context.Context, op, key string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		if cerr == context.DeadlineExceeded {
			return fmt.Errorf("%s %s: %w: %w", op, key, storage.ErrUnreachable, err)
		}
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	switch kind(err) {
	case kindNotFound:
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrNotFound)
	case kindPermanent:
		return fmt.Errorf("%s %s: %w: %w", op, key, storage.ErrPermanent, err)
	case kindFull:
		return fmt.Errorf("%s %s: %w: %w", op, key, storage.ErrFull, err)
	default:
		return fmt.Errorf("%s %s: %w: %w", op, key, storage.ErrUnreachable, err)
	}
}

type errKind int

const (
	kindTransient errKind = iota
	kindNotFound
	kindPermanent
	kindFull
)

// kind sorts an SDK error. Error codes decide first, the HTTP status next;
// anything without a response (network, timeouts) is transient.
func kind(err error) errKind {
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch code {
	case "NoSuchKey", "NotFound":
		return kindNotFound
	case "XMinioStorageFull", "StorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded", "InsufficientStorage":
		return kindFull
	case "NoSuchBucket", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
		"AllAccessDisabled", "AccountProblem", "InvalidBucketName", "InvalidObjectState",
		"PermanentRedirect", "AuthorizationHeaderMalformed", "NotImplemented", "KeyTooLongError",
		"InvalidArgument", "InvalidRequest", "MethodNotAllowed", "EntityTooLarge":
		return kindPermanent
	case "RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "OperationAborted",
		"BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody", "ExpiredToken",
		"TokenRefreshRequired", "RequestTimeTooSkewed", "NoSuchUpload":
		// The SDK corrects clock skew and refreshes tokens from the
		// response, and a damaged body goes through on the next try.
		return kindTransient
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) {
		return kindTransient
	}
	switch st := re.HTTPStatusCode(); {
	case st == http.StatusNotFound:
		return kindNotFound
	case st == http.StatusRequestTimeout, st == http.StatusConflict, st == http.StatusTooManyRequests:
		return kindTransient
	case st == http.StatusNotImplemented:
		return kindPermanent
	case st == http.StatusInsufficientStorage:
		return kindFull
	case st >= 500:
		return kindTransient
	case st >= 300:
		return kindPermanent
	}
	return kindTransient
}

// newHTTPClient returns a client whose every wait is bounded by timeout
// (see Config.HTTPTimeout) and which reports body progress to
// storage.ProgressFunc of the request's context.
func newHTTPClient(base *awshttp.BuildableClient, timeout time.Duration) aws.HTTPClient {
	bc := base.
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = timeout
			d.KeepAlive = 30 * time.Second
		}).
		WithTransportOptions(func(tr *http.Transport) {
			tr.TLSHandshakeTimeout = timeout
			tr.ResponseHeaderTimeout = timeout
			tr.MaxIdleConnsPerHost = 32
		})
	return &stallClient{base: bc, limit: timeout}
}

// stallError ends a request that moved no byte for too long. It reports
// itself as a timeout so the SDK's part retryer resends the part.
type stallError struct{ d time.Duration }

func (e *stallError) Error() string {
	return fmt.Sprintf("s3 request stalled: no data moved for %s", e.d)
}
func (e *stallError) Timeout() bool   { return true }
func (e *stallError) Temporary() bool { return true }

// stallClient cancels a request once it has gone limit without moving a
// byte: while the request is on its way (connect, send, wait for the
// headers) and, for the response body, while someone waits in Read. A
// reader that is slow to call Read is not a stall.
type stallClient struct {
	base  aws.HTTPClient
	limit time.Duration
}

// Do sends req through the SDK's client under the stall guard.
func (t *stallClient) Do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	g := &stallGuard{limit: t.limit, reqOpen: true, progress: storage.ProgressFunc(req.Context())}
	g.timer = time.AfterFunc(t.limit, func() { cancel(&stallError{t.limit}) })
	req2 := req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req2.Body = &requestBody{rc: req.Body, g: g}
		if getBody := req.GetBody; getBody != nil {
			req2.GetBody = func() (io.ReadCloser, error) {
				rc, err := getBody()
				if err != nil || rc == nil || rc == http.NoBody {
					return rc, err
				}
				return &requestBody{rc: rc, g: g}, nil
			}
		}
	}
	resp, err := t.base.Do(req2)
	g.endRequest()
	if err != nil {
		cause := context.Cause(ctx)
		cancel(nil)
		var se *stallError
		if errors.As(cause, &se) && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", cause, err)
		}
		return nil, err
	}
	resp.Body = &responseBody{rc: resp.Body, g: g, ctx: ctx, cancel: cancel}
	return resp, nil
}

type stallGuard struct {
	limit    time.Duration
	progress func(int64)
	timer    *time.Timer

	mu      sync.Mutex
	reqOpen bool // RoundTrip has not returned yet
	closed  bool
}

// sent records request body progress while the request is in flight.
func (g *stallGuard) sent(n int) {
	if n > 0 && g.progress != nil {
		g.progress(int64(n))
	}
	g.mu.Lock()
	if g.reqOpen {
		g.timer.Reset(g.limit)
	}
	g.mu.Unlock()
}

func (g *stallGuard) endRequest() {
	g.mu.Lock()
	g.reqOpen = false
	g.timer.Stop()
	g.mu.Unlock()
}

func (g *stallGuard) startRead() {
	g.mu.Lock()
	if !g.closed {
		g.timer.Reset(g.limit)
	}
	g.mu.Unlock()
}

func (g *stallGuard) endRead(n int) {
	g.mu.Lock()
	g.timer.Stop()
	g.mu.Unlock()
	if n > 0 && g.progress != nil {
		g.progress(int64(n))
	}
}

func (g *stallGuard) close() {
	g.mu.Lock()
	g.closed = true
	g.timer.Stop()
	g.mu.Unlock()
}

type requestBody struct {
	rc io.ReadCloser
	g  *stallGuard
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.g.sent(n)
	return n, err
}

func (b *requestBody) Close() error { return b.rc.Close() }

type responseBody struct {
	rc     io.ReadCloser
	g      *stallGuard
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (b *responseBody) Read(p []byte) (int, error) {
	b.g.startRead()
	n, err := b.rc.Read(p)
	b.g.endRead(n)
	if err != nil && err != io.EOF {
		var se *stallError
		if cause := context.Cause(b.ctx); errors.As(cause, &se) && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", cause, err)
		}
	}
	return n, err
}

func (b *responseBody) Close() error {
	b.g.close()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}
