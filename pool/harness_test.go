package pool

import (
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

// fakeAgents plays every container's agent: it acknowledges assignments
// (and reports synced), and says hello/ready when its container is created.
type fakeAgents struct {
	mu       sync.Mutex
	m        *Manager
	silent   bool                            // created containers never say hello
	tokens   map[string]string               // id → token from the container's env
	assigned map[string][]idepool.Assignment // id → assignments received
	flushed  map[string]int
	failIDs  map[string]bool // Assign to these fails
	noSync   bool            // do not report synced after an ack
	down     map[string]bool // not connected
}

func newFakeAgents() *fakeAgents {
	return &fakeAgents{tokens: map[string]string{}, assigned: map[string][]idepool.Assignment{},
		flushed: map[string]int{}, failIDs: map[string]bool{}, down: map[string]bool{}}
}

var _ Agents = (*fakeAgents)(nil)

func (a *fakeAgents) Assign(ctx context.Context, id string, as idepool.Assignment) error {
	a.mu.Lock()
	if a.failIDs[id] || a.down[id] {
		a.mu.Unlock()
		return idepool.Errorf(idepool.EAgentUnavailable, "agent %s not connected", id)
	}
	a.assigned[id] = append(a.assigned[id], as)
	m, noSync := a.m, a.noSync
	a.mu.Unlock()
	if !noSync {
		m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentSynced, Generation: as.Generation,
			Workspace: &as.Workspace})
	}
	return nil
}

func (a *fakeAgents) Flush(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushed[id]++
	return nil
}

func (a *fakeAgents) Connected(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.down[id]
}

// started is called when the runtime created a container.
func (a *fakeAgents) started(spec idepool.ContainerSpec) {
	a.mu.Lock()
	a.tokens[spec.ID] = spec.Env[idepool.EnvAgentToken]
	m, silent := a.m, a.silent
	a.mu.Unlock()
	if !silent {
		m.AgentReport(idepool.AgentReport{ContainerID: spec.ID, Kind: idepool.AgentHello, Ready: true})
	}
}

func (a *fakeAgents) assignments(id string) []idepool.Assignment {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.assigned[id])
}

// helloRuntime is the fake runtime whose containers' agents say hello as
// soon as they exist.
type helloRuntime struct {
	*fake.Runtime
	agents *fakeAgents
}

func (r *helloRuntime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	inst, err := r.Runtime.Create(ctx, spec)
	if err == nil {
		r.agents.started(spec)
	}
	return inst, err
}

// eventLog records events.
type eventLog struct {
	mu  sync.Mutex
	evs []idepool.Event
}

func (l *eventLog) Publish(e idepool.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) count(t idepool.EventType, reason string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.evs {
		if e.Type == t && (reason == "" || e.Reason == reason) {
			n++
		}
	}
	return n
}

type harness struct {
	t      testing.TB
	rt     *fake.Runtime
	m      *Manager
	agents *fakeAgents
	events *eventLog
}

type setup struct {
	profiles []idepool.Profile
	fake     fake.Config
	admitter Admitter
	silent   bool
	opts     func(*Options)
}

func testProfile(name string, target int) idepool.Profile {
	return idepool.Profile{Name: name, Image: "ide:test", CPULimit: 1, MemoryLimit: 1 << 30,
		Routes: idepool.DefaultRoutes(), PoolTarget: target}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("POOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newHarness makes a Manager over the fake runtime with fake agents. Its
// clock is the real one (Options.Clock unset), so a unit test runs in a
// testing/synctest bubble, where time only passes as the test sleeps or
// everything waits: one kind of fake time for the pool's clock, its
// timers and the fake runtime's latencies. Benchmarks run in real time.
func newHarness(t testing.TB, s setup) *harness {
	t.Helper()
	if _, ok := t.(*testing.T); ok && !inBubble() {
		t.Fatal("pool unit tests run in a testing/synctest bubble")
	}
	if s.profiles == nil {
		s.profiles = []idepool.Profile{testProfile(idepool.DefaultProfile, 3)}
	}
	h := &harness{t: t, agents: newFakeAgents(), events: &eventLog{}}
	h.agents.silent = s.silent
	if s.fake.Seed == 0 {
		s.fake.Seed = 7
	}
	h.rt = fake.New(s.fake)
	h.m = h.newManager(s, h.rt)
	return h
}

// newManager makes a Manager over rt (one per "orchestrator run").
func (h *harness) newManager(s setup, rt *fake.Runtime) *Manager {
	h.t.Helper()
	if s.profiles == nil {
		s.profiles = []idepool.Profile{testProfile(idepool.DefaultProfile, 3)}
	}
	o := Options{
		Runtime: &helloRuntime{Runtime: rt, agents: h.agents}, Agents: h.agents, Admitter: s.admitter,
		Profiles: s.profiles, Deployment: "idepool", AgentURL: "ws://orchestrator.test/agent/v1/connect",
		DefaultCredentials: idepool.Credentials{AccessKeyID: "AKIADEFAULT", SecretAccessKey: "default-secret"},
		Events:             h.events, Logger: testLogger(h.t),
		CreateTimeout: time.Minute, FlushTimeout: time.Second, AdoptGrace: time.Minute,
		ReconcileInterval: 50 * time.Millisecond,
	}
	if s.opts != nil {
		s.opts(&o)
	}
	m, err := New(o)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.agents.mu.Lock()
	h.agents.m = m
	h.agents.mu.Unlock()
	h.t.Cleanup(func() { m.Close() })
	return m
}

func (h *harness) reconcile() {
	h.t.Helper()
	if err := h.m.ReconcileOnce(context.Background()); err != nil {
		h.t.Fatalf("ReconcileOnce: %v", err)
	}
}

func (h *harness) pool(profile string) idepool.PoolStatus {
	h.t.Helper()
	for _, p := range h.m.Pools() {
		if p.Profile == profile {
			return p
		}
	}
	h.t.Fatalf("no pool %q", profile)
	return idepool.PoolStatus{}
}

func (h *harness) start(bucket string) idepool.Claim {
	h.t.Helper()
	c, err := h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: bucket}, UserID: "u-" + bucket})
	if err != nil {
		h.t.Fatalf("Start(%s): %v", bucket, err)
	}
	h.settle(c.Container.ID)
	return c
}

// inBubble says whether the caller runs in a testing/synctest bubble,
// whose clock starts at midnight UTC 2000-01-01 (a real one is long past).
func inBubble() bool { return time.Now().Before(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)) }

// settle waits until the assignment of container id (a cold claim's is
// delivered in the background once its agent is ready) was acknowledged or
// failed, and the labels written behind the answers are written. It runs on the bubble's fake time: each
// round lets every goroutine settle, then lets a millisecond pass.
func (h *harness) settle(id string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		synctest.Wait()
		h.m.mu.Lock()
		e := h.m.containers[id]
		busy := e != nil && e.assign.delivering()
		h.m.mu.Unlock()
		h.m.labels.mu.Lock()
		busy = busy || !h.m.labels.hold && (len(h.m.labels.pending) > 0 || len(h.m.labels.inflight) > 0)
		h.m.labels.mu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("assignment of %s not settled", id)
		}
		time.Sleep(time.Millisecond)
	}
}

// runtimeIDs lists the runtime's container ids, sorted.
func (h *harness) runtimeIDs() []string {
	h.t.Helper()
	insts, err := h.rt.List(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	ids := make([]string, 0, len(insts))
	for _, i := range insts {
		ids = append(ids, i.ID)
	}
	sort.Strings(ids)
	return ids
}

// managerIDs lists the manager's live container ids, sorted.
func (h *harness) managerIDs() []string {
	h.t.Helper()
	cs, _, err := h.m.List(context.Background(), idepool.ContainerFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	sort.Strings(ids)
	return ids
}

// checkNoLeak asserts the runtime and the manager agree on what exists.
func (h *harness) checkNoLeak() {
	h.t.Helper()
	if rt, mg := h.runtimeIDs(), h.managerIDs(); !slices.Equal(rt, mg) {
		h.t.Fatalf("runtime and manager disagree:\nruntime %v\nmanager %v", rt, mg)
	}
}
