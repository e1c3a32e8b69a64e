package pool

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// reconciler rebuilds the view from the runtime (Recover) and keeps the
// pools at their targets: observe the runtime, Judge each container and Plan
// the pools, then act.
type reconciler struct {
	*core
	recMu sync.Mutex // one reconcile at a time
}

// ReconcileOnce observes the runtime, plans, and executes the plan: it reaps
// dead containers, times out creates, removes orphans, failed, excess and
// expired ones, and creates what the pools lack, in parallel. Safe to call
// concurrently with everything else; calls are serialised.
func (rc *reconciler) ReconcileOnce(ctx context.Context) error {
	_, err := rc.reconcile(ctx)
	return err
}

type stopJob struct {
	e      *entry
	reason string
	flush  bool
}

// work is what one reconcile decided: containers to stop (their stops
// begun under the lock), orphans to remove, and the plan.
type work struct {
	stops    []stopJob
	replaces []replaceJob
	orphans  []string
	acts     Actions
	// inFlight bounds the creates and removes act runs at once.
	inFlight int
}

// reconcile observes the runtime, judges each container and plans the
// pools (under the lock, in memory), then acts outside the lock. It
// returns when the plan wants to run again.
func (rc *reconciler) reconcile(ctx context.Context) (time.Time, error) {
	// Without the runtime's record every claimed container would look like
	// an orphan: recover first, whatever the caller forgot.
	rc.mu.Lock()
	recovered := rc.recovered
	rc.mu.Unlock()
	if !recovered {
		if err := rc.Recover(ctx); err != nil {
			return time.Time{}, err
		}
	}
	rc.recMu.Lock()
	defer rc.recMu.Unlock()

	headroom := rc.headroom()
	insts, listSeq, err := rc.observe(ctx)
	if err != nil {
		return time.Time{}, err
	}
	nodes := rc.observeNodes(ctx)
	w := rc.decide(insts, nodes, listSeq, headroom)
	w.inFlight = inFlight(rc.opts.CreateConcurrency, nodes)
	rc.act(ctx, w)
	return w.acts.WakeAt, nil
}

// headroom asks the admitter, if it can tell, how many more containers of
// each profile fit.
func (rc *reconciler) headroom() map[string]int {
	headroom := map[string]int{}
	if hr, ok := rc.admitter.(HeadroomReporter); ok {
		for _, name := range rc.order {
			headroom[name] = hr.Headroom(rc.profiles[name].p)
		}
	}
	return headroom
}

// observe lists the runtime's containers. listSeq counts the creates
// finished before the list: a container created after it may be missing
// from it without having vanished.
func (rc *reconciler) observe(ctx context.Context) (insts []idepool.Instance, listSeq uint64, err error) {
	rc.mu.Lock()
	listSeq = rc.seq
	rc.mu.Unlock()
	lctx, cancel := rc.rtCtx(ctx, rc.opts.RuntimeTimeout)
	insts, err = rc.rt.List(lctx)
	cancel()
	if err != nil {
		return nil, 0, idepool.WrapError(idepool.ERuntimeUnreachable, err, "list containers")
	}
	return insts, listSeq, nil
}

// observeNodes asks the runtime what its engine says of the nodes, if it
// can tell; a failure is logged and judges no node lost.
func (rc *reconciler) observeNodes(ctx context.Context) []idepool.NodeState {
	f := rc.rt.Capabilities().NodeStates
	if f == nil {
		return nil
	}
	nctx, cancel := rc.rtCtx(ctx, rc.opts.RuntimeTimeout)
	nodes, err := f(nctx)
	cancel()
	if err != nil {
		rc.log.Warn("observe nodes", "err", err)
		return nil
	}
	return nodes
}

// decide records what the runtime said, judges every container (Judge),
// serves and expires the queue, and plans the pools (Plan); the plan's
// removals are begun. All of it in memory.
func (rc *reconciler) decide(insts []idepool.Instance, nodes []idepool.NodeState, listSeq uint64, headroom map[string]int) work {
	now := rc.clock.Now()
	var w work
	var evs []idepool.Event
	rc.mu.Lock()
	w.orphans = rc.applyList(insts, listSeq, &evs)
	views := rc.views()
	MarkNodes(views, nodes)
	if len(nodes) > 0 { // a runtime of several nodes
		MarkSilentNodes(views, now, rc.opts.NodeSilence)
	}
	nodeWake := NodeRecheck(views, now, rc.opts.NodeCheckInterval)
	w.stops, w.replaces = rc.applyVerdicts(Judge(views, now, rc.judgeOptions()), &evs)
	ticketWake := rc.qu.expireTicketsLocked(now, &evs)
	for _, name := range rc.order {
		rc.qu.serveQueueLocked(rc.profiles[name], &evs) // warm ones whose agent came back
	}
	snap := rc.snapshot(now, headroom, &evs)
	rc.mu.Unlock()
	rc.publish(evs)

	w.acts = Plan(snap)
	for _, t := range []time.Time{ticketWake, rc.nextTargetChange(), nodeWake} {
		if !t.IsZero() && (w.acts.WakeAt.IsZero() || t.Before(w.acts.WakeAt)) {
			w.acts.WakeAt = t
		}
	}
	evs = nil
	rc.mu.Lock()
	w.stops = append(w.stops, rc.beginRemoves(w.acts.Removes, &evs)...)
	rc.mu.Unlock()
	rc.publish(evs)
	return w
}

// applyList records the runtime's list: endpoints, nodes, deaths and
// disappearances. It returns the ids nobody knows (orphans). Caller holds
// mu.
func (rc *reconciler) applyList(insts []idepool.Instance, listSeq uint64, evs *[]idepool.Event) (orphans []string) {
	seen := make(map[string]bool, len(insts))
	for _, inst := range insts {
		seen[inst.ID] = true
		e := rc.containers[inst.ID]
		if e == nil {
			// Unknown, or stopped by us (this List may predate the Remove,
			// or a removal after a late create failed): Remove is
			// idempotent, so level-triggered beats clever.
			orphans = append(orphans, inst.ID)
			continue
		}
		if len(inst.Endpoints) > 0 {
			e.c.Endpoints = inst.Endpoints
		}
		if inst.Node != "" {
			e.c.Node = inst.Node
		}
		if inst.Status.Terminal() {
			if imageMissing(inst.Message) && !e.exit.stopping() {
				rc.lacksImage(e, inst.Node, inst.Message, evs)
			}
			rc.died(e, inst.Status, inst.Message, evs)
		}
	}
	for _, e := range rc.containers {
		if !seen[e.c.ID] && e.createDone && e.createdSeq <= listSeq && !e.exit.stopping() {
			e.c.Message = "vanished from the runtime"
			rc.finish(e, idepool.ReasonFailed, evs)
		}
	}
	return orphans
}

// beginRemoves begins the stops the plan asked for, re-checking each: a
// claim may have taken a warm one since the snapshot. Caller holds mu.
func (rc *reconciler) beginRemoves(removes []RemoveAction, evs *[]idepool.Event) []stopJob {
	var stops []stopJob
	for _, r := range removes {
		e := rc.containers[r.ID]
		if e == nil || e.exit.leaving() {
			continue
		}
		switch r.Reason {
		case idepool.ReasonFailed:
			if e.c.State != idepool.StateFailed {
				continue
			}
		default:
			if e.c.State != idepool.StateWarm || e.c.Workspace != nil {
				continue
			}
		}
		stops = append(stops, stopJob{e, r.Reason, rc.beginStop(e, r.Reason, evs)})
	}
	return stops
}

// inFlight is how many creates and removes one reconcile runs at once:
// perNode for each node that takes containers (not down, not drained), or
// perNode alone when the runtime tells of no nodes. Each engine starts its
// own containers, so a cluster starts more at once than one node: on the
// 3-node test cluster, 40 queued starts of a 5 s burst were all ready in
// 18.3 s with 24 in flight against 26.5 s with 8 (raw creates, 32 in
// flight: 18.7 s).
func inFlight(perNode int, nodes []idepool.NodeState) int {
	n := 0
	for _, nd := range nodes {
		if !nd.Down && !nd.Drained {
			n++
		}
	}
	return max(1, perNode) * max(1, n)
}

// act removes orphans, runs the stops and makes the plan's creates, in
// parallel (w.inFlight at a time), and waits for all of them.
func (rc *reconciler) act(ctx context.Context, w work) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, w.inFlight))
	for _, id := range w.orphans {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rc.removeOrphan(ctx, id)
		}()
	}
	for _, s := range w.stops {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := rc.stops.runStop(ctx, s.e, s.reason, s.flush); err != nil {
				rc.log.Warn("reconcile remove", "container", s.e.c.ID, "err", err)
			}
		}()
	}
	for _, r := range w.replaces {
		// In the background: the new claim may wait in the queue.
		rc.goBG(func(ctx context.Context) { rc.replaceStopped(ctx, r) })
	}
	for _, c := range w.acts.Creates {
		rc.creates(ctx, c, sem, &wg)
	}
	wg.Wait()
}

// creates starts c's creates, as sem allows; the first refusal (capacity
// or the profile's maximum) ends the round for the profile.
func (rc *reconciler) creates(ctx context.Context, c CreateAction, sem chan struct{}, wg *sync.WaitGroup) {
	p := rc.profiles[c.Profile].p
	refused := make(chan struct{})
	var once sync.Once
	for i := range c.N {
		select {
		case <-refused:
			return
		case <-ctx.Done():
			return
		case sem <- struct{}{}:
		}
		kind := idepool.ClaimWarm
		if i < c.ForQueue {
			kind = idepool.ClaimCold // serves a waiting start
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := rc.createWarm(ctx, p, kind)
			if errors.Is(err, errRefused) && kind == idepool.ClaimCold && rc.qu.evictOther(ctx, p.Name) {
				err = rc.createWarm(ctx, p, kind)
			}
			if kind == idepool.ClaimCold {
				rc.mu.Lock()
				rc.pressure = errors.Is(err, errRefused)
				rc.mu.Unlock()
			}
			if errors.Is(err, errRefused) || errors.Is(err, errLimited) {
				once.Do(func() { close(refused) })
			}
		}()
	}
}

func (rc *reconciler) judgeOptions() JudgeOptions {
	return JudgeOptions{AdoptGrace: rc.opts.AdoptGrace, CreateTimeout: rc.opts.CreateTimeout}
}

// applyVerdicts carries out Judge's verdicts: failures at once, stops and
// replacements begun here and returned to be run outside the lock. Caller
// holds mu.
func (rc *reconciler) applyVerdicts(vs []Verdict, evs *[]idepool.Event) (stops []stopJob, replaces []replaceJob) {
	for _, v := range vs {
		e := rc.containers[v.ID]
		if e == nil {
			continue
		}
		switch v.Kind {
		case VerdictStop:
			rc.beginStop(e, v.Reason, evs)
			stops = append(stops, stopJob{e, v.Reason, v.Flush})
		case VerdictFail:
			if v.Backoff != "" {
				rc.countFailure(e.c.Profile, v.Backoff)
			}
			rc.fail(e, v.Message, evs)
		case VerdictReplace:
			rc.log.Warn("replacing a container", "container", e.c.ID, "reason", v.Reason, "why", v.Message)
			e.c.Message = v.Message
			replaces = append(replaces, rc.beginReplace(e, v.Reason, evs))
		}
	}
	return stops, replaces
}

// snapshot builds the planner's input; it also recomputes the effective
// targets (publishing changes). Caller holds mu.
func (rc *reconciler) snapshot(now time.Time, headroom map[string]int, evs *[]idepool.Event) Snapshot {
	idx := map[string]int{}
	s := Snapshot{Now: now, Profiles: make([]ProfileSnapshot, 0, len(rc.order))}
	anyQueued := false
	for _, name := range rc.order {
		ps := rc.profiles[name]
		h, ok := headroom[name]
		if !ok {
			h = -1
		}
		if limit := ps.policy.MaxContainers; limit > 0 {
			room := max(limit-rc.live(name), 0)
			if h < 0 || room < h {
				h = room
			}
		}
		res := rc.effectiveTarget(ps, now)
		if res.Target != ps.effective.Target || res.Reason != ps.effective.Reason {
			data := map[string]any{"target": res.Target, "previous": ps.effective.Target, "base": ps.target}
			if res.Window != nil {
				data["window"] = res.Window.String()
			}
			*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventPool, Profile: name, Reason: res.Reason, Data: data})
		}
		ps.effective = res
		anyQueued = anyQueued || len(ps.queue) > 0
		idx[name] = len(s.Profiles)
		s.Profiles = append(s.Profiles, ProfileSnapshot{Profile: name, Target: res.Target, MaxAge: ps.p.MaxAge,
			Headroom: h, Backoff: ps.backoff, Queued: len(ps.queue)})
	}
	if !anyQueued {
		rc.pressure = false
	}
	s.Pressure = rc.pressure
	for _, e := range rc.containers {
		i, ok := idx[e.c.Profile]
		if !ok || e.exit.leaving() {
			continue
		}
		p := &s.Profiles[i]
		switch {
		case e.c.State == idepool.StateFailed:
			p.Failed = append(p.Failed, e.c.ID)
		case e.c.Workspace != nil:
			p.Claimed++
		case e.c.State == idepool.StateWarm:
			p.Warm = append(p.Warm, WarmInfo{ID: e.c.ID, CreatedAt: e.c.CreatedAt})
		case e.inFlight():
			p.InFlight++
		}
	}
	return s
}

type refusedError struct{}

func (refusedError) Error() string { return "refused by admission" }

var errRefused error = refusedError{}

// errLimited: the profile is at its own maximum (no pressure on others).
var errLimited = errors.New("profile at its maximum")

// createWarm creates one container for a pool; kind is ClaimCold when it
// is for a waiting start (admission treats it as a cold start).
func (rc *reconciler) createWarm(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error {
	rc.mu.Lock()
	lerr := rc.profileLimit(rc.profiles[p.Name])
	rc.mu.Unlock()
	if lerr != nil {
		return errLimited
	}
	if rc.admitter != nil {
		if err := rc.admitter.Admit(ctx, p, kind); err != nil {
			rc.mu.Lock()
			rc.profiles[p.Name].lastErr = "refill refused: " + idepool.ErrorMessage(err)
			rc.mu.Unlock()
			return errRefused
		}
	}
	now := rc.clock.Now()
	id := idepool.NewID()
	spec, hash := rc.spec(id, p, nil)
	e := rc.newEntry(idepool.Container{ID: id, Profile: p.Name, State: idepool.StateCreating, CreatedAt: now,
		Health: idepool.Health{Status: idepool.HealthUnknown}}, hash)
	rc.mu.Lock()
	rc.containers[id] = e
	rc.mu.Unlock()
	rc.events.Publish(idepool.Event{Time: now, Type: idepool.EventState, ContainerID: id, Profile: p.Name, State: idepool.StateCreating})
	cctx, cancel := rc.rtCtx(ctx, rc.opts.RuntimeTimeout)
	inst, err := rc.rt.Create(cctx, spec)
	cancel()
	if err != nil {
		rc.cl.createFailed(ctx, e, err)
		return err
	}
	var evs []idepool.Event
	rc.mu.Lock()
	ok := rc.created(e, inst, &evs)
	if ok && e.c.Workspace == nil && e.agent.connected() && e.agent.ready {
		// Its agent said it was ready before Create answered; what waited
		// for the address goes on now.
		(&agentFeed{rc.core}).readyUnclaimedLocked(e, &evs)
	}
	rc.mu.Unlock()
	if !ok {
		rc.cl.removeStale(ctx, id)
		return nil
	}
	rc.publish(evs)
	return nil
}

// removeOrphan removes a managed container nobody knows (left by a crash
// between Create and recording it, or removed from our view by hand).
func (rc *reconciler) removeOrphan(ctx context.Context, id string) {
	rc.mu.Lock()
	_, known := rc.history[id]
	rc.mu.Unlock()
	if !known {
		rc.log.Warn("removing orphan container", "container", id)
	}
	rctx, cancel := rc.rtCtx(ctx, rc.opts.RuntimeTimeout)
	err := rc.rt.Remove(rctx, id)
	cancel()
	if err != nil {
		rc.log.Error("remove orphan", "container", id, "err", err)
		return
	}
	if known {
		return
	}
	rc.events.Publish(idepool.Event{Time: rc.clock.Now(), Type: idepool.EventStopped, ContainerID: id,
		State: idepool.StateStopped, Reason: idepool.ReasonOrphan})
}

// Run reconciles on a ticker, at once after claims, stops, agent reports
// and runtime events, and when the last plan asked to be woken. It returns
// when ctx ends.
func (rc *reconciler) Run(ctx context.Context) error {
	evCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := rc.rt.Events(evCtx)
	ticker := time.NewTicker(rc.opts.ReconcileInterval)
	defer ticker.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// Refill pacing (PaceQuiet): quiet restarts with every claim, refill
	// bounds the wait from the first claim of a burst.
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	var refillBy <-chan time.Time // set while claims come in
	reconcile := true
	for {
		if reconcile {
			quiet.Stop()
			refillBy = nil
			wakeAt, err := rc.reconcile(ctx)
			if err != nil && ctx.Err() == nil {
				rc.log.Warn("reconcile", "err", err)
			}
			timer.Stop()
			if !wakeAt.IsZero() {
				timer.Reset(max(wakeAt.Sub(rc.clock.Now()), 10*time.Millisecond))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-rc.wake:
		case <-timer.C:
		case <-rc.claimed:
			quiet.Reset(rc.opts.PaceQuiet)
			if refillBy == nil {
				refillBy = time.After(rc.opts.PaceMax)
			}
		case <-quiet.C:
			refillBy = nil
		case <-refillBy:
			refillBy = nil
		case ev, ok := <-events:
			if !ok {
				events = nil // the runtime stopped streaming; the ticker still lists
			} else {
				rc.runtimeEvent(ev)
			}
		}
		// While claims come in, everything else waits for their pause (at
		// most PaceMax): each claim's own label write is a runtime event,
		// and reconciling on each would start the refill mid-burst.
		reconcile = refillBy == nil
	}
}

// runtimeEvent applies a runtime hint; the next reconcile re-reads the truth.
func (rc *reconciler) runtimeEvent(ev idepool.RuntimeEvent) {
	var evs []idepool.Event
	rc.mu.Lock()
	if e := rc.containers[ev.ID]; e != nil && !e.exit.stopping() && e.createDone {
		switch {
		case ev.Removed:
			e.c.Message = "removed from the runtime"
			rc.finish(e, idepool.ReasonFailed, &evs)
		case ev.Status.Terminal():
			rc.died(e, ev.Status, "", &evs)
		}
	}
	rc.mu.Unlock()
	rc.publish(evs)
}

// nextTargetChange is the earliest time a pool's target changes by the
// clock alone (a window starts filling or closes).
func (rc *reconciler) nextTargetChange() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var next time.Time
	for _, name := range rc.order {
		if t := rc.profiles[name].effective.NextChange; !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}
