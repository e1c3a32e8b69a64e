package pool

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/idepool/idepool"
)

// queue is the admission queue: starts that found neither a warm container
// nor capacity wait per profile, first come first served; the next
// container that becomes warm goes to the head of the queue.
type queue struct{ *core }

// Claim kinds pool adds to idepool's.
const (
	// ClaimQueued: the start waited in the admission queue, then got the
	// next container that became warm.
	ClaimQueued idepool.ClaimKind = "queued"
	// ClaimPrepared: Prepare had bound the container to the workspace
	// (and its files were pulled) before the start came.
	ClaimPrepared idepool.ClaimKind = "prepared"
)

// QueueOptions configure the admission queue.
type QueueOptions struct {
	// Enabled turns the queue on; off, a start that finds neither a warm
	// container nor capacity is refused at once (the original's behaviour).
	Enabled bool
	// Limit is how many starts may wait per profile (default 1000); one
	// more is refused with QUEUE_FULL.
	Limit int
	// Timeout is how long a start may wait (default 10 min); then it is
	// refused with RESOURCE_LIMIT_EXCEEDED, details reason "queue-timeout".
	Timeout time.Duration
	// Keep is how many finished tickets stay answerable (default 1000).
	Keep int
}

func (q *QueueOptions) defaults() {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	if q.Timeout <= 0 {
		q.Timeout = 10 * time.Minute
	}
	if q.Keep <= 0 {
		q.Keep = 1000
	}
}

// TicketState is where a queued start is. An alias, so that Ticket
// converts to a mirror type of the HTTP API with a plain conversion.
type TicketState = string

// Ticket states.
const (
	TicketQueued    = "queued"    // waiting for a container
	TicketAssigned  = "assigned"  // served: ContainerID is the workspace's container
	TicketFailed    = "failed"    // timed out or the claim failed: Code, Error
	TicketCancelled = "cancelled" // the client left (a blocking Start's ctx ended)
)

// Ticket is a start in the admission queue, as clients see it. It never
// carries credentials.
type Ticket struct {
	ID        string            `json:"ticket"`
	Profile   string            `json:"profile"`
	Workspace idepool.Workspace `json:"workspace"`
	State     TicketState       `json:"state"`
	// Position is 1 for the next start to be served; 0 once served.
	Position int `json:"position,omitempty"`
	// Estimate is how much longer it may wait (a guess from the measured
	// create time and the creates in flight).
	Estimate    time.Duration `json:"estimate,omitempty"`
	EnqueuedAt  time.Time     `json:"enqueuedAt"`
	Deadline    time.Time     `json:"deadline"`
	ContainerID string        `json:"containerId,omitempty"`
	Code        idepool.Code  `json:"code,omitempty"`
	Error       string        `json:"error,omitempty"`
}

// ticket is a queued start. Guarded by state.mu.
type ticket struct {
	id       string
	seq      uint64
	req      idepool.StartRequest // holds credentials: memory only
	key      string
	profile  string
	enqueued time.Time
	deadline time.Time
	call     *startCall
	state    TicketState
	binding  bool // popped and being delivered to a container
	claim    idepool.Claim
	err      error
	done     chan struct{}
}

// QueueEstimate guesses how long the start at position pos waits: the
// inFlight containers being created serve the first positions within about
// one create; later ones wait one more create per batch of parallel.
func QueueEstimate(pos, inFlight, parallel int, create time.Duration) time.Duration {
	if pos <= 0 {
		return 0
	}
	if pos <= inFlight {
		return create
	}
	parallel = max(parallel, 1)
	return create * time.Duration(1+(pos-inFlight+parallel-1)/parallel)
}

// ticketInfoLocked is t as clients see it. Caller holds mu.
func (qu *queue) ticketInfoLocked(t *ticket) Ticket {
	out := Ticket{ID: t.id, Profile: t.profile, Workspace: t.req.Workspace, State: t.state,
		EnqueuedAt: t.enqueued, Deadline: t.deadline}
	switch t.state {
	case TicketQueued:
		ps := qu.profiles[t.profile]
		if i := slices.Index(ps.queue, t); i >= 0 {
			out.Position = i + 1
			out.Estimate = QueueEstimate(out.Position, qu.inFlightLocked(t.profile), qu.opts.CreateConcurrency, qu.createDuration(ps))
		}
	case TicketAssigned:
		out.ContainerID = t.claim.Container.ID
	default:
		out.Code = idepool.ErrorCode(t.err)
		out.Error = idepool.ErrorMessage(t.err)
	}
	return out
}

// enqueueLocked puts a start at the end of its profile's queue; the start's
// registration (call) now belongs to the ticket. Caller holds mu.
func (qu *queue) enqueueLocked(call *startCall, req idepool.StartRequest, key string, evs *[]idepool.Event) (*ticket, error) {
	ps := qu.profiles[req.Profile]
	now := qu.clock.Now()
	if len(ps.queue) >= qu.opts.Queue.Limit {
		err := &idepool.Error{Code: idepool.EQueueFull, Message: "the admission queue of profile " + req.Profile + " is full; retry later",
			Details: map[string]any{"profile": req.Profile, "limit": qu.opts.Queue.Limit}}
		*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventRefused, Profile: req.Profile, Reason: "queue-full",
			Message: err.Message, Data: map[string]any{"kind": string(idepool.ClaimRefused), "code": string(err.Code)}})
		return nil, err
	}
	qu.ticketSeq++
	t := &ticket{id: "q" + strconv.FormatUint(qu.ticketSeq, 10) + "-" + idepool.NewID()[:8], seq: qu.ticketSeq,
		req: req, key: key, profile: req.Profile, enqueued: now, deadline: now.Add(qu.opts.Queue.Timeout),
		call: call, state: TicketQueued, done: make(chan struct{})}
	call.ticket = t
	ps.queue = append(ps.queue, t)
	qu.tickets[t.id] = t
	info := qu.ticketInfoLocked(t)
	*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventQueued, Profile: req.Profile, State: "",
		Reason: "queued", Message: "waiting for a container",
		Data: map[string]any{"ticket": t.id, "position": info.Position, "estimateSeconds": info.Estimate.Seconds()}})
	qu.serveQueueLocked(ps, evs)
	return t, nil
}

// enqueue puts a start in its profile's queue (enqueueLocked) and returns
// its ticket as clients see it.
func (qu *queue) enqueue(call *startCall, req idepool.StartRequest, key string) (Ticket, error) {
	var evs []idepool.Event
	qu.mu.Lock()
	t, err := qu.enqueueLocked(call, req, key, &evs)
	var info Ticket
	if err == nil {
		info = qu.ticketInfoLocked(t)
	}
	qu.mu.Unlock()
	qu.publish(evs)
	qu.kick()
	return info, err
}

// serveQueueLocked gives the profile's warm containers to the oldest
// waiting starts, first come first served. The deliveries run in the
// background. Caller holds mu.
func (qu *queue) serveQueueLocked(ps *profileState, evs *[]idepool.Event) {
	for len(ps.queue) > 0 {
		e := qu.take(ps)
		if e == nil {
			return
		}
		t := ps.queue[0]
		ps.queue = ps.queue[1:]
		qu.bindTicketLocked(t, e, evs)
	}
}

// bindTicketLocked binds warm container e to queued start t. Caller holds mu.
func (qu *queue) bindTicketLocked(t *ticket, e *entry, evs *[]idepool.Event) {
	now := qu.clock.Now()
	t.binding = true
	req := t.req
	a := qu.bind(e, req, now, evs)
	// Progress for everyone waiting: one event per start served (not one
	// per waiting start), with what is left.
	*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventQueued, ContainerID: e.c.ID, Profile: t.profile,
		Reason: "served", Data: map[string]any{"ticket": t.id, "waiting": len(qu.profiles[t.profile].queue),
			"waitedSeconds": now.Sub(t.enqueued).Seconds()}})
	qu.kick()
	qu.goBGLocked(func(ctx context.Context) {
		c, ok := qu.cl.completeWarm(ctx, e, &req, &a, now)
		var evs []idepool.Event
		qu.mu.Lock()
		t.binding = false
		if !ok {
			// The container failed; the start keeps its place at the head.
			ps := qu.profiles[t.profile]
			ps.queue = append([]*ticket{t}, ps.queue...)
			qu.serveQueueLocked(ps, &evs)
			qu.mu.Unlock()
			qu.publish(evs)
			qu.kick()
			return
		}
		qu.resolveLocked(t, idepool.Claim{Container: c, Kind: ClaimQueued}, nil, &evs)
		qu.mu.Unlock()
		qu.publish(evs)
		qu.log.Info("claimed from the queue", "container", c.ID, "profile", c.Profile, "ticket", t.id,
			"waited", now.Sub(t.enqueued))
		qu.events.Publish(idepool.Event{Time: qu.clock.Now(), Type: idepool.EventClaim, ContainerID: c.ID, Profile: c.Profile,
			State: c.State, Data: map[string]any{"kind": string(ClaimQueued), "ticket": t.id,
				"waitedSeconds": now.Sub(t.enqueued).Seconds()}})
	})
}

// resolveLocked ends a ticket: its start is served (claim) or refused
// (err). Caller holds mu and took t out of its queue.
func (qu *queue) resolveLocked(t *ticket, claim idepool.Claim, err error, evs *[]idepool.Event) {
	if t.state != TicketQueued {
		return
	}
	switch {
	case err == nil:
		t.state = TicketAssigned
	case idepool.ErrorCode(err) == idepool.EClientClosed:
		t.state = TicketCancelled
	default:
		t.state = TicketFailed
	}
	t.claim, t.err = claim, err
	t.req.Credentials, t.req.VNCPassword = idepool.Credentials{}, "" // no longer needed
	close(t.done)
	if qu.pending[t.key] == t.call {
		delete(qu.pending, t.key)
	}
	t.call.err = err
	t.call.ticket = nil
	close(t.call.done)
	qu.ticketIDs = append(qu.ticketIDs, t.id)
	for len(qu.ticketIDs) > qu.opts.Queue.Keep {
		delete(qu.tickets, qu.ticketIDs[0])
		qu.ticketIDs = qu.ticketIDs[1:]
	}
	if err != nil {
		*evs = append(*evs, idepool.Event{Time: qu.clock.Now(), Type: idepool.EventQueued, Profile: t.profile,
			Reason: string(t.state), Message: idepool.ErrorMessage(err), Data: map[string]any{"ticket": t.id}})
	}
}

// removeTicketLocked takes a waiting ticket out of its queue.
func (qu *queue) removeTicketLocked(t *ticket) bool {
	ps := qu.profiles[t.profile]
	i := slices.Index(ps.queue, t)
	if i < 0 {
		return false
	}
	ps.queue = slices.Delete(ps.queue, i, i+1)
	return true
}

// expireTicketsLocked refuses starts that waited too long; it returns the
// earliest deadline still ahead. Caller holds mu.
func (qu *queue) expireTicketsLocked(now time.Time, evs *[]idepool.Event) time.Time {
	var next time.Time
	for _, name := range qu.order {
		ps := qu.profiles[name]
		for _, t := range slices.Clone(ps.queue) {
			if now.Before(t.deadline) {
				if next.IsZero() || t.deadline.Before(next) {
					next = t.deadline
				}
				continue
			}
			qu.removeTicketLocked(t)
			waited := now.Sub(t.enqueued).Round(time.Second)
			qu.resolveLocked(t, idepool.Claim{}, &idepool.Error{Code: idepool.ECapacity,
				Message: "no container became free within " + waited.String() + " in the admission queue",
				Details: map[string]any{"reason": "queue-timeout", "profile": name, "waitedSeconds": waited.Seconds()}}, evs)
		}
	}
	return next
}

// Ticket returns a queued (or recently finished) start.
func (qu *queue) Ticket(id string) (Ticket, error) {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	t := qu.tickets[id]
	if t == nil {
		return Ticket{}, idepool.Errorf(idepool.ENotFound, "ticket %s not found", id)
	}
	return qu.ticketInfoLocked(t), nil
}

// WaitTicket waits until a queued start is served or refused, or ctx ends
// (the ticket then stays queued). Served: the claim (Kind queued).
func (qu *queue) WaitTicket(ctx context.Context, id string) (idepool.Claim, error) {
	qu.mu.Lock()
	t := qu.tickets[id]
	qu.mu.Unlock()
	if t == nil {
		return idepool.Claim{}, idepool.Errorf(idepool.ENotFound, "ticket %s not found", id)
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return idepool.Claim{}, ctxError(ctx)
	}
	qu.mu.Lock()
	defer qu.mu.Unlock()
	c := t.claim
	c.Container = copyContainer(&c.Container)
	return c, t.err
}

// CancelTicket takes a waiting start out of the queue (its client left).
// A start already being served is not undone: its container is the
// workspace's.
func (qu *queue) CancelTicket(id string) {
	var evs []idepool.Event
	qu.mu.Lock()
	if t := qu.tickets[id]; t != nil && qu.removeTicketLocked(t) {
		qu.resolveLocked(t, idepool.Claim{}, idepool.Errorf(idepool.EClientClosed, "queued start cancelled"), &evs)
	}
	qu.mu.Unlock()
	qu.publish(evs)
	qu.kick()
}

// Queue returns the tickets waiting for a profile, first first.
func (qu *queue) Queue(profile string) ([]Ticket, error) {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	ps := qu.profiles[profile]
	if ps == nil {
		return nil, idepool.Errorf(idepool.EUnknownProfile, "unknown profile %q", profile)
	}
	out := make([]Ticket, 0, len(ps.queue))
	for _, t := range ps.queue {
		out = append(out, qu.ticketInfoLocked(t))
	}
	return out, nil
}

// maxEvictions bounds how many warm containers of other profiles one
// refused create gives up.
const maxEvictions = 3

// evictOther stops the oldest warm container of a profile other than
// profile, so that a waiting start gets its capacity: under pressure, warm
// containers are given up before a claim is refused. It reports whether one
// was removed.
func (qu *queue) evictOther(ctx context.Context, profile string) bool {
	var evs []idepool.Event
	qu.mu.Lock()
	var victim *entry
	for _, name := range qu.order {
		if name == profile {
			continue
		}
		for _, id := range qu.profiles[name].warm {
			e := qu.containers[id]
			if e == nil || e.exit.leaving() || e.c.State != idepool.StateWarm {
				continue
			}
			if victim == nil || e.c.CreatedAt.Before(victim.c.CreatedAt) {
				victim = e
			}
			break // warm lists are oldest first
		}
	}
	if victim == nil {
		qu.mu.Unlock()
		return false
	}
	flush := qu.beginStop(victim, idepool.ReasonCapacity, &evs)
	qu.mu.Unlock()
	qu.publish(evs)
	qu.log.Info("giving up a warm container for a waiting start", "container", victim.c.ID, "for", profile)
	_, err := qu.stops.runStop(ctx, victim, idepool.ReasonCapacity, flush)
	return err == nil
}
