package wsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/errgroup"
)

// S3Config configures the S3 adapter. Credentials come only from here (the
// assignment), never from the environment or shared config files.
type S3Config struct {
	// Endpoint is a custom S3-compatible endpoint (path-style addressing);
	// empty means AWS.
	Endpoint        string
	Region          string
	Bucket          string
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// MultipartThreshold: bodies at least this large use multipart upload
	// (default 16 MiB); PartSize is each part's size (default 8 MiB);
	// PartConcurrency parts go up at once (default 4).
	MultipartThreshold int64
	PartSize           int64
	PartConcurrency    int
	// RequestTimeout bounds one small request (list page, delete, one
	// part); default 2 minutes. Whole-object transfers are bounded by the
	// caller's context and the idle timeouts of the HTTP client.
	RequestTimeout time.Duration
	// Epoch is stamped on every object this store writes (metadata
	// EpochMeta): the writer's owner epoch, so a later reader can tell
	// whose write it was (Engine's fence against a superseded writer).
	Epoch int64
	// HTTPClient overrides the default client (tests).
	HTTPClient *http.Client
}

// S3Store is a Store over one bucket of an S3-compatible server.
type S3Store struct {
	cfg    S3Config
	client *s3.Client
}

var _ Store = (*S3Store)(nil)

// NewS3Store builds the adapter; it makes no request.
func NewS3Store(cfg S3Config) (*S3Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 store: bucket is required")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.MultipartThreshold <= 0 {
		cfg.MultipartThreshold = 16 << 20
	}
	if cfg.PartSize <= 0 {
		cfg.PartSize = 8 << 20
	}
	if cfg.PartSize < 5<<20 {
		cfg.PartSize = 5 << 20 // S3's minimum part size
	}
	if cfg.PartConcurrency <= 0 {
		cfg.PartConcurrency = 4
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 2 * time.Minute
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          64,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: time.Minute,
			ExpectContinueTimeout: time.Second,
		}
		hc = &http.Client{Transport: tr}
	}
	opts := s3.Options{
		Region:                     cfg.Region,
		HTTPClient:                 hc,
		UsePathStyle:               cfg.Endpoint != "",
		RetryMaxAttempts:           3,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.AccessKeyID != "" || cfg.SecretAccessKey != "" {
		opts.Credentials = credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)
	} else {
		opts.Credentials = aws.AnonymousCredentials{}
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	return &S3Store{cfg: cfg, client: s3.New(opts)}, nil
}

// Client exposes the SDK client (tests, tools).
func (s *S3Store) Client() *s3.Client { return s.client }

// List implements Store.
func (s *S3Store) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for pages := 0; p.HasMorePages(); pages++ {
		if pages > 1_000_000 {
			return nil, errors.New("list: too many pages")
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		page, err := p.NextPage(rctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", s.cfg.Bucket, prefix, mapErr(err))
		}
		for _, o := range page.Contents {
			out = append(out, ObjectInfo{
				Key:     aws.ToString(o.Key),
				ETag:    trimETag(aws.ToString(o.ETag)),
				Size:    aws.ToInt64(o.Size),
				ModTime: aws.ToTime(o.LastModified),
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// EpochMeta is the user-metadata key (x-amz-meta-idepool-epoch) that
// carries a writer's owner epoch.
const EpochMeta = "idepool-epoch"

// meta is the metadata stamped on each write.
func (s *S3Store) meta() map[string]string {
	if s.cfg.Epoch == 0 {
		return nil
	}
	return map[string]string{EpochMeta: strconv.FormatInt(s.cfg.Epoch, 10)}
}

// Get implements Store.
func (s *S3Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, ObjectInfo, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)}
	if offset > 0 || length >= 0 {
		if length >= 0 {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
		} else {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
		}
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("get %s: %w", key, mapErr(err))
	}
	info := ObjectInfo{Key: key, ETag: trimETag(aws.ToString(out.ETag)), Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}
	info.Epoch, _ = strconv.ParseInt(out.Metadata[EpochMeta], 10, 64)
	return out.Body, info, nil
}

// Put implements Store.
func (s *S3Store) Put(ctx context.Context, key string, r io.ReaderAt, size int64, cond Condition) (ObjectInfo, error) {
	if size >= s.cfg.MultipartThreshold {
		return s.putMultipart(ctx, key, r, size, cond)
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           aws.String(key),
		Body:          io.NewSectionReader(r, 0, size),
		ContentLength: aws.Int64(size),
		Metadata:      s.meta(),
	}
	if cond.IfMatch != "" {
		in.IfMatch = aws.String(quoteETag(cond.IfMatch))
	}
	if cond.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("put %s: %w", key, mapErr(err))
	}
	return ObjectInfo{Key: key, ETag: trimETag(aws.ToString(out.ETag)), Size: size}, nil
}

func (s *S3Store) putMultipart(ctx context.Context, key string, r io.ReaderAt, size int64, cond Condition) (ObjectInfo, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	created, err := s.client.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), Metadata: s.meta()})
	cancel()
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("create multipart upload %s: %w", key, mapErr(err))
	}
	uploadID := created.UploadId
	abort := func() {
		// Best effort, detached from a possibly cancelled ctx.
		actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer acancel()
		_, _ = s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), UploadId: uploadID})
	}
	nparts := int((size + s.cfg.PartSize - 1) / s.cfg.PartSize)
	parts := make([]types.CompletedPart, nparts)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.PartConcurrency)
	for i := range nparts {
		off := int64(i) * s.cfg.PartSize
		n := min(s.cfg.PartSize, size-off)
		g.Go(func() error {
			pctx, pcancel := context.WithTimeout(gctx, s.cfg.RequestTimeout)
			defer pcancel()
			out, err := s.client.UploadPart(pctx, &s3.UploadPartInput{
				Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), UploadId: uploadID,
				PartNumber: aws.Int32(int32(i + 1)), Body: io.NewSectionReader(r, off, n), ContentLength: aws.Int64(n),
			})
			if err != nil {
				return fmt.Errorf("upload part %d of %s: %w", i+1, key, mapErr(err))
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		abort()
		return ObjectInfo{}, err
	}
	in := &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	if cond.IfMatch != "" {
		in.IfMatch = aws.String(quoteETag(cond.IfMatch))
	}
	if cond.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	cctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
	out, err := s.client.CompleteMultipartUpload(cctx, in)
	cancel()
	if err != nil {
		abort()
		return ObjectInfo{}, fmt.Errorf("complete multipart upload %s: %w", key, mapErr(err))
	}
	return ObjectInfo{Key: key, ETag: trimETag(aws.ToString(out.ETag)), Size: size}, nil
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, key string, cond Condition) error {
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)}
	if cond.IfMatch != "" {
		in.IfMatch = aws.String(quoteETag(cond.IfMatch))
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	if _, err := s.client.DeleteObject(dctx, in); err != nil {
		err = mapErr(err)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// mapErr turns S3 error codes into the Store's sentinel errors, keeping the
// original for the message.
func mapErr(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return errors.Join(ErrPreconditionFailed, err)
		case "NoSuchKey", "NotFound":
			return errors.Join(ErrNotFound, err)
		case "NotImplemented":
			return errors.Join(ErrConditionsUnsupported, err)
		case "NoSuchBucket":
			return errors.Join(ErrNoBucket, err)
		}
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusPreconditionFailed:
			return errors.Join(ErrPreconditionFailed, err)
		case http.StatusNotFound:
			return errors.Join(ErrNotFound, err)
		}
	}
	return err
}

// transient reports whether a store error may pass on its own: no answer
// from the store (unreachable, its name not known yet, a timeout) or an
// answer of 5xx, 429 or 408. The store's refusals (credentials,
// permissions, a missing bucket: other 4xx) are not.
func transient(err error) bool {
	if errors.Is(err, ErrNoBucket) || errors.Is(err, context.Canceled) {
		return false
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		if c := re.HTTPStatusCode(); c != 0 {
			return c >= 500 || c == http.StatusTooManyRequests || c == http.StatusRequestTimeout
		}
	}
	return true
}

// CreateBucket creates the store's bucket (the engine recreates a bucket
// that vanished under a workspace it had synced). An existing bucket is
// not an error.
func (s *S3Store) CreateBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.cfg.Bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("create bucket %s: %w", s.cfg.Bucket, err)
	}
	return nil
}

func trimETag(s string) string { return strings.Trim(s, `"`) }

func quoteETag(s string) string { return `"` + trimETag(s) + `"` }

// syncFlag remembers that the server lacks conditional writes.
type syncFlag struct {
	mu  sync.Mutex
	off bool
}

func (f *syncFlag) disabled() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.off }
func (f *syncFlag) disable()       { f.mu.Lock(); f.off = true; f.mu.Unlock() }

// String never shows the secret.
func (c S3Config) String() string {
	return fmt.Sprintf("S3Config{Endpoint:%q Region:%q Bucket:%q AccessKeyID:%q}", c.Endpoint, c.Region, c.Bucket, c.AccessKeyID)
}

// LogValue keeps the secret out of slog output.
func (c S3Config) LogValue() slog.Value { return slog.StringValue(c.String()) }
