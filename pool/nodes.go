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

// MarkSilentNodes judges lost, before the engine does, each node on which
// every agent that ever connected has been gone for at least silence while
// an agent on another node is connected (so the fault is not idepool's own
// network): it sets NodeDown and NodeSilent on that node's views. The
// engine needs ~3 missed heartbeats (Swarm's default: 11–13 s); agents'
// connections drop at once. A false judgement costs a replacement, not
// work: the old copy's later writes yield to the replacement's (wsync's
// owner-epoch fence). silence 0: off.
func MarkSilentNodes(views []ContainerView, now time.Time, silence time.Duration) {
	if silence <= 0 {
		return
	}
	type tally struct{ known, silent, connected int }
	byNode := map[string]*tally{}
	for _, v := range views {
		if v.Node == "" || v.Stopping || !v.State.Live() || v.NodeDown || v.NodeDrained {
			continue // a drained node's agents leave on purpose (flushed)
		}
		t := byNode[v.Node]
		if t == nil {
			t = &tally{}
			byNode[v.Node] = t
		}
		switch {
		case v.AgentConnected:
			t.known++
			t.connected++
		case !v.GoneAt.IsZero():
			t.known++
			if now.Sub(v.GoneAt) >= silence {
				t.silent++
			}
		}
	}
	silentNodes := map[string]bool{}
	for node, t := range byNode {
		if t.known == 0 || t.silent < t.known {
			continue
		}
		for other, o := range byNode {
			if other != node && o.connected > 0 {
				silentNodes[node] = true
				break
			}
		}
	}
	for i := range views {
		if silentNodes[views[i].Node] && !views[i].NodeDown {
			views[i].NodeDown, views[i].NodeSilent = true, true
		}
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
