package pool

import (
	"fmt"
	"time"

	"github.com/idepool/idepool"
)

// Judge is Plan's sibling for single containers: where Plan sizes the
// pools, Judge decides each live container's fate by the lifecycle rules
// (a prepared container nobody took, a doomed duplicate, a warm container
// whose agent is gone, a recovered container whose agent never came back, a
// create that takes too long). It is pure: same views, same verdicts. The
// reconciler builds the views under the lock, judges and applies the
// verdicts.

// ContainerView is one live container as Judge sees it.
type ContainerView struct {
	ID      string
	Profile string
	State   idepool.State
	// Claimed: bound to a workspace.
	Claimed bool
	// Stopping: a stop runs; nothing more is decided about it.
	Stopping bool
	// Recovered: adopted by Recover rather than created by this run.
	Recovered bool
	// Created: runtime.Create returned (or the container was recovered).
	Created   bool
	StartedAt time.Time

	AgentConnected bool
	// AgentReady: the agent's last report said its workloads answer.
	AgentReady bool
	// AssignPending: claimed, and the agent has not acknowledged the
	// assignment yet.
	AssignPending bool
	// HelloSeen: the agent said hello at least once since this run began.
	HelloSeen bool
	// GoneAt is when the agent's connection closed (zero while connected
	// or before it first connected).
	GoneAt time.Time
	// AdoptDeadline bounds the wait for a recovered container's agent.
	AdoptDeadline time.Time
	// Doomed is a stop reason decided before the stop could run.
	Doomed string
	// PreparedUntil is set while the container is pre-assigned (Prepare)
	// and no start took it.
	PreparedUntil time.Time
	// NoFlush: the agent must never push (its initial pull failed).
	NoFlush bool
	// Node runs it (Instance.Node); NodeDown: the engine says that node
	// is lost (NodeState.Down).
	Node     string
	NodeDown bool
	// NodeSilent: idepool, not the engine, judged the node lost: every
	// agent on it has been gone for NodeSilence while agents elsewhere
	// answer (MarkSilentNodes). NodeDown is set with it.
	NodeSilent bool
	// NodeDrained: that node is being emptied (NodeState.Drained).
	NodeDrained bool
}

// JudgeOptions are the timeouts the rules use.
type JudgeOptions struct {
	// AdoptGrace: how long a warm container's agent may be gone, and how
	// long a recovered container's agent has to say hello.
	AdoptGrace time.Duration
	// CreateTimeout: how long a create may take to become ready.
	CreateTimeout time.Duration
}

// VerdictKind is what happens to a container.
type VerdictKind int

// Verdict kinds.
const (
	// VerdictStop: stop it (flush first when Flush) with Reason.
	VerdictStop VerdictKind = iota + 1
	// VerdictFail: mark it failed with Message; the plan removes it.
	VerdictFail
	// VerdictReplace: stop it with Reason (no flush: its agent is gone)
	// and claim a new container for its workspace, as Manager.Replace.
	VerdictReplace
)

// Verdict is Judge's decision about one container.
type Verdict struct {
	ID   string
	Kind VerdictKind
	// Reason is the stop reason (VerdictStop, VerdictReplace).
	Reason string
	// Flush asks the agent to push before the stop (VerdictStop,
	// VerdictReplace).
	Flush bool
	// Message says why it failed (VerdictFail) or is replaced.
	Message string
	// Backoff, when set, counts a failed create against the profile's
	// backoff with this text (an unclaimed create that timed out).
	Backoff string
}

// Judge returns the verdicts on views, in their order; containers with
// nothing to decide get none. At most one rule applies to each container,
// the first that matches in the order below.
func Judge(views []ContainerView, now time.Time, o JudgeOptions) []Verdict {
	var out []Verdict
	for i := range views {
		if v, ok := judgeOne(&views[i], now, o); ok {
			out = append(out, v)
		}
	}
	return out
}

func judgeOne(v *ContainerView, now time.Time, o JudgeOptions) (Verdict, bool) {
	if v.Stopping {
		return Verdict{}, false
	}
	starting := v.State == idepool.StateCreating || v.State == idepool.StateStarting
	switch {
	case !v.PreparedUntil.IsZero() && !now.Before(v.PreparedUntil) && v.State.Live():
		// Nobody came for it. It pulled someone's files: stop it, never
		// pool it again; the pool refills.
		return Verdict{ID: v.ID, Kind: VerdictStop, Reason: ReasonPrepareExpired,
			Flush: v.Claimed && v.AgentConnected && !v.NoFlush}, true
	case v.Doomed != "":
		// A duplicate waits for its agent (to flush) until the adoption
		// deadline; then it goes without.
		if v.AgentConnected || now.After(v.AdoptDeadline) {
			return Verdict{ID: v.ID, Kind: VerdictStop, Reason: v.Doomed, Flush: v.Claimed && v.AgentConnected}, true
		}
	case v.NodeDown && v.Created && !v.AgentConnected && v.State.Live() && v.State != idepool.StateStopping:
		// Its node is lost: its agent cannot come back before the node
		// does, and Swarm still says its task runs. An agent that still
		// talks to us (the node lost only its managers) keeps it.
		msg := fmt.Sprintf("node %s lost (its engine reports it down and the agent is gone)", v.Node)
		if v.NodeSilent {
			msg = fmt.Sprintf("node %s lost (every agent on it is gone while agents elsewhere answer; its engine has not said so yet)", v.Node)
		}
		if v.Claimed {
			return Verdict{ID: v.ID, Kind: VerdictReplace, Reason: ReasonNodeLost, Message: msg}, true
		}
		return Verdict{ID: v.ID, Kind: VerdictFail, Message: msg}, true
	case v.NodeDrained && v.Created && v.State.Live() && v.State != idepool.StateStopping:
		// The engine stops its task (the agent flushes on SIGTERM within
		// the stop grace period); a claimed one moves to another node for
		// its workspace, after the old one's flush and removal.
		msg := fmt.Sprintf("node %s drained", v.Node)
		if v.Claimed {
			return Verdict{ID: v.ID, Kind: VerdictReplace, Reason: ReasonNodeDrained, Message: msg,
				Flush: v.AgentConnected && !v.NoFlush}, true
		}
		return Verdict{ID: v.ID, Kind: VerdictFail, Message: msg}, true
	case v.State == idepool.StateWarm && !v.AgentConnected && !v.GoneAt.IsZero() && now.Sub(v.GoneAt) >= o.AdoptGrace:
		// A warm container nobody can claim (its agent is gone) would
		// hold a place in the pool forever.
		return Verdict{ID: v.ID, Kind: VerdictFail, Message: fmt.Sprintf("agent gone for %s", o.AdoptGrace)}, true
	case v.Recovered && !v.HelloSeen && now.After(v.AdoptDeadline):
		return Verdict{ID: v.ID, Kind: VerdictFail,
			Message: fmt.Sprintf("agent did not say hello within %s of a restart", o.AdoptGrace)}, true
	case v.Created && starting && now.Sub(v.StartedAt) >= o.CreateTimeout:
		out := Verdict{ID: v.ID, Kind: VerdictFail, Message: fmt.Sprintf("not ready within %s: %s", o.CreateTimeout, v.waitingFor(now))}
		if !v.Claimed {
			out.Backoff = "not ready in time"
		}
		return out, true
	}
	return Verdict{}, false
}

// waitingFor says what a create that timed out was still waiting for: an
// operator reading "not ready within" must know whether the task never ran,
// the IDE never answered or the agent never took its assignment.
func (v *ContainerView) waitingFor(now time.Time) string {
	switch {
	case !v.AgentConnected && v.GoneAt.IsZero():
		return "its agent never connected"
	case !v.AgentConnected:
		return fmt.Sprintf("its agent's connection closed %s ago", now.Sub(v.GoneAt).Round(time.Second))
	case !v.AgentReady:
		return "its agent is connected, its workloads do not answer yet"
	case v.AssignPending:
		return "its agent has not acknowledged the assignment"
	default:
		return "its agent is ready, the pool has not seen it ready"
	}
}
