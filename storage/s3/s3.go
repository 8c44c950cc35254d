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
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
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
	// PartSize is the size of the first parts of a multipart upload
	// (default 8 MiB, at least 5 MiB). Objects smaller than one part are
	// sent with one PutObject. Streams of unknown size get parts that grow
	// as the upload proceeds (see partPlan) so that objects of any size up
	// to S3's limit fit in its 10,000 parts. A Put holds up to
	// Concurrency+1 parts in memory.
	PartSize int64
	// MaxParts, MaxPartSize and MaxObjectSize lower S3's limits (10,000
	// parts, 5 GiB, 5 TiB), for tests; zero means S3's.
	MaxParts      int
	MaxPartSize   int64
	MaxObjectSize int64
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
	// client is built by connect, on the first request: reading the SDK's
	// configuration chain costs a few ms, and a wal-fetch served from its
	// prefetch folder sends no request at all.
	client      *s3.Client
	connectOnce sync.Once
	connectErr  error
	awsOpts     []func(*config.LoadOptions) error
	clientOpts  func(*s3.Options)
	httpTimeout time.Duration
	partOpts    []func(*s3.Options) // for the requests of an upload, see New
	plan        partPlan
	concurrency int
	bucket      string
	prefix      string
	name        string

	pathStyle    bool
	endpointHost string // the configured endpoint's host name, if any

	bucketSeen atomic.Bool // a HeadBucket proved the bucket exists
	noBatch    atomic.Bool // the server refused DeleteObjects

	abortRetryer aws.Retryer // for AbortMultipartUpload, see abort
}

var _ storage.Store = (*Store)(nil)

// New returns a store for cfg.Bucket. It checks cfg and sends no request;
// the SDK's configuration chain is read on the first request (see
// connect), so a bad AWS profile fails that request.
//
// Retries: the SDK's own retryer is disabled for every call the Store makes
// directly, because storage.WithRetry retries whole operations (rewinding
// Put bodies, logging each retry, with timeouts that bound the total time);
// retrying inside as well would multiply the attempts and hide failures.
// The one exception is the requests of an upload (PutObject of the buffered
// body, the requests of a multipart upload): their bodies sit in memory, so
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
	if cfg.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3 storage: part size %d is below the S3 minimum of %d", cfg.PartSize, MinPartSize)
	}
	plan := partPlan{base: cfg.PartSize, maxPart: MaxPartSize, maxObject: MaxObjectSize, maxParts: MaxParts}
	if cfg.MaxParts > 0 {
		plan.maxParts = min(cfg.MaxParts, MaxParts)
	}
	if cfg.MaxPartSize > 0 {
		plan.maxPart = min(cfg.MaxPartSize, MaxPartSize)
	}
	if cfg.MaxObjectSize > 0 {
		plan.maxObject = min(cfg.MaxObjectSize, MaxObjectSize)
	}
	if plan.base > plan.maxPart {
		return nil, fmt.Errorf("s3 storage: part size %d is above the part limit of %d", plan.base, plan.maxPart)
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
	clientOpts := func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// AWS_MAX_ATTEMPTS must not turn the SDK's retries back on.
		o.Retryer = aws.NopRetryer{}
		o.RetryMaxAttempts = 0
	}
	partRetryer := retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = partAttempts
		o.MaxBackoff = 5 * time.Second
		o.RateLimiter = ratelimit.None
	})
	partOpts := []func(*s3.Options){func(o *s3.Options) {
		o.Retryer = partRetryer
		o.RetryMaxAttempts = 0
		// Content-MD5 on every body (parts are in memory, so seekable):
		// the server rejects a part damaged on the way.
		o.APIOptions = append(o.APIOptions, smithyhttp.AddContentChecksumMiddleware)
	}}

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
	st := &Store{awsOpts: opts, clientOpts: clientOpts, httpTimeout: cfg.HTTPTimeout, partOpts: partOpts, plan: plan, concurrency: cfg.Concurrency,
		bucket: cfg.Bucket, prefix: prefix, name: name, abortRetryer: abortRetryer, pathStyle: cfg.PathStyle}
	if cfg.Endpoint != "" {
		if u, err := url.Parse(cfg.Endpoint); err == nil {
			st.endpointHost = u.Hostname()
		}
	}
	return st, nil
}

// connect builds the SDK client, once: the first request of this Store
// reads the SDK's configuration chain (environment, shared files). Every
// exported method that sends a request calls it first.
func (s *Store) connect(ctx context.Context) error {
	s.connectOnce.Do(func() {
		awsCfg, err := config.LoadDefaultConfig(ctx, s.awsOpts...)
		if err != nil {
			s.connectErr = fmt.Errorf("s3 storage: load aws config: %w", err)
			return
		}
		if awsCfg.Region == "" {
			awsCfg.Region = DefaultRegion
		}
		// Start from the SDK's client, which carries AWS_CA_BUNDLE's roots.
		base, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient)
		if !ok {
			base = awshttp.NewBuildableClient()
		}
		awsCfg.HTTPClient = newHTTPClient(base, s.httpTimeout)
		s.client = s3.NewFromConfig(awsCfg, s.clientOpts)
	})
	return s.connectErr
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
	return s.upload(ctx, "put", key, r, nil, false)
}

// Create uploads like Put with If-None-Match: * (on the PutObject, or on
// the CompleteMultipartUpload), so the server refuses to replace an
// object: its 412 is storage.ErrExists. meta is sent as user metadata
// (x-amz-meta-<name>). A server that ignores the condition overwrites;
// see storage.WithCheckedCreate.
func (s *Store) Create(ctx context.Context, key string, r io.Reader, meta storage.Metadata) error {
	if err := meta.Check(); err != nil {
		return fmt.Errorf("create %s: %w", key, err)
	}
	return s.upload(ctx, "create", key, r, meta, true)
}

func (s *Store) upload(ctx context.Context, op, key string, r io.Reader, meta storage.Metadata, ifNone bool) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	k, err := s.objectKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	body := &storage.BodyReader{R: r}
	in := &s3.PutObjectInput{
		Bucket:      aws.String(s.bucket),
		Key:         aws.String(k),
		ContentType: aws.String("application/octet-stream"),
	}
	if len(meta) > 0 {
		in.Metadata = meta
	}
	if ifNone {
		in.IfNoneMatch = aws.String("*")
	}
	err = s.send(ctx, in, body)
	if err == nil {
		return nil
	}
	if rerr := body.Err(); rerr != nil {
		return fmt.Errorf("%s %s: read body: %w", op, key, rerr)
	}
	if ifNone && notImplemented(err) {
		return fmt.Errorf("%s %s: %w: the server refuses conditional writes (If-None-Match: *): %w", op, key, storage.ErrUnsupported, err)
	}
	err = s.fail(ctx, op, key, err)
	if ifNone && errors.Is(err, storage.ErrUnreachable) && ctx.Err() == nil {
		// A server that refuses a conditional write before reading the
		// body answers 412 and drops the connection: the client often
		// sees only the reset. An object under key means that refusal.
		if _, serr := s.Stat(ctx, key); serr == nil {
			return fmt.Errorf("%s %s: %w (the upload was cut off: %v)", op, key, storage.ErrExists, err)
		}
	}
	return err
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
		return nil // gone already
	}
	return err
}

// Get returns the object's body. ctx must stay alive while the body is
// read; a read that fails on the network returns an error wrapping
// storage.ErrUnreachable, and a body shorter than the object fails with
// io.ErrUnexpectedEOF rather than ending early.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
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
	if err := s.connect(ctx); err != nil {
		return storage.ObjectInfo{}, err
	}
	k, err := s.objectKey(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k)})
	if err != nil {
		if status(err) == http.StatusForbidden {
			// A HEAD answer has no body, so no error code: ask once with a
			// request whose answer says why (SignatureDoesNotMatch,
			// InvalidAccessKeyId, AccessDenied).
			err = s.whyForbidden(ctx, k, err)
		}
		err = s.fail(ctx, "stat", key, err)
		if errors.Is(err, storage.ErrNotFound) {
			if berr := s.checkBucket(ctx); berr != nil {
				return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, berr)
			}
		}
		return storage.ObjectInfo{}, err
	}
	oi := storage.ObjectInfo{Key: key}
	if len(out.Metadata) > 0 {
		oi.Metadata = storage.Metadata{}
		for k, v := range out.Metadata {
			oi.Metadata[strings.ToLower(k)] = v
		}
	}
	if out.ContentLength != nil {
		oi.Size = *out.ContentLength
	}
	if out.LastModified != nil {
		oi.ModTime = *out.LastModified
	}
	return oi, nil
}

// whyForbidden returns the error of a one-byte GET of k, which carries the
// S3 error code a refused HEAD lacks, or headErr if that GET says nothing
// more.
func (s *Store) whyForbidden(ctx context.Context, k string, headErr error) error {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(k), Range: aws.String("bytes=0-0")})
	if err == nil {
		out.Body.Close()
		return headErr
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() != "" && ae.ErrorCode() != "Forbidden" {
		return err
	}
	return headErr
}

// status is the HTTP status of an SDK error, or 0.
func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// hints say what to check for the S3 error codes a user can act on.
var hints = map[string]string{
	"SignatureDoesNotMatch":        "the secret key does not match the access key: check AWS_SECRET_ACCESS_KEY (or the profile's), and that no proxy rewrites requests",
	"InvalidAccessKeyId":           "this server does not know the access key: check AWS_ACCESS_KEY_ID, and that the endpoint (WALGO_S3_ENDPOINT) and region are the ones the key belongs to",
	"XAdminUserNotFound":           "this server does not know the access key: check AWS_ACCESS_KEY_ID, and that the endpoint (WALGO_S3_ENDPOINT) is the one the key belongs to",
	"AccessDenied":                 "the credentials are not allowed this request: walgo needs s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket (without it S3 answers 403 for a missing key), s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the bucket and prefix (see the README)",
	"Forbidden":                    "the server refused the credentials or the request (403): check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket policy; walgo needs s3:ListBucket among others (see the README)",
	"NoSuchBucket":                 "check the bucket name in WALGO_STORAGE, the endpoint and the region",
	"AllAccessDisabled":            "all access to this bucket is disabled",
	"AccountProblem":               "the account behind the credentials has a problem: see the provider's console",
	"PermanentRedirect":            "the bucket is in another region: set WALGO_S3_REGION (or AWS_REGION) to the bucket's",
	"AuthorizationHeaderMalformed": "the region does not match the bucket's: set WALGO_S3_REGION (or AWS_REGION)",
}

// lookupHost resolves a host name; a variable for tests.
var lookupHost = net.DefaultResolver.LookupHost

// pathStyleHint reports a virtual-hosted request (bucket.host) whose host
// name does not resolve while the endpoint's own does: the server wants
// path-style addressing.
func (s *Store) pathStyleHint(ctx context.Context, err error) bool {
	var de *net.DNSError
	if s.pathStyle || s.endpointHost == "" || !errors.As(err, &de) || !de.IsNotFound ||
		!strings.EqualFold(strings.TrimSuffix(de.Name, "."), s.bucket+"."+s.endpointHost) {
		return false
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, lerr := lookupHost(lctx, s.endpointHost)
	return lerr == nil
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
		// A HEAD answer has no body: a 404 may be a refused key too
		// (versitygw answers an unknown access key so). One listing says
		// which.
		_, lerr := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix), MaxKeys: aws.Int32(1)})
		var ae smithy.APIError
		switch {
		case lerr == nil:
			s.bucketSeen.Store(true)
			return nil
		case errors.As(lerr, &ae) && ae.ErrorCode() == "NoSuchBucket", kind(lerr) == kindNotFound:
			return fmt.Errorf("%w: bucket %s does not exist: %w", storage.ErrPermanent, s.bucket, err)
		default:
			return s.fail(ctx, "list bucket", s.bucket, lerr)
		}
	}
	if kind(err) == kindPermanent {
		return nil
	}
	return s.fail(ctx, "head bucket", s.bucket, err)
}

// List pages through ListObjectsV2 and calls fn with keys relative to the
// prefix, in the lexical order S3 returns them.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
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
	if err := s.connect(ctx); err != nil {
		return err
	}
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

// DeleteBatch removes the keys with one DeleteObjects request. A server
// that does not implement it (NotImplemented, 501, 405) gets
// storage.ErrUnsupported, and is not asked again by this Store.
func (s *Store) DeleteBatch(ctx context.Context, keys []string) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	if s.noBatch.Load() {
		return fmt.Errorf("delete batch: %w", storage.ErrUnsupported)
	}
	ids := make([]types.ObjectIdentifier, 0, len(keys))
	for _, key := range keys {
		k, err := s.objectKey(key)
		if err != nil {
			return err
		}
		ids = append(ids, types.ObjectIdentifier{Key: aws.String(k)})
	}
	out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(s.bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	})
	if err != nil {
		if notImplemented(err) {
			s.noBatch.Store(true)
			return fmt.Errorf("delete batch: %w: %w", storage.ErrUnsupported, err)
		}
		return s.fail(ctx, "delete batch", keys[0], err)
	}
	// Per-key failures: a missing key is deleted already; report the rest
	// by the worst kind among them, naming the first.
	var first error
	worst := kindTransient
	failed := 0
	for _, e := range out.Errors {
		code := aws.ToString(e.Code)
		if code == "NoSuchKey" {
			continue
		}
		failed++
		k := kind(&smithy.GenericAPIError{Code: code, Message: aws.ToString(e.Message)})
		if first == nil {
			key, _ := strings.CutPrefix(aws.ToString(e.Key), s.prefix)
			first = fmt.Errorf("%s: %s: %s", key, code, aws.ToString(e.Message))
		}
		if k == kindPermanent {
			worst = kindPermanent
		}
	}
	if failed == 0 {
		return nil
	}
	sentinel := storage.ErrUnreachable
	if worst == kindPermanent {
		sentinel = storage.ErrPermanent
	}
	return fmt.Errorf("delete batch: %d of %d keys failed: %w: %w", failed, len(keys), sentinel, first)
}

// notImplemented reports a server that does not implement a request
// (DeleteObjects, a conditional write).
func notImplemented(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "NotImplemented" || ae.ErrorCode() == "MethodNotAllowed") {
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && (re.HTTPStatusCode() == http.StatusNotImplemented || re.HTTPStatusCode() == http.StatusMethodNotAllowed)
}

var _ storage.BatchDeleter = (*Store)(nil)

// Leftovers lists multipart uploads under prefix that were started and
// neither completed nor aborted: a Put killed mid-upload (or whose abort
// was lost) leaves its parts stored, and billed, where List does not show
// them. A running Put's upload shows as well, with a recent ModTime (its
// start). The ID is the upload ID; Size is not known without listing parts.
func (s *Store) Leftovers(ctx context.Context, prefix string, fn func(storage.Leftover) error) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
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
	if err := s.connect(ctx); err != nil {
		return err
	}
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
	if errors.Is(err, storage.ErrPermanent) {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	if s.pathStyleHint(ctx, err) {
		return fmt.Errorf("%s %s: %w: %w: the endpoint addresses the bucket as %s.%s, which does not resolve: set WALGO_S3_PATH_STYLE=true (most S3-compatible servers want path-style addressing)",
			op, key, storage.ErrPermanent, err, s.bucket, s.endpointHost)
	}
	switch kind(err) {
	case kindNotFound:
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrNotFound)
	case kindExists:
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrExists)
	case kindPermanent:
		var ae smithy.APIError
		if errors.As(err, &ae) {
			if h, ok := hints[ae.ErrorCode()]; ok {
				return fmt.Errorf("%s %s: %w: %w: %s", op, key, storage.ErrPermanent, err, h)
			}
		}
		if status(err) == http.StatusForbidden {
			return fmt.Errorf("%s %s: %w: %w: %s", op, key, storage.ErrPermanent, err, hints["Forbidden"])
		}
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
	kindExists // a conditional write found the key taken
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
	case "PreconditionFailed":
		return kindExists
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
	case st == http.StatusNotFound && code != "":
		// Not the key: versitygw answers an unknown access key with 404
		// XAdminUserNotFound, which must never read as "no such WAL".
		return kindPermanent
	case st == http.StatusNotFound:
		return kindNotFound
	case st == http.StatusPreconditionFailed:
		return kindExists
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
