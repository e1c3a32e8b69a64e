// Package swarm_test is idepool's end-to-end test on Docker Swarm: idepool
// itself runs as a Swarm service on an overlay network (built-in proxy) next
// to Traefik (swarm provider, ForwardAuth back to idepool); the test talks
// to both through ports published on the host, exactly as a user would.
//
// It is slow (images, services, a pool), so it runs only with CI=true or
// IDEPOOL_E2E=1:
//
//	IDEPOOL_E2E=1 go test -v -count=1 ./e2e/swarm/
//	IDEPOOL_E2E=1 go test -run '^$' -bench . -benchtime 1x ./e2e/swarm/
package swarm_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/e2etest"
	"github.com/idepool/idepool/internal/s3test"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// Resources of the IDE containers (and of the plain services they are
// compared with).
const (
	ideCPULimit       = 1.0
	ideCPUReservation = 0.05
	ideMemory         = 96 << 20
)

const (
	// bucket is the one S3 bucket of the tests; workspaces differ by prefix.
	bucket       = "e2e"
	idepoolImage = "idepool:dev"
	ideImage     = "idepool-ide:test"
	traefikImage = "idepool-traefik:v3.6.12"
)

// enabled skips unless the end-to-end run was asked for.
func enabled(t testing.TB) {
	t.Helper()
	if os.Getenv("CI") != "true" && os.Getenv("IDEPOOL_E2E") != "1" {
		t.Skip("end-to-end Swarm test: set IDEPOOL_E2E=1 (CI=true runs it)")
	}
}

// stack is one running deployment: idepool and Traefik as services on an
// overlay network, reachable on host ports.
type stack struct {
	t          testing.TB
	docker     *client.Client
	network    string
	deployment string
	apiKey     string
	idepoolSvc string // service name (also its DNS name on the network)
	traefikSvc string
	apiURL     string // http://127.0.0.1:<port>: API and built-in proxy
	traefikURL string // http://127.0.0.1:<port>: Traefik's web entrypoint
	api        *idepoolclient.Client
	dataDir    string
	env        map[string]string
	s3         *s3test.Server
}

type stackOptions struct {
	poolTarget int
	traefik    bool
	// profile adds JSON fields to the default profile ("maxContainers": 32).
	profile string
	// env overrides idepool's environment.
	env map[string]string
}

// buildImages runs deploy/build-images.sh (idempotent) and, when Traefik is
// wanted, deploy/build-traefik.sh (a cached binary; a first build takes
// minutes, which CI does before the tests).
func buildImages(t testing.TB, withTraefik bool) {
	root := e2etest.RepoRoot(t)
	run := func(script string) {
		cmd := exec.Command("bash", filepath.Join(root, "deploy", script))
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("deploy/%s: %v\n%s", script, err, out)
		}
	}
	run("build-images.sh")
	if withTraefik {
		run("build-traefik.sh")
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

// newStack starts idepool (and Traefik) and waits until idepool answers.
// Its cleanup removes idepool, Traefik and every service of the deployment,
// and checks that nothing of it is left.
func newStack(t testing.TB, so stackOptions) *stack {
	t.Helper()
	enabled(t)
	c := swarmtest.Require(t)
	buildImages(t, so.traefik)
	suffix := idepool.NewID()[:6]
	s := &stack{
		t:          t,
		docker:     c,
		deployment: "e2e-" + suffix,
		apiKey:     e2etest.RandomHex(24),
		idepoolSvc: "e2e-idepool-" + suffix,
		traefikSvc: "e2e-traefik-" + suffix,
		dataDir:    t.TempDir(),
	}
	// A small reservation lets 20 containers fit on 2 cores; the limit is
	// high enough that the agent's start-up is not throttled.
	extra := ""
	if so.profile != "" {
		extra = ", " + so.profile
	}
	profiles := fmt.Sprintf(`{"profiles": [{"name": "default", "cpuReservation": %g%s}]}`, ideCPUReservation, extra)
	if err := os.WriteFile(filepath.Join(s.dataDir, "profiles.json"), []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	s.network = swarmtest.Network(t, c, "idepool-e2e")
	// Registered after the network, so it runs before the network's removal.
	t.Cleanup(s.teardown)
	s3 := startS3(t, c)
	s3.CreateBucket(t, bucket)
	s.s3 = s3
	apiPort := freePort(t)
	s.apiURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	s.env = map[string]string{
		"RUNTIME":                "swarm",
		"DEPLOYMENT":             s.deployment,
		"SWARM_NETWORK":          s.network,
		"ROUTER":                 "builtin",
		"API_KEY":                s.apiKey,
		"PORT":                   "3001",
		"DOMAIN":                 "localhost",
		"PUBLIC_URL":             s.apiURL,
		"AGENT_URL":              "http://" + s.idepoolSvc + ":3001",
		"IDE_CONTAINER_IMAGE":    ideImage,
		"PRE_WARMED_QUEUE_SIZE":  strconv.Itoa(so.poolTarget),
		"CONTAINER_CPU_LIMIT":    strconv.FormatFloat(ideCPULimit, 'f', -1, 64),
		"CONTAINER_MEMORY_LIMIT": strconv.Itoa(ideMemory),
		"PROFILES_FILE":          "/data/profiles.json",
		"DATA_DIR":               "/data",
		"LOG_LEVEL":              "debug",
	}
	for k, v := range s3Env(s3) {
		s.env[k] = v
	}
	for k, v := range so.env {
		s.env[k] = v
	}
	if so.traefik {
		s.env["ROUTER"] = "traefik"
		// Containers join the pool only once Traefik routes them.
		s.env["TRAEFIK_URL"] = "http://" + s.traefikSvc + ":80"
	}
	s.createService(s.idepoolSvc, idepoolImage, []string{"serve"}, s.env, apiPort, 3001, []mount.Mount{
		{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock"},
		{Type: mount.TypeBind, Source: s.dataDir, Target: "/data"},
	}, swarm.RestartPolicyConditionAny)
	if so.traefik {
		tp := freePort(t)
		s.traefikURL = fmt.Sprintf("http://127.0.0.1:%d", tp)
		s.createService(s.traefikSvc, traefikImage, []string{
			"--entrypoints.web.address=:80",
			"--providers.swarm.endpoint=unix:///var/run/docker.sock",
			"--providers.swarm.exposedByDefault=false",
			"--providers.swarm.network=" + s.network,
			"--providers.swarm.refreshSeconds=1",
			// Apply new configurations at once (default: at most one per 2s).
			"--providers.providersThrottleDuration=200ms",
			// Only this deployment's containers.
			"--providers.swarm.constraints=Label(`" + idepool.LabelManaged + "`,`" + s.deployment + "`)",
			"--log.level=INFO",
		}, nil, tp, 80, []mount.Mount{
			{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock", ReadOnly: true},
		}, swarm.RestartPolicyConditionAny)
	}
	api, err := idepoolclient.New(s.apiURL, s.apiKey, idepoolclient.Options{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s.api = api
	s.waitHealthy(3 * time.Minute)
	return s
}

// createService runs one infrastructure service (idepool or Traefik) with a
// host-mode published port on this manager.
func (s *stack) createService(name, image string, args []string, env map[string]string, published, target int, mounts []mount.Mount, restart swarm.RestartPolicyCondition) {
	s.t.Helper()
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	replicas := uint64(1)
	delay := 500 * time.Millisecond
	_, err := s.docker.ServiceCreate(context.Background(), client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{"idepool.e2e": s.deployment}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: image, Args: args, Env: envList, Mounts: mounts},
			RestartPolicy: &swarm.RestartPolicy{Condition: restart, Delay: &delay},
			Placement:     &swarm.Placement{Constraints: []string{"node.role==manager"}},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: s.network, Aliases: []string{name}}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		// DNS round robin: virtual IPs need IPVS, which this kind of machine
		// may lack ("connect: no route to host" to the VIP).
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR, Ports: []swarm.PortConfig{{
			Protocol: "tcp", TargetPort: uint32(target), PublishedPort: uint32(published), PublishMode: swarm.PortConfigPublishModeHost,
		}}},
	}})
	if err != nil {
		s.t.Fatalf("create service %s: %v", name, err)
	}
}

// waitHealthy waits until idepool's API answers.
func (s *stack) waitHealthy(d time.Duration) {
	s.t.Helper()
	e2etest.WaitHealthy(s.t, s.api, d, 300*time.Millisecond, func() string { return s.logs(s.idepoolSvc) })
}

// logs returns the tail of a service's logs (for failure messages).
func (s *stack) logs(service string) string {
	out, _ := exec.Command("docker", "service", "logs", "--raw", "--tail", "60", service).CombinedOutput()
	return string(out)
}

// waitPool waits until profile's pool has want warm containers.
func (s *stack) waitPool(profile string, want int, d time.Duration) idepool.PoolStatus {
	s.t.Helper()
	return e2etest.WaitPool(s.t, s.api, profile, want, d, func() string { return s.logs(s.idepoolSvc) })
}

// services returns the deployment's container services by name.
func (s *stack) services() map[string]swarm.Service {
	s.t.Helper()
	sl, err := s.docker.ServiceList(context.Background(), client.ServiceListOptions{
		Filters: make(client.Filters).Add("label", idepool.LabelManaged+"="+s.deployment)})
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]swarm.Service{}
	for _, sv := range sl.Items {
		out[sv.Spec.Name] = sv
	}
	return out
}

// serviceExists reports whether a service of that name exists.
func (s *stack) serviceExists(name string) bool {
	_, err := s.docker.ServiceInspect(context.Background(), name, client.ServiceInspectOptions{})
	if err != nil && !cerrdefs.IsNotFound(err) {
		s.t.Fatal(err)
	}
	return err == nil
}

// teardown removes idepool and Traefik, then every container of the
// deployment, and checks nothing is left.
func (s *stack) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if s.t.Failed() {
		s.t.Logf("idepool logs:\n%s", s.logs(s.idepoolSvc))
	}
	for _, name := range []string{s.idepoolSvc, s.traefikSvc} {
		if _, err := s.docker.ServiceRemove(ctx, name, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			s.t.Errorf("remove %s: %v", name, err)
		}
	}
	// idepool's task stops asynchronously: wait until it is gone, or it
	// could still create a container after the sweep below.
	for ctx.Err() == nil {
		cl, err := s.docker.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.swarm.service.name="+s.idepoolSvc)})
		if err != nil || len(cl.Items) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := swarmtest.RemoveDeployment(ctx, s.docker, s.deployment); err != nil {
		s.t.Errorf("cleanup: %v", err)
	}
	if svcs, ctrs, err := swarmtest.Leftovers(ctx, s.docker, s.deployment); err != nil || svcs+ctrs > 0 {
		s.t.Errorf("left after teardown: %d services, %d containers (%v)", svcs, ctrs, err)
	}
}
