package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/s3test"
	"github.com/idepool/idepool/wsync"
)

// orphanSetup runs an agent with a real syncer (versitygw), assigned by a
// real hub, and a file written after the assignment that only a flush can
// push (poll and debounce are an hour).
func orphanSetup(t *testing.T, orphanTimeout time.Duration) (e *hubEnv, srv *s3test.Server, done <-chan error) {
	t.Helper()
	srv = s3test.Start(t)
	srv.CreateBucket(t, "orphans")
	e = startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	cfg.OrphanTimeout = orphanTimeout
	cfg.NewSyncer = func(ws, st string, log *slog.Logger) Syncer {
		return wsync.NewAgentSyncer(ws, st, log, wsync.Options{PollInterval: time.Hour, Debounce: time.Hour, MaxDebounce: time.Hour})
	}
	_, done = runAgent(t, cfg)
	_, i := e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	asg := idepool.Assignment{Generation: 1, Workspace: idepool.Workspace{Bucket: "orphans", Prefix: "u1/"},
		Credentials: idepool.Credentials{AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}, S3Endpoint: srv.Endpoint}
	if err := e.hub.Assign(context.Background(), testID, asg); err != nil {
		t.Fatal(err)
	}
	if r, _ := e.rec.waitFor(t, i, "synced", kind(idepool.AgentSynced)); r.Error != "" {
		t.Fatalf("synced: %s", r.Error)
	}
	if err := os.WriteFile(filepath.Join(cfg.WorkspaceDir, "unsaved.txt"), []byte("not pushed yet"), 0o644); err != nil {
		t.Fatal(err)
	}
	return e, srv, done
}

func remoteFile(t *testing.T, srv *s3test.Server, key string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("orphans"), Key: aws.String(key)})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	return string(b), err
}

// An agent whose orchestrator no longer knows it (here: restarted without
// its record) is refused; it flushes its workspace and exits instead of
// reconnecting for ever.
func TestRefusedAgentFlushesAndExits(t *testing.T) {
	e, srv, done := orphanSetup(t, time.Hour)
	addr := e.srv.Listener.Addr().String()
	e.stop()
	startHubWith(t, addr, &verifier{knowsNo: true})
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, err := remoteFile(t, srv, "u1/unsaved.txt"); err != nil || got != "not pushed yet" {
		t.Fatalf("the workspace was not flushed before the exit: %q, %v", got, err)
	}
}

// An agent whose orchestrator stays out of reach for OrphanTimeout
// flushes its workspace and exits.
func TestUnreachableOrchestratorOrphansAgent(t *testing.T) {
	e, srv, done := orphanSetup(t, 300*time.Millisecond)
	e.stop() // nothing listens there any more
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, err := remoteFile(t, srv, "u1/unsaved.txt"); err != nil || got != "not pushed yet" {
		t.Fatalf("the workspace was not flushed before the exit: %q, %v", got, err)
	}
}
