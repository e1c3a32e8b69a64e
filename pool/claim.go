package pool

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// maxWarmTries bounds how many warm containers one start tries before it
// creates one cold (each failed try stops the container it took).
const maxWarmTries = 3

// Start serves a start request exactly once: the workspace's live container
// if it has one (Kind reused, or prepared when Prepare bound it), else a
// warm container of the profile (Kind warm), else a cold create if capacity
// admits it (Kind cold). With the admission queue on, a start that would be
// refused for capacity (or the profile's maximum) waits in the profile's
// FIFO queue until a container is free for it (Kind queued), ctx ends
// (its ticket is cancelled) or the queue's timeout passes. Concurrent
// starts for one workspace return the same container.
func (m *Manager) Start(ctx context.Context, req idepool.StartRequest) (idepool.Claim, error) {
	claim, t, err := m.StartOrQueue(ctx, req)
	if err != nil || t == nil {
		return claim, err
	}
	claim, err = m.WaitTicket(ctx, t.ID)
	if err != nil && ctx.Err() != nil {
		m.CancelTicket(t.ID)
	}
	return claim, err
}

// StartOrQueue is Start without waiting in the queue: a start that has to
// wait returns its Ticket (and a zero Claim) at once; poll it with Ticket
// or wait with WaitTicket. A start for a workspace that already waits
// returns the same ticket.
func (m *Manager) StartOrQueue(ctx context.Context, req idepool.StartRequest) (idepool.Claim, *Ticket, error) {
	return m.startOrQueue(ctx, req, false)
}

// startOrQueue is StartOrQueue. For Prepare (prep) a start that would wait
// is refused instead, and a prepared container is only reported (Kind
// reused), not taken.
func (m *Manager) startOrQueue(ctx context.Context, req idepool.StartRequest, prep bool) (idepool.Claim, *Ticket, error) {
	if err := req.Workspace.Validate(); err != nil {
		return idepool.Claim{}, nil, err
	}
	p, err := m.profile(req.Profile)
	if err != nil {
		return idepool.Claim{}, nil, err
	}
	req.Profile = p.Name
	req.Workspace.Prefix = idepool.NormalizePrefix(req.Workspace.Prefix)
	key := req.Workspace.Key()

	// Register this start for the workspace before any slow work; others
	// wait for it and then find its container. Bounded: each round either
	// returns or waits for a start or stop that really ended.
	var call *startCall
	var taken *warmTaken
	var takenEvs []idepool.Event
	for round := 0; call == nil; round++ {
		if round > 100 {
			return idepool.Claim{}, nil, idepool.Errorf(idepool.EConflict, "workspace %s is busy, retry", key)
		}
		m.mu.Lock()
		if c := m.pending[key]; c != nil {
			if c.ticket != nil {
				t := m.ticketInfoLocked(c.ticket)
				m.mu.Unlock()
				return idepool.Claim{}, &t, nil
			}
			m.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return idepool.Claim{}, nil, ctxError(ctx)
			}
			// The other start's outcome is ours, unless it only gave up
			// (its client left): then try ourselves.
			if code := idepool.ErrorCode(c.err); c.err != nil && code != idepool.EClientClosed && code != idepool.ETimeout {
				return idepool.Claim{}, nil, c.err
			}
			continue
		}
		if id, ok := m.byWorkspace[key]; ok {
			e := m.containers[id]
			if e != nil && e.stopDone == nil && e.doomed == "" && e.c.State.Live() {
				kind := idepool.ClaimReused
				if !e.preparedUntil.IsZero() && !prep {
					kind = m.takePreparedLocked(e, req)
				}
				c := copyContainer(e.c)
				m.mu.Unlock()
				m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventClaim, ContainerID: c.ID,
					Profile: c.Profile, State: c.State, Data: map[string]any{"kind": string(kind)}})
				return idepool.Claim{Container: c, Kind: kind}, nil, nil
			}
			// Stopping: its work is being flushed. Wait until it is gone so
			// the new container pulls what it pushed.
			var wait <-chan struct{}
			if e != nil && e.stopDone != nil {
				wait = e.stopDone
			}
			if wait == nil {
				// Cannot happen (fail and finish drop the mapping); never
				// let a stale entry block the workspace.
				m.log.Error("stale workspace mapping dropped", "container", id)
				delete(m.byWorkspace, key)
				m.mu.Unlock()
				continue
			}
			m.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return idepool.Claim{}, nil, ctxError(ctx)
			}
			continue
		}
		call = &startCall{done: make(chan struct{})}
		m.pending[key] = call
		// The common case, a warm container for a new workspace, is bound
		// under this same lock: one acquisition instead of three keeps
		// m.mu from becoming a convoy when a class starts at once.
		taken = m.takeForStartLocked(p, req, &takenEvs)
		m.mu.Unlock()
	}

	claim, err := m.claim(ctx, req, p, !prep, taken, takenEvs)
	if errors.Is(err, errQueue) {
		var evs []idepool.Event
		m.mu.Lock()
		t, qerr := m.enqueueLocked(call, req, key, &evs)
		var info Ticket
		if qerr == nil {
			info = m.ticketInfoLocked(t)
		}
		m.mu.Unlock()
		m.publish(evs)
		m.kick()
		if qerr == nil {
			return idepool.Claim{}, &info, nil
		}
		err = qerr
	}
	m.mu.Lock()
	delete(m.pending, key)
	call.err = err
	m.mu.Unlock()
	close(call.done)
	if err != nil || claim.Kind != idepool.ClaimWarm {
		m.kick()
	}
	return claim, nil, err
}

func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return idepool.WrapError(idepool.ETimeout, ctx.Err(), "gave up waiting")
	}
	return idepool.WrapError(idepool.EClientClosed, ctx.Err(), "request cancelled")
}

// errQueue says a start should wait in the admission queue.
var errQueue = errors.New("queue the start")

// warmTaken is a warm container bound to a start (bind) whose
// assignment is still to be delivered (finishWarm).
type warmTaken struct {
	e   *entry
	a   idepool.Assignment
	now time.Time
}

// takeForStartLocked binds a warm container of p to req when the start
// needs nothing else first (no limit reached, nobody queued), else nil:
// claim then decides. Caller holds m.mu.
func (m *Manager) takeForStartLocked(p idepool.Profile, req idepool.StartRequest, evs *[]idepool.Event) *warmTaken {
	ps := m.profiles[p.Name]
	if m.userLimit(ps, req.UserID) != nil || (m.opts.Queue.Enabled && len(ps.queue) > 0) {
		return nil
	}
	e := m.take(ps)
	if e == nil {
		return nil
	}
	now := m.clock.Now()
	return &warmTaken{e: e, a: m.bind(e, req, now, evs), now: now}
}

// claim runs with the workspace's start registered (m.pending[key]). It
// returns errQueue when the start should wait in the queue. taken, if not
// nil, is a warm container startOrQueue already bound to this start
// (takenEvs its events).
func (m *Manager) claim(ctx context.Context, req idepool.StartRequest, p idepool.Profile, allowQueue bool, taken *warmTaken, takenEvs []idepool.Event) (idepool.Claim, error) {
	tries := maxWarmTries
	if taken != nil {
		if c, ok := m.finishWarm(ctx, req, p, taken, takenEvs); ok {
			return c, nil
		}
		tries--
	}
	m.mu.Lock()
	ps := m.profiles[p.Name]
	err := m.userLimit(ps, req.UserID)
	// Fair: while others wait, a newcomer never takes a container before
	// them.
	queueFirst := m.opts.Queue.Enabled && len(ps.queue) > 0
	m.mu.Unlock()
	if err != nil {
		m.refused(p.Name, "limit", err)
		return idepool.Claim{}, err
	}
	if queueFirst {
		if !allowQueue {
			return idepool.Claim{}, idepool.Errorf(idepool.ECapacity, "starts of profile %s are waiting in the queue", p.Name)
		}
		return idepool.Claim{}, errQueue
	}
	key := req.Workspace.Key()
	for range tries {
		c, ok := m.claimWarm(ctx, req, p, key)
		if !ok {
			break
		}
		if c.Container.ID != "" {
			return c, nil
		}
	}
	if err := m.admitCold(ctx, p); err != nil {
		if m.opts.Queue.Enabled && allowQueue {
			return idepool.Claim{}, errQueue
		}
		reason := idepool.ReasonCapacity
		if idepool.ErrorCode(err) == idepool.ELimitExceeded {
			reason = "limit"
		}
		m.refused(p.Name, reason, err)
		return idepool.Claim{}, err
	}
	return m.claimCold(ctx, req, p, key)
}

// refused logs and publishes a refused start.
func (m *Manager) refused(profile, reason string, err error) {
	m.log.Info("start refused", "profile", profile, "reason", idepool.ErrorMessage(err))
	m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventRefused, Profile: profile,
		Reason: reason, Message: idepool.ErrorMessage(err),
		Data: map[string]any{"kind": string(idepool.ClaimRefused), "code": string(idepool.ErrorCode(err))}})
}

// admitCold asks whether one more container of p may be created for a
// waiting start: the profile's maximum, then the Admitter. Under pressure
// it gives up warm containers of other profiles (one at a time, a few at
// most) before it refuses.
func (m *Manager) admitCold(ctx context.Context, p idepool.Profile) error {
	m.mu.Lock()
	err := m.profileLimit(m.profiles[p.Name])
	m.mu.Unlock()
	if err != nil || m.admitter == nil {
		return err
	}
	for try := 0; ; try++ {
		err := m.admitter.Admit(ctx, p, idepool.ClaimCold)
		if err == nil {
			return nil
		}
		if try < maxEvictions && m.evictOther(ctx, p.Name) {
			continue
		}
		var ie *idepool.Error
		if !errors.As(err, &ie) || ie.Code != idepool.ECapacity {
			err = &idepool.Error{Code: idepool.ECapacity, Message: "no capacity for a new container", Err: err}
		}
		return err
	}
}

// claimWarm takes one warm container. ok false: none left. A zero Claim
// with ok true: the one taken failed (it is stopped); try again.
func (m *Manager) claimWarm(ctx context.Context, req idepool.StartRequest, p idepool.Profile, key string) (idepool.Claim, bool) {
	var evs []idepool.Event
	now := m.clock.Now()
	m.mu.Lock()
	e := m.take(m.profiles[p.Name])
	if e == nil {
		m.mu.Unlock()
		return idepool.Claim{}, false
	}
	a := m.bind(e, req, now, &evs)
	m.mu.Unlock()
	c, ok := m.finishWarm(ctx, req, p, &warmTaken{e: e, a: a, now: now}, evs)
	if !ok {
		return idepool.Claim{}, true
	}
	return c, true
}

// finishWarm completes a warm claim bound under m.mu (evs are the binding's
// events). ok false: the container failed and was stopped.
func (m *Manager) finishWarm(ctx context.Context, req idepool.StartRequest, p idepool.Profile, t *warmTaken, evs []idepool.Event) (idepool.Claim, bool) {
	m.publish(evs)
	m.claimedOne() // the pool lost one
	c, ok := m.completeWarm(ctx, t.e, req, t.a, t.now)
	if !ok {
		return idepool.Claim{}, false
	}
	m.log.Info("claimed warm", "container", c.ID, "profile", p.Name, "generation", c.Generation)
	m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventClaim, ContainerID: c.ID, Profile: p.Name,
		State: c.State, Data: map[string]any{"kind": string(idepool.ClaimWarm)}})
	return idepool.Claim{Container: c, Kind: idepool.ClaimWarm}, true
}

// completeWarm delivers a bound container's assignment and records the
// claim in the runtime, both at once. The claim waits for the agent's ack
// at most AckWait (by default not at all): an agent that refuses or is
// gone by then makes this start fall back to another container (ok false,
// the container is failed and never goes back to the pool); a later ack is
// not waited for, so a busy agent (or a busy host) never holds the claim's
// answer — a delivery that fails later fails the container, which its user
// sees through wait=ready, GET and the event stream.
func (m *Manager) completeWarm(ctx context.Context, e *entry, req idepool.StartRequest, a idepool.Assignment, now time.Time) (idepool.Container, bool) {
	id := e.c.ID // fixed for the entry's life
	var failOnce sync.Once
	failed := false
	undo := func(msg string, err error) {
		failOnce.Do(func() {
			m.log.Warn("warm claim failed; stopping the container", "container", id, "step", msg, "err", err)
			var evs []idepool.Event
			m.mu.Lock()
			e.delivering = false
			m.fail(e, msg+": "+idepool.ErrorMessage(err), &evs)
			failed = true
			m.mu.Unlock()
			m.publish(evs)
			m.kick()
		})
	}
	acked := make(chan error, 1)
	deliver := func(bctx context.Context) {
		actx, cancel := context.WithTimeout(bctx, m.opts.AssignTimeout)
		err := m.agents.Assign(actx, id, a)
		cancel()
		if err != nil {
			undo("assign", err)
		} else {
			m.mu.Lock()
			e.pendingAssign = false
			e.delivering = false
			m.mu.Unlock()
		}
		acked <- err
	}
	switch {
	case m.opts.AckWait < 0:
		deliver(ctx) // wait for the ack, however long
	case m.opts.AckWait > 0:
		m.goBG(deliver)
	default:
		m.deliverPaced(deliver) // nobody waits: answers first, syncs after
	}
	lctx, cancel := m.rtCtx(ctx, m.opts.RuntimeTimeout)
	err := m.rt.SetLabels(lctx, id, claimLabels(req.Workspace, req.UserID, a.Generation, true, now, req.IdleExempt))
	cancel()
	if err != nil {
		undo("record claim", err)
		return idepool.Container{}, false
	}
	if m.opts.AckWait > 0 {
		t := time.NewTimer(m.opts.AckWait)
		select {
		case <-acked:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	m.mu.Lock()
	gone := failed
	c := copyContainer(e.c)
	m.mu.Unlock()
	if gone {
		return idepool.Container{}, false
	}
	return c, true
}

// claimCold creates a container for the start (admission was asked by the
// caller); its agent gets the assignment when it says it is ready.
func (m *Manager) claimCold(ctx context.Context, req idepool.StartRequest, p idepool.Profile, key string) (idepool.Claim, error) {
	now := m.clock.Now()
	id := idepool.NewID()
	ws := req.Workspace
	a := m.assignment(req, 1)
	spec, hash := m.spec(id, p, claimLabels(ws, req.UserID, 1, false, now, req.IdleExempt))
	e := m.newEntry(idepool.Container{
		ID: id, Profile: p.Name, State: idepool.StateCreating, Workspace: &ws, UserID: req.UserID,
		Generation: 1, CreatedAt: now, ClaimedAt: now, LastActivity: now, IdleExempt: req.IdleExempt,
		Health: idepool.Health{Status: idepool.HealthUnknown},
	}, hash)
	e.assignment = &a
	e.pendingAssign = true
	var evs []idepool.Event
	m.mu.Lock()
	m.containers[id] = e
	m.byWorkspace[key] = id
	if ps := m.profiles[p.Name]; ps != nil {
		ps.claimRate.add(now, m.opts.ClaimRateWindow)
	}
	evs = append(evs, idepool.Event{Time: now, Type: idepool.EventState, ContainerID: id, Profile: p.Name, State: idepool.StateCreating})
	m.mu.Unlock()
	m.publish(evs)

	cctx, cancel := m.rtCtx(ctx, m.opts.RuntimeTimeout)
	inst, err := m.rt.Create(cctx, spec)
	cancel()
	if err != nil {
		m.createFailed(ctx, e, err)
		return idepool.Claim{}, idepool.WrapError(idepool.EStartFailed, err, "could not create a container")
	}
	evs = nil
	m.mu.Lock()
	if !m.created(e, inst, &evs) {
		m.mu.Unlock()
		m.removeStale(ctx, id)
		return idepool.Claim{}, idepool.Errorf(idepool.EStartFailed, "container %s was stopped while being created", id)
	}
	c := copyContainer(e.c)
	m.mu.Unlock()
	m.publish(evs)
	m.log.Info("claimed cold", "container", id, "profile", p.Name)
	m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventClaim, ContainerID: id, Profile: p.Name,
		State: c.State, Data: map[string]any{"kind": string(idepool.ClaimCold)}})
	return idepool.Claim{Container: c, Kind: idepool.ClaimCold}, nil
}

// removeStale removes a container created for an entry stopped meanwhile
// (its stop's Remove ran before the container existed).
func (m *Manager) removeStale(ctx context.Context, id string) {
	rctx, cancel := m.rtCtx(ctx, m.opts.RuntimeTimeout)
	defer cancel()
	if err := m.rt.Remove(rctx, id); err != nil {
		m.log.Error("remove container stopped while being created", "container", id, "err", err)
	}
}

// createFailed removes what a failed create may have left, at once, and
// counts the failure for the pool's backoff.
func (m *Manager) createFailed(ctx context.Context, e *entry, cause error) {
	id := e.c.ID
	m.log.Warn("create failed", "container", id, "profile", e.c.Profile, "err", cause)
	rctx, cancel := m.rtCtx(ctx, m.opts.RuntimeTimeout)
	rerr := m.rt.Remove(rctx, id)
	cancel()
	if rerr != nil {
		m.log.Error("remove after failed create", "container", id, "err", rerr)
	}
	var evs []idepool.Event
	now := m.clock.Now()
	m.mu.Lock()
	m.countFailure(e.c.Profile, "create: "+cause.Error())
	e.c.Message = "create failed: " + idepool.ErrorMessage(cause)
	if rerr != nil {
		// Keep it as failed; the reconciler retries the removal.
		e.createDone = true
		m.fail(e, e.c.Message, &evs)
	} else {
		m.finish(e, idepool.ReasonFailed, nil)
	}
	m.mu.Unlock()
	evs = append(evs, idepool.Event{Time: now, Type: idepool.EventCreateFail, ContainerID: id, Profile: e.c.Profile,
		Message: idepool.ErrorMessage(cause)})
	m.publish(evs)
	m.kick()
}

// WaitReady blocks until the container runs (synced and ready for its
// user), fails, is stopped, or ctx ends.
func (m *Manager) WaitReady(ctx context.Context, id string) (idepool.Container, error) {
	for {
		m.mu.Lock()
		e := m.containers[id]
		if e == nil {
			c, ok := m.history[id]
			m.mu.Unlock()
			if ok {
				return copyContainer(c), idepool.Errorf(idepool.EStartFailed, "container %s stopped (%s)", id, c.StopReason)
			}
			return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
		}
		c := copyContainer(e.c)
		ch := e.changed
		m.mu.Unlock()
		switch c.State {
		case idepool.StateRunning:
			return c, nil
		case idepool.StateFailed, idepool.StateStopping, idepool.StateStopped:
			return c, idepool.Errorf(idepool.EStartFailed, "container %s is %s: %s", id, c.State, c.Message)
		case idepool.StateWarm:
			return c, idepool.Errorf(idepool.ENotReady, "container %s is not claimed", id)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return c, ctxError(ctx)
		}
	}
}

func claimLabels(ws idepool.Workspace, user string, gen int64, preWarmed bool, at time.Time, idleExempt bool) map[string]string {
	l := idepool.ClaimLabels(ws, user, gen, preWarmed, at)
	if idleExempt {
		l[idepool.LabelIdleExempt] = "true"
	}
	return l
}
