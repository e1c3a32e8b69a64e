package swarm_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/testbin"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
	"github.com/moby/moby/client"
)

var downBin testbin.Builder

// TestSwarmDown: with idepool's own service gone (serve stopped), `idepool
// down` with the same settings (RUNTIME=swarm, DEPLOYMENT) removes every
// service of the deployment, and each agent flushes on its way out: a file
// written in a claimed container just before is in S3 afterwards.
func TestSwarmDown(t *testing.T) {
	s := newStack(t, stackOptions{poolTarget: 1})
	s.waitPool(idepool.DefaultProfile, 1, 5*time.Minute)
	ctx := context.Background()
	res, err := s.api.Start(ctx, idepoolclient.StartRequest{Bucket: bucket, Prefix: "down", Wait: true, WaitTimeout: 2 * time.Minute})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	s.waitPool(idepool.DefaultProfile, 1, 5*time.Minute)

	// Stop serve: its service goes, the containers stay.
	if _, err := s.docker.ServiceRemove(ctx, s.idepoolSvc, client.ServiceRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		cl, err := s.docker.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.swarm.service.name="+s.idepoolSvc)})
		if err != nil || len(cl.Items) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if svcs, _, err := swarmtest.Leftovers(ctx, s.docker, s.deployment); err != nil || svcs != 2 {
		t.Fatalf("services of the deployment after serve stopped: %d (%v), want 2", svcs, err)
	}

	const content = "written just before down"
	ctr := s.taskContainer(t, "idepool-"+res.ID)
	// The IDE image has no shell: docker cp writes through the engine.
	src := filepath.Join(t.TempDir(), "last.txt")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("docker", "cp", src, ctr+":/workspace/last.txt").CombinedOutput(); err != nil {
		t.Fatalf("write in the container: %v\n%s", err, out)
	}

	binDir := t.TempDir()
	bin, err := downBin.Path(binDir)
	if err != nil {
		t.Fatalf("build idepool: %v", err)
	}
	cmd := exec.Command(bin, "down")
	env := map[string]string{}
	for k, v := range s.env {
		env[k] = v
	}
	local := t.TempDir()
	env["DATA_DIR"] = local
	env["PROFILES_FILE"] = filepath.Join(s.dataDir, "profiles.json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+h)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("idepool down: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("idepool down:\n%s", stdout.String())
	if !strings.Contains(stdout.String(), "2 stopped, 0 failed") {
		t.Errorf("down's report:\n%s", stdout.String())
	}
	if svcs, ctrs, err := swarmtest.Leftovers(ctx, s.docker, s.deployment); err != nil || svcs+ctrs > 0 {
		t.Errorf("left after down: %d services, %d containers (%v)", svcs, ctrs, err)
	}
	gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	obj, err := s.s3.Client().GetObject(gctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("down/last.txt")})
	if err != nil {
		t.Fatalf("the file written before down is not in S3: %v", err)
	}
	b, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if string(b) != content {
		t.Errorf("down/last.txt in S3 = %q, want %q", b, content)
	}
}
