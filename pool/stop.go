package pool

import (
	"context"

	"github.com/idepool/idepool"
)

// Stop flushes a container's work (if its agent is connected), removes it
// from the runtime and forgets it; Get still answers for it for a while
// (state stopped). A container that is already gone gives ENotFound. A stop
// racing another stop of the same container waits for that one and returns
// its result; the runtime is asked once.
func (m *Manager) Stop(ctx context.Context, id, reason string) (idepool.Container, error) {
	if reason == "" {
		reason = idepool.ReasonManual
	}
	for range 2 {
		m.mu.Lock()
		e := m.containers[id]
		if e == nil {
			m.mu.Unlock()
			return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
		}
		if done := e.stopDone; done != nil {
			m.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				return idepool.Container{}, ctxError(ctx)
			}
			m.mu.Lock()
			c, gone := m.history[id]
			_, live := m.containers[id]
			m.mu.Unlock()
			if gone && !live {
				return copyContainer(c), nil
			}
			continue // that stop failed; try ours
		}
		var evs []idepool.Event
		flush := m.beginStop(e, reason, &evs)
		m.mu.Unlock()
		m.publish(evs)
		return m.runStop(ctx, e, reason, flush)
	}
	return idepool.Container{}, idepool.Errorf(idepool.EStopFailed, "container %s could not be stopped", id)
}

// runStop flushes and removes a container whose stop began (beginStop).
func (m *Manager) runStop(ctx context.Context, e *entry, reason string, flush bool) (idepool.Container, error) {
	id := e.c.ID
	flushed := false
	if flush && m.agents.Connected(id) {
		fctx, cancel := m.rtCtx(ctx, m.opts.FlushTimeout)
		err := m.agents.Flush(fctx, id)
		cancel()
		flushed = err == nil
		if err != nil {
			// Removal goes on: a stop must end. The agent pushes as it goes,
			// so only the last changes can be missing; say so loudly.
			m.log.Error("flush before stop failed", "container", id, "err", err)
			m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventSyncError, ContainerID: id,
				Profile: e.c.Profile, Reason: "flush", Message: "final flush failed: " + idepool.ErrorMessage(err)})
		}
	}
	if !flushed {
		m.salvageBeforeRemove(ctx, e)
	}
	rctx, cancel := m.rtCtx(ctx, m.opts.RuntimeTimeout)
	err := m.rt.Remove(rctx, id)
	cancel()
	var evs []idepool.Event
	m.mu.Lock()
	done := e.stopDone
	if err != nil {
		e.stopDone = nil
		e.c.StopReason = ""
		m.fail(e, "remove failed: "+idepool.ErrorMessage(err), &evs)
		c := copyContainer(e.c)
		m.mu.Unlock()
		close(done)
		m.publish(evs)
		m.log.Error("remove failed", "container", id, "err", err)
		m.kick()
		return c, idepool.WrapError(idepool.EStopFailed, err, "could not remove container %s", id)
	}
	m.finish(e, reason, &evs)
	c := copyContainer(e.c)
	m.mu.Unlock()
	close(done)
	m.publish(evs)
	m.log.Info("container stopped", "container", id, "profile", c.Profile, "reason", reason)
	m.kick()
	return c, nil
}
