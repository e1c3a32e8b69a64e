package ide_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/e2e/ide/idecheck"
	"github.com/idepool/idepool/internal/e2etest"
	"github.com/idepool/idepool/internal/s3test"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
)

// Images the Swarm test runs (built by deploy/build-images.sh and
// deploy/build-traefik.sh).
const (
	idepoolImage = "idepool:dev"
	traefikImage = "idepool-traefik:v3.6.12"
	bucket       = "ide-e2e"
)

// TestDebianIDEOnSwarm is issue 7's first "must show", with the Debian IDE
// image on Swarm: idepool (swarm runtime, profile debian-ide from
// deploy/ide/profiles.json) and Traefik run as services, versitygw is the
// S3 store. A warm container is claimed; Chromium opens /vnc/<id>/ through
// Traefik and noVNC connects to the desktop; the terminal, through the
// built-in proxy, runs a command that writes a file in the workspace; the
// file lands in S3. Jupyter answers through Traefik too, kernel websocket
// included.
//
// Slow (a 900 MB image, a browser): it runs with CI=true or IDEPOOL_E2E=1.
func TestDebianIDEOnSwarm(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Getenv("IDEPOOL_E2E") != "1" {
		t.Skip("end-to-end Swarm test of the Debian IDE: set IDEPOOL_E2E=1 (CI=true runs it)")
	}
	chromium, err := idecheck.ChromiumPath()
	if err != nil {
		missing(t, "%v", err)
	}
	root := e2etest.RepoRoot(t)
	p := loadProfile(t, root)
	ensureImage(t, root, p.Image)
	st := newIDEStack(t, root)

	pool := st.waitPool(p.Name, 1, 10*time.Minute)
	t.Logf("pool %s: %+v", p.Name, pool)
	ctx := ctxFor(t, 2*time.Minute)
	res, err := st.api.Start(ctx, idepoolclient.StartRequest{Profile: p.Name, Bucket: bucket, UserID: "alice"})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, st.logs(st.idepoolSvc))
	}
	t.Logf("claimed %s (%s, warm %v): %+v", res.ID, res.Claim, res.IsPreWarmed, res.URLs)
	if res.URLs.VNC == "" || res.URLs.Terminal == "" || res.URLs.CodeServer == "" {
		t.Fatalf("start answer lacks vnc, terminal or codeServer URL: %+v", res.URLs)
	}

	// noVNC in Chromium, through Traefik (ForwardAuth swaps the one-time
	// token for the route cookie, then the start page sends noVNC to
	// /vnc/<id>/websockify).
	t.Run("vnc-through-traefik", func(t *testing.T) {
		st.waitTraefikRoute(t, "/vnc/"+res.ID+"/", 2*time.Minute)
		bctx, cancel, err := idecheck.Browser(chromium, t.TempDir(), t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		u := strings.Replace(res.URLs.VNC, st.apiURL, st.traefikURL, 1)
		v, err := idecheck.NoVNC(bctx, u, 3*time.Minute)
		t.Logf("noVNC: %+v", v)
		if err != nil {
			t.Fatalf("%v\n%s", err, st.logs(st.traefikSvc))
		}
		if want := "path=vnc%2F" + res.ID + "%2Fwebsockify"; !strings.Contains(v.URL, want) {
			t.Errorf("noVNC page %s: want %s", v.URL, want)
		}
		if !strings.HasPrefix(v.Status, "Connected") || v.Width == 0 {
			t.Errorf("noVNC status %q, canvas %dx%d: want connected", v.Status, v.Width, v.Height)
		}
	})

	// The terminal through the built-in proxy writes a file in the
	// workspace; it lands in the bucket.
	t.Run("terminal-to-s3", func(t *testing.T) {
		ctx := ctxFor(t, 5*time.Minute)
		hc := cookieClient()
		if _, err := get(ctx, hc, res.URLs.Terminal); err != nil { // token → cookie
			t.Fatal(err)
		}
		page := st.apiURL + "/terminal/" + res.ID + "/"
		out, err := idecheck.Terminal(ctx, hc, page,
			"echo written-in-the-terminal > /workspace/from-terminal.txt; echo idepool-$((6*7))", "idepool-42")
		if err != nil {
			t.Fatalf("%v\noutput: %q", err, out)
		}
		start := time.Now()
		got, err := st.waitObject(ctx, "from-terminal.txt", "written-in-the-terminal\n")
		if err != nil {
			t.Fatalf("from-terminal.txt in s3://%s: %q, %v\n%s", bucket, got, err, st.logs(st.idepoolSvc))
		}
		t.Logf("the file reached S3 %v after the command", time.Since(start).Round(time.Millisecond))
	})

	t.Run("jupyter-through-traefik", func(t *testing.T) {
		ctx := ctxFor(t, 3*time.Minute)
		hc := cookieClient()
		st.waitTraefikRoute(t, "/code/"+res.ID+"/", 2*time.Minute)
		if _, err := get(ctx, hc, strings.Replace(res.URLs.CodeServer, st.apiURL, st.traefikURL, 1)); err != nil {
			t.Fatal(err)
		}
		j := idecheck.NewJupyter(st.traefikURL+"/code/"+res.ID+"/", hc)
		out, err := j.Run(ctx, "print(6*7)")
		if err != nil || strings.TrimSpace(out) != "42" {
			t.Fatalf("kernel through Traefik: %q, %v", out, err)
		}
	})

	if _, err := st.api.Stop(ctxFor(t, 2*time.Minute), res.ID); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func cookieClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: time.Minute}
}

func get(ctx context.Context, hc *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: HTTP %d: %.200q", u, resp.StatusCode, b)
	}
	return string(b), nil
}

// ideStack is idepool and Traefik as Swarm services on an overlay network,
// with versitygw on the host, reachable on host ports as a user would.
type ideStack struct {
	t          testing.TB
	docker     *client.Client
	network    string
	deployment string
	idepoolSvc string
	traefikSvc string
	apiURL     string
	traefikURL string
	api        *idepoolclient.Client
	s3         *s3test.Server
}

func newIDEStack(t testing.TB, root string) *ideStack {
	t.Helper()
	c := swarmtest.Require(t)
	for _, script := range []string{"build-images.sh", "build-traefik.sh"} {
		cmd := exec.Command("bash", filepath.Join(root, "deploy", script))
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("deploy/%s: %v\n%s", script, err, out)
		}
	}
	suffix := idepool.NewID()[:6]
	st := &ideStack{
		t: t, docker: c,
		deployment: "idee2e-" + suffix,
		idepoolSvc: "idee2e-idepool-" + suffix,
		traefikSvc: "idee2e-traefik-" + suffix,
	}
	st.network = swarmtest.Network(t, c, "idepool-idee2e")
	t.Cleanup(st.teardown) // before the network's removal
	st.s3 = startGatewayS3(t, c)
	st.s3.CreateBucket(t, bucket)

	apiPort, traefikPort := freePort(t), freePort(t)
	st.apiURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	st.traefikURL = fmt.Sprintf("http://127.0.0.1:%d", traefikPort)
	env := map[string]string{
		"RUNTIME":               "swarm",
		"DEPLOYMENT":            st.deployment,
		"SWARM_NETWORK":         st.network,
		"ROUTER":                "traefik",
		"API_KEY":               randomHex(24),
		"PORT":                  "3001",
		"DOMAIN":                "localhost",
		"PUBLIC_URL":            st.apiURL,
		"AGENT_URL":             "http://" + st.idepoolSvc + ":3001",
		"PROFILES_FILE":         "/etc/idepool/profiles.json",
		"PRE_WARMED_QUEUE_SIZE": "0", // only debian-ide containers
		"DATA_DIR":              "/data",
		"LOG_LEVEL":             "info",
		"S3_ENDPOINT":           st.s3.Endpoint,
		"AWS_ACCESS_KEY_ID":     st.s3.AccessKey,
		"AWS_SECRET_ACCESS_KEY": st.s3.SecretKey,
		"AWS_REGION":            st.s3.Region,
	}
	st.createService(st.idepoolSvc, idepoolImage, []string{"serve"}, env, apiPort, 3001, []mount.Mount{
		{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock"},
		{Type: mount.TypeBind, Source: t.TempDir(), Target: "/data"},
		{Type: mount.TypeBind, Source: filepath.Join(root, "deploy", "ide", "profiles.json"), Target: "/etc/idepool/profiles.json", ReadOnly: true},
	})
	st.createService(st.traefikSvc, traefikImage, []string{
		"--entrypoints.web.address=:80",
		"--providers.swarm.endpoint=unix:///var/run/docker.sock",
		"--providers.swarm.exposedByDefault=false",
		"--providers.swarm.network=" + st.network,
		"--providers.swarm.refreshSeconds=1",
		"--providers.providersThrottleDuration=200ms",
		"--providers.swarm.constraints=Label(`" + idepool.LabelManaged + "`,`" + st.deployment + "`)",
		"--log.level=INFO",
	}, nil, traefikPort, 80, []mount.Mount{
		{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock", ReadOnly: true},
	})
	api, err := idepoolclient.New(st.apiURL, env["API_KEY"], idepoolclient.Options{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st.api = api
	st.waitHealthy(3 * time.Minute)
	return st
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startGatewayS3 runs versitygw on the gateway of docker_gwbridge, the
// address Swarm tasks reach the host by (and the host itself).
func startGatewayS3(t testing.TB, c *client.Client) *s3test.Server {
	t.Helper()
	bin := s3test.Binary()
	if bin == "" {
		missing(t, "versitygw not found; install: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	}
	gw, err := docker(ctxFor(t, 30*time.Second), "network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", "docker_gwbridge")
	if err != nil || gw == "" {
		t.Fatalf("docker_gwbridge gateway: %q, %v", gw, err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(gw, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", gw, err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &s3test.Server{Endpoint: "http://" + addr, AccessKey: "ideaccess", SecretKey: "idesecret-0123456789", Region: "us-east-1", Dir: t.TempDir()}
	cmd := exec.Command(bin, "-a", s.AccessKey, "-s", s.SecretKey, "-p", addr, "posix", s.Dir)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s", addr)
		}
	}
}

// createService runs idepool or Traefik with a host-mode published port.
func (st *ideStack) createService(name, image string, args []string, env map[string]string, published, target int, mounts []mount.Mount) {
	st.t.Helper()
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	replicas := uint64(1)
	delay := 500 * time.Millisecond
	_, err := st.docker.ServiceCreate(context.Background(), client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{"idepool.e2e": st.deployment}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: image, Args: args, Env: envList, Mounts: mounts},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, Delay: &delay},
			Placement:     &swarm.Placement{Constraints: []string{"node.role==manager"}},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: st.network, Aliases: []string{name}}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR, Ports: []swarm.PortConfig{{
			Protocol: "tcp", TargetPort: uint32(target), PublishedPort: uint32(published), PublishMode: swarm.PortConfigPublishModeHost,
		}}},
	}})
	if err != nil {
		st.t.Fatalf("create service %s: %v", name, err)
	}
}

func (st *ideStack) logs(service string) string {
	out, _ := exec.Command("docker", "service", "logs", "--raw", "--tail", "60", service).CombinedOutput()
	return string(out)
}

func (st *ideStack) waitHealthy(d time.Duration) {
	st.t.Helper()
	var last error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := st.api.Pools(ctx)
		cancel()
		if err == nil {
			return
		}
		last = err
	}
	st.t.Fatalf("idepool did not answer within %v: %v\n%s", d, last, st.logs(st.idepoolSvc))
}

func (st *ideStack) waitPool(profile string, want int, d time.Duration) idepool.PoolStatus {
	st.t.Helper()
	var last idepool.PoolStatus
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ps, err := st.api.Pools(ctx)
		cancel()
		for _, p := range ps {
			if err == nil && p.Profile == profile {
				last = p
				if p.Warm >= want {
					return p
				}
			}
		}
	}
	st.t.Fatalf("pool %s did not reach %d warm within %v: %+v\n%s", profile, want, d, last, st.logs(st.idepoolSvc))
	return last
}

// waitTraefikRoute waits until Traefik routes path (it answers 401 without
// a cookie instead of its own 404).
func (st *ideStack) waitTraefikRoute(t testing.TB, path string, d time.Duration) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var last int
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		resp, err := hc.Get(st.traefikURL + path)
		if err != nil {
			continue
		}
		resp.Body.Close()
		last = resp.StatusCode
		if last == http.StatusUnauthorized {
			return
		}
	}
	t.Fatalf("Traefik does not route %s within %v (last status %d)\n%s", path, d, last, st.logs(st.traefikSvc))
}

// waitObject polls the bucket until key holds want.
func (st *ideStack) waitObject(ctx context.Context, key, want string) (string, error) {
	c := st.s3.Client()
	var got string
	for {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err == nil {
			b, _ := io.ReadAll(out.Body)
			out.Body.Close()
			if got = string(b); got == want {
				return got, nil
			}
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// teardown removes idepool and Traefik, then every container of the
// deployment, and checks that nothing is left.
func (st *ideStack) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if st.t.Failed() {
		st.t.Logf("idepool logs:\n%s", st.logs(st.idepoolSvc))
	}
	for _, name := range []string{st.idepoolSvc, st.traefikSvc} {
		if _, err := st.docker.ServiceRemove(ctx, name, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			st.t.Errorf("remove %s: %v", name, err)
		}
	}
	for ctx.Err() == nil {
		cl, err := st.docker.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.swarm.service.name="+st.idepoolSvc)})
		if err != nil || len(cl.Items) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := swarmtest.RemoveDeployment(ctx, st.docker, st.deployment); err != nil {
		st.t.Errorf("cleanup: %v", err)
	}
	if svcs, ctrs, err := swarmtest.Leftovers(ctx, st.docker, st.deployment); err != nil || svcs+ctrs > 0 {
		st.t.Errorf("left after teardown: %d services, %d containers (%v)", svcs, ctrs, err)
	}
}
