package idepool

import (
	"context"
	"net/netip"
)

// Capabilities says what a runtime does beyond the Runtime contract: the
// server wires its parts from it, instead of asking for concrete types or
// runtime names. The zero value is a runtime on one machine whose
// containers have a network of their own and reserve nothing.
type Capabilities struct {
	// HostNetwork: containers share this machine's network, loopback
	// included, so agents reach an orchestrator (and an embedded store)
	// listening on 127.0.0.1.
	HostNetwork bool
	// Reservations: the runtime holds each container's profile
	// reservations (its scheduler places by them), so admission counts
	// them as they are; without, they are only figures and admission
	// counts an estimate.
	Reservations bool
	// Nodes lists the machines containers may run on, with what is
	// reserved on each; nil for one machine (admission samples the host).
	Nodes func(ctx context.Context) ([]NodeResources, error)
	// NodeStates lists the machines with what the engine says of each
	// (one cheap call, so the pool asks every reconcile): how the pool
	// tells a lost node; nil for one machine.
	NodeStates func(ctx context.Context) ([]NodeState, error)
	// NetworkSubnets returns the containers' network, which the API
	// fences off from everything but the agents' endpoint; nil when
	// containers have no network of their own.
	NetworkSubnets func(ctx context.Context) ([]netip.Prefix, error)
	// PeerNames returns the infrastructure services (a router) on the
	// containers' network that may reach idepool as a peer; nil: none to
	// discover.
	PeerNames func(ctx context.Context) ([]string, error)
	// Salvage pushes a dead container's unsynced files before its
	// removal; nil when the runtime cannot reach them.
	Salvage SalvageFunc
	// LocalLabels: SetLabels is a durable write on this machine (an
	// append to a file), cheaper than a round trip to an agent, so a warm
	// claim records itself in the labels before it answers and delivers
	// the assignment after the burst. Without it (a Swarm service update,
	// a Kubernetes patch: round trips through a replicated store) a claim
	// answers on its agent's ack, the agent having persisted the claim,
	// and the labels follow.
	LocalLabels bool
}

// NodeResources is one node's capacity and what the tasks placed on it
// reserve, as the runtime's scheduler counts them (every task on the node,
// not only idepool's).
type NodeResources struct {
	Name                string
	NanoCPUs            int64
	MemoryBytes         int64
	ReservedNanoCPUs    int64
	ReservedMemoryBytes int64
	// Ready: the node is up and active (not drained or paused).
	Ready bool
}

// NodeState is what the runtime's engine says of one node now.
type NodeState struct {
	// Name is the node's name as Instance.Node gives it.
	Name string
	// Down: the engine lost the node (Swarm: down or disconnected; not
	// unknown, the state of every node for a moment after a leader
	// change). Its tasks may still be reported running: they are not.
	Down bool
	// Drained: the node takes no new containers and its tasks are moved
	// (Swarm: availability drain).
	Drained bool
	// Message is the engine's word on its state, if any.
	Message string
}
