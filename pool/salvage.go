package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/idepool/idepool"
)

// salvageBeforeRemove runs before the runtime removes a container whose
// work was not flushed (its agent is gone, or the flush failed): where the
// runtime reaches the container's files (Capabilities.Salvage), what the agent
// had not uploaded goes to the workspace first; otherwise, or when that
// fails, an event says which edits may be lost (those after the agent's
// last sync). Warm containers and those whose initial pull failed hold no
// user work and are skipped.
func (sp *stopper) salvageBeforeRemove(ctx context.Context, e *entry) {
	sp.mu.Lock()
	ws := e.c.Workspace
	if ws == nil || e.noFlush {
		sp.mu.Unlock()
		return
	}
	a := idepool.Assignment{Generation: e.c.Generation, Epoch: idepool.EpochOf(e.c.ClaimedAt), Workspace: *ws, UserID: e.c.UserID,
		Credentials: sp.opts.DefaultCredentials, S3Endpoint: sp.opts.S3Endpoint}
	if e.assignment != nil {
		a = *e.assignment // the claim's own credentials, if it brought some
	}
	id, profile, lastSync := e.c.ID, e.c.Profile, e.lastSync
	sp.mu.Unlock()

	ev := idepool.Event{Type: idepool.EventSalvaged, ContainerID: id, Profile: profile}
	if salvage := sp.rt.Capabilities().Salvage; salvage != nil {
		// Stopping what is left (the runtime's grace) and uploading.
		sctx, cancel := sp.rtCtx(ctx, sp.opts.FlushTimeout+sp.opts.RuntimeTimeout)
		res, err := salvage(sctx, id, a)
		cancel()
		if err == nil {
			ev.Time = sp.clock.Now()
			ev.Reason = "salvaged"
			ev.Message = fmt.Sprintf("%d unsynced files saved to the workspace before removal (%d as conflict copies beside newer remote versions), %d failed",
				res.Salvaged(), res.Conflicts, res.Failed)
			ev.Data = map[string]any{"salvaged": res.Salvaged(), "uploaded": res.Uploaded, "conflicts": res.Conflicts,
				"failed": res.Failed, "bytes": res.Bytes}
			if len(res.Paths) > 0 {
				ev.Data["paths"] = res.Paths
			}
			sp.events.Publish(ev)
			return
		}
		ev.Reason = "failed"
		if idepool.ErrorCode(err) == idepool.EUnavailable {
			ev.Reason = "unreachable" // a lost node: not an error of ours
			sp.log.Warn("dead container's files cannot be reached", "container", id, "err", err)
		} else {
			sp.log.Error("salvage before remove failed", "container", id, "err", err)
		}
		ev.Message = idepool.ErrorMessage(err) + "; "
	} else {
		ev.Reason = "unreachable"
		ev.Message = "the runtime cannot reach the container's files; "
	}
	ev.Time = sp.clock.Now()
	ev.Data = map[string]any{"salvaged": 0}
	if lastSync.IsZero() {
		ev.Message += "edits since the container started may be lost"
	} else {
		ev.Data["lastSync"] = lastSync.UTC().Format(time.RFC3339)
		ev.Message += "edits after its last sync at " + lastSync.UTC().Format(time.RFC3339) + " may be lost"
	}
	sp.events.Publish(ev)
}
