package server

import (
	"context"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/httpapi"
	"github.com/idepool/idepool/pool"
)

// timedOrchestrator also serves the classroom routes (admission queue,
// schedules, pre-assignment, replacements): httpapi finds httpapi.Classroom
// on its Orchestrator. pool's types mirror httpapi's field for field, so
// each converts with a plain conversion.
var _ httpapi.Classroom = (*timedOrchestrator)(nil)

// StartOrQueue is Start that answers a ticket instead of waiting in the
// admission queue (the HTTP answer is then 202).
func (t *timedOrchestrator) StartOrQueue(ctx context.Context, req idepool.StartRequest) (idepool.Claim, *httpapi.QueueTicket, error) {
	t0 := time.Now()
	if err := t.prepareBucket(ctx, req); err != nil {
		return idepool.Claim{}, nil, err
	}
	c, tk, err := t.Manager.StartOrQueue(ctx, req)
	switch {
	case err != nil:
		t.m.ObserveClaim(idepool.ClaimRefused, time.Since(t0))
	case tk == nil:
		t.m.ObserveClaim(c.Kind, time.Since(t0))
	}
	if tk == nil {
		return c, nil, err
	}
	return c, queueTicket(tk), err
}

// queueTicket converts pool's ticket; out of StartOrQueue, whose frame is
// on the stack of every claim, so that the frame stays small.
//
//go:noinline
func queueTicket(tk *pool.Ticket) *httpapi.QueueTicket {
	q := httpapi.QueueTicket(*tk)
	return &q
}

func (t *timedOrchestrator) Ticket(id string) (httpapi.QueueTicket, error) {
	tk, err := t.Manager.Ticket(id)
	return httpapi.QueueTicket(tk), err
}

func (t *timedOrchestrator) Schedules(profile string) ([]httpapi.ScheduleWindow, error) {
	p, err := t.Manager.Policy(profile)
	out := make([]httpapi.ScheduleWindow, 0, len(p.Schedules))
	for _, w := range p.Schedules {
		out = append(out, httpapi.ScheduleWindow(w))
	}
	return out, err
}

func (t *timedOrchestrator) SetSchedules(ctx context.Context, profile string, ws []httpapi.ScheduleWindow) error {
	in := make([]pool.Window, 0, len(ws))
	for _, w := range ws {
		in = append(in, pool.Window(w))
	}
	return t.Manager.SetSchedules(ctx, profile, in)
}

func (t *timedOrchestrator) Prepare(ctx context.Context, r httpapi.PrepareRequest) ([]httpapi.PrepareResult, error) {
	for _, ws := range r.Workspaces {
		if err := t.buckets.ensure(ctx, ws); err != nil {
			return nil, err
		}
	}
	res, err := t.Manager.Prepare(ctx, pool.PrepareRequest(r))
	out := make([]httpapi.PrepareResult, 0, len(res))
	for _, x := range res {
		out = append(out, httpapi.PrepareResult(x))
	}
	return out, err
}

// replacer adapts pool.Manager.Replace to health.Replacer.
type replacer struct{ m *pool.Manager }

func (r replacer) Replace(ctx context.Context, id, reason string) error {
	_, err := r.m.Replace(ctx, id, reason)
	return err
}

// poolPolicies converts the profiles file's classroom settings.
func poolPolicies(cfg config.Config) (map[string]pool.Policy, error) {
	pols, err := cfg.Policies()
	if err != nil {
		return nil, err
	}
	out := make(map[string]pool.Policy, len(pols))
	for name, p := range pols {
		pp := pool.Policy{MaxContainers: p.MaxContainers, MaxPerUser: p.MaxPerUser}
		for _, w := range p.Schedules {
			pp.Schedules = append(pp.Schedules, pool.Window(w))
		}
		if p.Adaptive != nil {
			a := pool.Adaptive(*p.Adaptive)
			pp.Adaptive = &a
		}
		out[name] = pp
	}
	return out, nil
}
