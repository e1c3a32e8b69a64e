package swarm

import (
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/moby/moby/api/types/swarm"
)

// TestNodeState: Swarm's node states map onto lost (down, disconnected;
// not unknown, which every node is for a moment after a leader change) and
// drained; a drained node that is down is both.
func TestNodeState(t *testing.T) {
	for _, c := range []struct {
		state   swarm.NodeState
		avail   swarm.NodeAvailability
		down    bool
		drained bool
	}{
		{swarm.NodeStateReady, swarm.NodeAvailabilityActive, false, false},
		{swarm.NodeStateReady, swarm.NodeAvailabilityPause, false, false},
		{swarm.NodeStateReady, swarm.NodeAvailabilityDrain, false, true},
		{swarm.NodeStateDown, swarm.NodeAvailabilityActive, true, false},
		{swarm.NodeStateUnknown, swarm.NodeAvailabilityActive, false, false}, // after a leader change
		{swarm.NodeStateDisconnected, swarm.NodeAvailabilityActive, true, false},
		{swarm.NodeStateDown, swarm.NodeAvailabilityDrain, true, true},
	} {
		n := swarm.Node{Description: swarm.NodeDescription{Hostname: "n1"}, Status: swarm.NodeStatus{State: c.state, Message: "m"}}
		n.Spec.Availability = c.avail
		got := nodeState(n)
		want := idepool.NodeState{Name: "n1", Down: c.down, Drained: c.drained, Message: "m"}
		if got != want {
			t.Errorf("%s/%s: %+v, want %+v", c.state, c.avail, got, want)
		}
	}
}

// TestNodeStatesAndMissingImage, on the host's real one-node Swarm: the
// node is listed up under the name containers report as their Node; a
// service whose image the node lacks fails with a message naming the
// missing image (what the pool keys on) and that node; a container told
// to avoid the only node stays pending (no suitable node) instead of
// landing there.
func TestNodeStatesAndMissingImage(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment())
	nodes, err := rt.NodeStates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) == 0 {
		t.Fatal("NodeStates: no node")
	}
	for _, n := range nodes {
		if n.Down || n.Name == "" {
			t.Errorf("node %+v: want named and up", n)
		}
	}

	p := testProfile()
	p.Image = "idepool-swarmtest:absent-" + idepool.NewID()[:6]
	missing := create(t, rt, p, nil)
	in := waitStatus(t, rt, missing.ID, idepool.StatusFailed)
	t.Logf("a service of a missing image: %s on %s", in.Message, in.Node)
	if !strings.Contains(strings.ToLower(in.Message), "no such image") {
		t.Errorf("message does not say the image is missing: %s", in.Message)
	}
	if in.Node != nodes[0].Name && len(nodes) == 1 {
		t.Errorf("failed on node %q, NodeStates names %q", in.Node, nodes[0].Name)
	}

	avoided := testProfile()
	id := idepool.NewID()
	if _, err := rt.Create(t.Context(), idepool.ContainerSpec{ID: id, Profile: avoided, AvoidNodes: []string{nodes[0].Name},
		Env: map[string]string{idepool.EnvAgentToken: "tok"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Remove(t.Context(), id) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		in, err := rt.Inspect(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if in.Status != idepool.StatusPending {
			t.Fatalf("avoiding the only node: %s on %q, want pending", in.Status, in.Node)
		}
		if strings.Contains(in.Message, "no suitable node") {
			t.Logf("avoiding the only node: %s", in.Message)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("avoiding the only node: still %q", in.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
