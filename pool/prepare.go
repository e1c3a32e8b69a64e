package pool

import (
	"context"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// preparer binds containers to workspaces ahead of their starts.
type preparer struct{ *core }

// LabelPreparedUntil records a pre-assignment's expiry (RFC 3339) in the
// runtime, so that a restart keeps it; a start that takes the container
// deletes it.
const LabelPreparedUntil = "idepool.prepared-until"

// ReasonPrepareExpired stops a prepared container no start took in time.
// It is never handed back to the pool: it pulled someone's files.
const ReasonPrepareExpired = "prepare-expired"

// Prepare limits.
const (
	MaxPrepare    = 1000
	MaxPrepareTTL = 24 * time.Hour
)

// PrepareRequest binds containers to workspaces ahead of their starts.
type PrepareRequest struct {
	Profile    string
	Workspaces []idepool.Workspace
	// Credentials for every workspace; zero means the orchestrator's own.
	// A later start's credentials are not sent again: the agent keeps these.
	Credentials idepool.Credentials
	// ExpiresAt: a prepared container no start took by then is stopped.
	ExpiresAt time.Time
}

// Prepare statuses.
const (
	PrepareBound    = "prepared" // a container was bound and pulls the files
	PrepareExisting = "existing" // the workspace already had a live container
	PrepareFailed   = "failed"   // see Code and Error
)

// PrepareResult is what became of one workspace of a Prepare.
type PrepareResult struct {
	Workspace   idepool.Workspace `json:"workspace"`
	Status      string            `json:"status"`
	ContainerID string            `json:"containerId,omitempty"`
	State       idepool.State     `json:"state,omitempty"`
	// Kind says how the container was found: warm, cold or reused.
	Kind  idepool.ClaimKind `json:"kind,omitempty"`
	Code  idepool.Code      `json:"code,omitempty"`
	Error string            `json:"error,omitempty"`
}

// Prepare binds a container to each workspace before anyone starts it (a
// class about to begin): warm ones first, else cold creates if capacity
// admits; the agents pull the files at once. The start that later comes for
// such a workspace returns that container (Kind prepared), already synced.
// Prepared containers nobody started by ExpiresAt are stopped, never handed
// back to the pool (they hold someone's files); the pool refills instead.
// It never waits in the admission queue and never takes a container from
// starts waiting there. Results are in the order of req.Workspaces.
func (pr *preparer) Prepare(ctx context.Context, req PrepareRequest) ([]PrepareResult, error) {
	p, err := pr.profile(req.Profile)
	if err != nil {
		return nil, err
	}
	now := pr.clock.Now()
	switch {
	case len(req.Workspaces) == 0:
		return nil, idepool.Errorf(idepool.EInvalid, "workspaces: at least one is needed")
	case len(req.Workspaces) > MaxPrepare:
		return nil, idepool.Errorf(idepool.EInvalid, "workspaces: at most %d at a time", MaxPrepare)
	case !req.ExpiresAt.After(now) || req.ExpiresAt.Sub(now) > MaxPrepareTTL:
		return nil, idepool.Errorf(idepool.EInvalid, "expiry must be in the future and at most %s away", MaxPrepareTTL)
	}
	out := make([]PrepareResult, len(req.Workspaces))
	var wg sync.WaitGroup
	sem := make(chan struct{}, pr.opts.CreateConcurrency)
	for i, ws := range req.Workspaces {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = pr.prepareOne(ctx, p, ws, req)
		}()
	}
	wg.Wait()
	return out, nil
}

func (pr *preparer) prepareOne(ctx context.Context, p idepool.Profile, ws idepool.Workspace, req PrepareRequest) PrepareResult {
	res := PrepareResult{Workspace: ws}
	failed := func(err error) PrepareResult {
		res.Status, res.Code, res.Error = PrepareFailed, idepool.ErrorCode(err), idepool.ErrorMessage(err)
		return res
	}
	claim, _, err := pr.cl.startOrQueue(ctx, idepool.StartRequest{Workspace: ws, Profile: p.Name, Credentials: req.Credentials}, true)
	if err != nil {
		return failed(err)
	}
	c := claim.Container
	res.ContainerID, res.State, res.Kind = c.ID, c.State, claim.Kind
	if claim.Kind == idepool.ClaimReused || claim.Kind == ClaimPrepared {
		res.Status = PrepareExisting
		return res
	}
	pr.mu.Lock()
	e := pr.containers[c.ID]
	ok := e != nil && !e.exit.stopping() && e.c.State.Live()
	if ok {
		e.preparedUntil = req.ExpiresAt
		e.c.IdleExempt = true // nobody uses it yet: never idle-stopped before its start
	}
	pr.mu.Unlock()
	if !ok {
		return failed(idepool.Errorf(idepool.EStartFailed, "container %s stopped while being prepared", c.ID))
	}
	// Behind the answer, like the claim's: without the label a restart
	// keeps it until its idle timeout, still usable.
	pr.labels.queue(c.ID, map[string]string{LabelPreparedUntil: req.ExpiresAt.UTC().Format(time.RFC3339Nano)})
	res.Status = PrepareBound
	pr.events.Publish(idepool.Event{Time: pr.clock.Now(), Type: idepool.EventClaim, ContainerID: c.ID, Profile: p.Name,
		State: c.State, Reason: "prepared", Data: map[string]any{"kind": string(claim.Kind), "prepared": true,
			"expiresAt": req.ExpiresAt.UTC().Format(time.RFC3339)}})
	return res
}

// takePreparedLocked hands a prepared container to the start that came for
// its workspace. The runtime record is updated behind the answer.
// Caller holds mu.
func (pr *preparer) takePreparedLocked(e *entry, req idepool.StartRequest) idepool.ClaimKind {
	now := pr.clock.Now()
	e.preparedUntil = time.Time{}
	if req.UserID != "" {
		e.c.UserID = req.UserID
	}
	e.c.IdleExempt = req.IdleExempt
	e.c.ClaimedAt = now
	e.c.LastActivity = now
	if ps := pr.profiles[e.c.Profile]; ps != nil {
		ps.claimRate.add(now, pr.opts.ClaimRateWindow)
	}
	labels := map[string]string{LabelPreparedUntil: "", idepool.LabelUser: e.c.UserID,
		idepool.LabelClaimed: now.UTC().Format(time.RFC3339Nano), idepool.LabelIdleExempt: ""}
	if req.IdleExempt {
		labels[idepool.LabelIdleExempt] = "true"
	}
	pr.labels.queue(e.c.ID, labels)
	return ClaimPrepared
}
