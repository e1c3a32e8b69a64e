// Package embeds3 runs an S3-compatible object store inside the idepool
// process, for the zero-config run: with no S3 configured, `idepool serve`
// keeps workspaces under DATA_DIR and any S3 client (the agents, the aws
// CLI, rclone) can be pointed at it.
//
// It embeds versitygw v1.8.0 (its posix backend and S3 API router, through
// the project's own embedgw entry point) instead of a home-grown server:
// SigV4, ListObjectsV2, ranged GET, conditional PUT/DELETE, multipart and
// checksums come from a server other S3 clients are tested against. The
// price is versitygw's dependencies (fiber, fasthttp and client libraries
// of its optional IAM and event back ends) in the binary.
//
// versitygw keeps a few package-level globals, so one store runs per
// process; Start refuses a second one.
package embeds3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
)

// Config configures the embedded store.
type Config struct {
	// Dir holds the store: Dir/buckets (one directory per bucket, objects
	// as plain files) and, where the filesystem lacks user xattrs,
	// Dir/meta (object metadata).
	Dir string
	// Addr to listen on ("127.0.0.1:9000"; port 0 picks a free port).
	Addr string
	// AccessKey and SecretKey are the root credentials clients sign with.
	AccessKey string
	SecretKey string
	// Region reported to clients [us-east-1].
	Region string
	// Buckets are created at start if missing.
	Buckets []string
	Logger  *slog.Logger
}

// Server is a running embedded store.
type Server struct {
	// Endpoint is the URL clients use (path-style): http://host:port.
	Endpoint string
	Region   string
	client   *s3.Client
	meta     bucketMeta
	owner    string // the root access key: the owner of every bucket
	log      *slog.Logger
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

var running sync.Mutex // versitygw supports one instance per process

// Start is the short form: Start(ctx, dir, addr, accessKey, secretKey,
// logger) → endpoint and a stop function.
func Start(ctx context.Context, dir, addr, accessKey, secretKey string, logger *slog.Logger) (string, func(), error) {
	s, err := Run(ctx, Config{Dir: dir, Addr: addr, AccessKey: accessKey, SecretKey: secretKey, Logger: logger})
	if err != nil {
		return "", nil, err
	}
	return s.Endpoint, func() { _ = s.Stop() }, nil
}

// Run starts the store and returns once it accepts connections. It stops
// when ctx ends or Stop is called.
func Run(ctx context.Context, cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" || cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("embedded s3: dir, access key and secret key are required")
	}
	if len(cfg.SecretKey) < 8 {
		return nil, errors.New("embedded s3: the secret key must be at least 8 characters")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if !running.TryLock() {
		return nil, errors.New("embedded s3: already running in this process")
	}
	ok := false
	defer func() {
		if !ok {
			running.Unlock()
		}
	}()
	// Absolute: the posix backend changes the process's working directory.
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedded s3: %w", err)
	}
	root := filepath.Join(dir, "buckets")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("embedded s3: create %s: %w", root, err)
	}
	opts := posix.PosixOpts{Concurrency: 64}
	var ms meta.MetadataStorer = meta.XattrMeta{}
	bm := bucketMeta{ms: ms, root: root}
	if err := (meta.XattrMeta{}).Test(root); err != nil {
		// No user xattrs here (tmpfs, some overlays): keep metadata in a
		// sidecar tree instead.
		side := filepath.Join(dir, "meta")
		if err := os.MkdirAll(side, 0o700); err != nil {
			return nil, fmt.Errorf("embedded s3: create %s: %w", side, err)
		}
		sc, err := meta.NewSideCar(side)
		if err != nil {
			return nil, fmt.Errorf("embedded s3: sidecar metadata: %w", err)
		}
		ms = sc
		bm = bucketMeta{ms: sc, root: root, sidecar: true}
		opts.SideCarDir = side
		log.Info("embedded s3: no xattr support, using sidecar metadata", "dir", side)
	}
	// Before the gateway serves: a bucket a crash left half-made would
	// otherwise answer InternalError to every request, for ever.
	if err := repairBuckets(bm, cfg.AccessKey, log); err != nil {
		return nil, err
	}
	be, err := posix.New(root, ms, opts)
	if err != nil {
		return nil, fmt.Errorf("embedded s3: posix backend: %w", err)
	}
	addr, err := resolveAddr(cfg.Addr)
	if err != nil {
		be.Shutdown()
		return nil, err
	}
	gw := &embedgw.Config{
		RootUserAccess:    cfg.AccessKey,
		RootUserSecret:    cfg.SecretKey,
		Region:            cfg.Region,
		Ports:             []string{addr},
		MaxConnections:    1000,
		MaxRequests:       500,
		MultipartMaxParts: 10000,
		Quiet:             true,
		KeepAlive:         true,
	}
	// Our own single-account IAM: versitygw's default path to the same one
	// prints "No IAM service configured" on stdout (auth.New).
	gw.IAMService = auth.NewIAMServiceSingle(gw.IamOpts().RootAccount)
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Server{cancel: cancel, done: make(chan error, 1), Endpoint: "http://" + dialAddr(addr), Region: cfg.Region,
		meta: bm, owner: cfg.AccessKey, log: log}
	s.client = s3.New(s3.Options{Region: cfg.Region, BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		HTTPClient:  &http.Client{Timeout: 30 * time.Second}})
	go func() {
		err := embedgw.RunVersityGW(rctx, be, gw)
		running.Unlock()
		s.done <- err
		close(s.done)
	}()
	ok = true // the goroutine owns the lock now
	if err := waitListening(dialAddr(addr), s.done, 15*time.Second); err != nil {
		cancel()
		return nil, fmt.Errorf("embedded s3: %w", err)
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Stop()
		case <-rctx.Done():
		}
	}()
	for _, b := range cfg.Buckets {
		if err := s.EnsureBucket(ctx, b); err != nil {
			_ = s.Stop()
			return nil, err
		}
	}
	log.Debug("embedded s3 store running (local only)", "endpoint", s.Endpoint, "dir", dir)
	return s, nil
}

// EnsureBucket creates a bucket unless it exists (the zero-config run
// creates a workspace's bucket on first use). It is idempotent, and a
// bucket a crash left half-made is repaired, its objects kept.
func (s *Server) EnsureBucket(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Repair first (a stat and an xattr read): the create would answer
	// InternalError, retried by the SDK, before failing.
	repaired, err := repairBucket(s.meta, name, s.owner)
	if err != nil {
		return fmt.Errorf("embedded s3: create bucket %s: %w", name, err)
	}
	if repaired {
		s.log.Warn("embedded s3: repaired a bucket a crash left without its metadata", "bucket", name)
	}
	if err := s.createBucket(ctx, name); err != nil {
		return fmt.Errorf("embedded s3: create bucket %s: %w", name, err)
	}
	return nil
}

func (s *Server) createBucket(ctx context.Context, name string) error {
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return err
	}
	return nil
}

// The posix backend makes a bucket in two steps: mkdir, then its metadata
// (the "acl" and "ownership" attributes). A crash between them leaves a
// directory every request then fails on ("get bucket acl: no such key"),
// and CreateBucket answers InternalError instead of creating it. These are
// the attribute names and the values its CreateBucket writes for a plain
// create by the root user (versitygw v1.8.0, backend/posix).
const (
	attrACL       = "acl"
	attrOwnership = "ownership"
)

// bucketMeta reads and writes a bucket's attributes where the backend keeps
// them: xattrs on the bucket directory (under root) or the sidecar tree
// (keyed by bucket name).
type bucketMeta struct {
	ms      meta.MetadataStorer
	root    string
	sidecar bool
}

func (m bucketMeta) path(bucket string) string {
	if m.sidecar {
		return bucket
	}
	return filepath.Join(m.root, bucket)
}

// repairBucket gives a half-made bucket the metadata a completed create
// writes; repaired is false when the bucket is not half-made (absent, or
// complete). Objects in it are left as they are.
func repairBucket(m bucketMeta, bucket, owner string) (repaired bool, err error) {
	if bucket == "" || bucket[0] == '.' || filepath.Base(bucket) != bucket {
		return false, nil // not a bucket name (the backend's own .sgwtmp)
	}
	if fi, err := os.Stat(filepath.Join(m.root, bucket)); err != nil || !fi.IsDir() {
		return false, nil
	}
	_, err = m.ms.RetrieveAttribute(nil, m.path(bucket), "", attrACL)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, meta.ErrNoSuchKey) {
		return false, fmt.Errorf("read bucket %s metadata: %w", bucket, err)
	}
	acl, err := json.Marshal(auth.ACL{Owner: owner, Grantees: []auth.Grantee{
		{Permission: auth.PermissionFullControl, Access: owner, Type: types.TypeCanonicalUser}}})
	if err != nil {
		return false, err
	}
	// Ownership first: acl is what marks the bucket complete.
	if err := m.ms.StoreAttribute(nil, m.path(bucket), "", attrOwnership, []byte(types.ObjectOwnershipBucketOwnerEnforced)); err != nil {
		return false, fmt.Errorf("repair bucket %s: %w", bucket, err)
	}
	if err := m.ms.StoreAttribute(nil, m.path(bucket), "", attrACL, acl); err != nil {
		return false, fmt.Errorf("repair bucket %s: %w", bucket, err)
	}
	return true, nil
}

// repairBuckets repairs every half-made bucket of the store.
func repairBuckets(m bucketMeta, owner string, log *slog.Logger) error {
	ents, err := os.ReadDir(m.root)
	if err != nil {
		return fmt.Errorf("embedded s3: read %s: %w", m.root, err)
	}
	for _, d := range ents {
		if !d.IsDir() {
			continue
		}
		repaired, err := repairBucket(m, d.Name(), owner)
		if err != nil {
			return fmt.Errorf("embedded s3: %w", err)
		}
		if repaired {
			log.Warn("embedded s3: repaired a bucket a crash left without its metadata", "bucket", d.Name())
		}
	}
	return nil
}

// LoadOrCreateCredentials returns the store's root credentials, kept in
// dir/credentials.json (mode 0600) and generated on first use, so the
// zero-config run needs no secret in its configuration.
func LoadOrCreateCredentials(dir string) (accessKey, secretKey string, err error) {
	file := filepath.Join(dir, "credentials.json")
	var c struct {
		AccessKey string `json:"accessKey"`
		SecretKey string `json:"secretKey"`
	}
	if b, err := os.ReadFile(file); err == nil {
		if json.Unmarshal(b, &c) == nil && c.AccessKey != "" && c.SecretKey != "" {
			return c.AccessKey, c.SecretKey, nil
		}
	}
	var rb [24]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return "", "", err
	}
	c.AccessKey = "idepool-" + hex.EncodeToString(rb[:4])
	c.SecretKey = hex.EncodeToString(rb[4:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("embedded s3: %w", err)
	}
	b, _ := json.Marshal(c)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return "", "", fmt.Errorf("embedded s3: save credentials: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return "", "", fmt.Errorf("embedded s3: save credentials: %w", err)
	}
	return c.AccessKey, c.SecretKey, nil
}

// Stop shuts the store down and waits for it (at most 10 s).
func (s *Server) Stop() error {
	var err error
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case e, ok := <-s.done:
			if ok {
				err = e
			}
		case <-time.After(10 * time.Second):
			err = errors.New("embedded s3: shutdown timed out")
		}
	})
	return err
}

// resolveAddr turns port 0 into a free port: versitygw listens itself and
// does not report the port it got.
func resolveAddr(addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("embedded s3: address %q: %w", addr, err)
	}
	if p, _ := strconv.Atoi(port); p != 0 {
		// Tried first: waitListening would take another socket on addr
		// for the store, which then fails to bind on its own.
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return "", fmt.Errorf("embedded s3: %w", err)
		}
		_ = l.Close()
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("embedded s3: find a free port: %w", err)
	}
	_, port, _ = net.SplitHostPort(l.Addr().String())
	_ = l.Close()
	return net.JoinHostPort(host, port), nil
}

// dialAddr is where a local client reaches addr (a wildcard host means
// this machine).
func dialAddr(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func waitListening(addr string, done <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("stopped at start: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("not listening on %s after %v", addr, timeout)
}
