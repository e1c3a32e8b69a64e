package pool

import (
	"time"

	"github.com/idepool/idepool"
)

// entry is one live container. All fields are guarded by state.mu.
type entry struct {
	c         idepool.Container
	tokenHash string
	// gating: a RouteGate probe runs; routed: it passed.
	gating, routed bool
	// changed is closed and replaced at every change WaitReady cares about.
	changed chan struct{}
	// stopDone is non-nil while a stop runs, closed when it ends.
	stopDone chan struct{}

	createDone bool   // runtime.Create returned (or recovered)
	createdSeq uint64 // state.seq when Create returned
	startedAt  time.Time

	agent     agentLink
	recovered bool
	// doomed is a stop reason decided before the stop can run (a duplicate
	// waiting for its agent to flush).
	doomed string

	// assignment is the claim's assignment (with credentials, memory only);
	// pendingAssign says it has not yet been acknowledged by the agent.
	assignment    *idepool.Assignment
	pendingAssign bool
	delivering    bool

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
}

// await starts the wait for a recovered container's agent.
func (l *agentLink) await(deadline time.Time) {
	*l = agentLink{phase: agentAwaiting, deadline: deadline}
}

// up records a report from the agent: it is there.
func (l *agentLink) up() { *l = agentLink{phase: agentUp} }

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

// view is e as Judge sees it. Caller holds state.mu.
func (e *entry) view() ContainerView {
	return ContainerView{ID: e.c.ID, Profile: e.c.Profile, State: e.c.State, Claimed: e.c.Workspace != nil,
		Stopping: e.stopDone != nil, Recovered: e.recovered, Created: e.createDone, StartedAt: e.startedAt,
		AgentConnected: e.agent.connected(), HelloSeen: e.agent.helloSeen(), GoneAt: e.agent.goneAt(), AdoptDeadline: e.agent.deadline,
		Doomed: e.doomed, PreparedUntil: e.preparedUntil, NoFlush: e.noFlush}
}
