// Package health decides whether containers are healthy: every interval it
// probes each live container's route workloads directly (not through a
// router) and checks its agent's heartbeat freshness, counts consecutive
// failed rounds, pushes verdicts to the pool, stops unhealthy warm
// containers (the pool refills) and has unhealthy claimed ones replaced in
// place past a second threshold.
package health

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// Pool is what the monitor needs of the pool (implemented by pool.Manager).
type Pool interface {
	List(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error)
	Profiles() []idepool.Profile
	// SetHealth records a verdict; false when the container is gone.
	SetHealth(id string, h idepool.Health) bool
	Stop(ctx context.Context, id, reason string) (idepool.Container, error)
}

// Replacer replaces a claimed container in place (to be provided by
// pool.Manager): flush its work if the agent can, then bind a new container
// to the same workspace under the same id (or record a redirect), so its
// user is never silently dropped.
type Replacer interface {
	Replace(ctx context.Context, id, reason string) error
}

// Options configure a Monitor. Pool is required.
type Options struct {
	Pool Pool
	// Replacer, when nil, leaves unhealthy claimed containers reported only.
	Replacer Replacer
	// Heartbeats, when nil, skips the agent check.
	Heartbeats Heartbeats
	// Prober defaults to NewHTTPProber(Timeout).
	Prober Prober
	// Events receives EventHealth when a verdict changes. Leave nil when
	// Pool.SetHealth publishes it already (pool.Manager does).
	Events idepool.EventSink
	Clock  idepool.Clock
	Logger *slog.Logger
	// Interval between rounds (HEALTH_CHECK_INTERVAL, default 10 s).
	Interval time.Duration
	// Timeout of one probe (HEALTH_CHECK_TIMEOUT, default 5 s).
	Timeout time.Duration
	// Retries: consecutive failed rounds before unhealthy
	// (HEALTH_CHECK_RETRIES, default 3).
	Retries int
	// ReplaceAfter: consecutive failed rounds before a claimed container is
	// replaced (default 2 × Retries; never below Retries).
	ReplaceAfter int
	// ReplaceBackoff: the least time between two replacement attempts of a
	// container (default 5 × Interval).
	ReplaceBackoff time.Duration
	// HeartbeatTimeout: an agent silent for longer fails the agent check
	// (default 30 s; agents send one every 5 s).
	HeartbeatTimeout time.Duration
	// Concurrency bounds probes in flight (default 16).
	Concurrency int
	// ActionConcurrency bounds stops and replacements in flight (default 4).
	ActionConcurrency int
}

// Monitor is the health checker. CheckOnce is what tests call; Run loops.
type Monitor struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	track   map[string]*track
	acting  map[string]bool // a stop or replacement runs
	actions sync.WaitGroup
	actSem  chan struct{}
}

type track struct {
	status      idepool.HealthStatus
	failures    int
	lastReplace time.Time
	generation  int64
}

// Verdict is one container's result of a round.
type Verdict struct {
	ID      string
	Profile string
	State   idepool.State
	Health  idepool.Health
	// Action is what the monitor started: "", "stop" or "replace".
	Action string
}

// New returns a Monitor.
func New(o Options) *Monitor {
	if o.Pool == nil {
		panic("health: Options.Pool is required")
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 3
	}
	if o.ReplaceAfter <= 0 {
		o.ReplaceAfter = 2 * o.Retries
	}
	o.ReplaceAfter = max(o.ReplaceAfter, o.Retries)
	if o.ReplaceBackoff <= 0 {
		o.ReplaceBackoff = 5 * o.Interval
	}
	if o.HeartbeatTimeout <= 0 {
		o.HeartbeatTimeout = 30 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.ActionConcurrency <= 0 {
		o.ActionConcurrency = 4
	}
	if o.Prober == nil {
		o.Prober = NewHTTPProber(o.Timeout)
	}
	return &Monitor{o: o, log: o.Logger, track: map[string]*track{}, acting: map[string]bool{},
		actSem: make(chan struct{}, o.ActionConcurrency)}
}

// checked reports whether a container in state s is probed: only those
// whose workloads must answer (ready, warm or claimed).
func checked(s idepool.State) bool {
	return s == idepool.StateWarm || s == idepool.StateSyncing || s == idepool.StateRunning
}

type job struct {
	c     int // index into containers
	route string
	ep    string
	path  string
}

// CheckOnce runs one round: probes, verdicts, actions (started in the
// background; Wait waits for them). It returns the verdicts, sorted by id.
func (m *Monitor) CheckOnce(ctx context.Context) ([]Verdict, error) {
	cs, _, err := m.o.Pool.List(ctx, idepool.ContainerFilter{})
	if err != nil {
		return nil, err
	}
	routes := map[string][]idepool.Route{}
	for _, p := range m.o.Pool.Profiles() {
		routes[p.Name] = p.Routes
	}
	live := make(map[string]bool, len(cs))
	var jobs []job
	var probed []idepool.Container
	for _, c := range cs {
		live[c.ID] = true
		if !checked(c.State) {
			continue
		}
		i := len(probed)
		probed = append(probed, c)
		for _, r := range routes[c.Profile] {
			path := r.HealthPath
			if path == "" {
				path = "/"
			}
			jobs = append(jobs, job{c: i, route: r.Name, ep: c.Endpoints[r.Name], path: path})
		}
	}

	results := make([]map[string]string, len(probed))
	for i := range results {
		results[i] = map[string]string{}
	}
	var rmu sync.Mutex
	work := make(chan job)
	var wg sync.WaitGroup
	for range min(m.o.Concurrency, max(len(jobs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				res := "no endpoint"
				if j.ep != "" {
					pctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
					res = describe(m.o.Prober.Probe(pctx, j.ep, j.path))
					cancel()
				}
				rmu.Lock()
				results[j.c][j.route] = res
				rmu.Unlock()
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case work <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	now := m.o.Clock.Now()
	verdicts := make([]Verdict, 0, len(probed))
	for i, c := range probed {
		checks := results[i]
		if m.o.Heartbeats != nil {
			if last, ok := m.o.Heartbeats.LastHeartbeat(c.ID); ok {
				if now.Sub(last) > m.o.HeartbeatTimeout {
					checks["agent"] = "stale"
				} else {
					checks["agent"] = "ok"
				}
			} else {
				checks["agent"] = "unknown"
			}
		}
		verdicts = append(verdicts, m.judge(ctx, c, checks, now))
	}

	m.mu.Lock()
	for id := range m.track {
		if !live[id] {
			delete(m.track, id)
		}
	}
	m.mu.Unlock()
	if r, ok := m.o.Heartbeats.(interface{ Retain(map[string]bool) }); ok {
		r.Retain(live)
	}
	sort.Slice(verdicts, func(i, j int) bool { return verdicts[i].ID < verdicts[j].ID })
	return verdicts, nil
}

// judge turns one container's checks into a verdict and its consequences.
func (m *Monitor) judge(ctx context.Context, c idepool.Container, checks map[string]string, now time.Time) Verdict {
	failed, known := false, false
	for _, v := range checks {
		switch v {
		case "ok":
			known = true
		case "unknown":
		case "no endpoint":
			// Nothing to probe is not a failure of the workload.
		default:
			known, failed = true, true
		}
	}
	m.mu.Lock()
	t := m.track[c.ID]
	if t == nil || t.generation != c.Generation && c.Generation > 0 && t.generation > 0 {
		// New, or claimed again (a replacement in place): start afresh.
		t = &track{status: idepool.HealthUnknown, generation: c.Generation}
		m.track[c.ID] = t
	}
	t.generation = c.Generation
	prev := t.status
	switch {
	case !known:
		// Nothing could be checked: the verdict stays.
	case failed:
		t.failures++
		if t.failures >= m.o.Retries {
			t.status = idepool.HealthUnhealthy
		}
	default:
		t.failures = 0
		t.status = idepool.HealthHealthy
	}
	h := idepool.Health{Status: t.status, LastCheck: now, Checks: checks, ConsecutiveFailures: t.failures}
	v := Verdict{ID: c.ID, Profile: c.Profile, State: c.State, Health: h}
	unhealthy := t.status == idepool.HealthUnhealthy
	busy := m.acting[c.ID]
	replace := false
	if unhealthy && !busy && c.State.Claimed() && m.o.Replacer != nil && t.failures >= m.o.ReplaceAfter &&
		(t.lastReplace.IsZero() || now.Sub(t.lastReplace) >= m.o.ReplaceBackoff) {
		replace = true
		t.lastReplace = now
	}
	stop := unhealthy && !busy && c.State == idepool.StateWarm
	if stop || replace {
		m.acting[c.ID] = true
	}
	m.mu.Unlock()

	m.o.Pool.SetHealth(c.ID, h)
	if prev != t.status {
		lvl := slog.LevelInfo
		if unhealthy {
			lvl = slog.LevelWarn
		}
		m.log.Log(ctx, lvl, "health changed", "container", c.ID, "profile", c.Profile, "state", c.State,
			"from", prev, "to", t.status, "checks", checks)
		if m.o.Events != nil {
			m.o.Events.Publish(idepool.Event{Time: now, Type: idepool.EventHealth, ContainerID: c.ID, Profile: c.Profile,
				State: c.State, Data: map[string]any{"status": string(t.status), "consecutiveFailures": t.failures, "checks": maps.Clone(checks)}})
		}
	}
	switch {
	case stop:
		v.Action = "stop"
		m.act(ctx, c, "stop", func(ctx context.Context) error {
			_, err := m.o.Pool.Stop(ctx, c.ID, idepool.ReasonUnhealthy)
			if idepool.IsNotFound(err) {
				return nil
			}
			return err
		})
	case replace:
		v.Action = "replace"
		m.act(ctx, c, "replace", func(ctx context.Context) error {
			return m.o.Replacer.Replace(ctx, c.ID, idepool.ReasonUnhealthy)
		})
	}
	return v
}

// act runs a stop or replacement in the background, at most
// ActionConcurrency at once; it outlives the round (Wait waits for it).
func (m *Monitor) act(ctx context.Context, c idepool.Container, what string, f func(context.Context) error) {
	m.actions.Add(1)
	go func() {
		defer m.actions.Done()
		defer func() {
			m.mu.Lock()
			delete(m.acting, c.ID)
			m.mu.Unlock()
		}()
		// Not abandoned when the round ends: a started stop or replacement
		// is bounded by the pool's own timeouts.
		m.actSem <- struct{}{}
		defer func() { <-m.actSem }()
		m.log.Warn("unhealthy container: "+what, "container", c.ID, "profile", c.Profile, "state", c.State)
		if err := f(context.WithoutCancel(ctx)); err != nil {
			m.log.Error("unhealthy container: "+what+" failed", "container", c.ID, "err", err)
			return
		}
		if what == "replace" {
			// The replacement (same id, new generation) starts with a
			// clean record.
			m.mu.Lock()
			delete(m.track, c.ID)
			m.mu.Unlock()
		}
	}()
}

// Wait waits for stops and replacements started by past rounds.
func (m *Monitor) Wait() { m.actions.Wait() }

// Run checks every Interval until ctx ends, then waits for actions in
// flight. A round never outlasts Interval + Timeout.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.o.Interval)
	defer t.Stop()
	defer m.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, m.o.Interval+m.o.Timeout)
		if _, err := m.CheckOnce(rctx); err != nil && ctx.Err() == nil {
			m.log.Warn("health round failed", "err", err)
		}
		cancel()
	}
}
