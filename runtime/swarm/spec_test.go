package swarm

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/traefik"
	"github.com/moby/moby/api/types/swarm"
)

func TestServiceSpec(t *testing.T) {
	created := time.Date(2026, 11, 27, 10, 0, 0, 5, time.UTC)
	p := idepool.Profile{
		Name: "py", Image: "ide:1", CPULimit: 1.5, MemoryLimit: 2 << 30, MemoryReservation: 1 << 30,
		Routes:      []idepool.Route{{Name: "code", Port: 8080}, {Name: "my-app", Port: 3000, KeepPrefix: true}},
		Env:         map[string]string{"LANG": "C.UTF-8", "IDEPOOL_PORT_CODE": "1"},
		Constraints: []string{"node.labels.ide==true"},
		Workloads:   []idepool.Workload{{Name: "ide", Command: []string{"code-server"}}},
	}
	spec := idepool.ContainerSpec{ID: "abcd1234", Profile: p,
		Labels: map[string]string{"idepool.token-hash": "ff", idepool.LabelManaged: "evil", "empty": ""},
		Env:    map[string]string{idepool.EnvAgentToken: "secret-token", idepool.EnvAgentURL: "ws://idepool:3001/agent/v1/connect"}}

	tests := []struct {
		name  string
		o     Options
		check func(t *testing.T, s swarm.ServiceSpec)
	}{
		{"builtin", Options{Deployment: "prod", Network: "ide-net", Router: RouterBuiltin, StopGracePeriod: 7 * time.Second, LogMaxSize: "10m", LogMaxFiles: 5},
			func(t *testing.T, s swarm.ServiceSpec) {
				if s.Name != "idepool-abcd1234" {
					t.Errorf("name %s", s.Name)
				}
				want := map[string]string{idepool.LabelManaged: "prod", idepool.LabelID: "abcd1234", idepool.LabelProfile: "py",
					idepool.LabelCreated: "2026-11-27T10:00:00.000000005Z", "idepool.token-hash": "ff"}
				if !equalMaps(s.Labels, want) {
					t.Errorf("labels %v, want %v", s.Labels, want)
				}
				cs := s.TaskTemplate.ContainerSpec
				if !equalMaps(cs.Labels, map[string]string{idepool.LabelManaged: "prod", idepool.LabelID: "abcd1234"}) {
					t.Errorf("container labels %v", cs.Labels)
				}
				if *cs.StopGracePeriod != 7*time.Second || cs.Image != "ide:1" || cs.Hostname != "idepool-abcd1234" {
					t.Errorf("container spec %+v", cs)
				}
				env := envMap(cs.Env)
				if env["IDEPOOL_PORT_CODE"] != "8080" || env["IDEPOOL_PORT_MY_APP"] != "3000" || env["LANG"] != "C.UTF-8" ||
					env[idepool.EnvAgentToken] != "secret-token" || env[idepool.EnvAgentID] != "abcd1234" ||
					env[idepool.EnvWorkspaceDir] != "/workspace" || env[idepool.EnvStateDir] != "/var/lib/idepool-agent" {
					t.Errorf("env %v", env)
				}
				var routes []idepool.Route
				if err := json.Unmarshal([]byte(env[idepool.EnvRoutes]), &routes); err != nil || len(routes) != 2 || !routes[1].KeepPrefix {
					t.Errorf("routes env %q: %v", env[idepool.EnvRoutes], err)
				}
				var wl []idepool.Workload
				if err := json.Unmarshal([]byte(env[idepool.EnvWorkloads]), &wl); err != nil || len(wl) != 1 {
					t.Errorf("workloads env %q: %v", env[idepool.EnvWorkloads], err)
				}
				if !slices.IsSorted(cs.Env) {
					t.Errorf("env not sorted: %v", cs.Env)
				}
				r := s.TaskTemplate.Resources
				if r.Limits.NanoCPUs != 1_500_000_000 || r.Limits.MemoryBytes != 2<<30 || r.Reservations.NanoCPUs != 1_500_000_000 || r.Reservations.MemoryBytes != 1<<30 {
					t.Errorf("resources %+v %+v", r.Limits, r.Reservations)
				}
				if s.TaskTemplate.RestartPolicy.Condition != swarm.RestartPolicyConditionNone {
					t.Errorf("restart %+v", s.TaskTemplate.RestartPolicy)
				}
				if lg := s.TaskTemplate.LogDriver; lg.Name != "json-file" || lg.Options["max-size"] != "10m" || lg.Options["max-file"] != "5" {
					t.Errorf("log %+v", lg)
				}
				if n := s.TaskTemplate.Networks; len(n) != 1 || n[0].Target != "ide-net" || !slices.Equal(n[0].Aliases, []string{"idepool-abcd1234"}) {
					t.Errorf("networks %+v", n)
				}
				if !slices.Equal(s.TaskTemplate.Placement.Constraints, p.Constraints) {
					t.Errorf("placement %+v", s.TaskTemplate.Placement)
				}
				if *s.Mode.Replicated.Replicas != 1 || s.EndpointSpec.Mode != swarm.ResolutionModeDNSRR || len(s.EndpointSpec.Ports) != 0 {
					t.Errorf("mode %+v endpoint %+v", s.Mode, s.EndpointSpec)
				}
			}},
		{"traefik and restarts", Options{Deployment: "d", Network: "n", Router: RouterTraefik, RestartMaxAttempts: 2, RestartDelay: time.Second,
			Traefik: traefikOpts()},
			func(t *testing.T, s swarm.ServiceSpec) {
				if s.Labels["traefik.enable"] != "true" || s.Labels["traefik.http.routers.idepool-abcd1234-code.rule"] == "" {
					t.Errorf("traefik labels missing: %v", s.Labels)
				}
				if s.Labels[idepool.LabelManaged] != "d" {
					t.Errorf("managed %q", s.Labels[idepool.LabelManaged])
				}
				rp := s.TaskTemplate.RestartPolicy
				if rp.Condition != swarm.RestartPolicyConditionOnFailure || *rp.MaxAttempts != 2 || *rp.Delay != time.Second {
					t.Errorf("restart %+v", rp)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.o.serviceSpec(spec, created)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range s.TaskTemplate.ContainerSpec.Env {
				if strings.HasPrefix(e, "AWS_") {
					t.Errorf("env carries %s", e)
				}
			}
			tc.check(t, s)
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func traefikOpts() (o traefik.Options) {
	o.Network = "n"
	o.ForwardAuthURL = "http://idepool:3001/_auth/forward"
	return o
}

// nilDocker is no engine at all: the checks below fail before any call.
type nilDocker struct{ Docker }

func TestCreateRefusesSecrets(t *testing.T) {
	rt, err := New(Options{Docker: nilDocker{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range []map[string]string{{"AWS_SECRET_ACCESS_KEY": "x"}, {"aws_access_key_id": "x"}} {
		_, err := rt.Create(t.Context(), idepool.ContainerSpec{ID: "abcd1234", Profile: idepool.Profile{Name: "p", Image: "i"}, Env: env})
		if idepool.ErrorCode(err) != idepool.EInvalid {
			t.Errorf("Create with %v: %v, want %s", env, err, idepool.EInvalid)
		}
	}
}

func TestPortEnv(t *testing.T) {
	for in, want := range map[string]string{"code": "IDEPOOL_PORT_CODE", "my-app": "IDEPOOL_PORT_MY_APP"} {
		if got := PortEnv(in); got != want {
			t.Errorf("PortEnv(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"traefik without ForwardAuth": {Docker: nilDocker{}, Router: RouterTraefik},
		"unknown router":              {Docker: nilDocker{}, Router: "nginx"},
		"unknown endpoint mode":       {Docker: nilDocker{}, Endpoints: "carrier-pigeon"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	rt, err := New(Options{Docker: nilDocker{}})
	if err != nil {
		t.Fatal(err)
	}
	if rt.Deployment() != "idepool" || rt.Name() != "swarm" || rt.o.Router != RouterBuiltin || rt.o.Endpoints != EndpointServiceName {
		t.Errorf("defaults: %+v", rt.o)
	}
}

func TestEndpoints(t *testing.T) {
	spec, err := (&Options{Deployment: "d", Network: "net"}).serviceSpec(idepool.ContainerSpec{ID: "abcd1234",
		Profile: idepool.Profile{Name: "p", Image: "i", Routes: idepool.DefaultRoutes()}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	byName, _ := New(Options{Docker: nilDocker{}, Network: "net"})
	if got := byName.endpoints(spec, nil); got["code"] != "idepool-abcd1234:8080" || got["vnc"] != "idepool-abcd1234:6080" || len(got) != 3 {
		t.Errorf("service-name endpoints: %v", got)
	}
	byIP, _ := New(Options{Docker: nilDocker{}, Network: "net", Endpoints: EndpointTaskIP})
	if got := byIP.endpoints(spec, nil); len(got) != 0 {
		t.Errorf("task-ip endpoints without a running task: %v", got)
	}
	task := swarm.Task{Status: swarm.TaskStatus{State: swarm.TaskStateRunning}, NetworksAttachments: []swarm.NetworkAttachment{
		{Network: swarm.Network{ID: "ing", Spec: swarm.NetworkSpec{Annotations: swarm.Annotations{Name: "ingress"}, Ingress: true}}, Addresses: []netip.Prefix{netip.MustParsePrefix("10.255.0.5/16")}},
		{Network: swarm.Network{ID: "n1", Spec: swarm.NetworkSpec{Annotations: swarm.Annotations{Name: "net"}}}, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.1.7/24")}},
	}}
	if got := byIP.endpoints(spec, []swarm.Task{task}); got["code"] != "10.0.1.7:8080" {
		t.Errorf("task-ip endpoints: %v", got)
	}
}

// TestServiceSpecAvoidNodes: nodes the pool avoids (they lack the image)
// become constraints beside the profile's own; none, none added.
func TestServiceSpecAvoidNodes(t *testing.T) {
	p := idepool.Profile{Name: "py", Image: "ide:1", CPULimit: 1, MemoryLimit: 1 << 30,
		Routes: idepool.DefaultRoutes(), Constraints: []string{"node.labels.ide==true"}}
	o := Options{Deployment: "d"}
	for _, c := range []struct {
		name    string
		profile []string
		avoid   []string
		want    []string // nil: no placement
	}{
		{"neither", nil, nil, nil},
		{"profile only", p.Constraints, nil, []string{"node.labels.ide==true"}},
		{"avoid only", nil, []string{"n2", "n3"}, []string{"node.hostname!=n2", "node.hostname!=n3"}},
		{"both", p.Constraints, []string{"n2"}, []string{"node.labels.ide==true", "node.hostname!=n2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pp := p
			pp.Constraints = c.profile
			s, err := o.serviceSpec(idepool.ContainerSpec{ID: "abcd1234", Profile: pp, AvoidNodes: c.avoid}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if s.TaskTemplate.Placement != nil {
				got = s.TaskTemplate.Placement.Constraints
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("constraints %q, want %q", got, c.want)
			}
			if len(c.profile) > 0 && &pp.Constraints[0] == &got[0] {
				t.Error("the profile's slice is shared with the spec")
			}
		})
	}
}
