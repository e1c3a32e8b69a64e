package runtimetest

import (
	"testing"

	"github.com/idepool/idepool"
)

// Capabilities: what a runtime says it can do is stable, consistent, and
// each look-up it offers answers.
func (s *suite) testCapabilities(t *testing.T, h *harness) {
	rt := h.runtime()
	c := rt.Capabilities()
	if shape(c) != shape(rt.Capabilities()) {
		t.Errorf("Capabilities changed between two calls: %+v, then %+v", shape(c), shape(rt.Capabilities()))
	}
	if c.HostNetwork && c.NetworkSubnets != nil {
		t.Error("HostNetwork with NetworkSubnets: containers on the host's network have no network of their own to fence")
	}
	if c.Reservations && c.Nodes == nil {
		t.Error("Reservations without Nodes: admission cannot see where reservations are held")
	}
	if c.Nodes != nil {
		nodes, err := c.Nodes(h.ctx())
		if err != nil {
			t.Errorf("Nodes: %v", err)
		}
		ready := 0
		for _, n := range nodes {
			if n.Name == "" || n.MemoryBytes <= 0 || n.NanoCPUs <= 0 {
				t.Errorf("Nodes: node without a name or capacity: %+v", n)
			}
			if n.Ready {
				ready++
			}
		}
		if err == nil && ready == 0 {
			t.Errorf("Nodes: no ready node among %d; containers could not run", len(nodes))
		}
	}
	if c.NodeStates != nil {
		// The pool judges a container's node by these names: a node that
		// runs containers must be listed, named as Instance.Node, and up.
		nodes, err := c.NodeStates(h.ctx())
		if err != nil {
			t.Errorf("NodeStates: %v", err)
		}
		up := 0
		for _, n := range nodes {
			if n.Name == "" {
				t.Errorf("NodeStates: a node without a name: %+v", n)
			}
			if !n.Down {
				up++
			}
		}
		if err == nil && up == 0 {
			t.Errorf("NodeStates: no node up among %d", len(nodes))
		}
	}
	if c.NetworkSubnets != nil {
		nets, err := c.NetworkSubnets(h.ctx())
		if err != nil {
			t.Errorf("NetworkSubnets: %v", err)
		}
		if err == nil && len(nets) == 0 {
			t.Error("NetworkSubnets offered but returns no subnet")
		}
		for _, n := range nets {
			if !n.IsValid() {
				t.Errorf("NetworkSubnets: invalid prefix %v", n)
			}
		}
	}
	if c.PeerNames != nil {
		if _, err := c.PeerNames(h.ctx()); err != nil {
			t.Errorf("PeerNames: %v", err)
		}
	}
}

// capsShape is Capabilities without its functions, which do not compare:
// only whether each is offered.
type capsShape struct {
	HostNetwork, Reservations, Nodes, NetworkSubnets, PeerNames, Salvage bool
}

func shape(c idepool.Capabilities) capsShape {
	return capsShape{c.HostNetwork, c.Reservations, c.Nodes != nil, c.NetworkSubnets != nil, c.PeerNames != nil, c.Salvage != nil}
}
