package swarm

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/wsync"
	"github.com/idepool/idepool/wsync/embeds3"
	"github.com/moby/moby/client"
)

// TestSalvageStoppedTaskContainer: a file written in a task container's
// /workspace that never reached S3 (the container is killed) is pushed to
// a real S3 store (the embedded versitygw) by Salvage, from the stopped
// container on this engine's node; with no container left to read,
// Salvage answers EUnavailable (the orchestrator then says what may be
// lost).
func TestSalvageStoppedTaskContainer(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment())
	ctx := t.Context()
	const ak, sk, bucket, prefix = "salvage-test", "salvage-secret-key", "workspaces", "u1/"
	srv, err := embeds3.Run(ctx, embeds3.Config{Dir: t.TempDir(), Addr: "127.0.0.1:0", AccessKey: ak, SecretKey: sk, Buckets: []string{bucket}})
	if err != nil {
		t.Fatalf("embedded S3: %v", err)
	}
	t.Cleanup(func() { srv.Stop() })
	a := idepool.Assignment{Generation: 1, Workspace: idepool.Workspace{Bucket: bucket, Prefix: prefix},
		Credentials: idepool.Credentials{AccessKeyID: ak, SecretAccessKey: sk}, S3Endpoint: srv.Endpoint}

	in := create(t, rt, testProfile(), nil)
	waitStatus(t, rt, in.ID, idepool.StatusRunning)
	cid := e.taskContainer(t, ctx, in.ID)
	// The user's unsynced file, put into the container's own filesystem.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	const body = "written after the last upload"
	for _, h := range []*tar.Header{
		{Name: "workspace/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "workspace/notes.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Write([]byte(body))
	tw.Close()
	if _, err := e.c.CopyToContainer(ctx, cid, client.CopyToContainerOptions{DestinationPath: "/", Content: &buf}); err != nil {
		t.Fatalf("copy into the container: %v", err)
	}
	e.kill(t, in.ID)
	waitStatus(t, rt, in.ID, idepool.StatusFailed)

	res, err := rt.Salvage(ctx, in.ID, a)
	if err != nil {
		t.Fatalf("Salvage: %v", err)
	}
	if res.Uploaded != 1 || res.Salvaged() != 1 || res.Failed != 0 {
		t.Errorf("Salvage = %+v, want 1 file uploaded", res)
	}
	store, err := wsync.NewS3Store(wsync.S3Config{Endpoint: srv.Endpoint, Bucket: bucket, AccessKeyID: ak, SecretAccessKey: sk})
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := store.Get(ctx, prefix+"notes.txt", 0, -1)
	if err != nil {
		t.Fatalf("salvaged file not in S3: %v", err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != body {
		t.Errorf("notes.txt in S3 = %q", got)
	}

	if err := rt.Remove(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	// One whose container is elsewhere (another node) or gone.
	if _, err := rt.Salvage(ctx, idepool.NewID(), a); idepool.ErrorCode(err) != idepool.EUnavailable || !strings.Contains(err.Error(), "cannot be reached") {
		t.Errorf("Salvage with no container left: %v, want EUnavailable", err)
	}
}
