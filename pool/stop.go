package pool

import (
	"context"

	"github.com/idepool/idepool"
)

// stopper stops containers: flush (or salvage), remove, forget.
type stopper struct{ *core }

// Stop flushes a container's work (if its agent is connected), removes it
// from the runtime and forgets it; Get still answers for it for a while
// (state stopped). A container that is already gone gives ENotFound. A stop
// racing another stop of the same container waits for that one and returns
// its result; the runtime is asked once.
func (sp *stopper) Stop(ctx context.Context, id, reason string) (idepool.Container, error) {
	if reason == "" {
		reason = idepool.ReasonManual
	}
	for range 2 {
		sp.mu.Lock()
		e := sp.containers[id]
		if e == nil {
			sp.mu.Unlock()
			return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
		}
		if done := e.exit.done; done != nil {
			sp.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				return idepool.Container{}, ctxError(ctx)
			}
			sp.mu.Lock()
			c, gone := sp.history[id]
			_, live := sp.containers[id]
			sp.mu.Unlock()
			if gone && !live {
				return copyContainer(&c), nil
			}
			continue // that stop failed; try ours
		}
		var evs []idepool.Event
		flush := sp.beginStop(e, reason, &evs)
		sp.mu.Unlock()
		sp.publish(evs)
		return sp.runStop(ctx, e, reason, flush)
	}
	return idepool.Container{}, idepool.Errorf(idepool.EStopFailed, "container %s could not be stopped", id)
}

// runStop flushes and removes a container whose stop began (beginStop).
func (sp *stopper) runStop(ctx context.Context, e *entry, reason string, flush bool) (idepool.Container, error) {
	id := e.c.ID
	flushed := false
	if flush && sp.agents.Connected(id) {
		fctx, cancel := sp.rtCtx(ctx, sp.opts.FlushTimeout)
		err := sp.agents.Flush(fctx, id)
		cancel()
		flushed = err == nil
		if err != nil {
			// Removal goes on: a stop must end. The agent pushes as it goes,
			// so only the last changes can be missing; say so loudly.
			sp.log.Error("flush before stop failed", "container", id, "err", err)
			sp.events.Publish(idepool.Event{Time: sp.clock.Now(), Type: idepool.EventSyncError, ContainerID: id,
				Profile: e.c.Profile, Reason: "flush", Message: "final flush failed: " + idepool.ErrorMessage(err)})
		}
	}
	if !flushed {
		sp.salvageBeforeRemove(ctx, e)
	}
	rctx, cancel := sp.rtCtx(ctx, sp.opts.RuntimeTimeout)
	err := sp.rt.Remove(rctx, id)
	cancel()
	var evs []idepool.Event
	sp.mu.Lock()
	done := e.exit.done
	if err != nil {
		e.exit.done = nil
		e.c.StopReason = ""
		sp.fail(e, "remove failed: "+idepool.ErrorMessage(err), &evs)
		c := copyContainer(&e.c)
		sp.mu.Unlock()
		close(done)
		sp.publish(evs)
		sp.log.Error("remove failed", "container", id, "err", err)
		sp.kick()
		return c, idepool.WrapError(idepool.EStopFailed, err, "could not remove container %s", id)
	}
	sp.finish(e, reason, &evs)
	c := copyContainer(&e.c)
	sp.mu.Unlock()
	close(done)
	sp.publish(evs)
	sp.log.Info("container stopped", "container", id, "profile", c.Profile, "reason", reason)
	sp.kick()
	return c, nil
}
