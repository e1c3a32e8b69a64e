package swarm

import (
	"context"

	"github.com/idepool/idepool"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// NodeResources is one Swarm node's capacity and what the tasks placed on
// it reserve, as the Swarm scheduler counts them (every service's tasks, not
// only idepool's). Admission control compares a profile's reservation with
// the free part.
type NodeResources = idepool.NodeResources

// Nodes returns every node's resources: two API calls (nodes, and the
// tasks meant to run).
func (r *Runtime) Nodes(ctx context.Context) ([]NodeResources, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	nl, err := r.o.Docker.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return nil, dockerError(err, "list nodes")
	}
	tl, err := r.o.Docker.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("desired-state", "running")})
	if err != nil {
		return nil, dockerError(err, "list tasks")
	}
	out := make([]NodeResources, 0, len(nl.Items))
	index := map[string]int{}
	for _, n := range nl.Items {
		index[n.ID] = len(out)
		out = append(out, NodeResources{
			Name:        n.Description.Hostname,
			NanoCPUs:    n.Description.Resources.NanoCPUs,
			MemoryBytes: n.Description.Resources.MemoryBytes,
			Ready:       n.Status.State == swarm.NodeStateReady && n.Spec.Availability == swarm.NodeAvailabilityActive,
		})
	}
	for _, t := range tl.Items {
		i, ok := index[t.NodeID]
		if !ok || taskDone(t.Status.State) || t.Spec.Resources == nil || t.Spec.Resources.Reservations == nil {
			continue
		}
		out[i].ReservedNanoCPUs += t.Spec.Resources.Reservations.NanoCPUs
		out[i].ReservedMemoryBytes += t.Spec.Resources.Reservations.MemoryBytes
	}
	return out, nil
}

// NodeStates returns what Swarm says of every node: one API call.
func (r *Runtime) NodeStates(ctx context.Context) ([]idepool.NodeState, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	nl, err := r.o.Docker.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return nil, dockerError(err, "list nodes")
	}
	out := make([]idepool.NodeState, 0, len(nl.Items))
	r.nodesMu.Lock()
	for _, n := range nl.Items {
		r.nodes[n.ID] = n.Description.Hostname
		out = append(out, nodeState(n))
	}
	r.nodesMu.Unlock()
	return out, nil
}

// nodeState maps a Swarm node onto idepool's view of it.
func nodeState(n swarm.Node) idepool.NodeState {
	return idepool.NodeState{
		Name:    n.Description.Hostname,
		Down:    nodeDown(n.Status.State),
		Drained: n.Spec.Availability == swarm.NodeAvailabilityDrain,
		Message: n.Status.Message,
	}
}

// nodeDown: Swarm lost the node. Unknown is not: a new leader marks every
// node unknown until its next heartbeat, which is also when idepool itself
// was just rescheduled and its agents are still reconnecting (a dead node
// becomes down after that).
func nodeDown(s swarm.NodeState) bool {
	return s == swarm.NodeStateDown || s == swarm.NodeStateDisconnected
}
