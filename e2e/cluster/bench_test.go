//go:build cluster

package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/quantile"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// The cluster's figures of issue 17 (cold start on a worker, refill of 30
// over 3 nodes, 150 containers in one place), measured on a 1 manager + 2
// workers cluster of Docker-in-Docker nodes running the stack of
// deploy/stack.yml, as `deploy/cluster-local.sh up 3 --workers --stack`
// makes it:
//
//	go test -tags cluster -run '^$' -bench Cluster -benchtime 1x -timeout 20m ./e2e/cluster/
//
// The three benchmarks share one cluster (made by the first that runs,
// removed by TestMain). IDEPOOL_BENCH_CLUSTER=<name> (with CLUSTER_SUBNET)
// uses a cluster made by hand with that name instead, and leaves it up.
//
// Each raw baseline is the Docker API call `docker service create
// --no-resolve-image` makes, sent to the same manager's engine, for a
// service of the same image, network, resources and placement as
// idepool's, waited until its task runs; idepool's side is its own API as
// a client meets it (through Traefik on node 1's port 80).

// benchImages are what the stack needs on every node.
var benchImages = []string{"idepool:dev", "idepool-ide:test", "idepool-s3:local", "idepool-traefik:v3.6.12"}

const (
	benchIDEImage = "idepool-ide:test"
	benchNodes    = 3
	benchBucket   = "workspaces" // the local S3 store's bucket (deploy/setup-local.sh)
	benchNetwork  = "idepool"    // the stack's overlay network
	benchService  = "idepool_idepool"
	benchProfiles = "/etc/idepool-bench-profiles.json"
	// The benchmarks' profiles: "small" (spread over every node) and
	// "on-<node>" (pinned to one worker). Small reservations, so that 150
	// fit the scheduler's count on 2-core nodes; the limits are
	// setup-local.sh's.
	benchCPULimit = 0.25
	benchMemLimit = 256 << 20
	benchCPURes   = 0.01
	benchMemRes   = 32 << 20
)

// benchCluster is the stack on a cluster, as the benchmarks reach it.
type benchCluster struct {
	cl          *cluster                  // the harness's: made by prepareCluster and up
	own         bool                      // made here: TestMain removes it
	nodes       []string                  // node container names (= Swarm hostnames), node 1 first
	workers     []string                  // the worker nodes' names
	docker      map[string]*client.Client // each node's engine
	api         *idepoolclient.Client
	apiURL, key string
}

var shared struct {
	once      sync.Once
	diagnosed sync.Once
	c         *benchCluster
	err       error
}

// TestMain removes the benchmarks' shared cluster after every test and
// benchmark ran (a benchmark's cleanup would remove it after the first).
func TestMain(m *testing.M) {
	code := m.Run()
	if c := shared.c; c != nil && c.own {
		if out, err := c.cl.script1(5*time.Minute, "down"); err != nil {
			fmt.Fprintf(os.Stderr, "cluster-local.sh down: %v\n%s", err, out)
			code = 1
		}
	}
	os.Exit(code)
}

// sharedCluster returns the benchmarks' cluster, making it on first use
// (the first benchmark's log holds what that printed).
func sharedCluster(b *testing.B) *benchCluster {
	b.Helper()
	requireCluster(b, benchImages)
	shared.once.Do(func() {
		// Until set-up ends: a set-up that fails ends the first benchmark
		// (b.Fatal inside Do), and the later ones must not find a nil.
		shared.err = errors.New("the benchmark cluster's set-up failed in an earlier benchmark")
		start := time.Now()
		if shared.err = upBench(b); shared.err == nil {
			b.Logf("benchmark cluster ready in %v", time.Since(start).Round(time.Millisecond))
		}
	})
	if shared.err != nil {
		b.Fatalf("benchmark cluster: %v", shared.err)
	}
	shared.c.cl.t = b
	b.Cleanup(func() {
		if b.Failed() {
			shared.diagnosed.Do(func() { shared.c.diagnose(b) })
		}
	})
	return shared.c
}

// fatal ends benchmark b with err once the diagnosis is logged, so that err
// is the failure's last line: a CI's excerpt of a failure is its output's end.
func (c *benchCluster) fatal(b *testing.B, err error) {
	b.Helper()
	shared.diagnosed.Do(func() { c.diagnose(b) })
	b.Fatal(err)
}

// fatalf is fatal with a formatted message.
func (c *benchCluster) fatalf(b *testing.B, format string, args ...any) {
	b.Helper()
	c.fatal(b, fmt.Errorf(format, args...))
}

// diagnose logs what a failed benchmark left to find out why: each node
// container's state and engine's last lines (dockerd is the node's pid 1:
// a node that stopped says how), the stack's tasks, and the host's kernel
// messages (the OOM killer, a process limit). Once per run: the benchmarks
// after a broken cluster fail the same way.
func (c *benchCluster) diagnose(b *testing.B) {
	for _, n := range c.nodes {
		b.Logf("diagnosis: node %s: %s", n, sh(10*time.Second, "docker", "inspect", "-f",
			"{{.State.Status}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} started={{.State.StartedAt}} finished={{.State.FinishedAt}} error={{.State.Error}}", n))
		b.Logf("diagnosis: node %s: engine's last lines:\n%s", n, sh(10*time.Second, "docker", "logs", "--tail", "40", n))
		b.Logf("diagnosis: node %s: processes %s", n, sh(10*time.Second, "docker", "exec", n, "sh", "-c", "ls -d /proc/[0-9]*/task/* | wc -l; cat /proc/loadavg"))
	}
	b.Logf("diagnosis: the stack's tasks:\n%s", sh(30*time.Second, "docker", "exec", c.nodes[0], "docker", "service", "ps", "--no-trunc",
		"--format", "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}", "idepool_idepool", "idepool_traefik"))
	for _, svc := range []string{"idepool_idepool", "idepool_traefik"} {
		b.Logf("diagnosis: %s's last lines:\n%s", svc, sh(30*time.Second, "docker", "exec", c.nodes[0], "docker", "service", "logs", "--tail", "30", "--timestamps", svc))
	}
	b.Logf("diagnosis: host threads %s", sh(10*time.Second, "sh", "-c", "ls -d /proc/[0-9]*/task/* | wc -l; cat /proc/sys/kernel/pid_max /proc/loadavg; free -m"))
	b.Logf("diagnosis: host kernel's last lines (but the network devices'):\n%s", sh(10*time.Second, "sh", "-c", "dmesg | grep -vE 'veth|br0|docker_gwbridge|vxlan|entered|left ' | tail -n 30"))
}

// logFailures logs idepool's lines about containers it failed (what each
// was waiting for), from the stack's service log.
func (c *benchCluster) logFailures(b *testing.B) {
	b.Logf("idepool's failures:\n%s", sh(30*time.Second, "docker", "exec", c.nodes[0], "sh", "-c",
		"docker service logs --raw idepool_idepool 2>&1 | grep -E 'not ready within|warm claim failed|assignment not delivered' | tail -n 20"))
}

// sh runs a command for a diagnosis and returns its output, with how it
// failed.
func sh(timeout time.Duration, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(%v)", out, err)
	}
	return string(out)
}

// upBench makes (or finds) the cluster with the stack, then gives idepool
// the benchmarks' profiles.
func upBench(b *testing.B) error {
	o := options{workers: true, stack: true, images: benchImages, prefix: "ipcb-"}
	cl := prepareCluster(b, benchNodes, o)
	c := &benchCluster{cl: cl, docker: map[string]*client.Client{}}
	if name := os.Getenv("IDEPOOL_BENCH_CLUSTER"); name != "" {
		cl.name, cl.subnet = name, os.Getenv("CLUSTER_SUBNET")
		if cl.subnet == "" {
			return errors.New("IDEPOOL_BENCH_CLUSTER needs CLUSTER_SUBNET")
		}
		shared.c = c
		b.Log("using the cluster " + name + " as it is (IDEPOOL_BENCH_CLUSTER); it stays up")
	} else {
		c.own = true
		shared.c = c // TestMain removes even a half-made cluster
		// The nodes and the Swarm first, then the stack's overlay network
		// made here with room for the burst's 400 containers (see
		// overlaySubnet), then the stack by the project's script.
		cl.up(options{workers: true, images: benchImages})
		if err := c.overlay(); err != nil {
			return err
		}
		cl.run(10*time.Minute, "stack")
	}
	for i := 1; i <= benchNodes; i++ {
		node := cl.Node(i)
		c.nodes = append(c.nodes, node)
		if i > 1 {
			c.workers = append(c.workers, node)
		}
		// The manager takes the raw baselines' creates at once.
		conns := 2
		if i == 1 {
			conns = 32
		}
		dc, err := nodeDocker(node, conns)
		if err != nil {
			return err
		}
		c.docker[node] = dc
	}
	key, err := exec.Command("docker", "exec", c.nodes[0], "cat", "/root/.config/idepool/local/api-key").Output()
	if err != nil {
		return fmt.Errorf("the stack's API key on %s: %w", c.nodes[0], err)
	}
	c.key = strings.TrimSpace(string(key))
	c.apiURL = "http://" + cl.NodeIP(1)
	if c.api, err = idepoolclient.New(c.apiURL, c.key, idepoolclient.Options{Timeout: 3 * time.Minute}); err != nil {
		return fmt.Errorf("idepool client: %w", err)
	}
	t := time.Now()
	if err := c.configure(); err != nil {
		return err
	}
	b.Logf("idepool given the benchmarks' profiles in %v", time.Since(t).Round(time.Millisecond))
	return nil
}

// nodeDocker is a client of a node's engine. Its connections are `docker
// exec -i NODE docker system dial-stdio` (the node's engine has no TCP
// port, and its socket is in another mount and pid namespace than this
// test's), started ahead of use so that a measured call never waits for a
// `docker exec`: with keep-alive, each connection serves many calls.
// conns is how many are kept ready: as many as calls run at once on it.
func nodeDocker(node string, conns int) (*client.Client, error) {
	d := &stdioDialer{node: node, ready: make(chan *cmdConn, conns)}
	for range cap(d.ready) {
		go d.refill()
	}
	hc := &http.Client{Transport: retryRead{&http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: cap(d.ready), IdleConnTimeout: time.Hour}}}
	dc, err := client.New(client.WithHost("unix:///var/run/docker.sock"), client.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("docker client of node %s: %w", node, err)
	}
	return dc, nil
}

// retryRead sends a GET again, up to three more times with a growing pause,
// when it failed: a `docker exec … dial-stdio` connection can end under the
// burst's load (seen: EOF, "server closed idle connection" from a node's
// engine at a load average of 170), which says nothing about the engine.
// Each retry has a connection of its own: a failed GET makes the transport
// drop the one it used.
type retryRead struct{ rt http.RoundTripper }

func (r retryRead) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := r.rt.RoundTrip(req)
	for try, pause := 1, 250*time.Millisecond; err != nil && try < 4 && req.Method == http.MethodGet && req.Body == nil; try, pause = try+1, pause*2 {
		select {
		case <-req.Context().Done():
			return nil, err
		case <-time.After(pause):
		}
		res, err = r.rt.RoundTrip(req)
	}
	return res, err
}

// stdioDialer hands out connections to a node's engine made ahead of use.
type stdioDialer struct {
	node  string
	ready chan *cmdConn
}

func (d *stdioDialer) refill() {
	if conn, err := d.spawn(); err == nil {
		d.ready <- conn
	}
}

// DialContext hands out a connection made ahead if one is still alive (its
// `docker exec` may have ended while it waited), else makes one.
func (d *stdioDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	for {
		select {
		case conn := <-d.ready:
			go d.refill()
			select {
			case <-conn.done:
				conn.Close()
				continue
			default:
				return conn, nil
			}
		default:
			return d.spawn()
		}
	}
}

func (d *stdioDialer) spawn() (*cmdConn, error) {
	c := &cmdConn{node: d.node, done: make(chan struct{})}
	c.cmd = exec.Command("docker", "exec", "-i", d.node, "docker", "system", "dial-stdio")
	c.cmd.Stderr = &c.stderr
	var err error
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if c.out, err = c.cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("docker exec %s docker system dial-stdio: %w", d.node, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// cmdConn is a net.Conn over a command's stdin and stdout. A read that
// fails once the command ended says why it ended (its exit and stderr):
// an EOF alone tells nothing.
type cmdConn struct {
	node    string
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     io.ReadCloser
	stderr  lockedBuffer
	done    chan struct{} // closed when the command ended; then waitErr is set
	waitErr error
	once    sync.Once
}

func (c *cmdConn) Read(p []byte) (int, error) {
	n, err := c.out.Read(p)
	if err != nil {
		select {
		case <-c.done:
			err = fmt.Errorf("docker exec %s docker system dial-stdio ended (%v; stderr %q): %w", c.node, c.waitErr, c.stderr.String(), err)
		case <-time.After(time.Second):
		}
	}
	return n, err
}

func (c *cmdConn) Write(p []byte) (int, error) { return c.in.Write(p) }
func (c *cmdConn) Close() error {
	c.once.Do(func() {
		c.in.Close()
		c.cmd.Process.Kill()
		<-c.done
	})
	return nil
}
func (c *cmdConn) LocalAddr() net.Addr              { return stdioAddr{} }
func (c *cmdConn) RemoteAddr() net.Addr             { return stdioAddr{} }
func (c *cmdConn) SetDeadline(time.Time) error      { return nil }
func (c *cmdConn) SetReadDeadline(time.Time) error  { return nil }
func (c *cmdConn) SetWriteDeadline(time.Time) error { return nil }

// lockedBuffer is a bytes.Buffer written by exec's copier and read here.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 4096 {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "dial-stdio" }

// benchProfile is one entry of the benchmarks' PROFILES_FILE.
type benchProfile struct {
	Name              string   `json:"name"`
	PoolTarget        int      `json:"poolTarget"`
	CPULimit          float64  `json:"cpuLimit"`
	MemoryLimit       int64    `json:"memoryLimit"`
	CPUReservation    float64  `json:"cpuReservation"`
	MemoryReservation int64    `json:"memoryReservation"`
	Constraints       []string `json:"constraints,omitempty"`
	MaxContainers     int      `json:"maxContainers,omitempty"`
}

// configure gives the stack's idepool the benchmarks' profiles (a Docker
// config as PROFILES_FILE), an empty default pool and no rate limit, with
// `docker service update` as an operator would; idepool restarts and
// adopts what runs. Done already (a reused cluster): nothing to do.
func (c *benchCluster) configure() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if ps, err := c.api.Profiles(ctx); err == nil && slices.ContainsFunc(ps, func(p idepoolclient.ProfileInfo) bool { return p.Name == waveProfile }) {
		// A reused cluster: empty what an earlier run left.
		for _, p := range ps {
			if p.Name == "small" || p.Name == waveProfile || strings.HasPrefix(p.Name, "on-") {
				if err := c.emptyProfile(ctx, p.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	profiles := []benchProfile{c.profile("small", "")}
	for _, w := range c.workers {
		profiles = append(profiles, c.profile("on-"+w, w))
	}
	wave := c.profile(waveProfile, "")
	wave.MaxContainers = waveSize
	wave.CPULimit = waveCPULimit
	profiles = append(profiles, wave)
	js, err := json.Marshal(map[string]any{"profiles": profiles})
	if err != nil {
		return err
	}
	cfg := "idepool-bench-profiles-" + idepool.NewID()[:6]
	create := exec.Command("docker", "exec", "-i", c.nodes[0], "docker", "config", "create", cfg, "-")
	create.Stdin = strings.NewReader(string(js))
	if out, err := create.CombinedOutput(); err != nil {
		return fmt.Errorf("docker config create: %w: %s", err, out)
	}
	if out, err := exec.Command("docker", "exec", c.nodes[0], "docker", "service", "update", "-d", "--no-resolve-image",
		"--config-add", "source="+cfg+",target="+benchProfiles,
		"--env-add", "PROFILES_FILE="+benchProfiles,
		"--env-add", "PRE_WARMED_QUEUE_SIZE=0",
		"--env-add", "RATE_LIMIT_REQUESTS=0",
		benchService).CombinedOutput(); err != nil {
		return fmt.Errorf("docker service update %s: %w: %s", benchService, err, out)
	}
	for {
		ps, err := c.api.Profiles(ctx)
		if err == nil && slices.ContainsFunc(ps, func(p idepoolclient.ProfileInfo) bool { return p.Name == waveProfile }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("idepool did not come back with the benchmarks' profiles: %v", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *benchCluster) profile(name, node string) benchProfile {
	p := benchProfile{Name: name, CPULimit: benchCPULimit, MemoryLimit: benchMemLimit, CPUReservation: benchCPURes, MemoryReservation: benchMemRes}
	if node != "" {
		p.Constraints = []string{"node.hostname==" + node}
	}
	return p
}

// manager is node 1's engine, where services are made.
func (c *benchCluster) manager() *client.Client { return c.docker[c.nodes[0]] }

// rawCreate is `docker service create --no-resolve-image` of a bare
// one-replica service like idepool's (image, network, resources, init,
// dnsrr, restart none), on node when it is set; it returns the service id.
// The agent in it has no orchestrator to dial and waits out its orphan
// timeout, as a bare container would just run.
func (c *benchCluster) rawCreate(ctx context.Context, node string) (string, error) {
	return c.rawCreateWith(ctx, c.manager(), node)
}

// rawCreateWith is rawCreate through the manager's client dc.
func (c *benchCluster) rawCreateWith(ctx context.Context, dc *client.Client, node string) (string, error) {
	replicas := uint64(1)
	init := true
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "raw-" + idepool.NewID(), Labels: map[string]string{"idepool.bench": "raw"}},
		TaskTemplate: swarm.TaskSpec{
			// The label on the container too (a service's labels are not its
			// containers'): removeRaw waits for containers by it.
			ContainerSpec: &swarm.ContainerSpec{Image: benchIDEImage, Init: &init, Labels: map[string]string{"idepool.bench": "raw"}, Env: []string{
				"IDEPOOL_AGENT_URL=http://127.0.0.1:9", "IDEPOOL_AGENT_TOKEN=x", "IDEPOOL_CONTAINER_ID=" + idepool.NewID(), "IDEPOOL_PORT_CODE=8080",
				idepool.EnvOrphanTimeout + "=1h"}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: benchNetwork}},
			Resources: &swarm.ResourceRequirements{
				Limits:       &swarm.Limit{NanoCPUs: int64(benchCPULimit * 1e9), MemoryBytes: benchMemLimit},
				Reservations: &swarm.Resources{NanoCPUs: int64(benchCPURes * 1e9), MemoryBytes: benchMemRes},
			},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone},
		},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
	if node != "" {
		spec.TaskTemplate.Placement = &swarm.Placement{Constraints: []string{"node.hostname==" + node}}
	}
	res, err := dc.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec})
	if err != nil {
		return "", fmt.Errorf("raw service create: %w", err)
	}
	return res.ID, nil
}

// nodeNames maps Swarm node ids to host names.
func (c *benchCluster) nodeNames(ctx context.Context) (map[string]string, error) {
	nl, err := c.manager().NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("node list: %w", err)
	}
	m := map[string]string{}
	for _, n := range nl.Items {
		m[n.ID] = n.Description.Hostname
	}
	return m, nil
}

// running returns, for the services selected by f, each running task's
// service id → node id. It polls the manager as `docker service ps` does
// (the engine sends no event for a task on another node).
func (c *benchCluster) running(ctx context.Context, f client.Filters) (map[string]swarm.Task, error) {
	tl, err := c.manager().TaskList(ctx, client.TaskListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("task list: %w", err)
	}
	run := map[string]swarm.Task{}
	for _, t := range tl.Items {
		switch t.Status.State {
		case swarm.TaskStateRunning:
			run[t.ServiceID] = t
		case swarm.TaskStateFailed, swarm.TaskStateRejected:
			// Restart condition none: it stays failed; say why at once.
			return nil, fmt.Errorf("task %s of service %s: %s: %s", t.ID, t.ServiceID, t.Status.State, t.Status.Err)
		}
	}
	return run, nil
}

// waitRunning polls every 20 ms until each service of ids has a running
// task; it returns those tasks.
func (c *benchCluster) waitRunning(ctx context.Context, ids []string) (map[string]swarm.Task, error) {
	f := make(client.Filters)
	for _, id := range ids {
		f.Add("service", id)
	}
	for {
		run, err := c.running(ctx, f)
		if err != nil {
			return nil, err
		}
		if len(run) == len(ids) {
			return run, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d raw services running: %w", len(run), len(ids), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// removeRaw removes services and waits until their containers are gone
// on every node, so the next measurement does not share the machine with a
// teardown.
func (c *benchCluster) removeRaw(ctx context.Context, ids []string) error {
	for _, id := range ids {
		if _, err := c.manager().ServiceRemove(ctx, id, client.ServiceRemoveOptions{}); err != nil {
			return fmt.Errorf("remove raw service %s: %w", id, err)
		}
	}
	return c.waitNoContainers(ctx, "idepool.bench=raw", nil)
}

// waitNoContainers waits until no node has a container with the label
// (key=value) that belongs to one of services (all with nil).
func (c *benchCluster) waitNoContainers(ctx context.Context, label string, services map[string]bool) error {
	for {
		n := 0
		for _, node := range c.nodes {
			cl, err := c.docker[node].ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", label)})
			if err != nil {
				return fmt.Errorf("containers on %s: %w", node, err)
			}
			for _, ct := range cl.Items {
				if services == nil || services[ct.Labels["com.docker.swarm.service.id"]] {
					n++
				}
			}
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d containers labelled %s still there: %w", n, label, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// services lists idepool's container services of a profile.
func (c *benchCluster) services(ctx context.Context, profile string) ([]swarm.Service, error) {
	sl, err := c.manager().ServiceList(ctx, client.ServiceListOptions{Filters: make(client.Filters).Add("label", idepool.LabelProfile+"="+profile)})
	if err != nil {
		return nil, fmt.Errorf("service list: %w", err)
	}
	return sl.Items, nil
}

// emptyProfile sets a profile's pool target to 0, stops its claimed
// containers, and waits until none of its services and containers is left.
func (c *benchCluster) emptyProfile(ctx context.Context, profile string) error {
	if _, err := c.api.SetPoolTarget(ctx, profile, 0); err != nil {
		return fmt.Errorf("pool %s to 0: %w", profile, err)
	}
	all, err := c.api.ListAll(ctx, idepoolclient.ListOptions{Profile: profile})
	if err != nil {
		return fmt.Errorf("list %s: %w", profile, err)
	}
	svcs, err := c.services(ctx, profile)
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for _, s := range svcs {
		ids[s.ID] = true
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, ct := range all {
		if ct.Workspace != nil {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				c.api.Stop(ctx, ct.ID) // warm ones go with the target; a failed stop shows below
			})
		}
	}
	wg.Wait()
	for {
		svcs, err := c.services(ctx, profile)
		if err != nil {
			return err
		}
		if len(svcs) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d services of %s still there: %w", len(svcs), profile, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return c.waitNoContainers(ctx, idepool.LabelManaged+"=idepool", ids)
}

// pool returns a profile's pool status.
func (c *benchCluster) pool(ctx context.Context, profile string) (idepool.PoolStatus, error) {
	ps, err := c.api.Pools(ctx)
	if err != nil {
		return idepool.PoolStatus{}, fmt.Errorf("pools: %w", err)
	}
	for _, p := range ps {
		if p.Profile == profile {
			return p, nil
		}
	}
	return idepool.PoolStatus{}, fmt.Errorf("no pool %s in %+v", profile, ps)
}

// waitRefilled polls /api/pool every 100 ms until the profile has warm
// warm and claimed claimed (a claimed one still syncing its workspace
// counts as neither), and returns that status.
func (c *benchCluster) waitRefilled(ctx context.Context, profile string, warm, claimed int) (idepool.PoolStatus, error) {
	return c.waitSettled(ctx, profile, warm, claimed, 0)
}

// waitSettled is waitRefilled that, with settle > 0, also ends when the
// pool has settled short of the claimed count: warm reached, nothing
// starting and the claimed count unchanged for settle (claimed containers
// the pool stopped as failed are not coming back).
func (c *benchCluster) waitSettled(ctx context.Context, profile string, warm, claimed int, settle time.Duration) (idepool.PoolStatus, error) {
	last, since := -1, time.Now()
	for {
		p, err := c.pool(ctx, profile)
		if err != nil {
			return p, err
		}
		if p.Warm >= warm && p.Claimed >= claimed {
			return p, nil
		}
		if p.Claimed != last || p.Starting > 0 || p.Warm < warm {
			last, since = p.Claimed, time.Now()
		} else if settle > 0 && time.Since(since) > settle {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, fmt.Errorf("pool %s: %+v, want %d warm and %d claimed: %w", profile, p, warm, claimed, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitWarm polls /api/pool every 100 ms until the profile has n warm.
func (c *benchCluster) waitWarm(ctx context.Context, profile string, n int) error {
	for {
		p, err := c.pool(ctx, profile)
		if err != nil {
			return err
		}
		if p.Warm >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pool %s: %d of %d warm (%+v): %w", profile, p.Warm, n, p, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// spread counts running tasks per node of the services.
func (c *benchCluster) spread(ctx context.Context, tasks map[string]swarm.Task) (map[string]int, error) {
	names, err := c.nodeNames(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]int{}
	for _, t := range tasks {
		m[names[t.NodeID]]++
	}
	return m, nil
}

func (c *benchCluster) spreadString(m map[string]int) string {
	var parts []string
	for _, n := range c.nodes {
		parts = append(parts, fmt.Sprintf("%s:%d", n, m[n]))
	}
	return strings.Join(parts, " ")
}

// alternate runs both sides of a comparison, ours first in even rounds i
// and the baseline first in odd ones, so neither always meets the machine
// the other left.
func alternate(i int, ours, raw func()) {
	if i%2 == 0 {
		ours()
		raw()
	} else {
		raw()
		ours()
	}
}

// pct is the p-quantile of d (nearest rank: of 100, p99 is the 99th).
func pct(d []time.Duration, p float64) time.Duration { return quantile.Of(d, p) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// coldTimeline is where one cold start's time went: idepool before the
// service existed, Swarm until its task ran, and the agent, the
// assignment and the workspace's first pull until the ready answer.
type coldTimeline struct{ preCreate, swarm, postRun time.Duration }

func (c *benchCluster) coldTimeline(ctx context.Context, id string, start, done time.Time) (coldTimeline, string, error) {
	svc, err := c.manager().ServiceInspect(ctx, "idepool-"+id, client.ServiceInspectOptions{})
	if err != nil {
		return coldTimeline{}, "", fmt.Errorf("inspect idepool-%s: %w", id, err)
	}
	// The manager may learn that the task runs after the agent in it
	// said it is ready: the worker reports task states in batches.
	run, err := c.waitRunning(ctx, []string{svc.Service.ID})
	if err != nil {
		return coldTimeline{}, "", fmt.Errorf("idepool-%s: %w", id, err)
	}
	t := run[svc.Service.ID]
	names, err := c.nodeNames(ctx)
	if err != nil {
		return coldTimeline{}, "", err
	}
	created := svc.Service.CreatedAt
	return coldTimeline{created.Sub(start), t.Status.Timestamp.Sub(created), done.Sub(t.Status.Timestamp)}, names[t.NodeID], nil
}

// BenchmarkClusterColdStart: a start with no warm container (a profile
// pinned to one worker, pool target 0) until its ready answer, against a
// raw service create pinned to the same worker until its task runs;
// alternately first, over both workers. Each side's containers are gone
// before the next measurement.
func BenchmarkClusterColdStart(b *testing.B) {
	c := sharedCluster(b)
	n := 10
	if v, err := strconv.Atoi(os.Getenv("IDEPOOL_BENCH_COLD_N")); err == nil && v > 0 {
		n = v
	}
	// One unmeasured raw create per worker first: a node's first task on
	// the overlay network after a while without one pays for the
	// network's set-up on that node (seen: +0.5-1 s), whoever comes first.
	warm := time.Now()
	var wg sync.WaitGroup
	for _, w := range c.workers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			id, err := c.rawCreate(ctx, w)
			if err == nil {
				_, err = c.waitRunning(ctx, []string{id})
			}
			if err == nil {
				err = c.removeRaw(ctx, []string{id})
			}
			if err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	b.Logf("workers warmed up (one raw create each) in %v", time.Since(warm).Round(time.Millisecond))
	var ours, raw, pre, sw, post, rawRun, rawSeen, toAgent, toAssign, toPull []time.Duration
	run := idepool.NewID()[:6] // a new workspace per start, also when the cluster is reused
	for b.Loop() {
		for i := range n {
			worker := c.workers[i%len(c.workers)]
			profile := "on-" + worker
			runOurs := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				events, err := c.record(ctx)
				if err != nil {
					c.fatal(b, err)
				}
				start := time.Now()
				res, err := c.api.Start(ctx, idepoolclient.StartRequest{Bucket: benchBucket, Prefix: fmt.Sprintf("bench-cold-%s-%d/", run, i),
					Profile: profile, UserID: fmt.Sprintf("cold-%s-%d", run, i), Wait: true, WaitTimeout: 2 * time.Minute})
				done := time.Now()
				if err != nil || !res.Ready || res.IsPreWarmed || res.IsReused {
					c.fatalf(b, "cold start %d on %s: %+v, %v", i, worker, res, err)
				}
				ours = append(ours, done.Sub(start))
				tl, node, err := c.coldTimeline(ctx, res.ID, start, done)
				if err != nil {
					c.fatal(b, err)
				}
				pre, sw, post = append(pre, tl.preCreate), append(sw, tl.swarm), append(post, tl.postRun)
				// After the task runs: the agent starts and dials home; its
				// assignment (state syncing) and the workspace's first pull;
				// ready (state running), then the answer through Traefik.
				st := events.stop()[res.ID]
				running := done.Add(-tl.postRun)
				dial, assign, pull := st["connected"].Sub(running), st[string(idepool.StateSyncing)].Sub(st["connected"]), st[string(idepool.StateRunning)].Sub(st[string(idepool.StateSyncing)])
				toAgent, toAssign, toPull = append(toAgent, dial), append(toAssign, assign), append(toPull, pull)
				b.Logf("cold start %2d on %s: %4.0f ms = idepool before the service %3.0f ms + Swarm to running %4.0f ms + %3.0f ms (agent up and dialled home %3.0f, assignment sent %3.0f, first pull and ready %3.0f, answer %3.0f)",
					i, node, ms(done.Sub(start)), ms(tl.preCreate), ms(tl.swarm), ms(tl.postRun), ms(dial), ms(assign), ms(pull), ms(done.Sub(st[string(idepool.StateRunning)])))
				if node != worker {
					c.fatalf(b, "cold start %d ran on %s, want %s", i, node, worker)
				}
				if _, err := c.api.Stop(ctx, res.ID); err != nil {
					c.fatalf(b, "stop %s: %v", res.ID, err)
				}
				if err := c.emptyProfile(ctx, profile); err != nil {
					c.fatal(b, err)
				}
			}
			runRaw := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				start := time.Now()
				id, err := c.rawCreate(ctx, worker)
				if err != nil {
					c.fatal(b, err)
				}
				run, err := c.waitRunning(ctx, []string{id})
				if err != nil {
					c.fatal(b, err)
				}
				d := time.Since(start)
				raw = append(raw, d)
				// The worker stamps the task's state; the manager learns it
				// with the worker's next status report.
				at := run[id].Status.Timestamp.Sub(start)
				rawRun, rawSeen = append(rawRun, at), append(rawSeen, d-at)
				b.Logf("raw create %2d on %s: %4.0f ms = task running (the worker's time) %4.0f ms + until the manager shows it %3.0f ms",
					i, worker, ms(d), ms(at), ms(d-at))
				if err := c.removeRaw(ctx, []string{id}); err != nil {
					c.fatal(b, err)
				}
			}
			alternate(i, runOurs, runRaw)
		}
	}
	p50, r50 := pct(ours, 0.5), pct(raw, 0.5)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(pct(ours, 0.9)), "p90-ms")
	b.ReportMetric(ms(r50), "raw-p50-ms")
	b.ReportMetric(ms(p50)/ms(r50), "ratio")
	b.Logf("cold start on a worker: idepool p50 %.0f ms (p90 %.0f), raw service create p50 %.0f ms (p90 %.0f), ratio %.2f (goal ≤ 1.1), n=%d each",
		ms(p50), ms(pct(ours, 0.9)), ms(r50), ms(pct(raw, 0.9)), ms(p50)/ms(r50), len(ours))
	b.Logf("idepool's medians: before the service %.0f ms, Swarm to running %.0f ms, after it %.0f ms (agent up and dialled home %.0f, assignment %.0f, first pull and ready %.0f); raw's: task running %.0f ms, until the manager shows it %.0f ms",
		ms(pct(pre, 0.5)), ms(pct(sw, 0.5)), ms(pct(post, 0.5)), ms(pct(toAgent, 0.5)), ms(pct(toAssign, 0.5)), ms(pct(toPull, 0.5)), ms(pct(rawRun, 0.5)), ms(pct(rawSeen, 0.5)))
}

// eventLog keeps idepool's events from the moment record returns.
type eventLog struct {
	mu     sync.Mutex
	evs    []idepool.Event
	cancel context.CancelFunc
	done   chan struct{}
}

// record follows idepool's event stream (agent connections, state
// changes) until stop.
func (c *benchCluster) record(ctx context.Context) (*eventLog, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := c.api.Events(ctx, 0, idepoolclient.Types(string(idepool.EventAgent), string(idepool.EventState)))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("event stream: %w", err)
	}
	l := &eventLog{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer s.Close()
		for {
			ev, err := s.Next()
			if err != nil {
				return
			}
			l.mu.Lock()
			l.evs = append(l.evs, ev)
			l.mu.Unlock()
		}
	}()
	return l, nil
}

// stop ends the stream and returns, per container, when each step was
// first seen: "connected" (its agent dialled home) and each state's name.
func (l *eventLog) stop() map[string]map[string]time.Time {
	l.cancel()
	<-l.done
	seen := map[string]map[string]time.Time{}
	for _, ev := range l.evs {
		step := string(ev.State)
		if ev.Type == idepool.EventAgent {
			if ev.Data["connected"] != true {
				continue
			}
			step = "connected"
		}
		if seen[ev.ContainerID] == nil {
			seen[ev.ContainerID] = map[string]time.Time{}
		}
		if _, ok := seen[ev.ContainerID][step]; !ok {
			seen[ev.ContainerID][step] = ev.Time
		}
	}
	return seen
}

// BenchmarkClusterRefill: the "small" profile's pool from 0 to 30 warm
// (spread by Swarm over the 3 nodes) against 30 raw service creates sent
// at once until all run; alternately first.
func BenchmarkClusterRefill(b *testing.B) {
	const n = 30
	c := sharedCluster(b)
	var ours, raw []time.Duration
	i := 0
	for b.Loop() {
		runOurs := func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			events, err := c.record(ctx)
			if err != nil {
				c.fatal(b, err)
			}
			start := time.Now()
			if _, err := c.api.SetPoolTarget(ctx, "small", n); err != nil {
				c.fatal(b, err)
			}
			if err := c.waitWarm(ctx, "small", n); err != nil {
				c.fatal(b, err)
			}
			d := time.Since(start)
			ours = append(ours, d)
			svcs, err := c.services(ctx, "small")
			if err != nil {
				c.fatal(b, err)
			}
			f := make(client.Filters)
			var lastCreated time.Time
			for _, s := range svcs {
				f.Add("service", s.ID)
				if s.CreatedAt.After(lastCreated) {
					lastCreated = s.CreatedAt
				}
			}
			run, err := c.running(ctx, f)
			if err != nil {
				c.fatal(b, err)
			}
			var lastRunning time.Time
			for _, t := range run {
				if t.Status.Timestamp.After(lastRunning) {
					lastRunning = t.Status.Timestamp
				}
			}
			// Each container's way from its task running to warm: its
			// agent's dial home, then the route gate (Traefik routes it).
			seen := events.stop()
			var toAgent, toWarm []time.Duration
			for _, sv := range svcs {
				id := sv.Spec.Labels[idepool.LabelID]
				t, ok := run[sv.ID]
				connected, warmAt := seen[id]["connected"], seen[id][string(idepool.StateWarm)]
				if !ok || connected.IsZero() || warmAt.IsZero() {
					continue
				}
				toAgent = append(toAgent, connected.Sub(t.Status.Timestamp))
				toWarm = append(toWarm, warmAt.Sub(connected))
			}
			b.Logf("idepool refill, per container (%d seen): task running → agent connected p50 %.0f ms max %.0f ms; agent connected → warm (ready and routed by Traefik) p50 %.0f ms max %.0f ms",
				len(toAgent), ms(pct(toAgent, 0.5)), ms(pct(toAgent, 1)), ms(pct(toWarm, 0.5)), ms(pct(toWarm, 1)))
			sp, err := c.spread(ctx, run)
			if err != nil {
				c.fatal(b, err)
			}
			b.Logf("idepool refill of %d: all warm in %.2f s (last service created at %.2f s, last task running at %.2f s); per node %s",
				n, d.Seconds(), lastCreated.Sub(start).Seconds(), lastRunning.Sub(start).Seconds(), c.spreadString(sp))
			if err := c.emptyProfile(ctx, "small"); err != nil {
				c.fatal(b, err)
			}
		}
		runRaw := func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			start := time.Now()
			ids := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for j := range ids {
				wg.Go(func() { ids[j], errs[j] = c.rawCreate(ctx, "") })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				c.fatal(b, err)
			}
			run, err := c.waitRunning(ctx, ids)
			if err != nil {
				c.fatal(b, err)
			}
			d := time.Since(start)
			raw = append(raw, d)
			sp, err := c.spread(ctx, run)
			if err != nil {
				c.fatal(b, err)
			}
			b.Logf("raw: %d service creates at once, all running in %.2f s; per node %s", n, d.Seconds(), c.spreadString(sp))
			if err := c.removeRaw(ctx, ids); err != nil {
				c.fatal(b, err)
			}
		}
		alternate(i, runOurs, runRaw)
		i++
	}
	o, r := pct(ours, 0.5), pct(raw, 0.5)
	b.ReportMetric(o.Seconds(), "refill-s")
	b.ReportMetric(r.Seconds(), "raw-s")
	b.ReportMetric(o.Seconds()/r.Seconds(), "ratio")
	b.Logf("refill of %d over %d nodes: idepool %.2f s, raw %.2f s, ratio %.2f (goal ≤ 1.2), n=%d each", n, benchNodes, o.Seconds(), r.Seconds(), o.Seconds()/r.Seconds(), len(ours))
}

// procSample is idepool's RSS and CPU time, read from its process on the
// node that runs it.
type procSample struct {
	rssKiB int64
	cpu    time.Duration
	at     time.Time
}

// idepoolProc finds the node and the pid (in the node's namespace) of the
// stack's idepool task.
func (c *benchCluster) idepoolProc(ctx context.Context) (node string, pid int, err error) {
	run, err := c.running(ctx, make(client.Filters).Add("service", benchService))
	if err != nil {
		return "", 0, err
	}
	names, err := c.nodeNames(ctx)
	if err != nil {
		return "", 0, err
	}
	for _, t := range run {
		node = names[t.NodeID]
		ci, err := c.docker[node].ContainerInspect(ctx, t.Status.ContainerStatus.ContainerID, client.ContainerInspectOptions{})
		if err != nil {
			return "", 0, fmt.Errorf("inspect idepool's container on %s: %w", node, err)
		}
		return node, ci.Container.State.Pid, nil
	}
	return "", 0, errors.New("no running idepool task")
}

// sample reads /proc/PID/status (VmRSS) and /proc/PID/stat (utime, stime
// in clock ticks of 1/100 s, Linux's USER_HZ) in the node.
func sample(node string, pid int) (procSample, error) {
	out, err := exec.Command("docker", "exec", node, "sh", "-c",
		fmt.Sprintf("grep VmRSS /proc/%d/status; cat /proc/%d/stat", pid, pid)).Output()
	if err != nil {
		return procSample{}, fmt.Errorf("/proc/%d on %s: %w", pid, node, err)
	}
	s := procSample{at: time.Now()}
	lines := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)
	if len(lines) != 2 {
		return s, fmt.Errorf("/proc/%d on %s: %q", pid, node, out)
	}
	if f := strings.Fields(lines[0]); len(f) >= 2 {
		s.rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
	}
	// The fields after the command's closing parenthesis: utime is the
	// 14th field of the line, the 12th after it.
	rest := lines[1][strings.LastIndexByte(lines[1], ')')+2:]
	f := strings.Fields(rest)
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat on %s: %q", pid, node, lines[1])
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = time.Duration(ut+st) * 10 * time.Millisecond
	return s, nil
}

// dashboardClient is an HTTP client signed in to the dashboard (its
// session cookie in a jar), as a browser is after the sign-in form.
func (c *benchCluster) dashboardClient(ctx context.Context) (*http.Client, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 30 * time.Second, Jar: jar}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.apiURL+"/dashboard/login", strings.NewReader(url.Values{"key": {c.key}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.apiURL)
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dashboard sign-in: %w", err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK { // after the redirect to the page
		return nil, fmt.Errorf("dashboard sign-in: %s", res.Status)
	}
	return hc, nil
}

// BenchmarkClusterScale (issue 17, item 7): 150 live idepool containers
// over the 3 nodes (the "small" pool at 50 warm, and 100 claimed from it,
// which the pool refills), then 100 calls each of GET /api/containers
// (the whole list), GET /api/pool and GET /dashboard, one after another;
// idepool's RSS and CPU at that size, idle and under those calls.
func BenchmarkClusterScale(b *testing.B) {
	const warm, claimed = 50, 100
	c := sharedCluster(b)
	run := idepool.NewID()[:6]
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		if _, err := c.api.SetPoolTarget(ctx, "small", warm); err != nil {
			c.fatal(b, err)
		}
		if err := c.waitWarm(ctx, "small", warm); err != nil {
			c.fatal(b, err)
		}
		b.Logf("%d warm in %.1f s", warm, time.Since(start).Seconds())
		t := time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 10)
		var mu sync.Mutex
		var claims []time.Duration
		for i := range claimed {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				s := time.Now()
				_, err := c.api.Start(ctx, idepoolclient.StartRequest{Bucket: benchBucket, Prefix: fmt.Sprintf("bench-scale-%s-%d/", run, i),
					Profile: "small", UserID: fmt.Sprintf("scale-%s-%d", run, i)})
				if err != nil {
					b.Errorf("claim %d: %v", i, err)
					return
				}
				mu.Lock()
				claims = append(claims, time.Since(s))
				mu.Unlock()
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		b.Logf("%d claims (10 at a time) in %.1f s: p50 %.0f ms, p99 %.0f ms", claimed, time.Since(t).Seconds(), ms(pct(claims, 0.5)), ms(pct(claims, 0.99)))
		// Until the pool has refilled and every claim is recorded as such
		// (a claimed one still syncing its workspace counts as neither).
		p, err := c.waitSettled(ctx, "small", warm, claimed, time.Minute)
		if err != nil {
			c.fatal(b, err)
		}
		// Seen in CI at a load average near 100: the pool stopped a few
		// claimed containers whose agents were not ready again within its
		// create timeout. They are counted and printed, not waited for.
		lost := max(0, claimed-p.Claimed)
		b.ReportMetric(float64(lost), "claims-lost")
		if lost > 0 {
			b.Logf("%d of %d claimed containers were stopped by the pool (not ready within its timeout under this load); going on with %d claimed", lost, claimed, p.Claimed)
			c.logFailures(b)
		}
		live := p.Warm + p.Claimed
		svcs, err := c.services(ctx, "small")
		if err != nil {
			c.fatal(b, err)
		}
		f := make(client.Filters)
		for _, s := range svcs {
			f.Add("service", s.ID)
		}
		run, err := c.running(ctx, f)
		if err != nil {
			c.fatal(b, err)
		}
		sp, err := c.spread(ctx, run)
		if err != nil {
			c.fatal(b, err)
		}
		b.Logf("%d live (%d warm, %d claimed; %d tasks running) %.1f s after the start; per node %s",
			live, p.Warm, p.Claimed, len(run), time.Since(start).Seconds(), c.spreadString(sp))

		node, pid, err := c.idepoolProc(ctx)
		if err != nil {
			c.fatal(b, err)
		}
		// Idle at that size (agents' heartbeats, health probes, the pool's
		// reconcile), in two windows: the first still settles after the
		// refill (seen: 20-25 % falling to ~10 % within half a minute).
		var win [3]procSample
		for k := range win {
			if k > 0 {
				time.Sleep(10 * time.Second) // the window CPU is averaged over, not a wait for a state
			}
			if win[k], err = sample(node, pid); err != nil {
				c.fatal(b, err)
			}
		}
		cpuOver := func(a, b procSample) float64 { return 100 * float64(b.cpu-a.cpu) / float64(b.at.Sub(a.at)) }
		settling, idle := cpuOver(win[0], win[1]), cpuOver(win[1], win[2])
		s1 := win[2]

		hc, err := c.dashboardClient(ctx)
		if err != nil {
			c.fatal(b, err)
		}
		get := func(path string) (time.Duration, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.apiURL+path, nil)
			if err != nil {
				return 0, err
			}
			req.Header.Set("Authorization", "Bearer "+c.key)
			s := time.Now()
			res, err := hc.Do(req)
			if err != nil {
				return 0, fmt.Errorf("GET %s: %w", path, err)
			}
			n, _ := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || n == 0 {
				return 0, fmt.Errorf("GET %s: %s, %d bytes", path, res.Status, n)
			}
			return time.Since(s), nil
		}
		// The dashboard: its page, and the state its script fetches (every
		// container and pool).
		paths := []string{"/api/containers?limit=500", "/api/pool", "/dashboard/", "/dashboard/state"}
		lat := map[string][]time.Duration{}
		s2, err := sample(node, pid)
		if err != nil {
			c.fatal(b, err)
		}
		for range 100 {
			for _, path := range paths {
				d, err := get(path)
				if err != nil {
					c.fatal(b, err)
				}
				lat[path] = append(lat[path], d)
			}
		}
		s3, err := sample(node, pid)
		if err != nil {
			c.fatal(b, err)
		}
		busy := 100 * float64(s3.cpu-s2.cpu) / float64(s3.at.Sub(s2.at))
		var apiP99 time.Duration
		for _, path := range paths {
			b.Logf("GET %-26s ×100 at %d containers: p50 %5.1f ms, p99 %5.1f ms", path, live, ms(pct(lat[path], 0.5)), ms(pct(lat[path], 0.99)))
			if strings.HasPrefix(path, "/api/") {
				apiP99 = max(apiP99, pct(lat[path], 0.99))
			}
		}
		rss := float64(max(s1.rssKiB, s3.rssKiB)) / 1024
		b.ReportMetric(float64(live), "containers")
		b.ReportMetric(ms(apiP99), "api-p99-ms")
		b.ReportMetric(ms(max(pct(lat["/dashboard/"], 0.99), pct(lat["/dashboard/state"], 0.99))), "dashboard-p99-ms")
		b.ReportMetric(rss, "rss-mib")
		b.ReportMetric(idle, "cpu-pct")
		b.ReportMetric(busy, "cpu-pct-api")
		b.Logf("idepool (on %s) at %d containers: RSS %.1f MiB; CPU (%% of a core) %.1f %% idle in the 10 s after the refill, %.1f %% in the next 10 s, %.1f %% during the %d API calls",
			node, live, rss, settling, idle, busy, 100*len(paths))
		if live < warm+claimed {
			b.Errorf("%d live containers, want %d", live, warm+claimed)
		}
		if !c.own {
			if err := c.emptyProfile(ctx, "small"); err != nil {
				c.fatal(b, err)
			}
		}
	}
}
