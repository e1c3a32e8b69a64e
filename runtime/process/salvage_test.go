//go:build linux

package process

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	idepool "github.com/idepool/idepool"
	"github.com/idepool/idepool/wsync"
	"github.com/idepool/idepool/wsync/embeds3"
)

// TestSalvageDeadContainer: a container's agent synced its workspace
// (the real wsync engine, with the base where the agent keeps it), then
// the user wrote more and the agent was SIGKILLed. Salvage must push what
// was not uploaded to a real S3 store (the embedded versitygw), keep a
// conflicting file as a copy beside the newer remote version without
// overwriting it, leave unchanged files alone, and Remove then deletes the
// directory.
func TestSalvageDeadContainer(t *testing.T) {
	ctx := t.Context()
	const ak, sk, bucket, prefix = "salvage-test", "salvage-secret-key", "workspaces", "u1/"
	srv, err := embeds3.Run(ctx, embeds3.Config{Dir: t.TempDir(), Addr: "127.0.0.1:0", AccessKey: ak, SecretKey: sk, Buckets: []string{bucket}})
	if err != nil {
		t.Fatalf("embedded S3: %v", err)
	}
	t.Cleanup(func() { srv.Stop() })
	a := idepool.Assignment{Generation: 1, Workspace: idepool.Workspace{Bucket: bucket, Prefix: prefix},
		Credentials: idepool.Credentials{AccessKeyID: ak, SecretAccessKey: sk}, S3Endpoint: srv.Endpoint}
	store, err := wsync.NewS3Store(wsync.S3Config{Endpoint: srv.Endpoint, Bucket: bucket, AccessKeyID: ak, SecretAccessKey: sk})
	if err != nil {
		t.Fatal(err)
	}

	o := testOptions(t)
	r := openRuntime(t, o)
	spec := testSpec(nil, nil)
	mustCreate(t, r, spec)
	childEnv(t, o.DataDir, spec.ID)
	dir := filepath.Join(o.DataDir, "containers", spec.ID)
	ws := filepath.Join(dir, "workspace")
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(ws, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("synced.txt", "v1")
	write("edited.txt", "v1")
	write("both.txt", "v1")
	// The agent's sync: the same engine and state file the agent uses.
	eng, err := wsync.NewEngine(wsync.Config{Dir: ws, StateFile: filepath.Join(dir, "state", wsync.StateFileName(srv.Endpoint, bucket, prefix)),
		Store: store, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.SyncOnce(ctx); err != nil {
		t.Fatalf("initial sync: %v", err)
	}
	eng.Close()

	// After the last upload: the user writes and edits, someone else (a
	// newer container) changes both.txt remotely, and the agent dies.
	write("new.txt", "written after the last upload")
	write("edited.txt", "v2 local")
	write("both.txt", "v2 local")
	if _, err := store.Put(ctx, prefix+"both.txt", strings.NewReader("v2 remote"), 9, wsync.Condition{}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	agent := r.containers[spec.ID].meta.Process.PID
	r.mu.Unlock()
	if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	res, err := r.Salvage(ctx, spec.ID, a)
	if err != nil {
		t.Fatalf("Salvage: %v", err)
	}
	if res.Uploaded != 2 || res.Conflicts != 1 || res.Failed != 0 || res.Salvaged() != 3 {
		t.Errorf("Salvage = %+v, want 2 uploaded (new.txt, edited.txt), 1 conflict copy (both.txt), 0 failed", res)
	}
	get := func(key string) string {
		t.Helper()
		rc, _, err := store.Get(ctx, key, 0, -1)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return string(b)
	}
	if got := get(prefix + "new.txt"); got != "written after the last upload" {
		t.Errorf("new.txt in S3 = %q", got)
	}
	if got := get(prefix + "edited.txt"); got != "v2 local" {
		t.Errorf("edited.txt in S3 = %q, want the salvaged edit", got)
	}
	if got := get(prefix + "both.txt"); got != "v2 remote" {
		t.Errorf("both.txt in S3 = %q: the newer remote version was overwritten", got)
	}
	objs, err := store.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var copies []string
	for _, ob := range objs {
		if strings.HasPrefix(ob.Key, prefix+"both.conflict-salvaged-") {
			copies = append(copies, ob.Key)
		}
	}
	if len(copies) != 1 || get(copies[0]) != "v2 local" {
		t.Errorf("conflict copies of both.txt: %v, want one holding the local version; objects: %v", copies, objs)
	}
	if err := r.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory after Remove: %v", err)
	}
	// A salvage of what is gone says so.
	if _, err := r.Salvage(ctx, spec.ID, a); idepool.ErrorCode(err) != idepool.ENotFound {
		t.Errorf("Salvage after Remove: %v, want ENotFound", err)
	}
}
