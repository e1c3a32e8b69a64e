package pool

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// Agents is the orchestrator's side of the agents' control connections
// (implemented by control.Hub).
type Agents interface {
	// Assign sends an assignment and waits for the agent's ack.
	Assign(ctx context.Context, id string, a idepool.Assignment) error
	// Flush asks the agent to push every pending change and waits for it.
	Flush(ctx context.Context, id string) error
	// Connected reports whether the agent of id has an open connection.
	Connected(id string) bool
}

// Admitter decides whether one more container may be created. kind is
// idepool.ClaimCold for a create serving a waiting start and
// idepool.ClaimWarm for a create that refills a warm pool (which should be
// refused first under pressure). A refusal is an idepool.Error coded
// ECapacity whose Details say why.
type Admitter interface {
	Admit(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error
}

// HeadroomReporter may be implemented by an Admitter: Headroom says how many
// more containers of p fit (-1: no limit), so the planner never asks for
// more creates than capacity admits.
type HeadroomReporter interface {
	Headroom(p idepool.Profile) int
}

// Stop reasons pool adds to idepool's.
const (
	// ReasonDuplicate: two containers claimed one workspace (a crash
	// mid-claim); the older generation is stopped.
	ReasonDuplicate = "duplicate"
	// ReasonBroken: a recovered container whose labels cannot be trusted.
	ReasonBroken = "broken"
)

// Manager is the orchestrator's pool: containers, claims and reconciliation.
// It is the parts below, each in its own file, built on one core:
//
//   - state (state.go): the in-memory view and its one lock, changed only
//     through named transitions;
//   - claimer (claim.go): Start, the hot path, exactly once per workspace;
//   - queue (queue.go): the admission queue of starts waiting for capacity;
//   - preparer (prepare.go): binding containers ahead of their starts;
//   - reconciler (reconcile.go): Recover, and observe → Judge + Plan → act;
//   - agentFeed (agent.go): what the agents report;
//   - stopper (stop.go, salvage.go): flush, remove, forget.
//
// Their exported methods are the Manager's API.
type Manager struct {
	*core
	*claimer
	*queue
	*preparer
	*reconciler
	*agentFeed
	*stopper
}

// core is what every part shares: the state, the runtime and agents, the
// background goroutines, and the other parts (for calls between them).
// Slow steps are claimed first under the state's lock (a pending start per
// workspace, an exit.done per container, an entry registered before
// runtime.Create), so they run exactly once.
type core struct {
	*state
	rt       idepool.Runtime
	agents   Agents
	admitter Admitter
	events   idepool.EventSink
	log      *slog.Logger
	opts     Options

	wake    chan struct{}
	claimed chan struct{} // a warm claim took one: refill soon (PaceQuiet)
	// labels writes the runtime's labels behind the answers.
	labels *labelWriter
	// localLabels: the runtime's labels are a cheap local durable write
	// (Capabilities.LocalLabels): claims record there before answering.
	localLabels bool
	// deliveries are warm claims' assignment deliveries waiting for the
	// claims' pause (PaceQuiet) when claims do not wait for the ack; see
	// paceDeliveries.
	deliveries chan func(context.Context)
	pacer      sync.WaitGroup // paceDeliveries
	bg         sync.WaitGroup
	bgCtx      context.Context
	cancel     context.CancelFunc

	// The parts the others call.
	cl    *claimer
	qu    *queue
	prep  *preparer
	stops *stopper
}

// New checks the options, fills defaults and returns a Manager with no
// containers: call Recover before anything else.
func New(o Options) (*Manager, error) {
	if err := o.withDefaults(); err != nil {
		return nil, err
	}
	c := &core{
		rt: o.Runtime, agents: o.Agents, admitter: o.Admitter, events: o.Events,
		log: o.Logger, opts: o,
		wake:        make(chan struct{}, 1),
		claimed:     make(chan struct{}, 1),
		labels:      newLabelWriter(o.Runtime, o.Logger, o.RuntimeTimeout, o.HoldLabelWrites),
		localLabels: o.Runtime.Capabilities().LocalLabels,
		deliveries:  make(chan func(context.Context), 1024),
	}
	st, err := newState(o.Clock, &c.opts)
	if err != nil {
		return nil, err
	}
	c.state = st
	c.cl, c.qu, c.prep, c.stops = &claimer{c}, &queue{c}, &preparer{c}, &stopper{c}
	m := &Manager{core: c, claimer: c.cl, queue: c.qu, preparer: c.prep, stopper: c.stops,
		reconciler: &reconciler{core: c}, agentFeed: &agentFeed{c}}
	m.bgCtx, m.cancel = context.WithCancel(context.Background())
	m.labels.start(m.bgCtx)
	m.pacer.Add(1)
	go m.paceDeliveries()
	return m, nil
}

// Close stops background work (assignment deliveries, removals started by
// reports) and waits for it, after writing the labels still pending
// (bounded: a claim whose labels are not written is adopted from its
// agent's record by the next run). Containers are left running: they are
// adopted again by the next Recover.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	if !m.opts.HoldLabelWrites {
		ctx, cancel := context.WithTimeout(context.Background(), labelDrainTimeout)
		if err := m.labels.wait(ctx); err != nil {
			m.log.Warn("closing with label writes pending; the agents' records keep those claims", "err", err)
		}
		cancel()
	}
	m.cancel()
	m.pacer.Wait()
	m.labels.workers.Wait()
	m.bg.Wait()
	return nil
}

// labelDrainTimeout bounds Close's wait for pending label writes.
const labelDrainTimeout = 10 * time.Second

// goBG runs f in the background, tracked by Close; after Close it does
// nothing.
func (c *core) goBG(f func(ctx context.Context)) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.bg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.bg.Done()
		f(c.bgCtx)
	}()
}

// goBGLocked is goBG for a caller that holds mu.
func (c *core) goBGLocked(f func(ctx context.Context)) {
	if c.closed {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		f(c.bgCtx)
	}()
}

// becomeWarm moves an unclaimed ready container into the pool; a container
// that becomes warm serves the queue before the pool. Caller holds mu.
func (c *core) becomeWarm(e *entry, evs *[]idepool.Event) {
	if c.markWarm(e, evs) {
		c.qu.serveQueueLocked(c.profiles[e.c.Profile], evs)
		c.kick()
	}
}

// kick wakes Run's loop at once.
func (c *core) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// claimedOne tells Run a warm claim took a container: it refills after
// the burst (PaceQuiet), not during it.
func (c *core) claimedOne() {
	select {
	case c.claimed <- struct{}{}:
	default:
	}
}

func (c *core) publish(evs []idepool.Event) {
	for _, e := range evs {
		c.events.Publish(e)
	}
}

func newToken() (token, hash string) {
	b := make([]byte, 32)
	rand.Read(b) // never fails
	token = hex.EncodeToString(b)
	return token, hashToken(token)
}

func hashToken(t string) string {
	s := sha256.Sum256([]byte(t))
	return hex.EncodeToString(s[:])
}

// jitter spreads retries of many pools and orchestrators: ±20 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

// copyContainer returns a deep copy safe to hand out.
func copyContainer(src *idepool.Container) idepool.Container {
	c := *src // by pointer: a Container is 328 bytes, twice in the frame of every caller by value
	if c.Workspace != nil {
		w := *c.Workspace
		c.Workspace = &w
	}
	c.Endpoints = maps.Clone(c.Endpoints)
	c.Health.Checks = maps.Clone(c.Health.Checks)
	return c
}

// SetHealth records a health verdict (for the health checker); a changed
// status is published as an event.
func (m *Manager) SetHealth(id string, h idepool.Health) bool {
	m.mu.Lock()
	e := m.containers[id]
	if e == nil {
		m.mu.Unlock()
		return false
	}
	changed := e.c.Health.Status != h.Status
	h.Checks = maps.Clone(h.Checks)
	e.c.Health = h
	ev := idepool.Event{Time: m.clock.Now(), Type: idepool.EventHealth, ContainerID: id, Profile: e.c.Profile,
		State: e.c.State, Data: map[string]any{"status": string(h.Status), "consecutiveFailures": h.ConsecutiveFailures}}
	m.mu.Unlock()
	if changed {
		m.events.Publish(ev)
	}
	return true
}

// Pools returns every pool's status, in configuration order.
func (m *Manager) Pools() []idepool.PoolStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]idepool.PoolStatus, 0, len(m.order))
	idx := map[string]int{}
	for _, name := range m.order {
		ps := m.profiles[name]
		idx[name] = len(out)
		// The effective target: schedules and demand move it.
		st := idepool.PoolStatus{Profile: name, Target: m.effectiveTarget(ps, m.clock.Now()).Target, LastError: ps.lastErr}
		if m.clock.Now().Before(ps.backoff.NextCreate) {
			st.BackoffUntil = ps.backoff.NextCreate
		}
		st.NodesLackingImage = ImageProblems(ps.lacking, m.clock.Now())
		out = append(out, st)
	}
	for _, e := range m.containers {
		i, ok := idx[e.c.Profile]
		if !ok {
			continue
		}
		st := &out[i]
		switch {
		case e.c.State == idepool.StateFailed:
			st.Failed++
		case e.c.Workspace != nil && e.c.State.Live():
			st.Claimed++
		case e.c.State == idepool.StateWarm:
			st.Warm++
		case e.c.State == idepool.StateCreating || e.c.State == idepool.StateStarting:
			st.Starting++
		}
	}
	return out
}

// Profiles returns the configured profiles with their current targets.
func (m *Manager) Profiles() []idepool.Profile {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]idepool.Profile, 0, len(m.order))
	for _, name := range m.order {
		ps := m.profiles[name]
		p := ps.p
		p.PoolTarget = ps.target
		p.Routes = slices.Clone(p.Routes)
		out = append(out, p)
	}
	return out
}

// SetTarget changes a pool's target at run time; the reconciler acts at once.
func (m *Manager) SetTarget(ctx context.Context, profile string, n int) error {
	if n < 0 {
		return idepool.Errorf(idepool.EInvalid, "pool target must not be negative, got %d", n)
	}
	m.mu.Lock()
	ps := m.profiles[profile]
	if ps == nil {
		m.mu.Unlock()
		return idepool.Errorf(idepool.EUnknownProfile, "unknown profile %q", profile)
	}
	old := ps.target
	ps.target = n
	m.mu.Unlock()
	if old != n {
		m.log.Info("pool target changed", "profile", profile, "from", old, "to", n)
		m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventPool, Profile: profile,
			Data: map[string]any{"target": n, "previous": old}})
	}
	m.kick()
	return nil
}

// Profile returns the named profile as configured (Profiles has the
// current targets), without taking the pool's lock. The caller must not
// change its slices.
func (c *core) Profile(name string) (idepool.Profile, bool) {
	// No lock: the map and each profileState's p are fixed by New, and
	// every start asks here first — under a burst, c.mu is the hot spot.
	ps := c.profiles[name]
	if ps == nil {
		return idepool.Profile{}, false
	}
	return ps.p, true
}

// profile returns a configured profile by name (default when empty).
func (c *core) profile(name string) (idepool.Profile, error) {
	if name == "" {
		name = idepool.DefaultProfile
	}
	p, ok := c.Profile(name)
	if !ok {
		return idepool.Profile{}, idepool.Errorf(idepool.EUnknownProfile, "unknown profile %q", name)
	}
	return p, nil
}

// spec builds what the runtime is asked to create; it returns the agent
// token's hash.
func (c *core) spec(id string, p idepool.Profile, labels map[string]string) (idepool.ContainerSpec, string) {
	token, hash := newToken()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[idepool.LabelTokenHash] = hash
	env := maps.Clone(c.opts.AgentEnv)
	if env == nil {
		env = map[string]string{}
	}
	env[idepool.EnvAgentURL] = c.opts.AgentURL
	env[idepool.EnvAgentToken] = token
	env[idepool.EnvAgentID] = id
	c.mu.Lock()
	avoid := c.avoidNodes(p.Name)
	c.mu.Unlock()
	return idepool.ContainerSpec{
		ID:         id,
		Profile:    p,
		Labels:     labels,
		Env:        env,
		AvoidNodes: avoid,
	}, hash
}

// rtCtx bounds one runtime call; it outlives a cancelled request so that a
// half-done change is finished or undone, never abandoned.
func (c *core) rtCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
