package server_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/idepool/idepool"
)

// TestDeadAgentSalvaged is the whole path with real parts: `serve` with the
// process runtime and the embedded S3 store, the real agent. The agent is
// frozen (SIGSTOP: the fault is injected at a known point, no race with
// its watcher), the user writes a new file and edits one that someone
// else changes in S3 meanwhile, then the agent is SIGKILLed. Before its
// directory goes, the new file must reach S3, the conflicting edit must
// land as a conflict copy beside the newer remote version (which keeps
// its name and content), and a container.salvaged event must count them.
func TestDeadAgentSalvaged(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := e2eConfig(t, dataDir, 1, time.Hour)
	in := start(t, cfg)
	defer in.stop(t)
	in.waitPool(t, "1 warm", time.Minute, func(w, s, c int) bool { return w == 1 })

	s3c := embeddedS3Client(t, dataDir, cfg.S3EmbeddedAddr)
	const bucket = "salvage-e2e"
	if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	putObject(t, s3c, bucket, "u/both.txt", "v1")
	var res startJSON
	if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": bucket, "s3Prefix": "u", "userId": "u"}, &res); code != 201 || res.State != "running" {
		t.Fatalf("start: %d %+v", code, res)
	}
	ws := filepath.Join(dataDir, "containers", res.ID, "workspace")
	if err := fileIs(filepath.Join(ws, "both.txt"), "v1"); err != nil {
		t.Fatal(err)
	}
	// A file the agent did upload: a base exists, the sync was live.
	if err := os.WriteFile(filepath.Join(ws, "synced.txt"), []byte("uploaded"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "synced.txt in S3", 30*time.Second, func() error { return objectIs(s3c, bucket, "u/synced.txt", "uploaded") })

	pid := agentPID(t, dataDir, res.ID)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "new.txt"), []byte("written after the last upload"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "both.txt"), []byte("v2 local"), 0o644); err != nil {
		t.Fatal(err)
	}
	putObject(t, s3c, bucket, "u/both.txt", "v2 remote")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	ev := in.waitEvent(t, res.ID, time.Minute, string(idepool.EventSalvaged), func(e idepool.Event) bool {
		return e.Type == idepool.EventSalvaged
	})
	if ev.Reason != "salvaged" || ev.Data["salvaged"] != float64(2) || ev.Data["conflicts"] != float64(1) || ev.Data["failed"] != float64(0) {
		t.Errorf("event = %+v, want 2 salvaged (new.txt; both.txt as a conflict copy), 0 failed", ev)
	}
	if err := objectIs(s3c, bucket, "u/new.txt", "written after the last upload"); err != nil {
		t.Errorf("new file not salvaged: %v", err)
	}
	if err := objectIs(s3c, bucket, "u/both.txt", "v2 remote"); err != nil {
		t.Errorf("newer remote work overwritten: %v", err)
	}
	out, err := s3c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("u/both.conflict-salvaged-")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 1 {
		t.Fatalf("conflict copies: %d, want 1", len(out.Contents))
	}
	if err := objectIs(s3c, bucket, *out.Contents[0].Key, "v2 local"); err != nil {
		t.Errorf("conflict copy: %v", err)
	}
	// Then the directory goes.
	eventually(t, "directory removed", 30*time.Second, func() error {
		if _, err := os.Stat(filepath.Dir(ws)); !os.IsNotExist(err) {
			return os.ErrExist
		}
		return nil
	})
}
