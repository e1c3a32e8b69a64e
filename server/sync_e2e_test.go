package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// embeddedS3Client is an S3 client of the server's embedded store (the
// zero-config run): any S3 client can be pointed at it.
func embeddedS3Client(t testing.TB, dataDir, addr string) *s3.Client {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "s3", "credentials.json"))
	if err != nil {
		t.Fatalf("embedded S3 credentials: %v", err)
	}
	var c struct{ AccessKey, SecretKey string }
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://" + addr),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, ""),
	})
}

func putObject(t testing.TB, c *s3.Client, bucket, key, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: strings.NewReader(body)}); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func getObject(c *s3.Client, bucket, key string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return string(b), err
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, what string, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func fileIs(path, want string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if string(b) != want {
		return fmt.Errorf("%s holds %q, want %q", path, b, want)
	}
	return nil
}

func objectIs(c *s3.Client, bucket, key, want string) error {
	got, err := getObject(c, bucket, key)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("s3://%s/%s holds %q, want %q", bucket, key, got, want)
	}
	return nil
}

// TestWorkspaceSyncThroughAPI is the zero-config run end to end: files in
// the user's bucket are in the container when start answers (wait=ready);
// a local edit reaches S3, a remote edit reaches the disk, and an edit made
// right before DELETE is in S3 once DELETE answers (the flush).
func TestWorkspaceSyncThroughAPI(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 1)
	cfg.S3EmbeddedAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	in := start(t, cfg)
	defer in.stop(t)
	in.waitPool(t, "1 warm", time.Minute, func(w, s, c int) bool { return w == 1 })

	s3c := embeddedS3Client(t, dataDir, cfg.S3EmbeddedAddr)
	const bucket = "sync-e2e"
	if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	putObject(t, s3c, bucket, "alice/hello.txt", "hello from S3")
	putObject(t, s3c, bucket, "alice/src/main.py", "print('hi')\n")
	putObject(t, s3c, bucket, "bob/secret.txt", "not alice's")

	var res startJSON
	if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": bucket, "s3Prefix": "alice", "userId": "alice"}, &res); code != 201 || res.State != "running" {
		t.Fatalf("start: %d %+v", code, res)
	}
	ws := filepath.Join(dataDir, "containers", res.ID, "workspace")
	// The initial pull is done when start answers with wait=ready.
	for path, want := range map[string]string{"hello.txt": "hello from S3", "src/main.py": "print('hi')\n"} {
		if err := fileIs(filepath.Join(ws, path), want); err != nil {
			t.Errorf("after start: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(ws, "secret.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("another prefix's file reached the workspace: %v", err)
	}

	// Local edit → S3.
	if err := os.WriteFile(filepath.Join(ws, "src", "main.py"), []byte("print('edited locally')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "local edit in S3", 30*time.Second, func() error {
		return objectIs(s3c, bucket, "alice/src/main.py", "print('edited locally')\n")
	})
	// Remote edit → disk.
	putObject(t, s3c, bucket, "alice/hello.txt", "edited in S3")
	eventually(t, "remote edit on disk", 30*time.Second, func() error { return fileIs(filepath.Join(ws, "hello.txt"), "edited in S3") })

	// An edit right before DELETE is flushed before the container goes.
	if err := os.WriteFile(filepath.Join(ws, "last.txt"), []byte("typed just before closing"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := in.call(t, "DELETE", "/api/containers/"+res.ID, nil, nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if err := objectIs(s3c, bucket, "alice/last.txt", "typed just before closing"); err != nil {
		t.Errorf("after DELETE: %v", err)
	}
	if _, err := os.Stat(ws); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace dir still there after DELETE: %v", err)
	}

	// The next start for the workspace gets everything back.
	var again startJSON
	if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": bucket, "s3Prefix": "alice/"}, &again); code != 201 || again.ID == res.ID {
		t.Fatalf("second start: %d %+v", code, again)
	}
	ws2 := filepath.Join(dataDir, "containers", again.ID, "workspace")
	for path, want := range map[string]string{"hello.txt": "edited in S3", "src/main.py": "print('edited locally')\n", "last.txt": "typed just before closing"} {
		if err := fileIs(filepath.Join(ws2, path), want); err != nil {
			t.Errorf("second start: %v", err)
		}
	}
}

// TestPreparedWorkspaceStart: POST /api/workspaces/prepare binds a warm
// container to a workspace ahead of time and pulls its files; the later
// start returns that container, already synced, at once.
func TestPreparedWorkspaceStart(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 2)
	cfg.S3EmbeddedAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	in := start(t, cfg)
	defer in.stop(t)
	in.waitPool(t, "2 warm", time.Minute, func(w, s, c int) bool { return w == 2 })

	s3c := embeddedS3Client(t, dataDir, cfg.S3EmbeddedAddr)
	const bucket = "prepared-e2e"
	if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 256<<10)
	putObject(t, s3c, bucket, "exam/data.bin", string(payload))
	putObject(t, s3c, bucket, "exam/README.md", "# exam\n")

	var prep struct {
		Results []struct {
			ContainerID string `json:"containerId"`
			Status      string `json:"status"`
		} `json:"results"`
	}
	body := map[string]any{"profile": "default", "expiresInSeconds": 600, "workspaces": []map[string]any{{"s3Bucket": bucket, "s3Prefix": "exam"}}}
	if code := in.call(t, "POST", "/api/workspaces/prepare", body, &prep); code != 200 || len(prep.Results) != 1 || prep.Results[0].ContainerID == "" {
		t.Fatalf("prepare: %d %+v", code, prep)
	}
	id := prep.Results[0].ContainerID
	eventually(t, "prepared container synced", time.Minute, func() error {
		var c struct {
			State string `json:"state"`
		}
		in.call(t, "GET", "/api/containers/"+id, nil, &c)
		if c.State != "running" {
			return fmt.Errorf("state %q", c.State)
		}
		return nil
	})

	t0 := time.Now()
	var res startJSON
	code := in.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": bucket, "s3Prefix": "exam"}, &res)
	took := time.Since(t0)
	if code != 201 && code != 200 {
		t.Fatalf("start of a prepared workspace: %d %+v", code, res)
	}
	if res.ID != id || res.State != "running" {
		t.Fatalf("start of a prepared workspace: %+v, want the prepared %s, running", res, id)
	}
	ws := filepath.Join(dataDir, "containers", id, "workspace")
	if err := fileIs(filepath.Join(ws, "README.md"), "# exam\n"); err != nil {
		t.Error(err)
	}
	if err := fileIs(filepath.Join(ws, "data.bin"), string(payload)); err != nil {
		t.Error("data.bin:", err != nil)
	}
	t.Logf("start of a prepared workspace answered in %v (HTTP round trip, files already on disk)", took)
}
