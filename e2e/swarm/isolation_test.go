package swarm_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/e2etest"
	"github.com/idepool/idepool/runtime/swarm"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
	swarmtypes "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

const probeImage = "idepool-probe:test"

// probeResult is one line of testdata/probe's output.
type probeResult struct {
	Target    string `json:"target"`
	Connected bool   `json:"connected"`
	Answer    string `json:"answer"`
	Status    int    `json:"status"`
	Err       string `json:"err"`
}

// TestSwarmIsolation is issue 7's "one container cannot reach another's
// route ports nor idepool's admin API". idepool runs as a service; two IDE
// containers A and B are claimed. A probe runs in A's network namespace
// (docker run --network container:<A>, so it connects from A's task
// address, as a program in A would) and finds:
//   - every route port of B: the connection is cut without an HTTP answer;
//   - idepool's REST API with a valid key, its metrics and its built-in
//     router (to B's route): 403 FORBIDDEN;
//   - idepool's agent endpoint: reachable (401 without a token, not 403).
//
// The same probe in idepool's namespace gets B's route ports answering,
// so the refusal is the agent's peer filter, not the network; and the
// routes still answer through the built-in proxy from the host.
func TestSwarmIsolation(t *testing.T) {
	s := newStack(t, stackOptions{poolTarget: 2})
	swarmtest.GoImage(t, probeImage, "./e2e/swarm/testdata/probe")
	s.waitPool(idepool.DefaultProfile, 2, 5*time.Minute)
	ctx := context.Background()
	a, err := s.api.Start(ctx, idepoolclient.StartRequest{Bucket: bucket, Prefix: "iso-a", UserID: "a"})
	if err != nil {
		t.Fatalf("start A: %v", err)
	}
	b, err := s.api.Start(ctx, idepoolclient.StartRequest{Bucket: bucket, Prefix: "iso-b", UserID: "b"})
	if err != nil {
		t.Fatalf("start B: %v", err)
	}
	if a.ID == b.ID {
		t.Fatal("A and B are the same container")
	}

	ipA := s.taskIP(t, swarm.ServiceName(a.ID))
	ipB := s.taskIP(t, swarm.ServiceName(b.ID))
	ipIdepool := s.taskIP(t, s.idepoolSvc)
	t.Logf("A %s at %s, B %s at %s, idepool at %s", a.ID, ipA, b.ID, ipB, ipIdepool)

	var ports []int
	for _, r := range idepool.DefaultRoutes() {
		ports = append(ports, r.Port)
	}
	sort.Ints(ports)
	api := "http://" + net.JoinHostPort(ipIdepool.String(), "3001")
	var targets []string
	for _, p := range ports {
		targets = append(targets, "tcp://"+net.JoinHostPort(ipB.String(), strconv.Itoa(p)))
	}
	targets = append(targets,
		api+"/api/containers",
		api+"/containers/"+b.ID,
		api+"/api/health",
		api+"/metrics",
		api+"/dashboard/",
		api+"/code/"+b.ID+"/",
		api+"/agent/v1/connect",
	)

	// Not asserted, reported (docs/security.md): idepool's port published
	// on the host, seen from A through docker_gwbridge's gateway. Docker's
	// userland proxy connects to idepool from the gateway address, as for
	// the host's own clients: idepool cannot tell them apart (200 here).
	hostAPI := "http://" + net.JoinHostPort(s.gatewayIP(t), strings.TrimPrefix(s.apiURL, "http://127.0.0.1:")) + "/api/containers"
	targets = append(targets, hostAPI)

	// From A.
	got := s.probe(t, s.taskContainer(t, swarm.ServiceName(a.ID)), targets)
	for _, r := range got {
		switch {
		case r.Target == hostAPI:
			t.Logf("NOT ISOLATED HERE (documented): A → idepool's host-published port %s: status %d err %s", r.Target, r.Status, r.Err)

		case strings.HasPrefix(r.Target, "tcp://"):
			if r.Status != 0 || r.Answer != "" {
				t.Errorf("A → B's route port %s: answered %q; want the connection cut without an answer", r.Target, r.Answer)
			}
		case strings.HasSuffix(r.Target, "/agent/v1/connect"):
			if r.Status != 401 {
				t.Errorf("A → %s: %d %q (%s); want 401 (reachable, token required)", r.Target, r.Status, r.Answer, r.Err)
			}
		default:
			if r.Status != 403 || !strings.Contains(r.Answer, `"FORBIDDEN"`) {
				t.Errorf("A → %s with a valid API key: %d %q (%s); want 403 FORBIDDEN", r.Target, r.Status, r.Answer, r.Err)
			}
		}
		t.Logf("from A: %s → connected=%v status=%d answer=%.60q err=%s", r.Target, r.Connected, r.Status, r.Answer, r.Err)
	}

	// From idepool: B's route ports answer (the filter, not the network,
	// refused A), and the API is idepool's own.
	got = s.probe(t, s.taskContainer(t, s.idepoolSvc), targets[:len(ports)])
	for _, r := range got {
		if r.Status == 0 {
			t.Errorf("idepool → B's route port %s: no HTTP answer (%s); the route ports must stay reachable for idepool", r.Target, r.Err)
		}
		t.Logf("from idepool: %s → status=%d err=%s", r.Target, r.Status, r.Err)
	}

	// From the host, as users: B's route still answers through the built-in
	// proxy (token → cookie → placeholder).
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Timeout: 30 * time.Second, Jar: jar}
	if st, body, _, err := e2etest.HTTPGet(hc, b.URLs.CodeServer, ""); err != nil || st != 200 {
		t.Errorf("B's code route through the built-in proxy: %d %v\n%s", st, err, body)
	}
}

// taskIP is the address of service's running task on the stack's network.
func (s *stack) taskIP(t *testing.T, service string) netip.Addr {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		tl, err := s.docker.TaskList(context.Background(), client.TaskListOptions{Filters: make(client.Filters).
			Add("service", service).Add("desired-state", "running")})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tl.Items {
			if task.Status.State != swarmtypes.TaskStateRunning {
				continue
			}
			for _, na := range task.NetworksAttachments {
				if na.Network.Spec.Name != s.network {
					continue
				}
				for _, a := range na.Addresses {
					return a.Addr()
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no running task of %s with an address on %s", service, s.network)
	return netip.Addr{}
}

// taskContainer is the id of the container of service's task on this node.
func (s *stack) taskContainer(t *testing.T, service string) string {
	t.Helper()
	cl, err := s.docker.ContainerList(context.Background(), client.ContainerListOptions{Filters: make(client.Filters).
		Add("label", "com.docker.swarm.service.name="+service).Add("status", "running")})
	if err != nil || len(cl.Items) != 1 {
		t.Fatalf("container of %s: %v, %d found", service, err, len(cl.Items))
	}
	return cl.Items[0].ID
}

// probe runs testdata/probe in container's network namespace (its
// addresses, its view of the network) and returns one result per target.
func (s *stack) probe(t *testing.T, container string, targets []string) []probeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"run", "--rm", "-i", "--network", "container:" + container, probeImage, "-key-stdin"}, targets...)
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdin = strings.NewReader(s.apiKey + "\n") // not in argv or env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe in %s: %v\n%s", container[:12], err, stderr.String())
	}
	var res []probeResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r probeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("probe output %q: %v", sc.Text(), err)
		}
		res = append(res, r)
	}
	if len(res) != len(targets) {
		t.Fatalf("probe: %d results for %d targets:\n%s", len(res), len(targets), out)
	}
	return res
}

// gatewayIP is docker_gwbridge's gateway: the host as containers see it.
func (s *stack) gatewayIP(t *testing.T) string {
	t.Helper()
	nw, err := s.docker.NetworkInspect(context.Background(), "docker_gwbridge", client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range nw.Network.IPAM.Config {
		if c.Gateway.Is4() {
			return c.Gateway.String()
		}
	}
	t.Fatalf("docker_gwbridge has no IPv4 gateway")
	return ""
}
