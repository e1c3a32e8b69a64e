package pool

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// claimer serves starts: the workspace's live container, else a warm one
// (taken and bound under one hold of the lock), else a cold create, else
// the queue.
type claimer struct{ *core }

// maxWarmTries bounds how many warm containers one start tries before it
// creates one cold (each failed try stops the container it took).
const maxWarmTries = 3

// Start serves a start request exactly once: the workspace's live container
// if it has one (Kind reused, or prepared when Prepare bound it), else a
// warm container of the profile (Kind warm), else a cold create if capacity
// admits it (Kind cold). With the admission queue on, a start that waits
// for ready (WaitsReady) and finds a refill in flight that nobody waits
// for waits for it instead (spareInFlight), and a start that would be
// refused for capacity (or the profile's maximum) waits in the profile's
// FIFO queue until a container is free for it (Kind queued), ctx ends
// (its ticket is cancelled) or the queue's timeout passes. Concurrent
// starts for one workspace return the same container.
func (cl *claimer) Start(ctx context.Context, req idepool.StartRequest) (idepool.Claim, error) {
	claim, t, err := cl.StartOrQueue(ctx, req)
	if err != nil || t == nil {
		return claim, err
	}
	claim, err = cl.qu.WaitTicket(ctx, t.ID)
	if err != nil && ctx.Err() != nil {
		cl.qu.CancelTicket(t.ID)
	}
	return claim, err
}

// StartOrQueue is Start without waiting in the queue: a start that has to
// wait returns its Ticket (and a zero Claim) at once; poll it with Ticket
// or wait with WaitTicket. A start for a workspace that already waits
// returns the same ticket.
func (cl *claimer) StartOrQueue(ctx context.Context, req idepool.StartRequest) (idepool.Claim, *Ticket, error) {
	return cl.startOrQueue(ctx, req, false)
}

// startOrQueue is StartOrQueue. For Prepare (prep) a start that would wait
// is refused instead, and a prepared container is only reported (Kind
// reused), not taken.
func (cl *claimer) startOrQueue(ctx context.Context, req idepool.StartRequest, prep bool) (idepool.Claim, *Ticket, error) {
	if err := req.Workspace.Validate(); err != nil {
		return idepool.Claim{}, nil, err
	}
	p, err := cl.profile(req.Profile)
	if err != nil {
		return idepool.Claim{}, nil, err
	}
	if err := cl.awaitAdoption(ctx); err != nil {
		return idepool.Claim{}, nil, err
	}
	req.Profile = p.Name
	req.Workspace.Prefix = idepool.NormalizePrefix(req.Workspace.Prefix)
	key := req.Workspace.Key()

	f, err := cl.register(ctx, req, p, key, prep)
	switch {
	case err != nil:
		return idepool.Claim{}, nil, err
	case f.kind == foundTicket:
		return idepool.Claim{}, f.ticket, nil
	case f.kind == foundLive:
		return *f.claim, nil, nil
	}
	claim, err := cl.claim(ctx, &req, &p, !prep, f.taken, f.evs)
	if errors.Is(err, errQueue) {
		t, qerr := cl.qu.enqueue(f.call, req, key)
		if qerr == nil {
			return idepool.Claim{}, &t, nil
		}
		err = qerr
	}
	cl.mu.Lock()
	delete(cl.pending, key)
	f.call.err = err
	cl.mu.Unlock()
	close(f.call.done)
	if err != nil || claim.Kind != idepool.ClaimWarm {
		cl.kick()
	}
	return claim, nil, err
}

// What register found for a workspace.
const (
	foundNone       = iota // nothing yet (a stale mapping was dropped): look again
	foundRegistered        // this start is the workspace's (call; taken if bound warm)
	foundTicket            // a start for it waits in the queue (ticket)
	foundLive              // it has a live container (claim)
	foundOther             // another start runs (other): wait for it
	foundStopping          // its container is being stopped (stopping): wait
)

// found's ticket and claim are pointers, set only in their (rare) cases:
// as values they made every start's frames 0.5 KB larger (see startCall in
// httpapi).
type found struct {
	kind     int
	call     *startCall
	taken    *warmTaken
	evs      []idepool.Event // taken's events
	ticket   *Ticket
	claim    *idepool.Claim
	other    *startCall
	stopping <-chan struct{}
}

// register makes this start the workspace's before any slow work, or
// returns what the workspace already has (a live container, a queued
// ticket). Others wait for it and then find its container. Bounded: each
// round either returns or waits for a start or stop that really ended.
func (cl *claimer) register(ctx context.Context, req idepool.StartRequest, p idepool.Profile, key string, prep bool) (found, error) {
	for round := 0; ; round++ {
		if round > 100 {
			return found{}, idepool.Errorf(idepool.EConflict, "workspace %s is busy, retry", key)
		}
		cl.mu.Lock()
		f := cl.findLocked(req, p, key, prep)
		cl.mu.Unlock()
		switch f.kind {
		case foundRegistered, foundTicket:
			return f, nil
		case foundLive:
			c := f.claim.Container
			cl.events.Publish(idepool.Event{Time: cl.clock.Now(), Type: idepool.EventClaim, ContainerID: c.ID,
				Profile: c.Profile, State: c.State, Data: map[string]any{"kind": string(f.claim.Kind)}})
			return f, nil
		case foundOther:
			select {
			case <-f.other.done:
			case <-ctx.Done():
				return found{}, ctxError(ctx)
			}
			// The other start's outcome is ours, unless it only gave up
			// (its client left): then try ourselves.
			if err := f.other.err; err != nil {
				if code := idepool.ErrorCode(err); code != idepool.EClientClosed && code != idepool.ETimeout {
					return found{}, err
				}
			}
		case foundStopping:
			// Its work is being flushed. Wait until it is gone so the new
			// container pulls what it pushed.
			select {
			case <-f.stopping:
			case <-ctx.Done():
				return found{}, ctxError(ctx)
			}
		}
	}
}

// findLocked is one round of register. The common case, a warm container
// for a new workspace, is bound under this same hold of the lock: one
// acquisition instead of three keeps mu from becoming a convoy when a class
// starts at once. Caller holds mu.
func (cl *claimer) findLocked(req idepool.StartRequest, p idepool.Profile, key string, prep bool) found {
	if c := cl.pending[key]; c != nil {
		if c.ticket != nil {
			t := cl.qu.ticketInfoLocked(c.ticket)
			return found{kind: foundTicket, ticket: &t}
		}
		return found{kind: foundOther, other: c}
	}
	if id, ok := cl.byWorkspace[key]; ok {
		e := cl.containers[id]
		if e != nil && !e.exit.leaving() && e.c.State.Live() {
			kind := idepool.ClaimReused
			if !e.preparedUntil.IsZero() && !prep {
				kind = cl.prep.takePreparedLocked(e, req)
			}
			return found{kind: foundLive, claim: &idepool.Claim{Container: copyContainer(&e.c), Kind: kind}}
		}
		if e != nil && e.exit.stopping() {
			return found{kind: foundStopping, stopping: e.exit.done}
		}
		// Cannot happen (fail and finish drop the mapping); never let a
		// stale entry block the workspace.
		cl.log.Error("stale workspace mapping dropped", "container", id)
		delete(cl.byWorkspace, key)
		return found{}
	}
	call := &startCall{done: make(chan struct{})}
	cl.pending[key] = call
	var evs []idepool.Event
	taken := cl.takeForStartLocked(p, req, &evs)
	return found{kind: foundRegistered, call: call, taken: taken, evs: evs}
}

// awaitAdoption holds a start after a restart until every recovered
// unclaimed container's agent has reported (at most AdoptWait): one of them
// may hold this workspace's claim, which only its agent records yet.
func (cl *claimer) awaitAdoption(ctx context.Context) error {
	cl.mu.Lock()
	ch := cl.settled
	cl.mu.Unlock()
	select {
	case <-ch:
		return nil
	default:
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctxError(ctx)
	}
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
// claim then decides. Caller holds mu.
func (cl *claimer) takeForStartLocked(p idepool.Profile, req idepool.StartRequest, evs *[]idepool.Event) *warmTaken {
	ps := cl.profiles[p.Name]
	if cl.userLimit(ps, req.UserID) != nil || (cl.opts.Queue.Enabled && len(ps.queue) > 0) {
		return nil
	}
	e := cl.take(ps)
	if e == nil {
		return nil
	}
	now := cl.clock.Now()
	return &warmTaken{e: e, a: cl.bind(e, req, now, evs), now: now}
}

// claim runs with the workspace's start registered (m.pending[key]). It
// returns errQueue when the start should wait in the queue. taken, if not
// nil, is a warm container startOrQueue already bound to this start
// (takenEvs its events).
//
// The warm path (claim, finishWarm, completeWarm, completeWarmLocal, down
// to the runtime's label write) takes the request, profile and assignment
// by pointer and leaves its logging to helpers: its frames are on the
// stack of every claim, on a connection's goroutine whose stack starts
// small, and each growth of it copies the whole stack.
func (cl *claimer) claim(ctx context.Context, req *idepool.StartRequest, p *idepool.Profile, allowQueue bool, taken *warmTaken, takenEvs []idepool.Event) (idepool.Claim, error) {
	tries := maxWarmTries
	if taken != nil {
		if c, ok := cl.finishWarm(ctx, req, p, taken, takenEvs); ok {
			return c, nil
		}
		tries--
	}
	return cl.claimUntaken(ctx, req, p, allowQueue, tries)
}

// claimUntaken is claim without a container bound yet: limits, the queue,
// up to tries warm containers, else a cold create.
//
//go:noinline
func (cl *claimer) claimUntaken(ctx context.Context, req *idepool.StartRequest, p *idepool.Profile, allowQueue bool, tries int) (idepool.Claim, error) {
	cl.mu.Lock()
	ps := cl.profiles[p.Name]
	err := cl.userLimit(ps, req.UserID)
	// Fair: while others wait for a container that is not yet being made
	// for them, a newcomer never takes one before them. Starts that only
	// wait for the pool's creates in flight (spareInFlight) hold nothing
	// back: a newcomer may still create its own.
	queueFirst := cl.opts.Queue.Enabled && len(ps.queue) > 0 && len(ps.queue) > cl.inFlightLocked(p.Name)
	cl.mu.Unlock()
	if err != nil {
		cl.refused(p.Name, "limit", err)
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
		c, ok := cl.claimWarm(ctx, req, p, key)
		if !ok {
			break
		}
		if c.Container.ID != "" {
			return c, nil
		}
	}
	if allowQueue && req.WaitsReady && cl.spareInFlight(p.Name) {
		return idepool.Claim{}, errQueue
	}
	if err := cl.admitCold(ctx, *p); err != nil {
		if cl.opts.Queue.Enabled && allowQueue && !idepool.NeverFits(err) {
			return idepool.Claim{}, errQueue
		}
		reason := idepool.ReasonCapacity
		if idepool.ErrorCode(err) == idepool.ELimitExceeded {
			reason = "limit"
		}
		cl.refused(p.Name, reason, err)
		return idepool.Claim{}, err
	}
	return cl.claimCold(ctx, *req, *p, key)
}

// spareInFlight says whether, with the queue on, the pool is creating a
// container of the profile that no waiting start is promised. A start
// that finds no warm container and waits for ready anyway then waits in
// the queue for it rather than create one beside it: the one in flight
// began earlier, so it is warm sooner, and the runtime gets one create
// fewer. Without this a class's
// burst left the pool's refills idle while its starts waited for their own
// cold creates, every create slowed by the others (issue 18).
func (cl *claimer) spareInFlight(profile string) bool {
	if !cl.opts.Queue.Enabled {
		return false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	ps := cl.profiles[profile]
	return ps != nil && cl.inFlightLocked(profile) > len(ps.queue)
}

// refused logs and publishes a refused start.
func (cl *claimer) refused(profile, reason string, err error) {
	cl.log.Info("start refused", "profile", profile, "reason", idepool.ErrorMessage(err))
	cl.events.Publish(idepool.Event{Time: cl.clock.Now(), Type: idepool.EventRefused, Profile: profile,
		Reason: reason, Message: idepool.ErrorMessage(err),
		Data: map[string]any{"kind": string(idepool.ClaimRefused), "code": string(idepool.ErrorCode(err))}})
}

// admitCold asks whether one more container of p may be created for a
// waiting start: the profile's maximum, then the Admitter. Under pressure
// it gives up warm containers of other profiles (one at a time, a few at
// most) before it refuses.
func (cl *claimer) admitCold(ctx context.Context, p idepool.Profile) error {
	cl.mu.Lock()
	err := cl.profileLimit(cl.profiles[p.Name])
	cl.mu.Unlock()
	if err != nil || cl.admitter == nil {
		return err
	}
	for try := 0; ; try++ {
		err := cl.admitter.Admit(ctx, p, idepool.ClaimCold)
		if err == nil {
			return nil
		}
		if try < maxEvictions && cl.qu.evictOther(ctx, p.Name) {
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
func (cl *claimer) claimWarm(ctx context.Context, req *idepool.StartRequest, p *idepool.Profile, key string) (idepool.Claim, bool) {
	var evs []idepool.Event
	now := cl.clock.Now()
	cl.mu.Lock()
	e := cl.take(cl.profiles[p.Name])
	if e == nil {
		cl.mu.Unlock()
		return idepool.Claim{}, false
	}
	a := cl.bind(e, *req, now, &evs)
	cl.mu.Unlock()
	c, ok := cl.finishWarm(ctx, req, p, &warmTaken{e: e, a: a, now: now}, evs)
	if !ok {
		return idepool.Claim{}, true
	}
	return c, true
}

// finishWarm completes a warm claim bound under mu (evs are the binding's
// events). ok false: the container failed and was stopped.
func (cl *claimer) finishWarm(ctx context.Context, req *idepool.StartRequest, p *idepool.Profile, t *warmTaken, evs []idepool.Event) (idepool.Claim, bool) {
	cl.publish(evs)
	cl.claimedOne() // the pool lost one
	c, ok := cl.completeWarm(ctx, t.e, req, &t.a, t.now)
	if !ok {
		return idepool.Claim{}, false
	}
	cl.claimedWarm(&c, p.Name)
	return idepool.Claim{Container: c, Kind: idepool.ClaimWarm}, true
}

// claimedWarm logs and publishes a warm claim.
//
//go:noinline
func (cl *claimer) claimedWarm(c *idepool.Container, profile string) {
	cl.log.Info("claimed warm", "container", c.ID, "profile", profile, "generation", c.Generation)
	cl.events.Publish(idepool.Event{Time: cl.clock.Now(), Type: idepool.EventClaim, ContainerID: c.ID, Profile: profile,
		State: c.State, Data: map[string]any{"kind": string(idepool.ClaimWarm)}})
}

// completeWarm makes a bound container's claim durable, then answers.
// Where the runtime's labels are a cheap local write (LocalLabels) that is
// the record: written before the answer, while the assignment's delivery
// waits behind the burst of claims (paced); a delivery that fails later
// fails the container, which its user sees through wait=ready, GET and the
// event stream. Elsewhere (a label write is a Swarm service update of
// 50–100 ms) the agent is the record: it persists the assignment before it
// acks, the answer waits for that ack, and the labels are written behind
// it (labelWriter); a crash before they are is repaired by adopting the
// claim from the agent's hello (adoptFromAgent). Either way an agent that
// refuses in time makes this start fall back to another container (ok
// false; the container is failed and never goes back to the pool).
func (cl *claimer) completeWarm(ctx context.Context, e *entry, req *idepool.StartRequest, a *idepool.Assignment, now time.Time) (idepool.Container, bool) {
	labels := claimLabels(req.Workspace, req.UserID, a.Generation, true, now, req.IdleExempt)
	if cl.localLabels {
		return cl.completeWarmLocal(ctx, e, a, labels)
	}
	return cl.completeWarmAgent(e, a, labels)
}

// completeWarmAgent is completeWarm where the agent is the record.
//
//go:noinline
func (cl *claimer) completeWarmAgent(e *entry, ap *idepool.Assignment, labels map[string]string) (idepool.Container, bool) {
	a := *ap
	// Not the request's context: a client that leaves mid-claim must not
	// waste the container it was bound; its retry finds the claim.
	actx, cancel := context.WithTimeout(cl.bgCtx, cl.opts.AssignTimeout)
	err := cl.agents.Assign(actx, e.c.ID, a)
	cancel()
	var evs []idepool.Event
	cl.mu.Lock()
	e.assign.delivered(err == nil)
	if err != nil {
		cl.log.Warn("warm claim failed; stopping the container", "container", e.c.ID, "step", "assign", "err", err)
		cl.fail(e, "assign: "+idepool.ErrorMessage(err), &evs)
	}
	c := copyContainer(&e.c)
	cl.mu.Unlock()
	if err != nil {
		cl.publish(evs)
		cl.kick()
		return idepool.Container{}, false
	}
	cl.labels.queue(c.ID, labels)
	return c, true
}

// completeWarmLocal records the claim in the local labels, answers, and
// delivers the assignment after the burst.
func (cl *claimer) completeWarmLocal(ctx context.Context, e *entry, ap *idepool.Assignment, labels map[string]string) (idepool.Container, bool) {
	id := e.c.ID // fixed for the entry's life
	a := *ap     // the delivery below runs later: its own copy
	var failOnce sync.Once
	failed := false
	undo := func(msg string, err error) {
		failOnce.Do(func() {
			cl.log.Warn("warm claim failed; stopping the container", "container", id, "step", msg, "err", err)
			var evs []idepool.Event
			cl.mu.Lock()
			e.assign.delivered(false)
			cl.fail(e, msg+": "+idepool.ErrorMessage(err), &evs)
			failed = true
			cl.mu.Unlock()
			cl.publish(evs)
			cl.kick()
		})
	}
	cl.deliverPaced(func(bctx context.Context) {
		actx, cancel := context.WithTimeout(bctx, cl.opts.AssignTimeout)
		err := cl.agents.Assign(actx, id, a)
		cancel()
		if err != nil {
			undo("assign", err)
			return
		}
		cl.mu.Lock()
		e.assign.delivered(true)
		cl.mu.Unlock()
	})
	lctx, cancel := cl.rtCtx(ctx, cl.opts.RuntimeTimeout)
	err := cl.rt.SetLabels(lctx, id, labels)
	cancel()
	if err != nil {
		undo("record claim", err)
		return idepool.Container{}, false
	}
	cl.mu.Lock()
	gone := failed
	c := copyContainer(&e.c)
	cl.mu.Unlock()
	if gone {
		return idepool.Container{}, false
	}
	return c, true
}

// claimCold creates a container for the start (admission was asked by the
// caller); its agent gets the assignment when it says it is ready.
func (cl *claimer) claimCold(ctx context.Context, req idepool.StartRequest, p idepool.Profile, key string) (idepool.Claim, error) {
	now := cl.clock.Now()
	id := idepool.NewID()
	ws := req.Workspace
	a := cl.assignment(req, 1, now)
	spec, hash := cl.spec(id, p, claimLabels(ws, req.UserID, 1, false, now, req.IdleExempt))
	e := cl.newEntry(idepool.Container{
		ID: id, Profile: p.Name, State: idepool.StateCreating, Workspace: &ws, UserID: req.UserID,
		Generation: 1, CreatedAt: now, ClaimedAt: now, LastActivity: now, IdleExempt: req.IdleExempt,
		Health: idepool.Health{Status: idepool.HealthUnknown},
	}, hash)
	e.assignment = &a
	e.assign = assignPending
	var evs []idepool.Event
	cl.mu.Lock()
	cl.containers[id] = e
	cl.byWorkspace[key] = id
	if ps := cl.profiles[p.Name]; ps != nil {
		ps.claimRate.add(now, cl.opts.ClaimRateWindow)
	}
	evs = append(evs, idepool.Event{Time: now, Type: idepool.EventState, ContainerID: id, Profile: p.Name, State: idepool.StateCreating})
	cl.mu.Unlock()
	cl.publish(evs)

	cctx, cancel := cl.rtCtx(ctx, cl.opts.RuntimeTimeout)
	inst, err := cl.rt.Create(cctx, spec)
	cancel()
	if err != nil {
		cl.createFailed(ctx, e, err)
		return idepool.Claim{}, idepool.WrapError(idepool.EStartFailed, err, "could not create a container")
	}
	evs = nil
	cl.mu.Lock()
	if !cl.created(e, inst, &evs) {
		cl.mu.Unlock()
		cl.removeStale(ctx, id)
		return idepool.Claim{}, idepool.Errorf(idepool.EStartFailed, "container %s was stopped while being created", id)
	}
	c := copyContainer(&e.c)
	cl.mu.Unlock()
	cl.publish(evs)
	cl.log.Info("claimed cold", "container", id, "profile", p.Name)
	cl.events.Publish(idepool.Event{Time: cl.clock.Now(), Type: idepool.EventClaim, ContainerID: id, Profile: p.Name,
		State: c.State, Data: map[string]any{"kind": string(idepool.ClaimCold)}})
	return idepool.Claim{Container: c, Kind: idepool.ClaimCold}, nil
}

// removeStale removes a container created for an entry stopped meanwhile
// (its stop's Remove ran before the container existed).
func (cl *claimer) removeStale(ctx context.Context, id string) {
	rctx, cancel := cl.rtCtx(ctx, cl.opts.RuntimeTimeout)
	defer cancel()
	if err := cl.rt.Remove(rctx, id); err != nil {
		cl.log.Error("remove container stopped while being created", "container", id, "err", err)
	}
}

// createFailed removes what a failed create may have left, at once, and
// counts the failure for the pool's backoff.
func (cl *claimer) createFailed(ctx context.Context, e *entry, cause error) {
	id := e.c.ID
	cl.log.Warn("create failed", "container", id, "profile", e.c.Profile, "err", cause)
	rctx, cancel := cl.rtCtx(ctx, cl.opts.RuntimeTimeout)
	rerr := cl.rt.Remove(rctx, id)
	cancel()
	if rerr != nil {
		cl.log.Error("remove after failed create", "container", id, "err", rerr)
	}
	var evs []idepool.Event
	now := cl.clock.Now()
	cl.mu.Lock()
	cl.countFailure(e.c.Profile, "create: "+cause.Error())
	e.c.Message = "create failed: " + idepool.ErrorMessage(cause)
	if rerr != nil {
		// Keep it as failed; the reconciler retries the removal.
		e.createDone = true
		cl.fail(e, e.c.Message, &evs)
	} else {
		cl.finish(e, idepool.ReasonFailed, nil)
	}
	cl.mu.Unlock()
	evs = append(evs, idepool.Event{Time: now, Type: idepool.EventCreateFail, ContainerID: id, Profile: e.c.Profile,
		Message: idepool.ErrorMessage(cause)})
	cl.publish(evs)
	cl.kick()
}

// WaitReady blocks until the container runs (synced and ready for its
// user), fails, is stopped, or ctx ends.
func (cl *claimer) WaitReady(ctx context.Context, id string) (idepool.Container, error) {
	for {
		cl.mu.Lock()
		e := cl.containers[id]
		if e == nil {
			c, ok := cl.history[id]
			cl.mu.Unlock()
			if ok {
				return copyContainer(&c), idepool.Errorf(idepool.EStartFailed, "container %s stopped (%s)", id, c.StopReason)
			}
			return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
		}
		c := copyContainer(&e.c)
		ch := e.changed
		cl.mu.Unlock()
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
