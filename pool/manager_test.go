package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

func TestNewValidates(t *testing.T) {
	rt := fake.New(fake.Config{})
	ag := newFakeAgents()
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"no runtime", Options{Agents: ag, Profiles: []idepool.Profile{testProfile("default", 1)}}},
		{"no agents", Options{Runtime: rt, Profiles: []idepool.Profile{testProfile("default", 1)}}},
		{"no profiles", Options{Runtime: rt, Agents: ag}},
		{"bad profile", Options{Runtime: rt, Agents: ag, Profiles: []idepool.Profile{testProfile("Bad Name", 1)}}},
		{"duplicate profile", Options{Runtime: rt, Agents: ag, Profiles: []idepool.Profile{testProfile("a", 1), testProfile("a", 2)}}},
	} {
		if _, err := New(c.o); err == nil {
			t.Errorf("%s: New succeeded", c.name)
		}
	}
}

func TestReconcileIsIdempotent(t *testing.T) { synctest.Test(t, testReconcileIsIdempotent) }

func testReconcileIsIdempotent(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 5), testProfile("big", 2)}})
	for range 8 {
		h.reconcile()
	}
	if got := h.rt.Creates(); got != 7 {
		t.Fatalf("creates after 8 reconciles = %d, want 7", got)
	}
	if got := h.rt.Removes(); got != 0 {
		t.Fatalf("removes = %d, want 0", got)
	}
	if p := h.pool("default"); p.Warm != 5 || p.Starting != 0 || p.Target != 5 {
		t.Fatalf("default pool = %+v", p)
	}
	if p := h.pool("big"); p.Warm != 2 {
		t.Fatalf("big pool = %+v", p)
	}
	h.checkNoLeak()
}

func TestFailingCreatesBackOffAndNeverLeak(t *testing.T) {
	synctest.Test(t, testFailingCreatesBackOffAndNeverLeak)
}

func testFailingCreatesBackOffAndNeverLeak(t *testing.T) {
	h := newHarness(t, setup{fake: fake.Config{LeaveLeftoverOnFailure: true}})
	h.rt.FailNext(1 << 30)
	var last time.Duration
	for round := 1; round <= 6; round++ {
		before := h.rt.Creates()
		h.reconcile()
		if h.rt.Creates() == before {
			t.Fatalf("round %d: no create attempted", round)
		}
		// Every failed create was removed at once: nothing left behind.
		if ids := h.runtimeIDs(); len(ids) != 0 {
			t.Fatalf("round %d: leftovers in the runtime: %v", round, ids)
		}
		p := h.pool("default")
		if p.BackoffUntil.IsZero() || p.LastError == "" {
			t.Fatalf("round %d: no backoff: %+v", round, p)
		}
		h.m.mu.Lock()
		failures := h.m.profiles["default"].backoff.Failures
		h.m.mu.Unlock()
		if failures != round {
			t.Fatalf("round %d: failures = %d", round, failures)
		}
		delay := time.Until(p.BackoffUntil)
		if delay <= last {
			t.Fatalf("round %d: backoff %v did not grow from %v", round, delay, last)
		}
		last = delay
		// Inside the backoff window nothing is attempted.
		before = h.rt.Creates()
		h.reconcile()
		if h.rt.Creates() != before {
			t.Fatalf("round %d: created during backoff", round)
		}
		time.Sleep(delay)
	}
	if n := h.events.count(idepool.EventCreateFail, ""); n != h.rt.CreateFailures() {
		t.Fatalf("create-failed events %d, injected failures %d", n, h.rt.CreateFailures())
	}
	// The runtime heals: the pool fills and the backoff resets.
	h.rt.FailNext(0)
	h.reconcile()
	if p := h.pool("default"); p.Warm != 3 || !p.BackoffUntil.IsZero() || p.LastError != "" {
		t.Fatalf("after recovery: %+v", p)
	}
	h.m.mu.Lock()
	failures := h.m.profiles["default"].backoff.Failures
	h.m.mu.Unlock()
	if failures != 0 {
		t.Fatalf("failures not reset: %d", failures)
	}
	h.checkNoLeak()
}

func TestCreateTimeoutFailsAndRemoves(t *testing.T) {
	synctest.Test(t, testCreateTimeoutFailsAndRemoves)
}

func testCreateTimeoutFailsAndRemoves(t *testing.T) {
	h := newHarness(t, setup{silent: true})
	h.reconcile()
	if p := h.pool("default"); p.Starting != 3 || p.Warm != 0 {
		t.Fatalf("pool = %+v", p)
	}
	h.reconcile() // still in time: nothing more
	if h.rt.Creates() != 3 {
		t.Fatalf("creates = %d", h.rt.Creates())
	}
	time.Sleep(time.Minute)
	h.reconcile()
	if ids := h.runtimeIDs(); len(ids) != 0 {
		t.Fatalf("timed-out containers not removed: %v", ids)
	}
	if p := h.pool("default"); p.BackoffUntil.IsZero() {
		t.Fatalf("timeout did not count as a failure: %+v", p)
	}
	if n := h.events.count(idepool.EventStopped, idepool.ReasonFailed); n != 3 {
		t.Fatalf("stopped(failed) events = %d", n)
	}
	h.checkNoLeak()
}

func TestTargetDropRemovesOldestWarmFirst(t *testing.T) {
	synctest.Test(t, testTargetDropRemovesOldestWarmFirst)
}

func testTargetDropRemovesOldestWarmFirst(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 0)}})
	ctx := context.Background()
	var order []string // ids, oldest first
	for n := 1; n <= 4; n++ {
		if err := h.m.SetTarget(ctx, "default", n); err != nil {
			t.Fatal(err)
		}
		h.reconcile()
		for _, id := range h.managerIDs() {
			if !slices.Contains(order, id) {
				order = append(order, id)
			}
		}
		time.Sleep(time.Minute)
	}
	if len(order) != 4 {
		t.Fatalf("ids %v", order)
	}
	if err := h.m.SetTarget(ctx, "default", 1); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if got := h.managerIDs(); !slices.Equal(got, []string{order[3]}) {
		t.Fatalf("left %v, want the youngest %s (order %v)", got, order[3], order)
	}
	for _, id := range order[:3] {
		c, err := h.m.Get(ctx, id)
		if err != nil || c.State != idepool.StateStopped || c.StopReason != idepool.ReasonExcess {
			t.Fatalf("%s: %+v %v", id, c, err)
		}
	}
	h.checkNoLeak()
}

// barrierRuntime holds every Create until n of them run at once, which only
// parallel refills reach.
type barrierRuntime struct {
	idepool.Runtime
	n       int
	mu      sync.Mutex
	waiting int
	release chan struct{}
}

func (r *barrierRuntime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	r.mu.Lock()
	r.waiting++
	if r.waiting == r.n {
		close(r.release)
	}
	r.mu.Unlock()
	select {
	case <-r.release:
	case <-time.After(20 * time.Second): // a safety net, not a timing assertion
		return idepool.Instance{}, idepool.Errorf(idepool.ERuntime, "creates are not parallel")
	}
	return r.Runtime.Create(ctx, spec)
}

func TestSetTargetUpRefillsInParallel(t *testing.T) {
	synctest.Test(t, testSetTargetUpRefillsInParallel)
}

func testSetTargetUpRefillsInParallel(t *testing.T) {
	var br *barrierRuntime
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 0)}, opts: func(o *Options) {
		br = &barrierRuntime{Runtime: o.Runtime, n: 8, release: make(chan struct{})}
		o.Runtime = br
		o.CreateConcurrency = 8
	}})
	if err := h.m.SetTarget(context.Background(), "default", 20); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if p := h.pool("default"); p.Warm != 20 || p.LastError != "" {
		t.Fatalf("pool = %+v", p)
	}
	if h.rt.Creates() != 20 {
		t.Fatalf("creates = %d", h.rt.Creates())
	}
	h.checkNoLeak()
}

func TestSetTargetErrors(t *testing.T) { synctest.Test(t, testSetTargetErrors) }

func testSetTargetErrors(t *testing.T) {
	h := newHarness(t, setup{})
	if err := h.m.SetTarget(context.Background(), "nope", 1); idepool.ErrorCode(err) != idepool.EUnknownProfile {
		t.Fatalf("unknown profile: %v", err)
	}
	if err := h.m.SetTarget(context.Background(), "default", -1); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Fatalf("negative: %v", err)
	}
	if err := h.m.SetTarget(context.Background(), "default", 9); err != nil {
		t.Fatal(err)
	}
	if ps := h.m.Profiles(); ps[0].PoolTarget != 9 {
		t.Fatalf("Profiles() target = %d", ps[0].PoolTarget)
	}
	if h.events.count(idepool.EventPool, "") != 1 {
		t.Fatal("no pool event")
	}
}

func TestMaxAgeRecyclesWarm(t *testing.T) { synctest.Test(t, testMaxAgeRecyclesWarm) }

func testMaxAgeRecyclesWarm(t *testing.T) {
	p := testProfile("default", 2)
	p.MaxAge = time.Hour
	h := newHarness(t, setup{profiles: []idepool.Profile{p}})
	h.reconcile()
	old := h.managerIDs()
	time.Sleep(59 * time.Minute)
	h.reconcile()
	if got := h.managerIDs(); !slices.Equal(got, old) {
		t.Fatalf("recycled too early: %v vs %v", got, old)
	}
	time.Sleep(time.Minute)
	h.reconcile()
	got := h.managerIDs()
	if len(got) != 2 || slices.Contains(got, old[0]) || slices.Contains(got, old[1]) {
		t.Fatalf("after max age: %v (old %v)", got, old)
	}
	if n := h.events.count(idepool.EventStopped, idepool.ReasonMaxAge); n != 2 {
		t.Fatalf("max-age stops = %d", n)
	}
	h.checkNoLeak()
}

func TestStartWarmThenReused(t *testing.T) { synctest.Test(t, testStartWarmThenReused) }

func testStartWarmThenReused(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	ctx := context.Background()
	req := idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "course-a", Prefix: "/alice/lab1", Region: "eu-west-1"}, UserID: "alice"}
	c, err := h.m.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != idepool.ClaimWarm || !c.Container.PreWarmed || c.Container.Generation != 1 {
		t.Fatalf("claim = %+v", c)
	}
	id := c.Container.ID
	got, err := h.m.WaitReady(ctx, id)
	if err != nil || got.State != idepool.StateRunning {
		t.Fatalf("WaitReady = %+v, %v", got, err)
	}
	as := h.agents.assignments(id)
	if len(as) != 1 || as[0].Generation != 1 || as[0].Workspace.Prefix != "alice/lab1/" || as[0].Credentials.AccessKeyID != "AKIADEFAULT" {
		t.Fatalf("assignments = %+v", as)
	}
	if err := h.m.labels.wait(ctx); err != nil { // written behind the answer
		t.Fatal(err)
	}
	inst, err := h.rt.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{idepool.LabelBucket: "course-a", idepool.LabelPrefix: "alice/lab1/",
		idepool.LabelGeneration: "1", idepool.LabelPreWarmed: "true", idepool.LabelUser: "alice"} {
		if inst.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, inst.Labels[k], v)
		}
	}
	// Same workspace, prefix spelled differently: the same container.
	req.Workspace.Prefix = "alice/lab1/"
	again, err := h.m.Start(ctx, req)
	if err != nil || again.Kind != idepool.ClaimReused || again.Container.ID != id {
		t.Fatalf("second start = %+v, %v", again, err)
	}
	if p := h.pool("default"); p.Warm != 2 || p.Claimed != 1 {
		t.Fatalf("pool = %+v", p)
	}
	h.reconcile()
	if p := h.pool("default"); p.Warm != 3 || p.Claimed != 1 {
		t.Fatalf("pool after refill = %+v", p)
	}
	if n := h.events.count(idepool.EventClaim, ""); n != 2 {
		t.Fatalf("claim events = %d", n)
	}
	h.checkNoLeak()
}

func TestStartOwnCredentialsStayOutOfLabels(t *testing.T) {
	synctest.Test(t, testStartOwnCredentialsStayOutOfLabels)
}

func testStartOwnCredentialsStayOutOfLabels(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	c, err := h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "bkt"},
		Credentials: idepool.Credentials{AccessKeyID: "AKIAUSER", SecretAccessKey: "user-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	h.settle(c.Container.ID)
	as := h.agents.assignments(c.Container.ID)
	if len(as) != 1 || as[0].Credentials.SecretAccessKey != "user-secret" {
		t.Fatalf("assignment = %+v", as)
	}
	inst, _ := h.rt.Inspect(context.Background(), c.Container.ID)
	env, _ := h.rt.Env(c.Container.ID)
	for k, v := range inst.Labels {
		if v == "user-secret" || v == "AKIAUSER" || v == env[idepool.EnvAgentToken] {
			t.Fatalf("secret in label %s", k)
		}
	}
	if inst.Labels[idepool.LabelTokenHash] != sha256hex(env[idepool.EnvAgentToken]) {
		t.Fatal("token hash label does not match the env token")
	}
	if env[idepool.EnvAgentURL] == "" || env[idepool.EnvAgentID] != c.Container.ID {
		t.Fatalf("env = %v", env)
	}
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestStartColdWhenPoolEmpty(t *testing.T) { synctest.Test(t, testStartColdWhenPoolEmpty) }

func testStartColdWhenPoolEmpty(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 0)}})
	ctx := context.Background()
	c := h.start("cold-bucket")
	if c.Kind != idepool.ClaimCold || c.Container.PreWarmed || c.Container.Generation != 1 {
		t.Fatalf("claim = %+v", c)
	}
	got, err := h.m.WaitReady(ctx, c.Container.ID)
	if err != nil || got.State != idepool.StateRunning {
		t.Fatalf("WaitReady = %+v, %v", got, err)
	}
	if as := h.agents.assignments(c.Container.ID); len(as) != 1 || as[0].Workspace.Bucket != "cold-bucket" {
		t.Fatalf("assignments = %+v", as)
	}
	inst, _ := h.rt.Inspect(ctx, c.Container.ID)
	if inst.Labels[idepool.LabelBucket] != "cold-bucket" || inst.Labels[idepool.LabelPreWarmed] != "false" {
		t.Fatalf("labels = %v", inst.Labels)
	}
	if again := h.start("cold-bucket"); again.Kind != idepool.ClaimReused || again.Container.ID != c.Container.ID {
		t.Fatalf("again = %+v", again)
	}
	// The cold container is not part of the (empty) pool.
	h.reconcile()
	if h.rt.Creates() != 1 || h.rt.Removes() != 0 {
		t.Fatalf("creates %d removes %d", h.rt.Creates(), h.rt.Removes())
	}
	h.checkNoLeak()
}

type refuser struct{ calls atomic.Int32 }

func (r *refuser) Admit(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error {
	r.calls.Add(1)
	return &idepool.Error{Code: idepool.ECapacity, Message: "memory at 95%", Details: map[string]any{"memoryPercent": 95}}
}

func TestStartRefusedWithoutCapacity(t *testing.T) { synctest.Test(t, testStartRefusedWithoutCapacity) }

func testStartRefusedWithoutCapacity(t *testing.T) {
	ref := &refuser{}
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 2)}, admitter: ref})
	h.reconcile() // refills refused too
	if p := h.pool("default"); p.Warm != 0 || p.LastError == "" {
		t.Fatalf("pool = %+v", p)
	}
	_, err := h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "full"}})
	if idepool.ErrorCode(err) != idepool.ECapacity || idepool.ErrorDetails(err)["memoryPercent"] != 95 {
		t.Fatalf("err = %v", err)
	}
	if h.events.count(idepool.EventRefused, "") != 1 || h.rt.Creates() != 0 {
		t.Fatal("refusal not recorded or something created")
	}
	// A refused start does not block the next one for the workspace.
	if _, err := h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "full"}}); idepool.ErrorCode(err) != idepool.ECapacity {
		t.Fatalf("second: %v", err)
	}
}

func TestStartValidation(t *testing.T) { synctest.Test(t, testStartValidation) }

func testStartValidation(t *testing.T) {
	h := newHarness(t, setup{})
	for _, c := range []struct {
		req  idepool.StartRequest
		code idepool.Code
	}{
		{idepool.StartRequest{}, idepool.EInvalidBucket},
		{idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "Bad_Bucket"}}, idepool.EInvalidBucket},
		{idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "ok-bucket", Prefix: "../x"}}, idepool.EInvalid},
		{idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "ok-bucket"}, Profile: "nope"}, idepool.EUnknownProfile},
	} {
		if _, err := h.m.Start(context.Background(), c.req); idepool.ErrorCode(err) != c.code {
			t.Errorf("%+v: %v, want %s", c.req, err, c.code)
		}
	}
}

// Where labels are a local write (LocalLabels, the process runtime) a claim
// answers before the agent acks: an assignment that fails later fails the
// container, and the workspace's next start gets another one.
func TestLateAssignFailureFailsTheContainer(t *testing.T) {
	synctest.Test(t, testLateAssignFailureFailsTheContainer)
}

func testLateAssignFailureFailsTheContainer(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 2)},
		fake: fake.Config{Capabilities: &idepool.Capabilities{HostNetwork: true, LocalLabels: true}}})
	h.reconcile()
	h.agents.mu.Lock()
	for _, id := range h.managerIDs() {
		h.agents.failIDs[id] = true
	}
	h.agents.mu.Unlock()
	c := h.start("late")
	if c.Kind != idepool.ClaimWarm {
		t.Fatalf("kind %s, want warm", c.Kind)
	}
	if got, _ := h.m.Get(context.Background(), c.Container.ID); got.State != idepool.StateFailed {
		t.Fatalf("state %s, want failed", got.State)
	}
	h.agents.mu.Lock()
	clear(h.agents.failIDs)
	h.agents.mu.Unlock()
	again := h.start("late")
	if again.Container.ID == c.Container.ID {
		t.Fatal("the failed container was handed out again")
	}
	h.reconcile()
	if got, _ := h.m.Get(context.Background(), c.Container.ID); got.State != idepool.StateStopped {
		t.Fatalf("state %s, want stopped", got.State)
	}
	h.checkNoLeak()
}

// With LocalLabels the claim is in the labels when it answers, before its
// agent even has the assignment (delivered after the burst's pause).
func TestLocalLabelsRecordBeforeTheAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 1)},
			fake: fake.Config{Capabilities: &idepool.Capabilities{HostNetwork: true, LocalLabels: true}}})
		h.reconcile()
		c, err := h.m.Start(context.Background(), idepool.StartRequest{Workspace: ws("local-rec")})
		if err != nil || c.Kind != idepool.ClaimWarm {
			t.Fatalf("claim: %+v %v", c, err)
		}
		if n := len(h.agents.assignments(c.Container.ID)); n != 0 {
			t.Fatalf("%d assignments delivered before the answer; want them paced after it", n)
		}
		inst, err := h.rt.Inspect(context.Background(), c.Container.ID)
		if err != nil {
			t.Fatal(err)
		}
		if w, ok := idepool.WorkspaceFromLabels(inst.Labels); !ok || w.Bucket != "local-rec" {
			t.Fatalf("labels at the answer: %v", inst.Labels)
		}
		h.settle(c.Container.ID)
		if n := len(h.agents.assignments(c.Container.ID)); n != 1 {
			t.Fatalf("%d assignments after the pause, want 1", n)
		}
	})
}

// A claim answers on the agent's ack (its record of the claim), so an
// agent that refuses makes the start fall back to another container, and
// the refused ones never return to the pool.
func TestAssignFailureNeverReturnsToPool(t *testing.T) {
	synctest.Test(t, testAssignFailureNeverReturnsToPool)
}

func testAssignFailureNeverReturnsToPool(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 2)}})
	h.reconcile()
	ids := h.managerIDs()
	// Whichever warm container is taken first, its agent fails the assignment.
	h.agents.mu.Lock()
	h.agents.failIDs[ids[0]] = true
	h.agents.failIDs[ids[1]] = true
	h.agents.mu.Unlock()
	c := h.start("fallback")
	if c.Kind != idepool.ClaimCold {
		t.Fatalf("want a cold fallback after two failed warm ones, got %+v", c)
	}
	for _, id := range ids {
		got, _ := h.m.Get(context.Background(), id)
		if got.State != idepool.StateFailed {
			t.Fatalf("%s state %s, want failed", id, got.State)
		}
	}
	h.reconcile() // removes both, refills
	for _, id := range ids {
		if got, _ := h.m.Get(context.Background(), id); got.State != idepool.StateStopped {
			t.Fatalf("%s state %s, want stopped", id, got.State)
		}
	}
	if p := h.pool("default"); p.Warm != 2 || p.Claimed != 1 {
		t.Fatalf("pool = %+v", p)
	}
	h.checkNoLeak()
}

func TestStopIsIdempotent(t *testing.T) { synctest.Test(t, testStopIsIdempotent) }

func testStopIsIdempotent(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	ctx := context.Background()
	c := h.start("stop-me")
	id := c.Container.ID
	got, err := h.m.Stop(ctx, id, "")
	if err != nil || got.State != idepool.StateStopped || got.StopReason != idepool.ReasonManual || got.StoppedAt.IsZero() {
		t.Fatalf("Stop = %+v, %v", got, err)
	}
	h.agents.mu.Lock()
	flushes := h.agents.flushed[id]
	h.agents.mu.Unlock()
	if flushes != 1 {
		t.Fatalf("flushes = %d", flushes)
	}
	if _, err := h.m.Stop(ctx, id, ""); !idepool.IsNotFound(err) {
		t.Fatalf("second stop: %v", err)
	}
	if g, err := h.m.Get(ctx, id); err != nil || g.State != idepool.StateStopped {
		t.Fatalf("Get after stop = %+v, %v", g, err)
	}
	if _, ok := h.m.Lookup(id); ok {
		t.Fatal("Lookup finds a stopped container")
	}
	if _, err := h.m.Stop(ctx, "nosuchid", ""); !idepool.IsNotFound(err) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := h.m.WaitReady(ctx, id); err == nil {
		t.Fatal("WaitReady of a stopped container succeeded")
	}
	// A new start for the workspace gets a new container.
	if c2 := h.start("stop-me"); c2.Container.ID == id || c2.Kind == idepool.ClaimReused {
		t.Fatalf("restart = %+v", c2)
	}
	h.checkNoLeak()
}

func TestConcurrentStopsRemoveOnce(t *testing.T) { synctest.Test(t, testConcurrentStopsRemoveOnce) }

func testConcurrentStopsRemoveOnce(t *testing.T) {
	h := newHarness(t, setup{fake: fake.Config{RemoveLatency: 20 * time.Millisecond}})
	h.reconcile()
	id := h.start("twice").Container.ID
	before := h.rt.Removes()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = h.m.Stop(context.Background(), id, idepool.ReasonManual)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case idepool.IsNotFound(err):
		default:
			t.Fatalf("stop: %v", err)
		}
	}
	if ok == 0 || h.rt.Removes()-before != 1 {
		t.Fatalf("ok %d, removes %d", ok, h.rt.Removes()-before)
	}
	if n := h.events.count(idepool.EventStopped, idepool.ReasonManual); n != 1 {
		t.Fatalf("stopped events = %d", n)
	}
}

func TestWaitReady(t *testing.T) { synctest.Test(t, testWaitReady) }

func testWaitReady(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 1)}})
	h.agents.noSync = true
	h.reconcile()
	ctx := context.Background()
	c := h.start("waiting")
	if c.Container.State != idepool.StateSyncing {
		t.Fatalf("state %s", c.Container.State)
	}
	done := make(chan idepool.Container)
	go func() {
		got, err := h.m.WaitReady(ctx, c.Container.ID)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	h.m.AgentReport(idepool.AgentReport{ContainerID: c.Container.ID, Kind: idepool.AgentHeartbeat})
	h.m.AgentReport(idepool.AgentReport{ContainerID: c.Container.ID, Kind: idepool.AgentSynced, Generation: 1})
	if got := <-done; got.State != idepool.StateRunning || got.ReadyAt.IsZero() {
		t.Fatalf("WaitReady = %+v", got)
	}

	// A container that dies while being waited for: failed, not a hang.
	c2 := h.start("dies") // cold: the pool is empty
	waitErr := make(chan error)
	go func() {
		_, err := h.m.WaitReady(ctx, c2.Container.ID)
		waitErr <- err
	}()
	if err := h.rt.Kill(c2.Container.ID); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if err := <-waitErr; idepool.ErrorCode(err) != idepool.EStartFailed {
		t.Fatalf("WaitReady of a dead container: %v", err)
	}

	// A cancelled wait returns.
	c3 := h.start("cancelled")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := h.m.WaitReady(cctx, c3.Container.ID); err == nil {
		t.Fatal("cancelled WaitReady succeeded")
	}
	h.checkNoLeak()
}

func TestDeadContainersAreReaped(t *testing.T) { synctest.Test(t, testDeadContainersAreReaped) }

func testDeadContainersAreReaped(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	claimed := h.start("reaped").Container.ID
	warm := ""
	for _, id := range h.managerIDs() {
		if id != claimed {
			warm = id
			break
		}
	}
	if err := h.rt.Kill(claimed); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.Exit(warm); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	for _, id := range []string{claimed, warm} {
		if c, _ := h.m.Get(context.Background(), id); c.State != idepool.StateStopped || c.StopReason != idepool.ReasonFailed {
			t.Fatalf("%s: %+v", id, c)
		}
	}
	if p := h.pool("default"); p.Warm != 3 || p.Claimed != 0 {
		t.Fatalf("pool = %+v", p)
	}
	// The workspace is free again.
	if c := h.start("reaped"); c.Container.ID == claimed {
		t.Fatal("dead container reused")
	}
	h.checkNoLeak()
}

func TestRuntimeEventsMarkDeath(t *testing.T) { synctest.Test(t, testRuntimeEventsMarkDeath) }

func testRuntimeEventsMarkDeath(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	id := h.managerIDs()[0]
	h.m.runtimeEvent(idepool.RuntimeEvent{ID: id, Status: idepool.StatusFailed})
	if c, _ := h.m.Get(context.Background(), id); c.State != idepool.StateFailed {
		t.Fatalf("state %s", c.State)
	}
	id2 := h.managerIDs()[1]
	h.m.runtimeEvent(idepool.RuntimeEvent{ID: id2, Removed: true})
	if c, _ := h.m.Get(context.Background(), id2); c.State != idepool.StateStopped {
		t.Fatalf("state %s", c.State)
	}
}

func TestOrphansRemoved(t *testing.T) { synctest.Test(t, testOrphansRemoved) }

func testOrphansRemoved(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 0)}})
	// Made by a previous run and never recorded (a crash between Create and
	// the bookkeeping): a runtime container the manager does not know.
	if _, err := h.rt.Create(context.Background(), idepool.ContainerSpec{ID: "orphan1", Profile: testProfile("default", 0)}); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if ids := h.runtimeIDs(); len(ids) != 0 {
		t.Fatalf("orphan left: %v", ids)
	}
}

func TestVerifyAgent(t *testing.T) { synctest.Test(t, testVerifyAgent) }

func testVerifyAgent(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 1)}})
	h.reconcile()
	id := h.managerIDs()[0]
	tok := h.agents.tokens[id]
	if len(tok) != 64 {
		t.Fatalf("token %q", tok)
	}
	if !h.m.VerifyAgent(id, tok) {
		t.Fatal("right token refused")
	}
	for _, c := range [][2]string{{id, ""}, {id, tok[:63] + "0"}, {id, sha256hex(tok)}, {"other", tok}} {
		if c[1] == tok && c[0] == id {
			continue
		}
		if h.m.VerifyAgent(c[0], c[1]) {
			t.Fatalf("VerifyAgent(%q, %q) accepted", c[0], c[1])
		}
	}
}

func TestAgentRestartGetsAssignmentAgain(t *testing.T) {
	synctest.Test(t, testAgentRestartGetsAssignmentAgain)
}

func testAgentRestartGetsAssignmentAgain(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	id := h.start("resend").Container.ID
	// The same agent reconnecting with its assignment: nothing re-sent.
	ws := idepool.Workspace{Bucket: "resend"}
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentGone})
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true, Workspace: &ws, Generation: 1})
	h.m.bg.Wait() // background deliveries
	if n := len(h.agents.assignments(id)); n != 1 {
		t.Fatalf("assignments = %d, want 1", n)
	}
	// A restarted agent that lost it: sent again, same generation.
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true})
	h.m.bg.Wait()
	as := h.agents.assignments(id)
	if len(as) != 2 || as[1].Generation != 1 || as[1].Workspace.Bucket != "resend" {
		t.Fatalf("assignments = %+v", as)
	}
	if c, _ := h.m.Get(context.Background(), id); c.State != idepool.StateRunning {
		t.Fatalf("state %s", c.State)
	}
}

func TestTouchAndHeartbeatActivity(t *testing.T) { synctest.Test(t, testTouchAndHeartbeatActivity) }

func testTouchAndHeartbeatActivity(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	id := h.start("active").Container.ID
	time.Sleep(time.Minute)
	h.m.Touch(id)
	c, _ := h.m.Lookup(id)
	if !c.LastActivity.Equal(time.Now()) {
		t.Fatalf("LastActivity %v", c.LastActivity)
	}
	later := time.Now().Add(time.Minute)
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHeartbeat, LastActivity: later})
	if c, _ := h.m.Lookup(id); !c.LastActivity.Equal(later) {
		t.Fatalf("LastActivity %v", c.LastActivity)
	}
}

func TestListFiltersAndPages(t *testing.T) { synctest.Test(t, testListFiltersAndPages) }

func testListFiltersAndPages(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 3), testProfile("other", 2)}})
	for range 3 { // distinct creation times
		h.reconcile()
		time.Sleep(time.Second)
	}
	h.start("listed")
	ctx := context.Background()
	all, total, err := h.m.List(ctx, idepool.ContainerFilter{})
	if err != nil || total != 5 || len(all) != 5 {
		t.Fatalf("all: %d %d %v", len(all), total, err)
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID > b.ID {
			t.Fatal("not ordered")
		}
	}
	page, total, _ := h.m.List(ctx, idepool.ContainerFilter{Limit: 2, Offset: 2})
	if total != 5 || len(page) != 2 || page[0].ID != all[2].ID {
		t.Fatalf("page: %d %d", len(page), total)
	}
	if page, total, _ := h.m.List(ctx, idepool.ContainerFilter{Offset: 10}); total != 5 || len(page) != 0 {
		t.Fatal("offset past end")
	}
	run, total, _ := h.m.List(ctx, idepool.ContainerFilter{States: []idepool.State{idepool.StateRunning}})
	if total != 1 || run[0].Workspace.Bucket != "listed" {
		t.Fatalf("running: %+v", run)
	}
	if _, total, _ := h.m.List(ctx, idepool.ContainerFilter{Profile: "other"}); total != 2 {
		t.Fatalf("profile other: %d", total)
	}
	h.m.Stop(ctx, run[0].ID, "")
	if st, total, _ := h.m.List(ctx, idepool.ContainerFilter{States: []idepool.State{idepool.StateStopped}}); total != 1 || st[0].ID != run[0].ID {
		t.Fatalf("stopped: %d", total)
	}
	if _, _, err := h.m.List(ctx, idepool.ContainerFilter{States: []idepool.State{"bogus"}}); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Fatalf("bogus state: %v", err)
	}
	if _, _, err := h.m.List(ctx, idepool.ContainerFilter{Limit: -1}); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Fatalf("negative limit: %v", err)
	}
}

func TestPoisonedWarmIsNeverPooled(t *testing.T) { synctest.Test(t, testPoisonedWarmIsNeverPooled) }

func testPoisonedWarmIsNeverPooled(t *testing.T) {
	h := newHarness(t, setup{silent: true})
	h.reconcile()
	ids := h.managerIDs()
	ws := idepool.Workspace{Bucket: "someone-else"}
	h.m.AgentReport(idepool.AgentReport{ContainerID: ids[0], Kind: idepool.AgentHello, Ready: true, Workspace: &ws, Generation: 1})
	h.m.AgentReport(idepool.AgentReport{ContainerID: ids[1], Kind: idepool.AgentHello, Ready: true})
	if c, _ := h.m.Get(context.Background(), ids[0]); c.State != idepool.StateFailed {
		t.Fatalf("poisoned: %s", c.State)
	}
	if c, _ := h.m.Get(context.Background(), ids[1]); c.State != idepool.StateWarm {
		t.Fatalf("clean: %s", c.State)
	}
	h.reconcile()
	if slices.Contains(h.runtimeIDs(), ids[0]) {
		t.Fatal("poisoned container not removed")
	}
}

func TestWarmWithGoneAgentIsReplaced(t *testing.T) { synctest.Test(t, testWarmWithGoneAgentIsReplaced) }

func testWarmWithGoneAgentIsReplaced(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 2)}})
	h.reconcile()
	ids := h.managerIDs()
	h.m.AgentReport(idepool.AgentReport{ContainerID: ids[0], Kind: idepool.AgentGone})
	// Not claimable while its agent is away.
	c := h.start("skip-gone")
	if c.Container.ID != ids[1] {
		t.Fatalf("claimed %s, want %s (its agent is connected)", c.Container.ID, ids[1])
	}
	h.reconcile()
	if g, _ := h.m.Get(context.Background(), ids[0]); g.State != idepool.StateWarm {
		t.Fatalf("replaced too early: %s", g.State)
	}
	time.Sleep(time.Minute)
	h.reconcile()
	if g, _ := h.m.Get(context.Background(), ids[0]); g.State != idepool.StateStopped {
		t.Fatalf("gone agent's container: %s", g.State)
	}
	if p := h.pool("default"); p.Warm != 2 {
		t.Fatalf("pool = %+v", p)
	}
	h.checkNoLeak()
}

func TestClaimedAgentWithOtherWorkspaceFails(t *testing.T) {
	synctest.Test(t, testClaimedAgentWithOtherWorkspaceFails)
}

func testClaimedAgentWithOtherWorkspaceFails(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	id := h.start("mine").Container.ID
	other := idepool.Workspace{Bucket: "theirs"}
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true, Workspace: &other, Generation: 1})
	if c, _ := h.m.Get(context.Background(), id); c.State != idepool.StateFailed {
		t.Fatalf("state %s", c.State)
	}
	if c := h.start("mine"); c.Container.ID == id {
		t.Fatal("the confused container was reused")
	}
	h.reconcile()
	h.checkNoLeak()
}

type headroomAdmitter struct{ room int }

func (a *headroomAdmitter) Admit(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error {
	return nil
}
func (a *headroomAdmitter) Headroom(p idepool.Profile) int { return a.room }

func TestHeadroomCapsRefills(t *testing.T) { synctest.Test(t, testHeadroomCapsRefills) }

func testHeadroomCapsRefills(t *testing.T) {
	a := &headroomAdmitter{room: 2}
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 5)}, admitter: a})
	h.reconcile()
	h.reconcile() // the reporter still says 2: the planner asks for 2 each time
	if h.rt.Creates() != 4 {
		t.Fatalf("creates = %d", h.rt.Creates())
	}
	a.room = 0
	h.reconcile()
	if h.rt.Creates() != 4 {
		t.Fatalf("creates with no room = %d", h.rt.Creates())
	}
}

func TestColdClaimTimesOutAndFailsWaiters(t *testing.T) {
	synctest.Test(t, testColdClaimTimesOutAndFailsWaiters)
}

func testColdClaimTimesOutAndFailsWaiters(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 0)}, silent: true})
	c := h.start("slow-agent")
	errc := make(chan error)
	go func() {
		_, err := h.m.WaitReady(context.Background(), c.Container.ID)
		errc <- err
	}()
	time.Sleep(time.Minute)
	h.reconcile()
	if err := <-errc; idepool.ErrorCode(err) != idepool.EStartFailed {
		t.Fatalf("WaitReady: %v", err)
	}
	if ids := h.runtimeIDs(); len(ids) != 0 {
		t.Fatalf("left %v", ids)
	}
	// The workspace is free for a new try.
	if c2 := h.start("slow-agent"); c2.Kind != idepool.ClaimCold || c2.Container.ID == c.Container.ID {
		t.Fatalf("retry = %+v", c2)
	}
}

func TestColdAssignmentRetriedOnNextHello(t *testing.T) {
	synctest.Test(t, testColdAssignmentRetriedOnNextHello)
}

func testColdAssignmentRetriedOnNextHello(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile("default", 0)}, silent: true})
	c := h.start("flaky-agent")
	id := c.Container.ID
	h.agents.mu.Lock()
	h.agents.failIDs[id] = true
	h.agents.mu.Unlock()
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true})
	h.m.bg.Wait()
	if got, _ := h.m.Get(context.Background(), id); got.State != idepool.StateStarting {
		t.Fatalf("after a failed delivery: %s", got.State)
	}
	h.agents.mu.Lock()
	delete(h.agents.failIDs, id)
	h.agents.mu.Unlock()
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true})
	h.m.bg.Wait()
	got, err := h.m.WaitReady(context.Background(), id)
	if err != nil || got.State != idepool.StateRunning {
		t.Fatalf("WaitReady = %+v %v", got, err)
	}
	if as := h.agents.assignments(id); len(as) != 1 || as[0].Workspace.Bucket != "flaky-agent" {
		t.Fatalf("assignments %+v", as)
	}
}

// TestAssignmentEpochIsTheClaimTime: an assignment carries its claim's
// time as the owner epoch, the same when it is sent again to a restarted
// agent, and a later claim has a later one (how a replacement's writes win
// over a cut-off container's, wsync's fence).
func TestAssignmentEpochIsTheClaimTime(t *testing.T) {
	synctest.Test(t, testAssignmentEpochIsTheClaimTime)
}

func testAssignmentEpochIsTheClaimTime(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	id := h.start("epoch").Container.ID
	h.m.bg.Wait()
	c, _ := h.m.Get(context.Background(), id)
	as := h.agents.assignments(id)
	if len(as) != 1 || as[0].Epoch == 0 || as[0].Epoch != idepool.EpochOf(c.ClaimedAt) {
		t.Fatalf("assignment epoch %+v, claimed at %v", as, c.ClaimedAt)
	}
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentGone})
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true}) // lost it
	h.m.bg.Wait()
	if as = h.agents.assignments(id); len(as) != 2 || as[1].Epoch != as[0].Epoch {
		t.Fatalf("re-sent assignment's epoch: %+v", as)
	}
	time.Sleep(time.Second)
	h.reconcile()
	later := h.start("epoch-later").Container.ID
	h.m.bg.Wait()
	if bs := h.agents.assignments(later); len(bs) != 1 || bs[0].Epoch <= as[0].Epoch {
		t.Fatalf("later claim's epoch %+v, earlier %d", bs, as[0].Epoch)
	}
}
