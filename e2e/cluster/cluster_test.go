//go:build cluster

// Package cluster holds the tests of idepool on a real multi-node Docker
// Swarm: N Docker-in-Docker nodes on this machine, made and removed by
// deploy/cluster-local.sh (see deploy/README.md).
//
// The build tag "cluster" keeps these tests out of `go test ./...` (they
// need root, debootstrap and a minute per cluster); scripts/test.sh runs
// them after the main tests, as root with CI=true:
//
//	go test -tags cluster -race=false -run . -v -timeout 20m ./e2e/cluster/
//
// The harness (this file), for every test and benchmark of the package
// (it takes a testing.TB):
//
//   - newCluster(t, n, options{...}) makes a cluster of its own for one
//     test (a unique name ipcl-t<hex> and a private subnet that collides
//     with no network of the host) and removes all of it when the test ends;
//     prepareCluster and up are its two halves, which the benchmarks' one
//     shared cluster (bench_test.go, name ipcb-<hex>) uses, removed by
//     TestMain with script1 after every benchmark ran;
//   - sharedManagers(t) returns THE cluster of 3 managers with the stack
//     deployed by the project's own scripts (cluster-local.sh up 3 --stack),
//     shared by the tests listed in managersTests (in that order, never in
//     parallel): the first one makes it, the last one that runs (or any that
//     fails) removes it;
//   - (*cluster) Node, NodeIP, Docker, Down reach a node, its engine, and
//     remove the cluster; (*deployment) the stack's API key, entry address
//     and client; pollUntil waits on a condition with a deadline;
//   - in deploy_test.go: firstByte, wsEcho, routeCookie (a container's
//     routes), putWorkspaceFile and storeObject (a file into a container's
//     workspace, an object out of the local S3 store).
//
// Every test cluster is labelled idepool.cluster=ipcl-t<hex> (a benchmark's
// ipcb-<hex>): scripts/test.sh removes whatever a killed or timed-out run
// left by that label.
// With CI=true a missing prerequisite fails the test instead of skipping it.
package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/modroot"
	"github.com/moby/moby/client"
)

// cluster is one cluster made by deploy/cluster-local.sh. Its t is the
// test or benchmark using it now (a shared cluster passes from one to the
// next).
type cluster struct {
	t      testing.TB
	name   string
	subnet string
	nodes  int
	images []string
	script string
	env    []string // more environment of cluster-local.sh
	down   bool
}

// options of newCluster.
type options struct {
	workers bool     // 1 manager and n-1 workers (else n managers)
	stack   bool     // deploy/stack.yml inside, by setup-local.sh on node 1
	images  []string // loaded into every node
	prefix  string   // of the cluster's name: "ipcl-t" unless set
}

// unavailable skips the test or benchmark, or fails it with CI=true.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// newCluster brings up a cluster of n nodes (all managers) with images
// loaded; t.Cleanup removes it unless the test did already.
func newCluster(t testing.TB, n int, o options) *cluster {
	t.Helper()
	c := prepareCluster(t, n, o)
	t.Cleanup(func() {
		// Again after a failed check of down: no test leaves anything.
		if !c.down || len(c.leftovers()) > 0 {
			c.Down()
		}
	})
	c.up(o)
	return c
}

// prepareCluster checks the prerequisites and names a cluster; up makes it.
func prepareCluster(t testing.TB, n int, o options) *cluster {
	t.Helper()
	requireCluster(t, o.images)
	if o.prefix == "" {
		o.prefix = "ipcl-t"
	}
	root, err := modroot.Dir()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{
		t:      t,
		name:   o.prefix + randomHex(t, 3),
		subnet: freeSubnet(t),
		nodes:  n,
		images: o.images,
		script: filepath.Join(root, "deploy", "cluster-local.sh"),
	}
	return c
}

// requireCluster skips (fails with CI=true) unless this machine can make a
// cluster with images.
func requireCluster(t testing.TB, images []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "the cluster tests need root (debootstrap, chroot)")
	}
	for _, tool := range []string{"docker", "debootstrap", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "the cluster tests need %s: %v", tool, err)
		}
	}
	for _, img := range images {
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			unavailable(t, "image %s is missing (deploy/build-images.sh, deploy/build-s3.sh, deploy/build-traefik.sh): %v", img, err)
		}
	}
}

// up runs cluster-local.sh up with o.
func (c *cluster) up(o options) {
	c.t.Helper()
	n, t := c.nodes, c.t
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
}

// run runs cluster-local.sh with the cluster's environment; output goes to
// the test log, a failure ends the test.
func (c *cluster) run(timeout time.Duration, args ...string) {
	c.t.Helper()
	out, err := c.script1(timeout, args...)
	c.t.Logf("cluster-local.sh %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		c.t.Fatalf("cluster-local.sh %s: %v", strings.Join(args, " "), err)
	}
}

// script1 runs cluster-local.sh with the cluster's environment and returns
// its output, secrets redacted; it needs no test (TestMain removes the
// benchmarks' cluster with it after every benchmark ended).
func (c *cluster) script1(timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Env = append(os.Environ(), "CLUSTER_NAME="+c.name, "CLUSTER_SUBNET="+c.subnet, "CLUSTER_IMAGES="+strings.Join(c.images, " "))
	cmd.Env = append(cmd.Env, c.env...)
	out, err := cmd.CombinedOutput()
	// setup-local.sh prints the API key and a start URL's token once.
	return secrets.ReplaceAll(out, []byte("$1<redacted>")), err
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

// managersTests share the cluster of sharedManagers, in this order (Go runs
// a package's tests in the order of its files, then of the source).
var managersTests = []string{"TestClusterDeploy", "TestClusterEveryNodeWorks", "TestClusterFailover"}

// managersState is the shared cluster (tests of one package run one at a
// time unless they call t.Parallel, which these do not).
var managersState struct {
	d *deployment
}

// deployment is the idepool stack on a cluster, as its users reach it.
type deployment struct {
	c *cluster
	// key is the API key (setup-local.sh's, in node 1's state directory).
	key string
	// publicURL is PUBLIC_URL: node 1's Traefik, http://<node 1>.
	publicURL string
	// api is a client of the API through publicURL.
	api *idepoolclient.Client
}

// builtinPort is the port of setup-local.sh's built-in router entrypoint.
const builtinPort = 8000

// stackImages are the images the stack runs; IDEPOOL_IMAGE and
// IDEPOOL_IDE_IMAGE choose others (cluster-local.sh passes them on to
// setup-local.sh).
func stackImages() []string {
	img, ide := os.Getenv("IDEPOOL_IMAGE"), os.Getenv("IDEPOOL_IDE_IMAGE")
	if img == "" {
		img = "idepool:dev"
	}
	if ide == "" {
		ide = "idepool-ide:test"
	}
	return []string{img, ide, "idepool-s3:local", "idepool-traefik:v3.6.12"}
}

// sharedManagers returns the cluster of 3 managers with the stack deployed
// by `cluster-local.sh up 3 --stack` (Traefik on every manager, idepool on
// a manager other than node 1, the local S3 store on node 1), making it on
// first use. It is removed when the test ends if the test failed (its state
// is then unknown: a later test makes a new one) or if no later test of
// managersTests will run.
func sharedManagers(t *testing.T) *deployment {
	t.Helper()
	if d := managersState.d; d != nil {
		d.c.t = t
		t.Cleanup(func() { releaseManagers(t) })
		return d
	}
	c := prepareCluster(t, 3, options{stack: true, images: stackImages()})
	// A lost node is Down after ~3 heartbeats: 1 s brings the failover
	// within the goal; docs/operations.md says how to tune it.
	c.env = append(c.env, "CLUSTER_HEARTBEAT=1s")
	d := &deployment{c: c, publicURL: "http://" + c.NodeIP(1)}
	managersState.d = d
	t.Cleanup(func() { releaseManagers(t) })
	c.up(options{stack: true, images: c.images})
	d.readKey()
	return d
}

// readKey reads setup-local.sh's API key from node 1 and makes the client.
func (d *deployment) readKey() {
	t := d.c.t
	t.Helper()
	out, err := exec.Command("docker", "exec", d.c.Node(1), "cat", "/root/.config/idepool/local/api-key").Output()
	if err != nil {
		t.Fatalf("the API key on %s: %v", d.c.Node(1), err)
	}
	d.key = strings.TrimSpace(string(out))
	d.api, err = idepoolclient.New(d.publicURL, d.key, idepoolclient.Options{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
}

// releaseManagers removes the shared cluster after t if t failed or no later
// test of managersTests is selected to run.
func releaseManagers(t *testing.T) {
	d := managersState.d
	if d == nil {
		return
	}
	if !t.Failed() && laterManagersTest(t.Name()) {
		return
	}
	managersState.d = nil
	d.c.t = t
	d.c.Down()
	// cluster-local.sh down leaves nothing of the cluster on the host.
	if left := d.c.leftovers(); len(left) > 0 {
		t.Errorf("cluster-local.sh down left %v", left)
		d.c.Down()
	}
}

// laterManagersTest reports whether a test of managersTests after name
// matches -test.run (and not -test.skip).
func laterManagersTest(name string) bool {
	match := func(flagName, test string, empty bool) bool {
		f := flag.Lookup(flagName)
		if f == nil || f.Value.String() == "" {
			return empty
		}
		// The top-level part of the pattern (subtests are not ours).
		pat := strings.Split(f.Value.String(), "/")[0]
		re, err := regexp.Compile(pat)
		return err != nil || re.MatchString(test)
	}
	later := false
	for _, n := range managersTests {
		if later && match("test.run", n, true) && !match("test.skip", n, false) {
			return true
		}
		if n == name {
			later = true
		}
	}
	return false
}

// client returns an API client through node i's port (80: Traefik's web
// entrypoint; builtinPort: the built-in router).
func (d *deployment) client(i, port int) *idepoolclient.Client {
	d.c.t.Helper()
	api, err := idepoolclient.New(fmt.Sprintf("http://%s:%d", d.c.NodeIP(i), port), d.key, idepoolclient.Options{Timeout: time.Minute})
	if err != nil {
		d.c.t.Fatal(err)
	}
	return api
}

// idepoolNode returns the index of the node idepool's running task is on.
func (d *deployment) idepoolNode() int {
	t := d.c.t
	t.Helper()
	for i := 1; i <= d.c.nodes; i++ {
		out, err := d.c.Docker(i, "service", "ps", "idepool_idepool", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
		if err != nil {
			continue // a dead manager
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[1] == "Running" {
				for j := 1; j <= d.c.nodes; j++ {
					if d.c.Node(j) == f[0] {
						return j
					}
				}
			}
		}
		t.Fatalf("idepool's task runs nowhere:\n%s", out)
	}
	t.Fatal("no manager answers")
	return 0
}

// pollUntil calls cond every 200 ms until it holds (the engines in the
// nodes and idepool send the host no event to wait on); it fails the test
// after timeout with cond's last word. It returns how long it waited.
func pollUntil(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, last := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// networkSubnets lists the subnets of the host's Docker networks, in one
// call to the engine's network list, which carries each network's IPAM: a
// list then an inspection of every id failed whole when another test's
// network went in between.
func networkSubnets(t testing.TB) []*net.IPNet {
	t.Helper()
	dc, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	defer dc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := dc.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		t.Fatalf("docker network list: %v", err)
	}
	var nets []*net.IPNet
	for _, n := range res.Items {
		for _, c := range n.IPAM.Config {
			if _, ipn, err := net.ParseCIDR(c.Subnet.String()); err == nil {
				nets = append(nets, ipn)
			}
		}
	}
	return nets
}

func randomHex(t testing.TB, n int) string {
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
func freeSubnet(t testing.TB) string {
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
	used = append(used, networkSubnets(t)...)
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
