package pool

import (
	"time"

	"github.com/idepool/idepool"
)

// entry is one live container. All fields are guarded by state.mu.
type entry struct {
	c         idepool.Container
	tokenHash string
	gate      gatePhase // the external router's (RouteGate)
	// resolving: a lookup of its endpoints runs (resolveLocked).
	resolving bool
	// changed is closed and replaced at every change WaitReady cares about.
	changed chan struct{}
	exit    exit // its way out

	createDone bool   // runtime.Create returned (or recovered)
	createdSeq uint64 // state.seq when Create returned
	startedAt  time.Time

	agent     agentLink
	recovered bool
	// unreported: recovered unclaimed, and its agent has not reported yet
	// (state.adopting counts these).
	unreported bool

	// assignment is the claim's assignment (with credentials, memory
	// only); assign says whether the agent has it.
	assignment *idepool.Assignment
	assign     assignPhase

	processes []idepool.ProcessStatus

	// preparedUntil is set while the container is bound ahead of time
	// (Prepare) and no start took it yet; it is stopped at that time.
	preparedUntil time.Time
	// noFlush: never ask the agent to push (its initial pull failed, so
	// what it holds is not the user's work).
	noFlush bool
	// lastSync is the agent's last successful sync (its reports): what a
	// lost container's "may be lost" event names.
	lastSync time.Time
}

type startCall struct {
	done chan struct{}
	err  error
	// ticket is set while the start waits in the admission queue.
	ticket *ticket
}

// exit is a container's way out: a stop decided ahead of time (doomed, a
// stop reason: a duplicate waits for its agent to flush first) and the stop
// that runs (done, closed when it ends). A failed stop clears done but
// leaves the decision, so the reconciler stops it again.
type exit struct {
	doomed string
	done   chan struct{}
}

// stopping: a stop runs.
func (x exit) stopping() bool { return x.done != nil }

// leaving: a stop runs or is decided; it is never pooled or claimed again.
func (x exit) leaving() bool { return x.done != nil || x.doomed != "" }

// gatePhase is where a ready unclaimed container is with the external
// router (Options.RouteGate): it joins the pool once routed.
type gatePhase uint8

const (
	gateNone    gatePhase = iota // not probed (or the probe gave up: then it failed)
	gateProbing                  // a probe runs in the background
	gateRouted                   // the router routes it
)

// assignPhase is where a claimed container's assignment is: whether the
// agent still has to acknowledge it (pending) and whether a delivery runs
// (delivering). The agent's "synced" report acknowledges it too, even while
// a delivery runs; a hello that shows the agent lost it makes it pending
// again.
type assignPhase uint8

const (
	assignDone            assignPhase = iota // acknowledged (or none: unclaimed)
	assignPending                            // to deliver at the agent's next ready
	assignDelivering                         // a delivery runs
	assignDeliveringAcked                    // a delivery runs; the agent already synced it
)

func (p assignPhase) pending() bool    { return p == assignPending || p == assignDelivering }
func (p assignPhase) delivering() bool { return p == assignDelivering || p == assignDeliveringAcked }

func (p *assignPhase) set(pending, delivering bool) {
	switch {
	case pending && delivering:
		*p = assignDelivering
	case pending:
		*p = assignPending
	case delivering:
		*p = assignDeliveringAcked
	default:
		*p = assignDone
	}
}

// startDelivery: a delivery of a pending assignment begins.
func (p *assignPhase) startDelivery() { p.set(p.pending(), true) }

// delivered: the delivery ended; acked says the agent acknowledged it.
func (p *assignPhase) delivered(acked bool) { p.set(p.pending() && !acked, false) }

// synced: the agent reported the workspace synced, which acknowledges it.
func (p *assignPhase) synced() { p.set(false, p.delivering()) }

// resend: the agent lost it (it restarted): deliver it again.
func (p *assignPhase) resend() { p.set(true, p.delivering()) }

// agentPhase is where a container's agent is, as its reports tell.
type agentPhase uint8

const (
	// agentAwaiting: no hello yet. A recovered container's agent has until
	// the link's deadline.
	agentAwaiting agentPhase = iota
	// agentUp: connected; it said hello (or ready, or a heartbeat).
	agentUp
	// agentGone: its connection closed after a hello.
	agentGone
	// agentGoneEarly: its connection closed before any hello; the deadline
	// still holds.
	agentGoneEarly
)

// agentLink is a container's agent connection: one phase, with the time it
// went and the deadline of a recovered container's hello.
type agentLink struct {
	phase    agentPhase
	at       time.Time // when it went (agentGone, agentGoneEarly)
	deadline time.Time // adoption deadline, until the first hello
	// ready: its last report said every route's workload answers.
	ready bool
}

// await starts the wait for a recovered container's agent.
func (l *agentLink) await(deadline time.Time) {
	*l = agentLink{phase: agentAwaiting, deadline: deadline}
}

// up records a report from the agent: it is there.
func (l *agentLink) up(ready bool) { *l = agentLink{phase: agentUp, ready: ready} }

// lost records its connection closing.
func (l *agentLink) lost(now time.Time) {
	if l.phase == agentUp || l.phase == agentGone {
		l.phase = agentGone
	} else {
		l.phase = agentGoneEarly
	}
	l.at = now
}

func (l agentLink) connected() bool { return l.phase == agentUp }
func (l agentLink) helloSeen() bool { return l.phase == agentUp || l.phase == agentGone }

// goneAt is when the connection closed; zero while connected or before it
// ever closed.
func (l agentLink) goneAt() time.Time {
	if l.phase == agentGone || l.phase == agentGoneEarly {
		return l.at
	}
	return time.Time{}
}

// inFlight: an unclaimed container being created or started, neither
// failed nor leaving; it will be warm soon. Caller holds state.mu.
func (e *entry) inFlight() bool {
	return e.c.Workspace == nil && !e.exit.leaving() &&
		(e.c.State == idepool.StateCreating || e.c.State == idepool.StateStarting)
}

// view is e as Judge sees it. Caller holds state.mu.
func (e *entry) view() ContainerView {
	return ContainerView{ID: e.c.ID, Profile: e.c.Profile, State: e.c.State, Claimed: e.c.Workspace != nil,
		Stopping: e.exit.stopping(), Recovered: e.recovered, Created: e.createDone, StartedAt: e.startedAt,
		AgentConnected: e.agent.connected(), AgentReady: e.agent.connected() && e.agent.ready,
		AssignPending: e.assign.pending(), HelloSeen: e.agent.helloSeen(), GoneAt: e.agent.goneAt(), AdoptDeadline: e.agent.deadline,
		Doomed: e.exit.doomed, PreparedUntil: e.preparedUntil, NoFlush: e.noFlush, Node: e.c.Node}
}
