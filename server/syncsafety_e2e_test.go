package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/idepool/idepool"
)

// TestStoreLossUnderLiveContainer: a live container (real agent, real
// embedded store) whose workspace is emptied in the store loses nothing on
// disk: its files go up again and sync.remote_reset is on the event bus.
// Then most files vanish from the store while the marker stays: the
// deletions are held (sync.deletions_held), and applied once confirmed
// through the API.
func TestStoreLossUnderLiveContainer(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 1)
	in := start(t, cfg)
	defer in.stop(t)
	in.waitPool(t, "1 warm", time.Minute, func(w, s, c int) bool { return w == 1 })

	s3c := embeddedS3Client(t, dataDir, cfg.S3EmbeddedAddr)
	const bucket = "store-loss"
	if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	files := []string{"README.md", "src/1.py", "src/2.py", "src/3.py", "src/4.py", "src/5.py", "src/6.py"}
	for _, f := range files {
		putObject(t, s3c, bucket, "carol/"+f, "v1 "+f)
	}
	var res startJSON
	if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": bucket, "s3Prefix": "carol"}, &res); code != 201 || res.State != "running" {
		t.Fatalf("start: %d %+v", code, res)
	}
	ws := filepath.Join(dataDir, "containers", res.ID, "workspace")
	if err := os.WriteFile(filepath.Join(ws, "notes.txt"), []byte("v1 notes.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	files = append(files, "notes.txt")
	eventually(t, "notes.txt and the marker in S3", 30*time.Second, func() error {
		if err := objectIs(s3c, bucket, "carol/notes.txt", "v1 notes.txt"); err != nil {
			return err
		}
		_, err := getObject(s3c, bucket, "carol/.idepool/workspace-id")
		return err
	})
	onDisk := func() []string {
		var out []string
		_ = filepath.WalkDir(ws, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(ws, p)
				out = append(out, filepath.ToSlash(rel))
			}
			return nil
		})
		slices.Sort(out)
		return out
	}
	slices.Sort(files)

	// The store loses the workspace (one rename in its tree: no listing
	// sees half of it).
	prefixDir := filepath.Join(dataDir, "s3", "buckets", bucket, "carol")
	if err := os.Rename(prefixDir, filepath.Join(t.TempDir(), "lost")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every file back in S3", time.Minute, func() error {
		if got := onDisk(); !slices.Equal(got, files) {
			t.Fatalf("on disk now %v, want %v: the sync deleted the user's files", got, files)
		}
		for _, f := range files {
			if err := objectIs(s3c, bucket, "carol/"+f, "v1 "+f); err != nil {
				return err
			}
		}
		return nil
	})
	in.waitEvent(t, res.ID, 30*time.Second, "sync.remote_reset", func(e idepool.Event) bool { return e.Type == idepool.EventSyncRemoteReset })

	// Most files vanish from the store, its marker intact: held.
	if err := os.Rename(filepath.Join(prefixDir, "src"), filepath.Join(t.TempDir(), "src")); err != nil {
		t.Fatal(err)
	}
	ev := in.waitEvent(t, res.ID, time.Minute, "sync.deletions_held", func(e idepool.Event) bool { return e.Type == idepool.EventSyncDeletionsHeld })
	if n, _ := ev.Data["deletionsHeld"].(float64); n != 6 {
		t.Fatalf("deletions held: %+v", ev)
	}
	if got := onDisk(); !slices.Equal(got, files) {
		t.Fatalf("on disk %v while the deletions are held", got)
	}
	var conf struct {
		Confirmed int `json:"confirmed"`
	}
	if code := in.call(t, "POST", "/api/containers/"+res.ID+"/sync/confirm-deletions", nil, &conf); code != 200 || conf.Confirmed != 6 {
		t.Fatalf("confirm-deletions: %d %+v", code, conf)
	}
	eventually(t, "the confirmed deletions applied", 30*time.Second, func() error {
		if got := onDisk(); !slices.Equal(got, []string{"README.md", "notes.txt"}) {
			return fmt.Errorf("on disk %v", got)
		}
		return nil
	})
	if code := in.call(t, "POST", "/api/containers/"+res.ID+"/sync/confirm-deletions", nil, nil); code != 409 {
		t.Fatalf("confirm with nothing held: %d, want 409", code)
	}
}

// TestOrphanAgentProcessesExit: real `idepool agent` processes exit on their
// own — one the orchestrator refuses (no such container), and one whose
// orchestrator is out of reach for IDEPOOL_ORPHAN_TIMEOUT.
func TestOrphanAgentProcessesExit(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 0)
	in := start(t, cfg)
	defer in.stop(t)
	dead := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens
	for _, tc := range []struct{ name, url, timeout string }{
		{"refused", in.base, "1h"},
		{"unreachable", dead, "1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // a hang guard
			defer cancel()
			cmd := exec.CommandContext(ctx, agentBinary(t), "agent")
			cmd.Env = []string{
				"PATH=" + os.Getenv("PATH"),
				idepool.EnvAgentURL + "=" + tc.url,
				idepool.EnvAgentToken + "=not-a-token-of-this-orchestrator",
				idepool.EnvAgentID + "=orph" + tc.name[:4],
				idepool.EnvWorkspaceDir + "=" + filepath.Join(dir, "workspace"),
				idepool.EnvStateDir + "=" + filepath.Join(dir, "state"),
				idepool.EnvOrphanTimeout + "=" + tc.timeout,
				"IDEPOOL_LISTEN_HOST=127.0.0.1",
				fmt.Sprintf("%s=%d", "IDEPOOL_PORT_CODE", freePort(t)),
				fmt.Sprintf("%s=%d", "IDEPOOL_PORT_VNC", freePort(t)),
				fmt.Sprintf("%s=%d", "IDEPOOL_PORT_WEB", freePort(t)),
			}
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("the orphaned agent did not exit; output:\n%s", out)
			}
			if err != nil {
				t.Fatalf("agent: %v\n%s", err, out)
			}
		})
	}
}

// TestStartOverHalfMadeBucket: a crash inside the embedded store's bucket
// creation left the bucket's directory without its metadata (with a file
// in it). The next serve repairs it: the start succeeds (not 500
// CONTAINER_START_FAILED for ever) and the workspace works, file kept.
func TestStartOverHalfMadeBucket(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	p := filepath.Join(dataDir, "s3", "buckets", "half-made", "dana", "notes.txt")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dataDir, freePort(t), 1)
	in := start(t, cfg)
	defer in.stop(t)
	var res startJSON
	if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": "half-made", "s3Prefix": "dana"}, &res); code != 201 || res.State != "running" {
		t.Fatalf("start over a half-made bucket: %d %+v", code, res)
	}
	ws := filepath.Join(dataDir, "containers", res.ID, "workspace")
	if err := fileIs(filepath.Join(ws, "notes.txt"), "kept"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "new.txt"), []byte("works"), 0o644); err != nil {
		t.Fatal(err)
	}
	s3c := embeddedS3Client(t, dataDir, cfg.S3EmbeddedAddr)
	eventually(t, "new.txt in S3", 30*time.Second, func() error { return objectIs(s3c, "half-made", "dana/new.txt", "works") })
}

// TestStoreReplacedUnderLiveContainer: serve restarts with its embedded
// store's data gone (an empty store on the same address, same
// credentials) while a container lives on: its agent recreates the bucket
// and uploads everything again, deleting nothing, and sync.remote_reset is
// on the new instance's event bus.
func TestStoreReplacedUnderLiveContainer(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 1)
	in := start(t, cfg)
	in.waitPool(t, "1 warm", time.Minute, func(w, s, c int) bool { return w == 1 })
	s3c := embeddedS3Client(t, dataDir, cfg.S3EmbeddedAddr)
	const bucket = "store-replaced"
	if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	files := []string{"a.txt", "src/b.txt", "src/c.txt", "src/d.txt"}
	for _, f := range files {
		putObject(t, s3c, bucket, "erin/"+f, "v1 "+f)
	}
	var res startJSON
	if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": bucket, "s3Prefix": "erin"}, &res); code != 201 || res.State != "running" {
		t.Fatalf("start: %d %+v", code, res)
	}
	ws := filepath.Join(dataDir, "containers", res.ID, "workspace")
	eventually(t, "the marker in S3", 30*time.Second, func() error {
		_, err := getObject(s3c, bucket, "erin/.idepool/workspace-id")
		return err
	})
	in.stop(t)
	if err := os.RemoveAll(filepath.Join(dataDir, "s3", "buckets")); err != nil {
		t.Fatal(err)
	}
	in = start(t, cfg)
	defer in.stop(t)
	eventually(t, "every file back in the new store", time.Minute, func() error {
		for _, f := range files {
			if err := fileIs(filepath.Join(ws, f), "v1 "+f); err != nil {
				t.Fatalf("on disk: %v: the sync deleted the user's files", err)
			}
			if err := objectIs(s3c, bucket, "erin/"+f, "v1 "+f); err != nil {
				return err
			}
		}
		return nil
	})
	in.waitEvent(t, res.ID, 30*time.Second, "sync.remote_reset", func(e idepool.Event) bool { return e.Type == idepool.EventSyncRemoteReset })
}
