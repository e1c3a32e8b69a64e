// Package idle stops claimed containers nobody uses and recycles old warm
// ones. Decide is the pure rule; Reaper applies it in a loop through the
// pool's List and Stop (whose Stop flushes the workspace first).
package idle

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// Pool is what the reaper needs of the pool (implemented by pool.Manager).
type Pool interface {
	List(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error)
	Profiles() []idepool.Profile
	Stop(ctx context.Context, id, reason string) (idepool.Container, error)
}

// Decision asks to stop one container.
type Decision struct {
	ID      string
	Profile string
	// Reason is idepool.ReasonInactivity or idepool.ReasonMaxAge.
	Reason string
	// Since is the time the rule counts from (last activity, or creation
	// for max-age); Limit the timeout that passed.
	Since time.Time
	Limit time.Duration
}

// Policy tunes Decide.
type Policy struct {
	// DefaultIdleTimeout applies to profiles unknown to the caller (a
	// container whose profile was removed from the configuration); zero
	// means never.
	DefaultIdleTimeout time.Duration
	// SkipMaxAge leaves warm recycling to the pool's planner (which does
	// it too, as part of reconciliation).
	SkipMaxAge bool
}

// LastActive is when a claimed container was last seen used: its newest
// activity, or its claim when it had none since (a user who never typed
// still gets the whole timeout).
func LastActive(c idepool.Container) time.Time {
	t := c.LastActivity
	if c.ClaimedAt.After(t) {
		t = c.ClaimedAt
	}
	if t.IsZero() {
		t = c.CreatedAt
	}
	return t
}

// Decide returns the containers to stop at now, oldest deadline first, and
// the earliest future time at which another would be due (zero: none).
// Claimed containers (syncing or running) idle for their profile's
// IdleTimeout stop for inactivity unless IdleExempt; warm containers never
// stop for inactivity but are recycled after their profile's MaxAge.
// Containers starting, stopping or failed are left to the pool.
func Decide(now time.Time, cs []idepool.Container, profiles map[string]idepool.Profile, pol Policy) ([]Decision, time.Time) {
	var out []Decision
	var next time.Time
	due := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for _, c := range cs {
		p, known := profiles[c.Profile]
		switch {
		case c.State.Claimed():
			if c.IdleExempt {
				continue
			}
			limit := p.IdleTimeout
			if !known {
				limit = pol.DefaultIdleTimeout
			}
			if limit <= 0 {
				continue
			}
			since := LastActive(c)
			if at := since.Add(limit); now.Before(at) {
				due(at)
				continue
			}
			out = append(out, Decision{ID: c.ID, Profile: c.Profile, Reason: idepool.ReasonInactivity, Since: since, Limit: limit})
		case c.State == idepool.StateWarm && c.Workspace == nil:
			if pol.SkipMaxAge || p.MaxAge <= 0 || c.CreatedAt.IsZero() {
				continue
			}
			if at := c.CreatedAt.Add(p.MaxAge); now.Before(at) {
				due(at)
				continue
			}
			out = append(out, Decision{ID: c.ID, Profile: c.Profile, Reason: idepool.ReasonMaxAge, Since: c.CreatedAt, Limit: p.MaxAge})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		ai, aj := out[i].Since.Add(out[i].Limit), out[j].Since.Add(out[j].Limit)
		if !ai.Equal(aj) {
			return ai.Before(aj)
		}
		return out[i].ID < out[j].ID
	})
	return out, next
}

// Options configure a Reaper. Pool is required.
type Options struct {
	Pool   Pool
	Policy Policy
	Clock  idepool.Clock
	Logger *slog.Logger
	// Interval is the longest time between two checks (default 15 s);
	// the reaper also wakes when the next deadline is due.
	Interval time.Duration
	// Concurrency bounds stops in flight (default 4): a stop waits for the
	// agent's flush.
	Concurrency int
	// Timeout bounds one stop (default 2 min).
	Timeout time.Duration
}

// Reaper applies Decide every Interval (and at the next deadline).
type Reaper struct {
	o   Options
	log *slog.Logger
	sem chan struct{}
	wg  sync.WaitGroup

	mu       sync.Mutex
	inFlight map[string]bool
}

// New returns a Reaper.
func New(o Options) *Reaper {
	if o.Pool == nil {
		panic("idle: Options.Pool is required")
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Interval <= 0 {
		o.Interval = 15 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	return &Reaper{o: o, log: o.Logger, sem: make(chan struct{}, o.Concurrency), inFlight: map[string]bool{}}
}

// CheckOnce decides and starts the stops (in the background, at most
// Concurrency at once; Wait waits for them). It returns the decisions it
// started and the next deadline.
func (r *Reaper) CheckOnce(ctx context.Context) ([]Decision, time.Time, error) {
	cs, _, err := r.o.Pool.List(ctx, idepool.ContainerFilter{States: []idepool.State{idepool.StateWarm, idepool.StateSyncing, idepool.StateRunning}})
	if err != nil {
		return nil, time.Time{}, err
	}
	profiles := map[string]idepool.Profile{}
	for _, p := range r.o.Pool.Profiles() {
		profiles[p.Name] = p
	}
	ds, next := Decide(r.o.Clock.Now(), cs, profiles, r.o.Policy)
	var started []Decision
	for _, d := range ds {
		r.mu.Lock()
		busy := r.inFlight[d.ID]
		r.inFlight[d.ID] = true
		r.mu.Unlock()
		if busy {
			continue
		}
		started = append(started, d)
		r.wg.Add(1)
		go r.stop(ctx, d)
	}
	return started, next, nil
}

func (r *Reaper) stop(ctx context.Context, d Decision) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.inFlight, d.ID)
		r.mu.Unlock()
	}()
	r.sem <- struct{}{}
	defer func() { <-r.sem }()
	r.log.Info("stopping container", "container", d.ID, "profile", d.Profile, "reason", d.Reason,
		"since", d.Since, "limit", d.Limit)
	// A started stop is finished even if the loop is cancelled: Stop
	// flushes the user's work, which must not be cut short.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.o.Timeout)
	defer cancel()
	if _, err := r.o.Pool.Stop(sctx, d.ID, d.Reason); err != nil && !idepool.IsNotFound(err) {
		r.log.Error("stop failed", "container", d.ID, "reason", d.Reason, "err", err)
	}
}

// Wait waits for the stops started so far.
func (r *Reaper) Wait() { r.wg.Wait() }

// Run checks every Interval, or sooner when a deadline is due, until ctx
// ends; then it waits for stops in flight.
func (r *Reaper) Run(ctx context.Context) error {
	defer r.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		wait := r.o.Interval
		_, next, err := r.CheckOnce(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("idle check failed", "err", err)
		}
		if !next.IsZero() {
			// Activity may have moved the deadline; a check at it is cheap.
			wait = min(wait, max(next.Sub(r.o.Clock.Now()), time.Second))
		}
		timer.Reset(wait)
	}
}
