// Package swarmtest prepares a real Docker engine in Swarm mode for tests:
// it initialises Swarm when needed, makes attachable overlay networks and
// FROM-scratch images of Go programs, and removes what a test deployment
// left. Tests skip when Docker is absent, except under CI=true, where they
// fail.
package swarmtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/modroot"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// Missing skips t, or fails it when CI=true (CI installs everything, so a
// missing component there is a failure, not a skip).
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: required)")
	}
	t.Skip(msg)
}

// Require returns a client of an engine in Swarm mode, running
// `docker swarm init --advertise-addr 127.0.0.1` if Swarm is inactive.
func Require(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(client.FromEnv)
	if err != nil {
		Missing(t, "docker client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	if err != nil {
		Missing(t, "docker engine not reachable: %v", err)
	}
	if ping.SwarmStatus == nil || ping.SwarmStatus.NodeState != swarm.LocalNodeStateActive {
		out, err := exec.CommandContext(ctx, "docker", "swarm", "init", "--advertise-addr", "127.0.0.1").CombinedOutput()
		if err != nil && !strings.Contains(string(out), "already part of a swarm") {
			t.Fatalf("docker swarm init: %v: %s", err, out)
		}
	}
	return c
}

// Network creates an attachable overlay network for the test (removed at
// cleanup, after the test's own cleanups) and returns its name.
func Network(t testing.TB, c *client.Client, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%s", prefix, idepool.NewID()[:8])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.NetworkCreate(ctx, name, client.NetworkCreateOptions{
		Driver: "overlay", Attachable: true, Labels: map[string]string{"idepool.test": "true"},
	}); err != nil {
		t.Fatalf("create overlay network %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Containers detach from it asynchronously after their services
		// are removed: retry for a while.
		var err error
		for ctx.Err() == nil {
			if _, err = c.NetworkRemove(ctx, name, client.NetworkRemoveOptions{}); err == nil || cerrdefs.IsNotFound(err) {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		t.Errorf("remove network %s: %v", name, err)
	})
	return name
}

// GoImage builds the Go main package pkg (a path relative to the module
// root, e.g. "./runtime/swarm/testdata/placeholder") statically and wraps
// it in a FROM-scratch image tag with the given entrypoint arguments after
// the binary. The image is rebuilt only when the binary changed.
func GoImage(t testing.TB, tag, pkg string, args ...string) {
	t.Helper()
	root, err := modroot.Dir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	sum, err := fileSum(bin)
	if err != nil {
		t.Fatal(err)
	}
	have, _ := exec.Command("docker", "image", "inspect", "--format", `{{index .Config.Labels "idepool.binary-sha256"}}`, tag).Output()
	if strings.TrimSpace(string(have)) == sum {
		return
	}
	ep := `["/app"`
	for _, a := range args {
		ep += fmt.Sprintf(", %q", a)
	}
	ep += "]"
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY app /app\nLABEL idepool.binary-sha256=%q\nENTRYPOINT %s\n", sum, ep)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	b := exec.Command("docker", "build", "-q", "-t", tag, dir)
	b.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", tag, err, out)
	}
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// RemoveDeployment removes every service labelled idepool.managed=dep and
// waits (up to the context) until their containers are gone. It is the
// tests' safety net: nothing of a test deployment is left behind.
func RemoveDeployment(ctx context.Context, c *client.Client, dep string) error {
	sl, err := c.ServiceList(ctx, client.ServiceListOptions{Filters: make(client.Filters).Add("label", idepool.LabelManaged+"="+dep)})
	if err != nil {
		return fmt.Errorf("list services of %s: %w", dep, err)
	}
	for _, s := range sl.Items {
		if s.Spec.Labels[idepool.LabelManaged] != dep {
			continue
		}
		if _, err := c.ServiceRemove(ctx, s.ID, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove service %s: %w", s.Spec.Name, err)
		}
	}
	for {
		cl, err := c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", idepool.LabelManaged+"="+dep)})
		if err != nil {
			return fmt.Errorf("list containers of %s: %w", dep, err)
		}
		live := 0
		for _, x := range cl.Items {
			if x.State != "exited" && x.State != "dead" {
				live++
			}
		}
		if live == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d containers of %s still running: %w", live, dep, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Leftovers counts services and running containers labelled
// idepool.managed=dep.
func Leftovers(ctx context.Context, c *client.Client, dep string) (services, containers int, err error) {
	sl, err := c.ServiceList(ctx, client.ServiceListOptions{Filters: make(client.Filters).Add("label", idepool.LabelManaged+"="+dep)})
	if err != nil {
		return 0, 0, err
	}
	cl, err := c.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", idepool.LabelManaged+"="+dep)})
	if err != nil {
		return 0, 0, err
	}
	return len(sl.Items), len(cl.Items), nil
}
