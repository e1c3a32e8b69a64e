package pool

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/idepool/idepool"
)

// Recover rebuilds the view from the runtime's labels; call it once, before
// Run and before serving. Containers recorded as claimed stay claimed to
// their workspace; unclaimed ones wait for their agent's hello before they
// rejoin the pool; what cannot be trusted is removed.
func (rc *reconciler) Recover(ctx context.Context) error {
	rc.recMu.Lock() // not while a reconcile reads the runtime
	defer rc.recMu.Unlock()
	rctx, cancel := rc.rtCtx(ctx, rc.opts.RuntimeTimeout)
	insts, err := rc.rt.Recover(rctx)
	cancel()
	if err != nil {
		return idepool.WrapError(idepool.ERuntimeUnreachable, err, "recover containers")
	}
	now := rc.clock.Now()
	var broken []unadoptable
	claimed, warm := 0, 0
	rc.mu.Lock()
	for _, inst := range insts {
		if rc.containers[inst.ID] != nil {
			continue
		}
		e, bad := rc.adoptLocked(inst, now)
		switch {
		case e == nil:
			broken = append(broken, bad)
		case e.c.Workspace == nil:
			warm++
		default:
			claimed++
		}
	}
	rc.recovered = true
	if rc.adopting > 0 {
		// Starts wait for these agents' hellos (bounded by AdoptWait).
		rc.settled = make(chan struct{})
		settled := rc.settled
		rc.goBGLocked(func(ctx context.Context) {
			t := time.NewTimer(rc.opts.AdoptWait)
			defer t.Stop()
			select {
			case <-settled:
				return
			case <-ctx.Done():
			case <-t.C:
				rc.log.Warn("starts resume with agents still silent since the restart", "silent", rc.adoptingCount())
			}
			rc.mu.Lock()
			if rc.settled == settled {
				rc.settle()
			}
			rc.mu.Unlock()
		})
	}
	rc.mu.Unlock()
	rc.publish(rc.removeUnadoptable(ctx, broken))
	rc.log.Info("recovered containers", "claimed", claimed, "unclaimed", warm, "removed", len(broken))
	rc.kick()
	return nil
}

// unadoptable is a recovered container whose labels cannot be trusted.
type unadoptable struct {
	c      idepool.Container
	reason string
}

// adoptLocked takes one recovered container into the view, or says why it
// cannot (e nil). A crash mid-claim can leave two containers for one
// workspace: the newest claim is kept, the other doomed to stop once its
// agent has flushed. Caller holds mu.
func (rc *reconciler) adoptLocked(inst idepool.Instance, now time.Time) (*entry, unadoptable) {
	c, hash, why := rc.fromLabels(inst, now)
	if why != "" {
		c.Message = why
		reason := ReasonBroken
		if inst.Status.Terminal() {
			reason = idepool.ReasonFailed
		}
		return nil, unadoptable{c, reason}
	}
	e := rc.newEntry(c, hash)
	if t, err := time.Parse(time.RFC3339Nano, inst.Labels[LabelPreparedUntil]); err == nil && c.Workspace != nil {
		e.preparedUntil = t
		e.c.IdleExempt = true
	}
	e.recovered = true
	e.createDone = true
	e.agent.await(now.Add(rc.opts.AdoptGrace))
	rc.containers[c.ID] = e
	if c.Workspace == nil {
		e.unreported = true
		rc.adopting++
		return e, unadoptable{}
	}
	if loser := rc.mapClaim(e); loser != nil {
		rc.log.Warn("two containers claim one workspace; stopping the older claim",
			"container", loser.c.ID, "kept", rc.byWorkspace[c.Workspace.Key()])
	}
	return e, unadoptable{}
}

// adoptingCount is how many recovered agents are still silent.
func (rc *reconciler) adoptingCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.adopting
}

// removeUnadoptable removes what Recover could not adopt and remembers it
// as stopped; a failed removal is left to the reconciler's orphan sweep.
func (rc *reconciler) removeUnadoptable(ctx context.Context, broken []unadoptable) []idepool.Event {
	var evs []idepool.Event
	for _, b := range broken {
		rc.log.Warn("removing a container that cannot be adopted", "container", b.c.ID, "why", b.c.Message)
		rctx, cancel := rc.rtCtx(ctx, rc.opts.RuntimeTimeout)
		err := rc.rt.Remove(rctx, b.c.ID)
		cancel()
		if err != nil {
			rc.log.Error("remove unadoptable container", "container", b.c.ID, "err", err)
			continue
		}
		b.c.State = idepool.StateStopped
		b.c.StopReason = b.reason
		b.c.StoppedAt = rc.clock.Now()
		rc.mu.Lock()
		rc.remember(b.c)
		rc.mu.Unlock()
		evs = append(evs, idepool.Event{Time: b.c.StoppedAt, Type: idepool.EventStopped, ContainerID: b.c.ID,
			Profile: b.c.Profile, State: idepool.StateStopped, Reason: b.reason, Message: b.c.Message})
	}
	return evs
}

// fromLabels rebuilds a container from its runtime record; why says what
// makes it unadoptable. Caller holds mu (for the profiles).
func (rc *reconciler) fromLabels(inst idepool.Instance, now time.Time) (c idepool.Container, hash, why string) {
	l := inst.Labels
	c = idepool.Container{ID: inst.ID, Profile: l[idepool.LabelProfile], CreatedAt: inst.CreatedAt,
		Endpoints: inst.Endpoints, Node: inst.Node, Health: idepool.Health{Status: idepool.HealthUnknown}, LastActivity: now}
	if c.CreatedAt.IsZero() {
		c.CreatedAt, _ = time.Parse(time.RFC3339Nano, l[idepool.LabelCreated])
	}
	hash = l[idepool.LabelTokenHash]
	switch {
	case !idepool.ValidID(inst.ID) || l[idepool.LabelID] != inst.ID:
		return c, "", "id label missing or wrong"
	case rc.profiles[c.Profile] == nil:
		return c, "", fmt.Sprintf("unknown profile %q", c.Profile)
	case len(hash) != 64:
		return c, "", "agent token hash label missing"
	case inst.Status.Terminal():
		return c, "", "runtime status " + string(inst.Status) + " " + inst.Message
	case c.CreatedAt.IsZero():
		return c, "", "created time missing"
	}
	ws, claimed := idepool.WorkspaceFromLabels(l)
	if !claimed {
		c.State = idepool.StateStarting
		return c, hash, ""
	}
	if err := ws.Validate(); err != nil {
		return c, "", "workspace labels invalid: " + idepool.ErrorMessage(err)
	}
	gen, err := strconv.ParseInt(l[idepool.LabelGeneration], 10, 64)
	if err != nil || gen < 1 {
		return c, "", "generation label invalid"
	}
	ws.Prefix = idepool.NormalizePrefix(ws.Prefix)
	c.Workspace = &ws
	c.Generation = gen
	c.UserID = l[idepool.LabelUser]
	c.PreWarmed = l[idepool.LabelPreWarmed] == "true"
	c.IdleExempt = l[idepool.LabelIdleExempt] == "true"
	c.ClaimedAt, _ = time.Parse(time.RFC3339Nano, l[idepool.LabelClaimed])
	c.State = idepool.StateRunning
	return c, hash, ""
}

// newerClaim reports whether a's claim is newer than b's.
func newerClaim(a, b idepool.Container) bool {
	if a.Generation != b.Generation {
		return a.Generation > b.Generation
	}
	if !a.ClaimedAt.Equal(b.ClaimedAt) {
		return a.ClaimedAt.After(b.ClaimedAt)
	}
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}
