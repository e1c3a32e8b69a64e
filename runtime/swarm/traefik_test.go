package swarm

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// traefikImage is built by deploy/build-traefik.sh (CI runs it first).
const traefikImage = "idepool-traefik:v3.6.12"

// The labels of package traefik really route through Traefik v3's Swarm
// provider: prefix stripped, ForwardAuth asked on every request (a stand-in
// endpoint: cookie let=me passes, else 401), nothing routed for a longer id.
func TestTraefikRouting(t *testing.T) {
	e := newEngine(t)
	if out, err := exec.Command("docker", "image", "inspect", traefikImage).CombinedOutput(); err != nil {
		swarmtest.Missing(t, "image %s missing (run deploy/build-traefik.sh): %s", traefikImage, strings.TrimSpace(string(out)))
	}
	dep := newDeployment()
	replicas := uint64(1)
	svc := func(name, image string, args, env []string, ports []swarm.PortConfig, mounts []mount.Mount) {
		t.Helper()
		res, err := e.c.ServiceCreate(t.Context(), client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
			Annotations: swarm.Annotations{Name: name},
			TaskTemplate: swarm.TaskSpec{
				ContainerSpec: &swarm.ContainerSpec{Image: image, Args: args, Env: env, Mounts: mounts},
				Networks:      []swarm.NetworkAttachmentConfig{{Target: e.network}},
			},
			Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
			// DNS round robin: virtual IPs need IPVS, which this kind of
			// machine may lack ("connect: no route to host" to the VIP).
			EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR, Ports: ports},
		}})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		t.Cleanup(func() { e.c.ServiceRemove(context.Background(), res.ID, client.ServiceRemoveOptions{}) })
	}
	auth := "swtest-auth-" + idepool.NewID()[:6]
	svc(auth, testImage, nil, []string{"IDEPOOL_PORT_AUTH=9000"}, nil, nil)
	port := freePort(t)
	svc("swtest-traefik-"+idepool.NewID()[:6], traefikImage, []string{
		"--entrypoints.web.address=:80",
		"--providers.swarm.endpoint=unix:///var/run/docker.sock",
		"--providers.swarm.exposedByDefault=false",
		"--providers.swarm.refreshSeconds=1",
		"--providers.providersThrottleDuration=200ms",
		"--providers.swarm.constraints=Label(`" + idepool.LabelManaged + "`,`" + dep + "`)",
	}, nil, []swarm.PortConfig{{Protocol: "tcp", TargetPort: 80, PublishedPort: uint32(port), PublishMode: swarm.PortConfigPublishModeHost}},
		[]mount.Mount{{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock", ReadOnly: true}})

	rt := e.runtime(t, dep, func(o *Options) {
		o.Router = RouterTraefik
		o.Traefik.ForwardAuthURL = "http://" + auth + ":9000/_auth/forward"
	})
	in := create(t, rt, testProfile(), nil)
	waitStatus(t, rt, in.ID, idepool.StatusRunning)

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path, cookie string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	want := fmt.Sprintf("placeholder %s code /hello", in.ID)
	start := time.Now()
	var status int
	var body string
	for time.Since(start) < 2*time.Minute {
		if status, body = get("/code/"+in.ID+"/hello", "let=me"); status == http.StatusOK {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if status != http.StatusOK || !strings.Contains(body, want) {
		t.Fatalf("through Traefik: %d %q, want 200 %q", status, body, want)
	}
	t.Logf("routable through Traefik %v after the container ran", time.Since(start).Round(time.Millisecond))
	if status, body := get("/code/"+in.ID, "let=me"); status != http.StatusOK || !strings.Contains(body, "code /") {
		t.Errorf("/code/<id> without slash: %d %q", status, body)
	}
	if status, body := get("/web/"+in.ID+"/x", "let=me"); status != http.StatusOK || !strings.Contains(body, "web /x") {
		t.Errorf("web route: %d %q", status, body)
	}
	// The token exchange's relative redirect reaches the client as is (not
	// resolved against the ForwardAuth address).
	req, _ := http.NewRequest(http.MethodGet, base+"/code/"+in.ID+"/hello?token=ok", nil)
	resp, err := (&http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "/code/"+in.ID+"/hello" || len(resp.Cookies()) != 1 {
		t.Errorf("token exchange through Traefik: %d Location %q cookies %v; want 302 to /code/%s/hello with the cookie", resp.StatusCode, loc, resp.Cookies(), in.ID)
	}
	if status, _ := get("/code/"+in.ID+"/hello", ""); status != http.StatusUnauthorized {
		t.Errorf("without the cookie: %d, want 401 from ForwardAuth", status)
	}
	if status, _ := get("/code/"+in.ID+"x/hello", "let=me"); status != http.StatusNotFound {
		t.Errorf("a longer id: %d, want 404 (no route)", status)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
