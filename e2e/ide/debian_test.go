// Package ide_test verifies the Debian IDE image (deploy/ide/build-debian.sh)
// with plain `docker run`: the image runs `idepool agent` as PID 1 with the
// workloads of profile debian-ide (deploy/ide/profiles.json, loaded through
// the real PROFILES_FILE loader); an in-test control hub stands in for the
// orchestrator. The test then checks, through ports published from the
// container (so each workload really listens beyond localhost), that
// Jupyter answers under its base URL and runs code over its kernel
// websocket, that websockify serves noVNC and bridges to Xvnc (an RFB
// handshake up to ServerInit, and noVNC in Chromium), that a killed Xvnc is
// restarted, and that shellinabox runs a command.
//
// It runs when the image exists; with CI=true it builds the image (the
// script is idempotent and caches its stages) and never skips.
package ide_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/control"
	"github.com/idepool/idepool/e2e/ide/idecheck"
	"github.com/idepool/idepool/internal/e2etest"
)

const profileName = "debian-ide"

// missing skips, or fails under CI=true, where everything must be there.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: required)")
	}
	t.Skip(msg)
}

// docker runs the docker CLI and returns its trimmed stdout.
func docker(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// loadProfile reads deploy/ide/profiles.json the way the server does.
func loadProfile(t testing.TB, root string) idepool.Profile {
	t.Helper()
	c := config.Defaults()
	c.ProfilesFile = filepath.Join(root, "deploy", "ide", "profiles.json")
	profiles, err := c.Profiles()
	if err != nil {
		t.Fatalf("profiles: %v", err)
	}
	for _, p := range profiles {
		if p.Name == profileName {
			return p
		}
	}
	t.Fatalf("%s has no profile %s", c.ProfilesFile, profileName)
	return idepool.Profile{}
}

// ensureImage makes sure the profile's image exists: CI builds it (or
// checks it is current); elsewhere a missing image skips the test.
func ensureImage(t testing.TB, root, image string) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		missing(t, "docker CLI not found")
	}
	ctx := ctxFor(t, 10*time.Second)
	if _, err := docker(ctx, "version", "--format", "{{.Server.Version}}"); err != nil {
		missing(t, "docker engine not reachable: %v", err)
	}
	_, err := docker(ctx, "image", "inspect", "--format", "{{.Id}}", image)
	if os.Getenv("CI") != "true" {
		if err != nil {
			t.Skipf("image %s not built: run deploy/ide/build-debian.sh as root (CI=true builds it)", image)
		}
		return
	}
	bctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "bash", filepath.Join(root, "deploy", "ide", "build-debian.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "IDEPOOL_DEBIAN_IMAGE="+image)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/ide/build-debian.sh: %v\n%s", err, out)
	}
	t.Logf("deploy/ide/build-debian.sh:\n%s", out)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// standIn is the orchestrator's side of the control channel: it admits the
// one container and keeps what its agent reports.
type standIn struct {
	id, token string
	mu        sync.Mutex
	reports   []idepool.AgentReport
	changed   chan struct{} // closed and replaced on every report
}

func (s *standIn) VerifyAgent(id, token string) bool { return id == s.id && token == s.token }

func (s *standIn) AgentReport(r idepool.AgentReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, r)
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor returns the first report that satisfies ok, or the last one seen
// when ctx ends.
func (s *standIn) waitFor(ctx context.Context, ok func(idepool.AgentReport) bool) (idepool.AgentReport, error) {
	seen := 0
	for {
		s.mu.Lock()
		for ; seen < len(s.reports); seen++ {
			if ok(s.reports[seen]) {
				r := s.reports[seen]
				s.mu.Unlock()
				return r, nil
			}
		}
		var last idepool.AgentReport
		if len(s.reports) > 0 {
			last = s.reports[len(s.reports)-1]
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-ch:
		}
	}
}

// ideContainer is the running image.
type ideContainer struct {
	name  string
	id    string
	ports map[string]string // container port ("8888/tcp") → 127.0.0.1:<host port>
}

func (c *ideContainer) addr(t testing.TB, port int) string {
	t.Helper()
	a, ok := c.ports[fmt.Sprintf("%d/tcp", port)]
	if !ok {
		t.Fatalf("port %d not published", port)
	}
	return a
}

// network creates a bridge network for the test and returns its name and
// gateway (the host's address on it, where the stand-in listens).
func network(t testing.TB) (name, gateway string) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	name = "idepool-idetest-" + randomHex(4)
	if _, err := docker(ctx, "network", "create", "--driver", "bridge", "--label", "idepool.test=true", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := docker(ctx, "network", "rm", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	gateway, err := docker(ctx, "network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", name)
	if err != nil {
		t.Fatal(err)
	}
	return name, gateway
}

// startStandIn serves a control hub on addr (host:0) and returns its URL.
func startStandIn(t testing.TB, addr string, s *standIn) string {
	t.Helper()
	hub := control.NewHub(control.Options{Verifier: s, Observer: s})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen for the agent on %s (the docker network's gateway): %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(control.Path, hub)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hub.Close(ctx)
		srv.Close()
	})
	return "http://" + ln.Addr().String()
}

// runIDE starts the image as the Swarm runtime would configure it (the same
// environment), without Docker's init: the agent is PID 1. Every route port
// and Xvnc's 5901 are published on 127.0.0.1.
func runIDE(t testing.TB, p idepool.Profile, netName, agentURL string, s *standIn) *ideContainer {
	t.Helper()
	ctx := ctxFor(t, 2*time.Minute)
	routes, _ := json.Marshal(p.Routes)
	workloads, _ := json.Marshal(p.Workloads)
	c := &ideContainer{name: "idepool-idetest-" + s.id}
	args := []string{"run", "-d", "--name", c.name, "--network", netName, "--label", "idepool.test=true",
		"--hostname", c.name, "--memory", fmt.Sprint(p.MemoryLimit),
		"-e", idepool.EnvAgentURL + "=" + agentURL,
		"-e", idepool.EnvAgentToken + "=" + s.token,
		"-e", idepool.EnvAgentID + "=" + s.id,
		"-e", idepool.EnvRoutes + "=" + string(routes),
		"-e", idepool.EnvWorkloads + "=" + string(workloads),
		"-e", idepool.EnvWorkspaceDir + "=/workspace",
		"-e", idepool.EnvStateDir + "=/var/lib/idepool-agent",
		"-p", "127.0.0.1::5901",
	}
	for k, v := range p.Env {
		args = append(args, "-e", k+"="+v)
	}
	for _, r := range p.Routes {
		args = append(args, "-e", fmt.Sprintf("%s%s=%d", idepool.EnvRoutePortPrefix,
			strings.ToUpper(strings.ReplaceAll(r.Name, "-", "_")), r.Port))
		args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d", r.Port))
	}
	args = append(args, p.Image)
	id, err := docker(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	c.id = id
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t.Failed() {
			logs, _ := exec.CommandContext(ctx, "docker", "logs", "--tail", "200", c.name).CombinedOutput()
			t.Logf("container logs (last 200 lines):\n%s", logs)
		}
		if _, err := docker(ctx, "rm", "-f", "-v", c.name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	out, err := docker(ctx, "inspect", "--format", "{{json .NetworkSettings.Ports}}", c.name)
	if err != nil {
		t.Fatal(err)
	}
	var ports map[string][]struct{ HostIp, HostPort string }
	if err := json.Unmarshal([]byte(out), &ports); err != nil {
		t.Fatalf("published ports %s: %v", out, err)
	}
	c.ports = map[string]string{}
	for k, v := range ports {
		if len(v) > 0 {
			c.ports[k] = net.JoinHostPort(v[0].HostIp, v[0].HostPort)
		}
	}
	return c
}

func TestDebianImage(t *testing.T) {
	root := e2etest.RepoRoot(t)
	p := loadProfile(t, root)
	ensureImage(t, root, p.Image)

	netName, gateway := network(t)
	s := &standIn{id: idepool.NewID(), token: randomHex(32), changed: make(chan struct{})}
	agentURL := startStandIn(t, net.JoinHostPort(gateway, "0"), s)
	c := runIDE(t, p, netName, agentURL, s)
	route := func(name string) idepool.Route {
		r, ok := p.Route(name)
		if !ok {
			t.Fatalf("profile %s has no route %s", p.Name, name)
		}
		return r
	}
	hc := &http.Client{Timeout: 2 * time.Minute}

	// Readiness (every subtest needs it): the agent reports ready once
	// every route's workload answers, and its heartbeats carry every
	// workload as running.
	{
		ctx := ctxFor(t, 5*time.Minute)
		var names []string
		for _, w := range p.Workloads {
			names = append(names, w.Name)
		}
		slices.Sort(names)
		r, err := s.waitFor(ctx, func(r idepool.AgentReport) bool {
			if !r.Ready || r.Kind != idepool.AgentHeartbeat || len(r.Processes) != len(names) {
				return false
			}
			for i, ps := range r.Processes {
				if ps.Name != names[i] || ps.State != "running" {
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("no heartbeat with ready and every workload running: %v; last report: %+v", err, r)
		}
		for _, ps := range r.Processes {
			t.Logf("workload %s: %s pid %d, %d restarts", ps.Name, ps.State, ps.PID, ps.Restarts)
		}
	}

	t.Run("user", func(t *testing.T) {
		ctx := ctxFor(t, time.Minute)
		out, err := docker(ctx, "exec", c.name, "sh", "-c",
			`echo "$(id -u):$(id -g) $(stat -c %u /workspace)"; command -v sudo || echo no-sudo; find / -xdev -type f -perm /6000 | head -5`)
		if err != nil {
			t.Fatal(err)
		}
		if want := "1000:1000 1000\nno-sudo"; out != want {
			t.Errorf("uid:gid, workspace owner, sudo, setuid files:\n%s\nwant:\n%s", out, want)
		}
	})

	t.Run("jupyter", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		r := route("code")
		base := fmt.Sprintf("http://%s/%s/%s/", c.addr(t, r.Port), r.Name, s.id)
		j := idecheck.NewJupyter(base, hc)
		st, err := j.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("api/status: %v", st)
		if err := j.Tree(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := j.Run(ctx, "import os\nopen('from-jupyter.txt', 'w').write('hello')\nprint(6*7, os.getcwd(), os.getuid())")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(out), "42 /workspace 1000"; got != want {
			t.Errorf("kernel printed %q, want %q", got, want)
		}
		got, err := docker(ctx, "exec", c.name, "cat", "/workspace/from-jupyter.txt")
		if err != nil || got != "hello" {
			t.Errorf("file written by the kernel: %q, %v", got, err)
		}
	})

	t.Run("novnc", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		addr := c.addr(t, route("vnc").Port)
		for path, want := range map[string]string{"/": "websockify", "/vnc.html": "noVNC", "/app/ui.js": "UI"} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
				t.Errorf("GET %s: HTTP %d, want 200 with %q: %.200q", path, resp.StatusCode, want, b.String())
			}
		}
		d, err := idecheck.VNC(ctx, "ws://"+addr+"/websockify", nil, hc)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("desktop: %+v", d)
		if d.Width != 1280 || d.Height != 800 || d.Name != "idepool" {
			t.Errorf("desktop %dx%d %q, want 1280x800 \"idepool\"", d.Width, d.Height, d.Name)
		}
	})

	// In a browser: the start page sends noVNC to websockify, which
	// connects to the desktop.
	t.Run("novnc-browser", func(t *testing.T) {
		path, err := idecheck.ChromiumPath()
		if err != nil {
			missing(t, "%v", err)
		}
		bctx, cancel, err := idecheck.Browser(path, t.TempDir(), t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		v, err := idecheck.NoVNC(bctx, "http://"+c.addr(t, route("vnc").Port)+"/", 2*time.Minute)
		t.Logf("noVNC: %+v", v)
		if err != nil {
			t.Fatal(err)
		}
		// resize=remote: Xvnc takes the browser's size, so any size will do.
		if !strings.HasPrefix(v.Status, "Connected") || v.Width == 0 || v.Height == 0 {
			t.Errorf("noVNC status %q, canvas %dx%d: want connected with a desktop", v.Status, v.Width, v.Height)
		}
	})

	// Xvnc listens on localhost only: from outside the container its port
	// gives no RFB banner.
	t.Run("xvnc-localhost-only", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", c.addr(t, 5901), 10*time.Second)
		if err != nil {
			return // refused: fine
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 12)
		n, _ := conn.Read(b)
		if strings.HasPrefix(string(b[:n]), "RFB") {
			t.Errorf("Xvnc answers on the container's interface: %q", b[:n])
		}
	})

	// A crashed workload comes back: Xvnc killed, the agent restarts it,
	// its heartbeat says so, and the desktop answers again.
	t.Run("restart", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		if _, err := docker(ctx, "exec", c.name, "pkill", "-KILL", "-x", "Xvnc"); err != nil {
			t.Fatal(err)
		}
		r, err := s.waitFor(ctx, func(r idepool.AgentReport) bool {
			for _, ps := range r.Processes {
				if ps.Name == "xvnc" && ps.Restarts > 0 && ps.State == "running" {
					return true
				}
			}
			return false
		})
		if err != nil {
			t.Fatalf("no heartbeat with xvnc restarted: %v; last: %+v", err, r.Processes)
		}
		addr := c.addr(t, route("vnc").Port)
		var d idecheck.Desktop
		for ctx.Err() == nil { // Xvnc needs a moment to listen again
			if d, err = idecheck.VNC(ctx, "ws://"+addr+"/websockify", nil, hc); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("desktop after the restart: %v", err)
		}
		t.Logf("after the restart: %+v", d)
	})

	t.Run("shellinabox", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		addr := c.addr(t, route("terminal").Port)
		out, err := idecheck.Terminal(ctx, hc, "http://"+addr+"/", "echo idepool-$((6*7)) $(id -un) $PWD", "idepool-42 ide /workspace")
		if err != nil {
			t.Fatalf("%v\noutput: %q", err, out)
		}
	})
}
