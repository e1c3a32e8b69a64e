package embeds3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/idepool/idepool"
	"github.com/idepool/idepool/wsync"
)

func TestEmbeddedStoreServesS3AndSyncs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ak, sk, err := LoadOrCreateCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ak2, sk2, err := LoadOrCreateCredentials(dir); err != nil || ak2 != ak || sk2 != sk {
		t.Fatal("credentials are not kept")
	}
	srv, err := Run(ctx, Config{Dir: dir, Addr: "127.0.0.1:0", AccessKey: ak, SecretKey: sk, Buckets: []string{"preset"}})
	if err != nil {
		t.Fatal(err)
	}
	endpoint := srv.Endpoint
	defer srv.Stop()
	if err := srv.EnsureBucket(ctx, "preset"); err != nil {
		t.Fatalf("EnsureBucket on an existing bucket: %v", err)
	}
	if _, _, err := Start(ctx, t.TempDir(), "127.0.0.1:0", ak, sk, nil); err == nil {
		t.Fatal("a second embedded store in one process was accepted")
	}

	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(ak, sk, ""), HTTPClient: &http.Client{Timeout: time.Minute}})
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("workspaces")}); err != nil {
		t.Fatal(err)
	}
	// Wrong credentials are refused (SigV4 is checked).
	bad := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(ak, "wrong-secret", "")})
	if _, err := bad.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("workspaces")}); err == nil {
		t.Fatal("a request signed with a wrong secret was accepted")
	}

	store, err := wsync.NewS3Store(wsync.S3Config{Endpoint: endpoint, Bucket: "workspaces", AccessKeyID: ak, SecretAccessKey: sk, MultipartThreshold: 6 << 20})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 11<<20)
	_, _ = rand.Read(big)
	first, err := store.Put(ctx, "u1/big.bin", bytes.NewReader(big), int64(len(big)), wsync.Condition{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("multipart put: %v", err)
	}
	if _, err := store.Put(ctx, "u1/big.bin", bytes.NewReader(big[:10]), 10, wsync.Condition{IfNoneMatch: true}); !errors.Is(err, wsync.ErrPreconditionFailed) {
		t.Fatalf("If-None-Match on an existing key: %v", err)
	}
	if _, err := store.Put(ctx, "u1/big.bin", bytes.NewReader(big[:10]), 10, wsync.Condition{IfMatch: "0123"}); !errors.Is(err, wsync.ErrPreconditionFailed) {
		t.Fatalf("If-Match with a wrong ETag: %v", err)
	}
	rc, _, err := store.Get(ctx, "u1/big.bin", 5<<20, 100)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rc)
	_ = rc.Close()
	if !bytes.Equal(part, big[5<<20:5<<20+100]) {
		t.Fatal("ranged GET returned the wrong bytes")
	}
	if _, err := store.Put(ctx, "u1/src/a.txt", bytes.NewReader([]byte("hello")), 5, wsync.Condition{}); err != nil {
		t.Fatal(err)
	}
	objs, err := store.List(ctx, "u1/")
	if err != nil || len(objs) != 2 || objs[0].ETag != first.ETag {
		t.Fatalf("list = %+v, %v", objs, err)
	}

	// The agent's syncer works against it end to end.
	ws := filepath.Join(t.TempDir(), "workspace")
	syncer := wsync.NewAgentSyncer(ws, filepath.Join(t.TempDir(), "state"), nil, wsync.Options{PollInterval: 200 * time.Millisecond})
	a := idepool.Assignment{Workspace: idepool.Workspace{Bucket: "workspaces", Prefix: "u1"}, Credentials: idepool.Credentials{AccessKeyID: ak, SecretAccessKey: sk}, S3Endpoint: endpoint}
	if err := syncer.Start(ctx, a, func(idepool.AgentReport) {}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(ws, "big.bin")); !bytes.Equal(got, big) {
		t.Fatal("big.bin not pulled")
	}
	if err := os.WriteFile(filepath.Join(ws, "src", "b.txt"), []byte("from the IDE"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syncer.Stop(ctx); err != nil { // Stop flushes
		t.Fatal(err)
	}
	rc, _, err = store.Get(ctx, "u1/src/b.txt", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	_ = rc.Close()
	if string(got) != "from the IDE" {
		t.Fatalf("b.txt in the store = %q", got)
	}
	// Objects are plain files under dir: the store is inspectable.
	if b, err := os.ReadFile(filepath.Join(dir, "buckets", "workspaces", "u1", "src", "b.txt")); err != nil || string(b) != "from the IDE" {
		t.Fatalf("backing file: %q, %v", b, err)
	}
}

// halfMadeBucket leaves what a crash inside the backend's CreateBucket
// leaves: the bucket's directory (mkdir is its first step) without the
// metadata written after it, here with a file a user had in it.
func halfMadeBucket(t *testing.T, dir, bucket string) {
	t.Helper()
	p := filepath.Join(dir, "buckets", bucket, "u1", "notes.txt")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkBucketWorks proves a workspace in bucket works: the file already in
// it is pulled, a new one is pushed.
func checkBucketWorks(t *testing.T, ctx context.Context, srv *Server, ak, sk, bucket string) {
	t.Helper()
	ws := filepath.Join(t.TempDir(), "workspace")
	syncer := wsync.NewAgentSyncer(ws, filepath.Join(t.TempDir(), "state"), nil, wsync.Options{PollInterval: time.Hour})
	a := idepool.Assignment{Workspace: idepool.Workspace{Bucket: bucket, Prefix: "u1"}, Credentials: idepool.Credentials{AccessKeyID: ak, SecretAccessKey: sk}, S3Endpoint: srv.Endpoint}
	if err := syncer.Start(ctx, a, func(idepool.AgentReport) {}); err != nil {
		t.Fatalf("workspace start: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(ws, "notes.txt")); err != nil || string(got) != "kept" {
		t.Fatalf("the object the bucket held before the crash: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(ws, "new.txt"), []byte("after"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syncer.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	store, err := wsync.NewS3Store(wsync.S3Config{Endpoint: srv.Endpoint, Bucket: bucket, AccessKeyID: ak, SecretAccessKey: sk})
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := store.Get(ctx, "u1/new.txt", 0, -1)
	if err != nil {
		t.Fatalf("new.txt not pushed: %v", err)
	}
	b, _ := io.ReadAll(rc)
	_ = rc.Close()
	if string(b) != "after" {
		t.Fatalf("new.txt = %q", b)
	}
}

// A crash during bucket creation must not poison the workspace: a store
// restarted over the half-made bucket repairs it (keeping its objects).
func TestHalfMadeBucketRepairedAtStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ak, sk, err := LoadOrCreateCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	halfMadeBucket(t, dir, "crashed")
	srv, err := Run(ctx, Config{Dir: dir, Addr: "127.0.0.1:0", AccessKey: ak, SecretKey: sk})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if err := srv.EnsureBucket(ctx, "crashed"); err != nil {
		t.Fatalf("EnsureBucket over a half-made bucket: %v", err)
	}
	if err := srv.EnsureBucket(ctx, "crashed"); err != nil {
		t.Fatalf("EnsureBucket again: %v", err)
	}
	checkBucketWorks(t, ctx, srv, ak, sk, "crashed")
}

// The same state found by EnsureBucket itself (the bucket directory made
// behind the running store's back) is repaired there.
func TestHalfMadeBucketRepairedByEnsureBucket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ak, sk, err := LoadOrCreateCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Run(ctx, Config{Dir: dir, Addr: "127.0.0.1:0", AccessKey: ak, SecretKey: sk})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	halfMadeBucket(t, dir, "crashed")
	if err := srv.EnsureBucket(ctx, "crashed"); err != nil {
		t.Fatalf("EnsureBucket over a half-made bucket: %v", err)
	}
	checkBucketWorks(t, ctx, srv, ak, sk, "crashed")
}

// The store replaced by an empty one on the same address (Swarm restarting
// it on another node with a new volume) under a live sync: nothing is
// deleted on disk, every file goes up again (into a bucket the engine
// creates again if the new store has none) and a remote-reset is reported.
func TestStoreReplacedByAnEmptyOneUnderLiveSync(t *testing.T) {
	t.Run("bucket provisioned", func(t *testing.T) { testStoreReplaced(t, []string{"replaced"}) })
	t.Run("no bucket", func(t *testing.T) { testStoreReplaced(t, nil) })
}

func testStoreReplaced(t *testing.T, buckets []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ak, sk, err := LoadOrCreateCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Run(ctx, Config{Dir: dir, Addr: "127.0.0.1:0", AccessKey: ak, SecretKey: sk, Buckets: []string{"replaced"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(srv.Endpoint, "http://")
	store, err := wsync.NewS3Store(wsync.S3Config{Endpoint: srv.Endpoint, Bucket: "replaced", AccessKeyID: ak, SecretAccessKey: sk})
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"a.txt", "src/b.txt", "src/c.txt", "src/d/e.txt", "f.txt"}
	for _, rel := range files[:4] {
		if _, err := store.Put(ctx, "u1/"+rel, bytes.NewReader([]byte("v "+rel)), int64(len("v "+rel)), wsync.Condition{}); err != nil {
			t.Fatal(err)
		}
	}
	ws := filepath.Join(t.TempDir(), "workspace")
	var mu sync.Mutex
	var events []string
	syncer := wsync.NewAgentSyncer(ws, filepath.Join(t.TempDir(), "state"), nil, wsync.Options{PollInterval: 100 * time.Millisecond, Debounce: 20 * time.Millisecond})
	a := idepool.Assignment{Workspace: idepool.Workspace{Bucket: "replaced", Prefix: "u1"}, Credentials: idepool.Credentials{AccessKeyID: ak, SecretAccessKey: sk}, S3Endpoint: srv.Endpoint}
	if err := syncer.Start(ctx, a, func(r idepool.AgentReport) { mu.Lock(); events = append(events, r.Event); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	defer syncer.Stop(ctx)
	if err := os.WriteFile(filepath.Join(ws, "f.txt"), []byte("v f.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	remote := func(rel string) bool {
		rc, _, err := store.Get(ctx, "u1/"+rel, 0, -1)
		if err != nil {
			return false
		}
		_ = rc.Close()
		return true
	}
	waitFor(t, func() string {
		if !remote("f.txt") || !remote(wsync.MarkerRel) {
			return "f.txt and the marker not in the first store"
		}
		return ""
	})

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	srv2, err := Run(ctx, Config{Dir: t.TempDir(), Addr: addr, AccessKey: ak, SecretKey: sk, Buckets: buckets})
	if err != nil {
		t.Fatalf("the replacement store on %s: %v", addr, err)
	}
	defer srv2.Stop()
	waitFor(t, func() string {
		for _, rel := range files {
			if b, err := os.ReadFile(filepath.Join(ws, rel)); err != nil || string(b) != "v "+rel {
				t.Fatalf("%s on disk: %q, %v: the sync deleted the user's files", rel, b, err)
			}
			if !remote(rel) {
				return rel + " not uploaded again"
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(events, "remote-reset") {
			return "no remote-reset event"
		}
		return ""
	})
}

func waitFor(t *testing.T, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An address another socket holds is refused, not taken for the store
// (whose own bind would then fail unseen), and the store can start again.
func TestAddressInUseRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	ak, sk, err := LoadOrCreateCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	if srv, err := Run(t.Context(), Config{Dir: dir, Addr: ln.Addr().String(), AccessKey: ak, SecretKey: sk}); err == nil {
		srv.Stop()
		t.Fatalf("Run on %s, held by another socket, succeeded", ln.Addr())
	}
	srv, err := Run(t.Context(), Config{Dir: dir, Addr: "127.0.0.1:0", AccessKey: ak, SecretKey: sk})
	if err != nil {
		t.Fatalf("Run after the refusal: %v", err)
	}
	srv.Stop()
}
