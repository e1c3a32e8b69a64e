package pool

import (
	"context"

	"github.com/idepool/idepool"
)

// ReasonReplaced is the stop reason of a claimed container replaced in
// place when no other reason is given.
const ReasonReplaced = "replaced"

// Replace swaps a claimed container for a new one bound to the same
// workspace (an unhealthy one, say): the old one's work is flushed if its
// agent answers (bounded by FlushTimeout), it is removed, and a new
// container is claimed for the workspace as a start would (warm, cold, or
// through the queue while ctx allows). Runtimes cannot keep the id, so the
// old id is recorded as replaced: ReplacedBy answers the new id, for the
// API (replacedBy) and the router (a redirect). reason defaults to
// ReasonReplaced; the health checker passes idepool.ReasonUnhealthy.
func (m *Manager) Replace(ctx context.Context, id, reason string) (idepool.Container, error) {
	if reason == "" {
		reason = ReasonReplaced
	}
	var evs []idepool.Event
	m.mu.Lock()
	e := m.containers[id]
	switch {
	case e == nil:
		m.mu.Unlock()
		return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	case e.c.Workspace == nil || !e.c.State.Live() || e.c.State == idepool.StateStopping:
		st := e.c.State
		m.mu.Unlock()
		return idepool.Container{}, idepool.Errorf(idepool.EConflict, "container %s is %s: only a claimed container is replaced", id, st)
	case e.exit.stopping():
		m.mu.Unlock()
		return idepool.Container{}, idepool.Errorf(idepool.EConflict, "container %s is already being stopped", id)
	}
	job := m.beginReplace(e, reason, &evs)
	m.mu.Unlock()
	m.publish(evs)
	m.log.Warn("replacing a claimed container", "container", id, "reason", reason)
	return m.replaceStopped(ctx, job)
}

// replaceJob is a replacement whose stop began (beginReplace).
type replaceJob struct {
	e      *entry
	req    idepool.StartRequest
	reason string
	flush  bool
}

// beginReplace begins the stop of e, claimed, and keeps what its
// replacement's start needs. Caller holds mu and checked that e is claimed
// and not stopping.
func (c *core) beginReplace(e *entry, reason string, evs *[]idepool.Event) replaceJob {
	req := idepool.StartRequest{Workspace: *e.c.Workspace, Profile: e.c.Profile, UserID: e.c.UserID, IdleExempt: e.c.IdleExempt}
	if a := e.assignment; a != nil {
		req.Credentials, req.VNCPassword = a.Credentials, a.VNCPassword
	}
	flush := c.beginStop(e, reason, evs)
	return replaceJob{e: e, req: req, reason: reason, flush: flush}
}

// replaceStopped runs a begun replacement: the old container is flushed
// (if its agent answers) and removed first, so its workspace never has two
// live containers, then a new one is claimed for the workspace and the old
// id is recorded as replaced by it.
func (c *core) replaceStopped(ctx context.Context, j replaceJob) (idepool.Container, error) {
	id := j.e.c.ID
	if _, err := c.stops.runStop(ctx, j.e, j.reason, j.flush); err != nil {
		return idepool.Container{}, err
	}
	claim, err := c.cl.Start(ctx, j.req)
	if err != nil {
		c.log.Error("replacement start failed", "container", id, "err", err)
		c.events.Publish(idepool.Event{Time: c.clock.Now(), Type: idepool.EventRefused, ContainerID: id,
			Profile: j.req.Profile, Reason: j.reason, Message: "no replacement: " + idepool.ErrorMessage(err)})
		return idepool.Container{}, err
	}
	newID := claim.Container.ID
	c.mu.Lock()
	if _, ok := c.replacedBy[id]; !ok {
		c.replacedIDs = append(c.replacedIDs, id)
	}
	c.replacedBy[id] = newID
	for len(c.replacedIDs) > c.opts.History {
		delete(c.replacedBy, c.replacedIDs[0])
		c.replacedIDs = c.replacedIDs[1:]
	}
	c.mu.Unlock()
	c.log.Info("container replaced", "container", id, "replacement", newID, "kind", claim.Kind, "reason", j.reason)
	c.events.Publish(idepool.Event{Time: c.clock.Now(), Type: idepool.EventClaim, ContainerID: newID,
		Profile: claim.Container.Profile, State: claim.Container.State, Reason: j.reason,
		Data: map[string]any{"kind": string(claim.Kind), "replaces": id}})
	return claim.Container, nil
}

// ReplacedBy returns the container that replaced id, following chains of
// replacements (bounded), for GET /api/containers/{id} (replacedBy) and the
// router's redirect.
func (m *Manager) ReplacedBy(id string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.replacedBy[id]
	if !ok {
		return "", false
	}
	for range 16 {
		next, ok := m.replacedBy[cur]
		if !ok {
			break
		}
		cur = next
	}
	return cur, true
}
