package pool

import (
	"context"
	"crypto/subtle"
	"slices"
	"time"

	"github.com/idepool/idepool"
)

// agentFeed follows the agents' reports: hellos, readiness, syncs, and
// their connections closing.
type agentFeed struct{ *core }

// VerifyAgent reports whether token is the agent token of container id. The
// token's hash is in the container's labels, so this survives restarts.
func (af *agentFeed) VerifyAgent(id, token string) bool {
	af.mu.Lock()
	e := af.containers[id]
	var want string
	if e != nil {
		want = e.tokenHash
	}
	af.mu.Unlock()
	if want == "" || token == "" {
		return false
	}
	got := hashToken(token)
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// AgentReport consumes one message from an agent (control.Observer). It
// never blocks on the agent: deliveries it triggers run in the background,
// since the caller is the agent's connection.
func (af *agentFeed) AgentReport(r idepool.AgentReport) {
	var evs []idepool.Event
	var deliver *entry
	kick := false
	af.mu.Lock()
	e := af.containers[r.ContainerID]
	if e == nil {
		af.mu.Unlock()
		return
	}
	now := af.clock.Now()
	switch r.Kind {
	case idepool.AgentHello, idepool.AgentReady, idepool.AgentHeartbeat:
		deliver = af.alive(e, r, now, &evs)
	case idepool.AgentSynced:
		af.synced(e, r, now, &evs)
	case idepool.AgentFlushed:
		evs = append(evs, idepool.Event{Time: now, Type: idepool.EventSync, ContainerID: e.c.ID, Profile: e.c.Profile,
			State: e.c.State, Message: "flushed"})
	case idepool.AgentSyncEvent:
		evs = append(evs, af.syncEvent(e, r, now))
	case idepool.AgentGone:
		if e.agent.connected() {
			evs = append(evs, idepool.Event{Time: now, Type: idepool.EventAgent, ContainerID: e.c.ID,
				Profile: e.c.Profile, State: e.c.State, Data: map[string]any{"connected": false}})
		}
		e.agent.lost(now)
		kick = true // its node may be lost: look at once (NodeRecheck)
	}
	af.mu.Unlock()
	if kick {
		af.kick()
	}
	af.publish(evs)
	if deliver != nil {
		af.goBG(func(ctx context.Context) { af.deliver(ctx, deliver) })
	}
}

// alive records a hello, ready or heartbeat: the agent is there, with its
// activity, processes and last sync. It returns e when its assignment must
// be (re)sent. Caller holds mu.
func (af *agentFeed) alive(e *entry, r idepool.AgentReport, now time.Time, evs *[]idepool.Event) *entry {
	if r.Kind == idepool.AgentHello && !e.agent.connected() {
		*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventAgent, ContainerID: e.c.ID,
			Profile: e.c.Profile, State: e.c.State, Data: map[string]any{"connected": true}})
	}
	ready := r.Ready || r.Kind == idepool.AgentReady
	e.agent.up(ready)
	af.reported(e)
	if r.LastActivity.After(e.c.LastActivity) {
		e.c.LastActivity = r.LastActivity
	}
	if r.Processes != nil {
		e.processes = slices.Clone(r.Processes)
	}
	if r.Sync != nil && r.Sync.LastSync.After(e.lastSync) {
		e.lastSync = r.Sync.LastSync
	}
	return af.onAlive(e, r, ready, evs)
}

// synced records the end of a claimed container's initial pull: it runs,
// or, when the pull failed, it fails. Caller holds mu.
func (af *agentFeed) synced(e *entry, r idepool.AgentReport, now time.Time, evs *[]idepool.Event) {
	current := e.c.State == idepool.StateSyncing && (r.Generation == 0 || r.Generation == e.c.Generation)
	if r.Error != "" && current {
		// The initial pull failed: the user would see an empty or partial
		// workspace. Fail it (WaitReady reports the message; the
		// workspace is free for a new start, which pulls again) rather
		// than call it running.
		*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventSyncError, ContainerID: e.c.ID,
			Profile: e.c.Profile, State: e.c.State, Reason: "initial-pull", Message: r.Error})
		e.noFlush = true
		af.fail(e, "initial sync failed: "+r.Error, evs)
		af.kick()
		return
	}
	if current {
		e.assign.synced()
		if e.c.ReadyAt.IsZero() {
			e.c.ReadyAt = now
		}
		af.setState(e, idepool.StateRunning, "", evs)
	}
	*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventSync, ContainerID: e.c.ID, Profile: e.c.Profile,
		State: e.c.State, Message: "synced"})
}

// syncEvent turns an agent's sync event into the pool's event, recording
// its last sync. Caller holds mu.
func (af *agentFeed) syncEvent(e *entry, r idepool.AgentReport, now time.Time) idepool.Event {
	t := idepool.EventSync
	switch r.Event {
	case "conflict":
		t = idepool.EventConflict
	case "error", "limit":
		t = idepool.EventSyncError
	case "remote-reset":
		t = idepool.EventSyncRemoteReset
	case "deletions-held":
		t = idepool.EventSyncDeletionsHeld
	}
	ev := idepool.Event{Time: now, Type: t, ContainerID: e.c.ID, Profile: e.c.Profile, State: e.c.State,
		Reason: r.Event, Message: r.Message}
	if r.Sync != nil {
		if r.Sync.LastSync.After(e.lastSync) {
			e.lastSync = r.Sync.LastSync
		}
		ev.Data = map[string]any{"bytesUp": r.Sync.BytesUp, "bytesDown": r.Sync.BytesDown,
			"conflicts": r.Sync.Conflicts, "errors": r.Sync.Errors, "pending": r.Sync.Pending}
		if r.Sync.DeletionsHeld > 0 {
			ev.Data["deletionsHeld"] = r.Sync.DeletionsHeld
		}
	}
	return ev
}

// onAlive handles an agent that said it is there (hello, ready, heartbeat).
// It returns e when its assignment must be (re)sent. Caller holds mu.
func (af *agentFeed) onAlive(e *entry, r idepool.AgentReport, ready bool, evs *[]idepool.Event) *entry {
	if e.exit.stopping() || e.c.State == idepool.StateFailed {
		return nil
	}
	if e.exit.doomed != "" {
		af.kick() // its stop waited for the agent, to flush first
		return nil
	}
	if e.c.Workspace == nil {
		if r.Workspace != nil && !r.Workspace.IsZero() {
			// Claimed by a run of the orchestrator that crashed after the
			// agent's ack and before the labels: the agent's record is the
			// claim. Anything else (it holds someone's files and
			// credentials) never joins the pool (the original's queue
			// poisoning).
			if why := af.adoptFromAgent(e, r, evs); why != "" {
				af.fail(e, "agent reports a workspace the labels do not record ("+why+")", evs)
				af.kick()
			}
			return nil
		}
		if ready {
			af.readyUnclaimedLocked(e, evs)
		}
		return nil
	}
	// Claimed. Deliver a pending assignment once the agent is ready, and
	// re-send it when the agent lost it (it restarted).
	if r.Kind == idepool.AgentHello && r.Workspace != nil && !r.Workspace.IsZero() &&
		r.Workspace.Key() != e.c.Workspace.Key() && !e.assign.pending() {
		// It holds another workspace's files: never hand it to this one.
		af.fail(e, "agent reports a workspace other than its claim", evs)
		af.kick()
		return nil
	}
	if r.Kind == idepool.AgentHello && !e.assign.pending() {
		same := r.Workspace != nil && r.Workspace.Key() == e.c.Workspace.Key() && r.Generation == e.c.Generation
		if !same {
			e.assign.resend()
		}
	}
	if !e.assign.pending() || e.assign.delivering() || !ready {
		if e.c.State == idepool.StateCreating && r.Kind == idepool.AgentHello {
			af.setState(e, idepool.StateStarting, "", evs)
		}
		return nil
	}
	if e.assignment == nil {
		a := idepool.Assignment{Generation: e.c.Generation, Epoch: idepool.EpochOf(e.c.ClaimedAt), Workspace: *e.c.Workspace, UserID: e.c.UserID,
			Credentials: af.opts.DefaultCredentials, S3Endpoint: af.opts.S3Endpoint}
		e.assignment = &a
	}
	e.assign.startDelivery()
	af.setState(e, idepool.StateSyncing, "", evs)
	return e
}

// adoptFromAgent takes the claim an agent reports (its persisted record)
// for a recovered container whose labels do not record it, and queues the
// labels. why says why it cannot. Caller holds mu.
func (af *agentFeed) adoptFromAgent(e *entry, r idepool.AgentReport, evs *[]idepool.Event) (why string) {
	ws := *r.Workspace
	switch {
	case !e.recovered || r.Kind != idepool.AgentHello:
		return "not a recovered container's hello"
	case r.Claim == nil || r.Generation < 1:
		return "no claim record"
	case ws.Validate() != nil:
		return "invalid workspace"
	}
	now := af.clock.Now()
	ws.Prefix = idepool.NormalizePrefix(ws.Prefix)
	e.c.Workspace = &ws
	e.c.Generation = r.Generation
	e.c.UserID = r.Claim.UserID
	e.c.ClaimedAt = r.Claim.ClaimedAt()
	e.c.PreWarmed = r.Claim.PreWarmed
	e.c.IdleExempt = r.Claim.IdleExempt
	e.c.LastActivity = now
	af.removeWarm(e)
	af.setState(e, idepool.StateRunning, "", evs)
	loser := af.mapClaim(e)
	af.log.Warn("claim adopted from its agent's record (its labels were not written before a restart)",
		"container", e.c.ID, "generation", e.c.Generation, "bucket", ws.Bucket, "prefix", ws.Prefix)
	if loser != nil {
		af.log.Warn("two containers claim one workspace; stopping the older claim", "container", loser.c.ID, "kept", af.byWorkspace[ws.Key()])
		af.kick()
	}
	*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventClaim, ContainerID: e.c.ID, Profile: e.c.Profile,
		State: e.c.State, Reason: "adopted", Message: "claim adopted from the agent's record",
		Data: map[string]any{"kind": string(idepool.ClaimReused), "generation": e.c.Generation}})
	af.labels.queue(e.c.ID, claimLabels(ws, e.c.UserID, e.c.Generation, e.c.PreWarmed, e.c.ClaimedAt, e.c.IdleExempt))
	return ""
}

// deliver sends a claimed container's assignment to its agent. On failure
// the container waits for its agent's next hello (or CreateTimeout).
func (af *agentFeed) deliver(ctx context.Context, e *entry) {
	af.mu.Lock()
	id, a := e.c.ID, *e.assignment
	af.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, af.opts.AssignTimeout)
	err := af.agents.Assign(actx, id, a)
	cancel()
	var evs []idepool.Event
	af.mu.Lock()
	e.assign.delivered(err == nil)
	if err != nil && e.c.State == idepool.StateSyncing && !e.exit.stopping() {
		af.setState(e, idepool.StateStarting, "", &evs)
	}
	af.mu.Unlock()
	af.publish(evs)
	if err != nil {
		af.log.Warn("assignment not delivered; waiting for the agent", "container", id, "err", err)
	} else {
		af.log.Info("assignment delivered", "container", id, "generation", a.Generation)
	}
}

// readyUnclaimedLocked moves a ready unclaimed container towards the pool:
// once its address is known (a Kubernetes pod's IP comes after Create
// returned: its agent can say hello before the pool has seen it) and the
// external router routes it. A claim must never find a warm container the
// router cannot reach yet. Caller holds mu.
func (af *agentFeed) readyUnclaimedLocked(e *entry, evs *[]idepool.Event) {
	if len(e.c.Endpoints) == 0 && len(af.profiles[e.c.Profile].p.Routes) > 0 {
		if e.createDone { // else Create's answer brings them (reconciler.create)
			af.resolveLocked(e)
		}
		return
	}
	if af.opts.RouteGate != nil && e.gate != gateRouted {
		af.gateLocked(e)
		return
	}
	af.becomeWarm(e, evs)
}

// resolveLocked asks the runtime, in the background, for the endpoints of
// a ready container that has none yet, then lets it go on to the pool.
// Caller holds mu.
func (af *agentFeed) resolveLocked(e *entry) {
	if e.resolving {
		return
	}
	e.resolving = true
	id := e.c.ID
	af.goBGLocked(func(ctx context.Context) {
		deadline := af.clock.Now().Add(af.opts.CreateTimeout)
		delay := 50 * time.Millisecond
		for {
			ictx, cancel := af.rtCtx(ctx, af.opts.RuntimeTimeout)
			inst, err := af.rt.Inspect(ictx, id)
			cancel()
			if err == nil && len(inst.Endpoints) > 0 {
				var evs []idepool.Event
				af.mu.Lock()
				e.resolving = false
				if len(e.c.Endpoints) == 0 {
					e.c.Endpoints = inst.Endpoints
				}
				if e.c.Workspace == nil && e.agent.connected() && e.agent.ready {
					af.readyUnclaimedLocked(e, &evs)
				}
				af.mu.Unlock()
				af.publish(evs)
				af.kick()
				return
			}
			if ctx.Err() != nil || af.clock.Now().After(deadline) {
				// The create timeout fails it (Judge) if it never gets one.
				af.mu.Lock()
				e.resolving = false
				af.mu.Unlock()
				return
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			delay = min(delay*2, 500*time.Millisecond)
		}
	})
}

// gateLocked waits, in the background, for the external router to route a
// ready container, then lets it join the pool. Caller holds mu.
func (af *agentFeed) gateLocked(e *entry) {
	if e.gate == gateProbing {
		return
	}
	e.gate = gateProbing
	c := copyContainer(&e.c)
	af.goBGLocked(func(ctx context.Context) {
		deadline := af.clock.Now().Add(af.opts.CreateTimeout)
		delay := 100 * time.Millisecond
		for {
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := af.opts.RouteGate(gctx, c)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil || af.clock.Now().After(deadline) {
				var evs []idepool.Event
				af.mu.Lock()
				e.gate = gateNone
				af.fail(e, "the router never routed it: "+err.Error(), &evs)
				af.mu.Unlock()
				af.publish(evs)
				af.kick()
				return
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			// Capped low: a route appears within the router's refresh
			// (Traefik's 2 s), and a probe that backed off to 2 s left
			// refills ~1.5 s behind a raw create (BenchmarkClusterRefill).
			delay = min(delay*2, 250*time.Millisecond)
		}
		var evs []idepool.Event
		af.mu.Lock()
		e.gate = gateRouted
		af.becomeWarm(e, &evs)
		af.mu.Unlock()
		af.publish(evs)
		af.kick()
	})
}
