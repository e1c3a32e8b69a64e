package swarm

import (
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// TestServiceSpecAllowedPeers: the allowed peers reach the agent as one
// variable the profile cannot override; without any, none is set.
func TestServiceSpecAllowedPeers(t *testing.T) {
	p := idepool.Profile{Name: "py", Image: "ide:1", Routes: idepool.DefaultRoutes(),
		Env: map[string]string{EnvAllowedPeers: "evil.example"}}
	spec := idepool.ContainerSpec{ID: "abcd1234", Profile: p}
	for _, tc := range []struct {
		peers []string
		want  string
	}{
		{[]string{"tasks.idepool", "tasks.traefik"}, "tasks.idepool,tasks.traefik"},
		{nil, "evil.example"}, // no relay configured: the runtime adds nothing
	} {
		s, err := (&Options{Deployment: "d", Network: "net", AllowedPeers: tc.peers}).serviceSpec(spec, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, kv := range s.TaskTemplate.ContainerSpec.Env {
			if len(kv) > len(EnvAllowedPeers) && kv[:len(EnvAllowedPeers)+1] == EnvAllowedPeers+"=" {
				n++
			}
		}
		if got := envMap(s.TaskTemplate.ContainerSpec.Env)[EnvAllowedPeers]; got != tc.want || n != 1 {
			t.Errorf("peers %v: %s=%q (%d times), want %q once", tc.peers, EnvAllowedPeers, got, n, tc.want)
		}
	}
}

// TestNetworkSubnetsAndPeers: the overlay's subnet is read from the
// engine; discovery finds no infrastructure service on a fresh network and
// refuses rather than leave the route ports open.
func TestNetworkSubnetsAndPeers(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, "peers-"+idepool.NewID()[:6], func(o *Options) { o.DiscoverPeers = true })
	subnets, err := rt.NetworkSubnets(t.Context())
	if err != nil || len(subnets) == 0 {
		t.Fatalf("NetworkSubnets: %v, %v", subnets, err)
	}
	for _, s := range subnets {
		if !s.IsValid() || s.Bits() == 0 || s != s.Masked() {
			t.Errorf("subnet %v", s)
		}
	}
	t.Logf("network %s: subnets %v", e.network, subnets)
	if peers, err := rt.PeerNames(t.Context()); idepool.ErrorCode(err) != idepool.EMisconfigured {
		t.Errorf("PeerNames on a network without services: %v, %v; want MISCONFIGURED", peers, err)
	}
	if _, err := rt.Create(t.Context(), idepool.ContainerSpec{ID: idepool.NewID(), Profile: testProfile()}); idepool.ErrorCode(err) != idepool.EMisconfigured {
		t.Errorf("Create with no peer to allow: %v; want MISCONFIGURED", err)
	}
}
