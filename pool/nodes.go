package pool

import (
	"slices"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// What the pool decides about nodes, pure like Judge and Plan: which nodes
// are lost (the engine's word, applied to each container's view), when to
// look again while agents are gone on nodes the engine still calls up, and
// which nodes a profile's creates avoid because they lack its image.

// ReasonNodeLost is the stop reason of a container whose node was lost.
const ReasonNodeLost = "node-lost"

// ReasonNodeDrained is the stop reason of a container moved off a drained
// node.
const ReasonNodeDrained = "node-drained"

// MarkNodes sets NodeDown and NodeDrained on the views of containers on a
// node that nodes says is down or drained. A node the engine does not list
// is not judged (a runtime of one machine lists none).
func MarkNodes(views []ContainerView, nodes []idepool.NodeState) {
	byName := make(map[string]idepool.NodeState, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for i := range views {
		n, ok := byName[views[i].Node]
		ok = ok && views[i].Node != ""
		views[i].NodeDown = ok && n.Down
		views[i].NodeDrained = ok && n.Drained && !n.Down
	}
}

// NodeRecheck is when to observe the nodes again: an agent's connection
// dropped less than NodeWatch ago on a node the engine still calls up,
// which is how a lost node looks for its first seconds (the engine waits
// for missed heartbeats, the agents' connections drop at once). Zero:
// nothing to watch. After NodeWatch (longer than the engine takes to call
// a dead node down, even after a leader change) the ticker is enough.
func NodeRecheck(views []ContainerView, now time.Time, every time.Duration) time.Time {
	for _, v := range views {
		if v.Stopping || !v.State.Live() || v.AgentConnected || v.GoneAt.IsZero() || v.NodeDown || v.Node == "" ||
			now.Sub(v.GoneAt) >= NodeWatch {
			continue
		}
		return now.Add(every)
	}
	return time.Time{}
}

// NodeWatch bounds NodeRecheck's watch after an agent's connection
// dropped (Swarm: ~13 s with its default heartbeat, ~50 s after a leader
// loss).
const NodeWatch = 2 * time.Minute

// imageMissing reports whether a runtime's failure message says the node
// lacks the image (Swarm: "task: non-zero exit (…)"/"No such image: …").
func imageMissing(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "no such image")
}

// AvoidNodes returns, sorted, the nodes whose image problem still holds
// at now (before its RetryAt): a profile's creates keep off them.
func AvoidNodes(problems map[string]idepool.NodeImageProblem, now time.Time) []string {
	var out []string
	for node, p := range problems {
		if now.Before(p.RetryAt) {
			out = append(out, node)
		}
	}
	slices.Sort(out)
	return out
}

// ImageProblems returns a profile's current image problems, by node, for
// its status; expired ones are left out.
func ImageProblems(problems map[string]idepool.NodeImageProblem, now time.Time) []idepool.NodeImageProblem {
	var out []idepool.NodeImageProblem
	for _, node := range AvoidNodes(problems, now) {
		out = append(out, problems[node])
	}
	return out
}
