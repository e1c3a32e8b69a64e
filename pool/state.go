package pool

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// state is the pool's in-memory view and its one lock: the containers, the
// workspaces bound to them, the starts in progress, the warm lists, the
// admission queues and the history. Its methods are the named transitions
// (take, bind, markWarm, fail, beginStop, finish) and the queries the other
// parts ask; every unexported method expects s.mu held, the exported ones
// take it. No runtime or agent call is ever made while holding s.mu.
//
// The parts built on it — the claim path (claim.go), the admission queue
// (queue.go), pre-assignment (prepare.go), the reconciler (reconcile.go),
// the agents' feed (agent.go) and stops (stop.go) — change it only through
// these transitions, each under one short hold of s.mu.
type state struct {
	clock idepool.Clock
	opts  *Options // read only after New

	mu          sync.Mutex
	profiles    map[string]*profileState // fixed keys after New
	order       []string                 // profile names, in configuration order
	containers  map[string]*entry
	byWorkspace map[string]string     // workspace key → container id
	pending     map[string]*startCall // workspace key → start in progress
	history     map[string]idepool.Container
	historyIDs  []string // FIFO of history keys
	seq         uint64   // counts finished creates, see entry.createdSeq
	closed      bool
	recovered   bool // Recover ran
	// adopting counts recovered unclaimed containers whose agent has not
	// reported yet: one may hold a claim the labels do not record (the
	// orchestrator crashed before writing them). settled is closed once
	// none is left, or AdoptWait after Recover; starts wait for it.
	adopting int
	settled  chan struct{}

	tickets     map[string]*ticket // queued and recently finished tickets
	ticketIDs   []string           // FIFO of finished ticket ids (bounded)
	replacedBy  map[string]string  // old container id → its replacement
	replacedIDs []string           // FIFO of replacedBy keys (bounded)
	pressure    bool               // a queued start was refused by admission
	ticketSeq   uint64
}

// profileState is one profile's part of the state.
type profileState struct {
	p       idepool.Profile
	target  int
	warm    []string // warm ids, oldest ready first
	backoff Backoff
	lastErr string

	policy    Policy
	queue     []*ticket // waiting starts, oldest first
	claimRate rateEWMA
	// createDur is the smoothed time from create to warm; zero until one
	// was measured.
	createDur time.Duration
	effective TargetResult // the last effective target computed
	// lacking: nodes where the profile's image was missing, by node.
	lacking map[string]idepool.NodeImageProblem
}

// newState is the empty view of opts' profiles and policies.
func newState(clock idepool.Clock, opts *Options) (*state, error) {
	s := &state{clock: clock, opts: opts,
		profiles:    map[string]*profileState{},
		containers:  map[string]*entry{},
		byWorkspace: map[string]string{},
		pending:     map[string]*startCall{},
		history:     map[string]idepool.Container{},
		tickets:     map[string]*ticket{},
		replacedBy:  map[string]string{},
		settled:     make(chan struct{}),
	}
	close(s.settled) // nothing to adopt until Recover finds some
	for _, p := range opts.Profiles {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		if s.profiles[p.Name] != nil {
			return nil, idepool.Errorf(idepool.EMisconfigured, "pool: profile %q listed twice", p.Name)
		}
		p.Routes = slices.Clone(p.Routes)
		s.profiles[p.Name] = &profileState{p: p, target: p.PoolTarget, lacking: map[string]idepool.NodeImageProblem{}}
		s.order = append(s.order, p.Name)
	}
	for name, pol := range opts.Policies {
		ps := s.profiles[name]
		if ps == nil {
			return nil, idepool.Errorf(idepool.EMisconfigured, "pool: policy for unknown profile %q", name)
		}
		if err := pol.Validate(); err != nil {
			return nil, idepool.WrapError(idepool.EMisconfigured, err, "pool: profile %s: %s", name, idepool.ErrorMessage(err))
		}
		ps.policy = clonePolicy(pol)
	}
	return s, nil
}

// Transitions. Each expects s.mu held and collects its events in evs for
// the caller to publish after unlocking.

// newEntry is a container about to be created (or just recovered); the
// caller registers it in s.containers.
func (s *state) newEntry(c idepool.Container, hash string) *entry {
	return &entry{c: c, tokenHash: hash, changed: make(chan struct{}), startedAt: s.clock.Now()}
}

// take takes the oldest claimable warm container of ps out of
// the pool, or nil.
func (s *state) take(ps *profileState) *entry {
	for i, id := range ps.warm {
		c := s.containers[id]
		if c != nil && c.c.State == idepool.StateWarm && c.agent.connected() && !c.exit.leaving() {
			if i == 0 {
				ps.warm = ps.warm[1:]
			} else {
				ps.warm = slices.Delete(ps.warm, i, i+1)
			}
			return c
		}
	}
	return nil
}

// bind claims warm container e for req: it is the workspace's from
// now on. The assignment still has to be delivered (completeWarm). Caller
// holds s.mu.
func (s *state) bind(e *entry, req idepool.StartRequest, now time.Time, evs *[]idepool.Event) idepool.Assignment {
	ws := req.Workspace
	e.c.Generation++
	a := s.assignment(req, e.c.Generation, now)
	a.PreWarmed = true
	e.assignment = &a
	e.assign = assignDelivering // this start delivers it, not a heartbeat
	e.c.Workspace = &ws
	e.c.UserID = req.UserID
	e.c.ClaimedAt = now
	e.c.PreWarmed = true
	e.c.IdleExempt = req.IdleExempt
	e.c.LastActivity = now
	s.byWorkspace[ws.Key()] = e.c.ID
	s.setState(e, idepool.StateSyncing, "", evs)
	if ps := s.profiles[e.c.Profile]; ps != nil {
		ps.claimRate.add(now, s.opts.ClaimRateWindow)
	}
	return a
}

// created records a successful runtime.Create. It returns false when the
// container was stopped and forgotten while being created: the caller
// removes it (removeStale).
func (s *state) created(e *entry, inst idepool.Instance, evs *[]idepool.Event) bool {
	if s.containers[e.c.ID] != e {
		return false
	}
	s.seq++
	e.createDone = true
	e.createdSeq = s.seq
	if len(inst.Endpoints) > 0 {
		e.c.Endpoints = inst.Endpoints
	}
	if inst.Node != "" {
		e.c.Node = inst.Node
	}
	// The agent may have said hello before Create returned.
	if e.c.State == idepool.StateCreating {
		s.setState(e, idepool.StateStarting, "", evs)
	}
	return true
}

// markWarm moves an unclaimed ready container into the pool; it reports
// whether it did (then the queue is served first: becomeWarm).
func (s *state) markWarm(e *entry, evs *[]idepool.Event) bool {
	if e.c.Workspace != nil || e.exit.leaving() {
		return false
	}
	if e.c.State != idepool.StateCreating && e.c.State != idepool.StateStarting {
		return false
	}
	now := s.clock.Now()
	e.c.ReadyAt = now
	ps := s.profiles[e.c.Profile]
	if !e.recovered {
		// What a create takes here, for lead times and estimates.
		if d := now.Sub(e.startedAt); d >= 0 {
			if ps.createDur <= 0 {
				ps.createDur = d
			} else {
				ps.createDur = (4*ps.createDur + d) / 5
			}
		}
	}
	ps.warm = append(ps.warm, e.c.ID)
	ps.backoff = Backoff{}
	ps.lastErr = ""
	s.setState(e, idepool.StateWarm, "", evs)
	return true
}

// mapClaim maps the workspace of a claim found after a restart (in the
// labels, or in the agent's record) to e. A crash mid-claim can leave two
// containers for one workspace: the newest claim is kept and the other
// doomed, to stop once its agent has flushed (loser, nil when none).
func (s *state) mapClaim(e *entry) (loser *entry) {
	key := e.c.Workspace.Key()
	other := s.containers[s.byWorkspace[key]]
	if other == nil || other == e {
		s.byWorkspace[key] = e.c.ID
		return nil
	}
	winner, loser := e, other
	if newerClaim(other.c, e.c) {
		winner, loser = other, e
	}
	s.byWorkspace[key] = winner.c.ID
	loser.exit.doomed = ReasonDuplicate
	return loser
}

// reported: e's agent reported, or e is gone; either way it no longer
// holds back the starts after a restart.
func (s *state) reported(e *entry) {
	if !e.unreported {
		return
	}
	e.unreported = false
	s.adopting--
	if s.adopting == 0 {
		s.settle()
	}
}

// settle lets the starts held after a restart go.
func (s *state) settle() {
	select {
	case <-s.settled:
	default:
		close(s.settled)
	}
}

// fail marks e failed (the reconciler removes it).
func (s *state) fail(e *entry, msg string, evs *[]idepool.Event) {
	s.reported(e)
	if e.c.State == idepool.StateFailed || e.exit.stopping() {
		return
	}
	s.removeWarm(e)
	e.c.Message = msg
	s.setState(e, idepool.StateFailed, idepool.ReasonFailed, evs)
	// A failed container serves nobody: its agent is dead, never got the
	// assignment, or already flushed. A new start for its workspace must not
	// wait for its removal.
	if e.c.Workspace != nil && s.byWorkspace[e.c.Workspace.Key()] == e.c.ID {
		delete(s.byWorkspace, e.c.Workspace.Key())
	}
}

// died marks a container whose runtime status is terminal.
func (s *state) died(e *entry, st idepool.RuntimeStatus, msg string, evs *[]idepool.Event) {
	if e.exit.stopping() || e.c.State == idepool.StateFailed {
		return
	}
	if e.c.Workspace == nil && (e.c.State == idepool.StateCreating || e.c.State == idepool.StateStarting) && !e.recovered {
		s.countFailure(e.c.Profile, "container "+string(st)+" before ready")
	}
	text := "runtime status " + string(st)
	if msg != "" {
		text += ": " + msg
	}
	s.fail(e, text, evs)
}

// lacksImage records that e's node lacks its profile's image: the
// profile's creates avoid that node until ImageRetry passes. A new
// problem (or one found again after its retry) is an event.
func (s *state) lacksImage(e *entry, node, msg string, evs *[]idepool.Event) {
	ps := s.profiles[e.c.Profile]
	if ps == nil || node == "" {
		return
	}
	now := s.clock.Now()
	old, known := ps.lacking[node]
	p := idepool.NodeImageProblem{Node: node, Error: msg, Since: now, RetryAt: now.Add(s.opts.ImageRetry)}
	if known && now.Before(old.RetryAt) {
		p.Since = old.Since
	}
	ps.lacking[node] = p
	if !known || !now.Before(old.RetryAt) {
		*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventCreateFail, ContainerID: e.c.ID,
			Profile: e.c.Profile, Reason: "image-missing",
			Message: "node " + node + " lacks the image of profile " + e.c.Profile + " (" + msg + "): new containers avoid it until " + p.RetryAt.UTC().Format(time.RFC3339),
			Data:    map[string]any{"node": node, "image": ps.p.Image, "retryAt": p.RetryAt.UTC().Format(time.RFC3339)}})
	}
}

// avoidNodes is where a profile's new containers must not go.
func (s *state) avoidNodes(profile string) []string {
	ps := s.profiles[profile]
	if ps == nil {
		return nil
	}
	return AvoidNodes(ps.lacking, s.clock.Now())
}

// beginStop takes e out of every pool and claims the right to remove it.
// It reports whether the agent should flush first. Caller holds s.mu and
// checked !e.exit.stopping().
func (s *state) beginStop(e *entry, reason string, evs *[]idepool.Event) (flush bool) {
	e.exit.done = make(chan struct{})
	s.removeWarm(e)
	e.c.StopReason = reason
	s.setState(e, idepool.StateStopping, reason, evs)
	return e.c.Workspace != nil && e.agent.connected() && !e.noFlush
}

// finish forgets a removed container, keeps it in the history and wakes
// everything waiting on it.
func (s *state) finish(e *entry, reason string, evs *[]idepool.Event) {
	s.reported(e)
	now := s.clock.Now()
	s.removeWarm(e)
	if e.c.Workspace != nil && s.byWorkspace[e.c.Workspace.Key()] == e.c.ID {
		delete(s.byWorkspace, e.c.Workspace.Key())
	}
	delete(s.containers, e.c.ID)
	e.c.StoppedAt = now
	if e.c.StopReason == "" {
		e.c.StopReason = reason
	}
	s.setState(e, idepool.StateStopped, e.c.StopReason, nil)
	if evs != nil {
		*evs = append(*evs, idepool.Event{Time: now, Type: idepool.EventStopped, ContainerID: e.c.ID,
			Profile: e.c.Profile, State: idepool.StateStopped, Reason: e.c.StopReason, Message: e.c.Message})
	}
	s.remember(e.c)
}

// remember keeps a stopped container for Get;
func (s *state) remember(c idepool.Container) {
	if _, ok := s.history[c.ID]; !ok {
		s.historyIDs = append(s.historyIDs, c.ID)
	}
	s.history[c.ID] = copyContainer(&c)
	for len(s.historyIDs) > s.opts.History {
		delete(s.history, s.historyIDs[0])
		s.historyIDs = s.historyIDs[1:]
	}
}

// setState changes e's state, wakes its waiters and records the event.
func (s *state) setState(e *entry, st idepool.State, reason string, evs *[]idepool.Event) {
	if e.c.State == st {
		return
	}
	e.c.State = st
	close(e.changed)
	e.changed = make(chan struct{})
	if evs != nil {
		*evs = append(*evs, idepool.Event{Time: s.clock.Now(), Type: idepool.EventState, ContainerID: e.c.ID,
			Profile: e.c.Profile, State: st, Reason: reason, Message: e.c.Message})
	}
}

// removeWarm drops id from its profile's warm list.
func (s *state) removeWarm(e *entry) {
	ps := s.profiles[e.c.Profile]
	if ps == nil {
		return
	}
	if i := slices.Index(ps.warm, e.c.ID); i >= 0 {
		ps.warm = slices.Delete(ps.warm, i, i+1)
	}
}

// countFailure advances a pool's backoff.
func (s *state) countFailure(profile, msg string) {
	ps := s.profiles[profile]
	if ps == nil {
		return
	}
	ps.lastErr = msg
	now := s.clock.Now()
	// Failures of one round (parallel creates) count once: the backoff
	// grows per failed round, not per container.
	if now.Before(ps.backoff.NextCreate) {
		return
	}
	ps.backoff.Failures++
	ps.backoff.NextCreate = now.Add(jitter(BackoffDelay(ps.backoff.Failures)))
}

// Queries, for the parts deciding what to do next (s.mu held).

// views is every live container as Judge sees it.
func (s *state) views() []ContainerView {
	out := make([]ContainerView, 0, len(s.containers))
	for _, e := range s.containers {
		out = append(out, e.view())
	}
	return out
}

// live counts the profile's live containers (warm, starting and
// claimed) that are not being stopped.
func (s *state) live(profile string) int {
	n := 0
	for _, e := range s.containers {
		if e.c.Profile == profile && !e.exit.stopping() && e.c.State.Live() {
			n++
		}
	}
	return n
}

// inFlightLocked counts the profile's containers in flight (entry.inFlight).
// Caller holds mu.
func (s *state) inFlightLocked(profile string) int {
	n := 0
	for _, e := range s.containers {
		if e.c.Profile == profile && e.inFlight() {
			n++
		}
	}
	return n
}

// userLimit refuses a start when its user holds the profile's
// maximum.
func (s *state) userLimit(ps *profileState, user string) error {
	limit := ps.policy.MaxPerUser
	if limit <= 0 || user == "" {
		return nil
	}
	n := 0
	for _, e := range s.containers {
		if e.c.Profile == ps.p.Name && e.c.UserID == user && e.c.Workspace != nil && !e.exit.stopping() && e.c.State.Live() {
			n++
		}
	}
	if n >= limit {
		return &idepool.Error{Code: idepool.ELimitExceeded,
			Message: "user " + user + " already has " + strconv.Itoa(n) + " containers of profile " + ps.p.Name,
			Details: map[string]any{"limit": "maxPerUser", "max": limit, "profile": ps.p.Name}}
	}
	return nil
}

// profileLimit refuses one more container of a profile at its
// maximum.
func (s *state) profileLimit(ps *profileState) error {
	limit := ps.policy.MaxContainers
	if limit <= 0 {
		return nil
	}
	if n := s.live(ps.p.Name); n >= limit {
		return &idepool.Error{Code: idepool.ELimitExceeded,
			Message: "profile " + ps.p.Name + " is at its maximum of " + strconv.Itoa(limit) + " containers",
			Details: map[string]any{"limit": "maxContainers", "max": limit, "profile": ps.p.Name}}
	}
	return nil
}

// createDuration is the profile's measured (or assumed) create time.
func (s *state) createDuration(ps *profileState) time.Duration {
	if ps.createDur > 0 {
		return ps.createDur
	}
	return s.opts.DefaultCreateDuration
}

// effectiveTarget computes a pool's effective target now.
func (s *state) effectiveTarget(ps *profileState, now time.Time) TargetResult {
	var claimedAt []time.Time
	claimed := 0
	for _, e := range s.containers {
		if e.c.Profile == ps.p.Name && e.c.Workspace != nil && !e.exit.stopping() && e.c.State.Live() {
			claimed++
			claimedAt = append(claimedAt, e.c.ClaimedAt)
		}
	}
	capacity := -1
	if ps.policy.MaxContainers > 0 {
		capacity = max(ps.policy.MaxContainers-claimed, 0)
	}
	return EffectiveTarget(TargetInput{
		Now: now, Base: ps.target, Windows: ps.policy.Schedules, Adaptive: ps.policy.Adaptive,
		ClaimRate: ps.claimRate.at(now, s.opts.ClaimRateWindow), CreateDuration: s.createDuration(ps),
		Parallel: s.opts.CreateConcurrency, ClaimedAt: claimedAt, Capacity: capacity,
	})
}

func (s *state) assignment(req idepool.StartRequest, gen int64, claimedAt time.Time) idepool.Assignment {
	a := idepool.Assignment{
		Generation: gen, Epoch: idepool.EpochOf(claimedAt), Workspace: req.Workspace, UserID: req.UserID,
		Credentials: req.Credentials, VNCPassword: req.VNCPassword, IdleExempt: req.IdleExempt,
	}
	if a.Credentials.IsZero() {
		a.Credentials = s.opts.DefaultCredentials
	}
	a.S3Endpoint = s.opts.S3Endpoint
	return a
}

// Reads for the API: each takes s.mu.

// Get returns one container: live, or stopped not long ago.
func (s *state) Get(ctx context.Context, id string) (idepool.Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.containers[id]; e != nil {
		return copyContainer(&e.c), nil
	}
	if c, ok := s.history[id]; ok {
		return copyContainer(&c), nil
	}
	return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
}

// Lookup returns a live container from memory (cheap; for the router).
func (s *state) Lookup(id string) (idepool.Container, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.containers[id]
	if e == nil {
		return idepool.Container{}, false
	}
	return copyContainer(&e.c), true
}

// Touch records user activity seen outside the agent (router traffic).
func (s *state) Touch(id string) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.containers[id]; e != nil && now.After(e.c.LastActivity) {
		e.c.LastActivity = now
	}
}

// List returns one page of containers, ordered by creation time then id,
// and the number of all that match. No states means all live states;
// StateStopped includes the recent history.
func (s *state) List(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error) {
	if f.Limit < 0 || f.Offset < 0 {
		return nil, 0, idepool.Errorf(idepool.EInvalid, "limit and offset must not be negative")
	}
	for _, s := range f.States {
		if !s.Valid() {
			return nil, 0, idepool.Errorf(idepool.EInvalid, "unknown state %q", s)
		}
	}
	want := func(s idepool.State) bool {
		if len(f.States) == 0 {
			return s.Live()
		}
		return slices.Contains(f.States, s)
	}
	var out []idepool.Container
	s.mu.Lock()
	for _, e := range s.containers {
		if want(e.c.State) && (f.Profile == "" || f.Profile == e.c.Profile) {
			out = append(out, copyContainer(&e.c))
		}
	}
	if want(idepool.StateStopped) {
		for _, c := range s.history {
			if f.Profile == "" || f.Profile == c.Profile {
				out = append(out, copyContainer(&c))
			}
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	total := len(out)
	if f.Offset >= total {
		return []idepool.Container{}, total, nil
	}
	out = out[f.Offset:]
	if f.Limit > 0 && f.Limit < len(out) {
		out = out[:f.Limit]
	}
	return out, total, nil
}
