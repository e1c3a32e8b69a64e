//go:build cluster

// Package cluster holds the tests of idepool on a real multi-node Docker
// Swarm: N Docker-in-Docker nodes on this machine, made and removed by
// deploy/cluster-local.sh (see deploy/README.md).
//
// The build tag "cluster" keeps these tests out of `go test ./...` and out
// of CI for now (they need root, debootstrap and a minute per cluster);
// run them with
//
//	go test -tags cluster -run . -v -timeout 20m ./e2e/cluster/
//
// Each test makes its own cluster (a unique name and a private subnet that
// collides with no network of the host) and removes all of it at the end.
// With CI=true a missing prerequisite fails the test instead of skipping it.
package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// probeImage is the tiny long-running image of the tests: the local S3
// store (versitygw), made by deploy/build-s3.sh.
const probeImage = "idepool-s3:local"

// cluster is one cluster made by deploy/cluster-local.sh.
type cluster struct {
	t      *testing.T
	name   string
	subnet string
	nodes  int
	images []string
	script string
	down   bool
}

// options of newCluster.
type options struct {
	workers bool     // 1 manager and n-1 workers (else n managers)
	stack   bool     // deploy/stack.yml inside (needs workers)
	images  []string // loaded into every node
}

// unavailable skips the test, or fails it with CI=true.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// newCluster brings up a cluster of n nodes (all managers) with images
// loaded; t.Cleanup removes it unless the test did already.
func newCluster(t *testing.T, n int, o options) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "the cluster tests need root (debootstrap, chroot)")
	}
	for _, tool := range []string{"docker", "debootstrap", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "the cluster tests need %s: %v", tool, err)
		}
	}
	for _, img := range o.images {
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			unavailable(t, "image %s is missing (deploy/build-images.sh, deploy/build-s3.sh): %v", img, err)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	c := &cluster{
		t:      t,
		name:   "ipcl-t" + randomHex(t, 3),
		subnet: freeSubnet(t),
		nodes:  n,
		images: o.images,
		script: filepath.Join(filepath.Dir(file), "..", "..", "deploy", "cluster-local.sh"),
	}
	t.Cleanup(func() {
		// Again after a failed check of down: no test leaves anything.
		if !c.down || len(c.leftovers()) > 0 {
			c.Down()
		}
	})
	start := time.Now()
	args := []string{"up", fmt.Sprint(n)}
	if o.workers {
		args = append(args, "--workers")
	}
	if o.stack {
		args = append(args, "--stack")
	}
	c.run(10*time.Minute, args...)
	t.Logf("cluster %s (%s) of %d nodes up with %v in %v", c.name, c.subnet, n, o.images, time.Since(start).Round(time.Millisecond))
	return c
}

// run runs cluster-local.sh with the cluster's environment; output goes to
// the test log, a failure ends the test.
func (c *cluster) run(timeout time.Duration, args ...string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Env = append(os.Environ(), "CLUSTER_NAME="+c.name, "CLUSTER_SUBNET="+c.subnet, "CLUSTER_IMAGES="+strings.Join(c.images, " "))
	out, err := cmd.CombinedOutput()
	// setup-local.sh prints the API key and a start URL's token once.
	out = secrets.ReplaceAll(out, []byte("$1<redacted>"))
	c.t.Logf("cluster-local.sh %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		c.t.Fatalf("cluster-local.sh %s: %v", strings.Join(args, " "), err)
	}
}

var secrets = regexp.MustCompile(`(idp_|token=)[A-Za-z0-9_-]+`)

// NodeIP is node i's address on the cluster's network, as cluster-local.sh
// assigns it.
func (c *cluster) NodeIP(i int) string {
	return strings.TrimSuffix(c.subnet, ".0/24") + fmt.Sprintf(".%d", 10+i)
}

// Node is the container name of node i (1-based).
func (c *cluster) Node(i int) string { return fmt.Sprintf("%s-%d", c.name, i) }

// Docker runs `docker ARGS` on node i's engine and returns its stdout.
func (c *cluster) Docker(i int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", append([]string{"exec", c.Node(i), "docker"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s on %s: %w: %s", strings.Join(args, " "), c.Node(i), err, stderr.String())
	}
	return stdout.String(), nil
}

// Down removes the cluster.
func (c *cluster) Down() {
	c.t.Helper()
	start := time.Now()
	c.run(5*time.Minute, "down")
	c.down = true
	c.t.Logf("cluster %s down in %v", c.name, time.Since(start).Round(time.Millisecond))
}

// leftovers lists the host's containers, volumes and networks that carry
// the cluster's label.
func (c *cluster) leftovers() []string {
	c.t.Helper()
	var left []string
	filter := "label=idepool.cluster=" + c.name
	for _, kind := range [][]string{{"ps", "-a"}, {"volume", "ls"}, {"network", "ls"}} {
		out, err := exec.Command("docker", append(kind, "-q", "--filter", filter)...).Output()
		if err != nil {
			c.t.Fatalf("docker %v: %v", kind, err)
		}
		for _, id := range strings.Fields(string(out)) {
			left = append(left, kind[0]+" "+id)
		}
	}
	return left
}

// TestClusterUpServiceDown: the cluster comes up with N Ready nodes; a
// service of N replicas (dnsrr: no IPVS here) runs one task on each node;
// down leaves no container, volume or network of the cluster.
func TestClusterUpServiceDown(t *testing.T) {
	const n = 3
	c := newCluster(t, n, options{images: []string{probeImage}})

	out, err := c.Docker(1, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}")
	if err != nil {
		t.Fatal(err)
	}
	ready := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[1] == "Ready" && f[2] == "Active" {
			ready++
		}
	}
	if ready != n {
		t.Fatalf("%d Ready nodes, want %d:\n%s", ready, n, out)
	}

	start := time.Now()
	if _, err := c.Docker(1, "service", "create", "-d", "--name", "probe", "--no-resolve-image",
		"--endpoint-mode", "dnsrr", "--replicas", fmt.Sprint(n), "--restart-condition", "none",
		probeImage, "--access", "probe", "--secret", "probeprobe", "posix", "/tmp"); err != nil {
		t.Fatal(err)
	}
	var nodes map[string]bool
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err = c.Docker(1, "service", "ps", "probe", "--filter", "desired-state=running",
			"--format", "{{.Node}} {{.CurrentState}} {{.Error}}")
		if err != nil {
			t.Fatal(err)
		}
		nodes = map[string]bool{}
		running := 0
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[1] == "Running" {
				nodes[f[0]] = true
				running++
			}
		}
		if running == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 min, %d of %d tasks running:\n%s", running, n, out)
		}
		time.Sleep(250 * time.Millisecond) // polling the engine: it sends no event across `docker exec`
	}
	t.Logf("%d replicas running in %v", n, time.Since(start).Round(time.Millisecond))
	for i := 1; i <= n; i++ {
		if !nodes[c.Node(i)] {
			t.Errorf("no task on %s; tasks on %v", c.Node(i), nodes)
		}
	}

	c.Down()
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("down left %v", left)
	}
}

// TestClusterStack: `cluster-local.sh up --workers --stack` deploys idepool,
// Traefik and the S3 store with the project's own setup-local.sh (which
// fails unless a start request's URL answers through Traefik); from the
// host, idepool answers on node 1's address; every IDE container's task
// runs (its node is logged); down leaves nothing.
func TestClusterStack(t *testing.T) {
	const n = 3
	c := newCluster(t, n, options{workers: true, stack: true,
		images: []string{"idepool:dev", "idepool-ide:test", "idepool-s3:local", "idepool-traefik:v3.6.12"}})

	hc := &http.Client{Timeout: 10 * time.Second}
	res, err := hc.Get("http://" + c.NodeIP(1) + "/api/health")
	if err != nil {
		t.Fatalf("idepool's health from the host: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("idepool's health from the host: %s", res.Status)
	}

	out, err := c.Docker(1, "service", "ls", "--filter", "label=idepool.managed=idepool", "--format", "{{.Name}}")
	if err != nil {
		t.Fatal(err)
	}
	var ide []string
	for _, name := range strings.Fields(out) {
		if !strings.HasPrefix(name, "idepool_") { // the stack's own services
			ide = append(ide, name)
		}
	}
	if len(ide) < 2 {
		t.Fatalf("%d IDE container services, want the warm pool (2) and the claimed one: %q", len(ide), out)
	}
	for _, svc := range ide {
		ps, err := c.Docker(1, "service", "ps", svc, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", svc, strings.TrimSpace(ps))
		if f := strings.Fields(ps); len(f) < 2 || f[1] != "Running" {
			t.Errorf("%s: task not running: %q", svc, ps)
		}
	}

	c.Down()
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("down left %v", left)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freeSubnet picks a /24 in 10.213.0.0/16 that overlaps no route of the host
// and no Docker network on it (other tests make networks at the same time;
// a clash then fails `docker network create`, which the test reports).
func freeSubnet(t *testing.T) string {
	t.Helper()
	var used []*net.IPNet
	routes, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	for _, f := range strings.Fields(string(routes)) {
		if _, n, err := net.ParseCIDR(f); err == nil {
			used = append(used, n)
		}
	}
	ids, err := exec.Command("docker", "network", "ls", "-q").Output()
	if err != nil {
		t.Fatalf("docker network ls: %v", err)
	}
	if fields := strings.Fields(string(ids)); len(fields) > 0 {
		out, err := exec.Command("docker", append([]string{"network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, fields...)...).Output()
		if err != nil {
			t.Fatalf("docker network inspect: %v", err)
		}
		for _, f := range strings.Fields(string(out)) {
			if _, n, err := net.ParseCIDR(f); err == nil {
				used = append(used, n)
			}
		}
	}
	b := make([]byte, 1)
	for range 50 {
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		_, cand, _ := net.ParseCIDR(fmt.Sprintf("10.213.%d.0/24", b[0]))
		free := true
		for _, u := range used {
			if u.Contains(cand.IP) || cand.Contains(u.IP) {
				free = false
				break
			}
		}
		if free {
			return cand.String()
		}
	}
	t.Fatal("no free /24 in 10.213.0.0/16")
	return ""
}
