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
	req := idepool.StartRequest{Workspace: *e.c.Workspace, Profile: e.c.Profile, UserID: e.c.UserID, IdleExempt: e.c.IdleExempt}
	if a := e.assignment; a != nil {
		req.Credentials, req.VNCPassword = a.Credentials, a.VNCPassword
	}
	flush := m.beginStop(e, reason, &evs)
	m.mu.Unlock()
	m.publish(evs)
	m.log.Warn("replacing a claimed container", "container", id, "reason", reason)
	if _, err := m.runStop(ctx, e, reason, flush); err != nil {
		return idepool.Container{}, err
	}
	claim, err := m.Start(ctx, req)
	if err != nil {
		m.log.Error("replacement start failed", "container", id, "err", err)
		return idepool.Container{}, err
	}
	newID := claim.Container.ID
	m.mu.Lock()
	if _, ok := m.replacedBy[id]; !ok {
		m.replacedIDs = append(m.replacedIDs, id)
	}
	m.replacedBy[id] = newID
	for len(m.replacedIDs) > m.opts.History {
		delete(m.replacedBy, m.replacedIDs[0])
		m.replacedIDs = m.replacedIDs[1:]
	}
	m.mu.Unlock()
	m.log.Info("container replaced", "container", id, "replacement", newID, "kind", claim.Kind)
	m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventClaim, ContainerID: newID,
		Profile: claim.Container.Profile, State: claim.Container.State, Reason: reason,
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
