// Package k8stest gives tests a real Kubernetes: the single-node cluster of
// deploy/kubernetes/cluster.sh, brought up on first use (or reused when it
// already runs), images imported from Docker into its containerd, and a
// namespace per test. Tests skip when the cluster cannot be had (not root,
// no build), except under CI=true, where they fail.
package k8stest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/modroot"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is the running test cluster.
type Cluster struct {
	Config *rest.Config
	Client k8s.Interface
	// Env is what `cluster.sh env` prints: KUBECONFIG, K8S_NODE_IP,
	// K8S_NODE, K8S_POD_CIDR, K8S_CONTAINERD, K8S_CACHE (the built binaries).
	Env  map[string]string
	root string
}

// upOnce: one `cluster.sh up` per test binary (it is idempotent, but each
// call costs a few API round trips).
var (
	upMu  sync.Mutex
	upErr error
	upEnv map[string]string
)

// Require returns the test cluster, bringing it up if needed.
func Require(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the kubernetes tests need a real cluster")
	}
	if os.Geteuid() != 0 {
		Missing(t, "the test cluster runs as root (kubelet, containerd)")
	}
	root, err := modroot.Dir()
	if err != nil {
		t.Fatal(err)
	}
	upMu.Lock()
	if upEnv == nil && upErr == nil {
		upEnv, upErr = up(root)
	}
	env, err := upEnv, upErr
	upMu.Unlock()
	if err != nil {
		Missing(t, "kubernetes test cluster: %v", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", env["KUBECONFIG"])
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	c, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return &Cluster{Config: cfg, Client: c, Env: env, root: root}
}

func up(root string) (map[string]string, error) {
	script := filepath.Join(root, "deploy", "kubernetes", "cluster.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute) // a cold build included
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "up")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s up: %v\n%s", script, err, out.String())
	}
	b, err := exec.CommandContext(ctx, script, "env").Output()
	if err != nil {
		return nil, fmt.Errorf("%s env: %w", script, err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// Script runs deploy/kubernetes/cluster.sh with args.
func (c *Cluster) Script(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(c.root, "deploy", "kubernetes", "cluster.sh"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Import copies Docker images into the cluster's containerd (only those
// that changed).
func (c *Cluster) Import(t testing.TB, images ...string) {
	t.Helper()
	c.Script(t, append([]string{"import"}, images...)...)
}

// Missing skips t, or fails it when CI=true (CI builds the cluster, so a
// missing one there is a failure, not a skip).
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: required)")
	}
	t.Skip(msg)
}

// Ctr runs containerd's ctr against the cluster's containerd, namespace
// k8s.io.
func (c *Cluster) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	full := append([]string{"--address", c.Env["K8S_CONTAINERD"], "-n", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, "ctr", full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// GoImage builds the Go main package pkg (relative to the module root)
// statically and imports it into the cluster's containerd as the one-layer
// image tag (entrypoint: the binary, then args), made as an OCI archive
// here: no Docker needed. The import is skipped when the image is there.
func (c *Cluster) GoImage(t testing.TB, tag, pkg string, args ...string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	archive, ref, digest, err := ociArchive(dir, bin, tag, args)
	if err != nil {
		t.Fatalf("image %s: %v", tag, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if out, err := c.Ctr(ctx, "images", "ls", "name=="+ref); err == nil && strings.Contains(string(out), digest) {
		return
	}
	if _, err := c.Ctr(ctx, "images", "import", archive); err != nil {
		t.Fatal(err)
	}
}

// Namespace creates a namespace for the test and deletes it (with what is
// left in it) when the test ends.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "-" + idepool.NewID()[:8]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name, Labels: map[string]string{"idepool.test": "true"},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	// The admission plugin ServiceAccount refuses pods until the
	// namespace's default service account exists.
	for {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("namespace %s: no default service account: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		zero := int64(0)
		// Pods first, without grace: the namespace controller would give
		// each its full grace period.
		_ = c.Client.CoreV1().Pods(name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		err := c.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// ContainerID returns the containerd id of a pod's container, "" while it
// has none.
func ContainerID(p *corev1.Pod, container string) string {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			_, id, _ := strings.Cut(s.ContainerID, "://")
			return id
		}
	}
	return ""
}
