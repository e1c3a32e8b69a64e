package pool

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// TestScheduledWindowReachedBeforeOpening: a window of 20 opens at 12:00
// Berlin (11:00 UTC); with creates assumed to take 20 s and 8 at a time,
// the lead is max(3 rounds × 20 s × 1.5, 1 min) = 90 s. The pool stays at
// its base target until then, is at 20 when the window opens, counts
// claims of the window against it, and shrinks back after it closes.
func TestScheduledWindowReachedBeforeOpening(t *testing.T) {
	synctest.Test(t, testScheduledWindowReachedBeforeOpening)
}

func testScheduledWindowReachedBeforeOpening(t *testing.T) {
	win := Window{Days: []string{"Fri"}, Start: "12:00", End: "13:00", Timezone: "Europe/Berlin", Target: 20}
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 2)}, opts: func(o *Options) {
		o.DefaultCreateDuration = 20 * time.Second
		o.CreateConcurrency = 8
		o.Policies = map[string]Policy{idepool.DefaultProfile: {Schedules: []Window{win}}}
	}})
	// The bubble's clock starts Saturday 2000-01-01 00:00 UTC; Friday
	// 2000-01-07 12:00 Berlin (CET) is 11:00 UTC.
	open := time.Date(2000, 1, 7, 11, 0, 0, 0, time.UTC)
	lead := LeadTime(20, 8, 20*time.Second)
	if lead != 90*time.Second {
		t.Fatalf("lead %s", lead)
	}
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Warm != 2 || p.Target != 2 {
		t.Fatalf("before: %+v", p)
	}
	time.Sleep(time.Until(open.Add(-lead - time.Second)))
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Warm != 2 {
		t.Fatalf("a second before the lead: %+v", p)
	}
	time.Sleep(time.Second)
	h.reconcile()
	time.Sleep(time.Until(open))
	h.reconcile()
	p := h.pool(idepool.DefaultProfile)
	if p.Warm != 20 || p.Target != 20 {
		t.Fatalf("when the window opens: %+v", p)
	}
	d := h.m.PoolDetails()[0]
	if d.TargetReason != "schedule" || d.Window == nil || d.BaseTarget != 2 {
		t.Fatalf("details: %+v", d)
	}
	if h.events.count(idepool.EventPool, "schedule") != 1 {
		t.Fatal("no pool event for the window")
	}
	// Five students come: their containers count as the window's.
	for i := range 5 {
		if c := h.start(fmt.Sprintf("student-%d", i)); c.Kind != idepool.ClaimWarm {
			t.Fatalf("student %d: %s", i, c.Kind)
		}
	}
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Warm != 15 || p.Target != 15 || p.Claimed != 5 {
		t.Fatalf("after 5 claims: %+v", p)
	}
	// After the window: back to the base target.
	time.Sleep(time.Hour)
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Warm != 2 || p.Target != 2 || p.Claimed != 5 {
		t.Fatalf("after the window: %+v", p)
	}
	h.checkNoLeak()
}

func TestSetPolicyAndAdaptive(t *testing.T) { synctest.Test(t, testSetPolicyAndAdaptive) }

func testSetPolicyAndAdaptive(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 1)}, opts: func(o *Options) {
		o.DefaultCreateDuration = 30 * time.Second
		o.ClaimRateWindow = time.Minute
	}})
	ctx := context.Background()
	if err := h.m.SetPolicy(ctx, "nope", Policy{}); idepool.ErrorCode(err) != idepool.EUnknownProfile {
		t.Fatalf("unknown profile: %v", err)
	}
	if err := h.m.SetPolicy(ctx, idepool.DefaultProfile, Policy{Adaptive: &Adaptive{Min: 3, Max: 1}}); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Fatalf("bad bounds: %v", err)
	}
	if err := h.m.SetSchedules(ctx, idepool.DefaultProfile, []Window{{Start: "9", End: "10"}}); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Fatalf("bad window: %v", err)
	}
	if err := h.m.SetPolicy(ctx, idepool.DefaultProfile, Policy{Adaptive: &Adaptive{Min: 2, Max: 40}}); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Target != 2 || p.Warm != 2 {
		t.Fatalf("quiet: %+v", p)
	}
	// A burst: 30 claims within a minute.
	for i := range 30 {
		h.start(fmt.Sprintf("burst-%d", i))
		time.Sleep(2 * time.Second)
		h.reconcile()
	}
	busy := h.pool(idepool.DefaultProfile)
	if busy.Target <= 10 {
		t.Fatalf("the target did not follow the burst: %+v (%+v)", busy, h.m.PoolDetails()[0])
	}
	t.Logf("after the burst: target %d (claim rate %.1f/min)", busy.Target, h.m.PoolDetails()[0].ClaimRate)
	// A quiet hour later it is back at the minimum.
	time.Sleep(time.Hour)
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Target != 2 || p.Warm != 2 {
		t.Fatalf("quiet again: %+v", p)
	}
}

// TestPrepareThenStart: prepared workspaces get their containers (synced)
// ahead of time; the start returns that container at once; unused ones are
// stopped at expiry and never pooled again.
func TestPrepareThenStart(t *testing.T) { synctest.Test(t, testPrepareThenStart) }

func testPrepareThenStart(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 3)}})
	h.reconcile()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	if _, err := h.m.Prepare(ctx, PrepareRequest{Workspaces: []idepool.Workspace{ws("x-1")}, ExpiresAt: time.Now()}); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Fatalf("past expiry: %v", err)
	}
	res, err := h.m.Prepare(ctx, PrepareRequest{Workspaces: []idepool.Workspace{ws("lab-1"), ws("lab-2"), ws("lab-3"), ws("lab-4"), {Bucket: "NO"}}, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	prepared := map[string]string{}
	for _, r := range res[:4] {
		if r.Status != PrepareBound || r.ContainerID == "" {
			t.Fatalf("prepare %s: %+v", r.Workspace.Bucket, r)
		}
		prepared[r.Workspace.Bucket] = r.ContainerID
	}
	if res[4].Status != PrepareFailed || res[4].Code != idepool.EInvalidBucket {
		t.Fatalf("bad bucket: %+v", res[4])
	}
	kinds := map[idepool.ClaimKind]int{}
	for _, r := range res[:4] {
		kinds[r.Kind]++
	}
	if kinds[idepool.ClaimWarm] != 3 || kinds[idepool.ClaimCold] != 1 {
		t.Fatalf("kinds: %v, want 3 warm and 1 cold", kinds)
	}
	h.m.bg.Wait()
	// Preparing again is harmless.
	again, _ := h.m.Prepare(ctx, PrepareRequest{Workspaces: []idepool.Workspace{ws("lab-1")}, ExpiresAt: exp})
	if again[0].Status != PrepareExisting || again[0].ContainerID != prepared["lab-1"] {
		t.Fatalf("prepare twice: %+v", again[0])
	}
	for b, id := range prepared {
		c, err := h.m.WaitReady(ctx, id)
		if err != nil || c.State != idepool.StateRunning || !c.IdleExempt {
			t.Fatalf("%s not synced before its start: %+v %v", b, c, err)
		}
	}
	began := time.Now()
	c, err := h.m.Start(ctx, idepool.StartRequest{Workspace: ws("lab-1"), UserID: "alice"})
	took := time.Since(began)
	if err != nil || c.Kind != ClaimPrepared || c.Container.ID != prepared["lab-1"] {
		t.Fatalf("start of a prepared workspace: %+v %v", c, err)
	}
	if c.Container.State != idepool.StateRunning || c.Container.UserID != "alice" || c.Container.IdleExempt {
		t.Fatalf("prepared container as started: %+v", c.Container)
	}
	t.Logf("start of a prepared workspace took %s (state %s at once)", took, c.Container.State)
	if n := len(h.agents.assignments(c.Container.ID)); n != 1 {
		t.Fatalf("%d assignments: the start must not pull again", n)
	}
	if c2, _ := h.m.Start(ctx, idepool.StartRequest{Workspace: ws("lab-1")}); c2.Kind != idepool.ClaimReused {
		t.Fatalf("second start: %s", c2.Kind)
	}
	h.m.bg.Wait()
	if err := h.m.labels.wait(ctx); err != nil { // written behind the answers
		t.Fatal(err)
	}
	insts, _ := h.rt.List(ctx)
	for _, in := range insts {
		if in.ID == c.Container.ID && (in.Labels[LabelPreparedUntil] != "" || in.Labels[idepool.LabelUser] != "alice") {
			t.Fatalf("labels after the start: %v", in.Labels)
		}
		if in.ID == prepared["lab-2"] && in.Labels[LabelPreparedUntil] == "" {
			t.Fatalf("prepared label missing: %v", in.Labels)
		}
	}
	// Expiry: the unused ones are stopped, not pooled; the started one stays.
	time.Sleep(2 * time.Hour)
	h.reconcile()
	for _, b := range []string{"lab-2", "lab-3", "lab-4"} {
		got, err := h.m.Get(ctx, prepared[b])
		if err != nil || got.State != idepool.StateStopped || got.StopReason != ReasonPrepareExpired {
			t.Fatalf("%s after expiry: %+v %v", b, got, err)
		}
		h.agents.mu.Lock()
		flushed := h.agents.flushed[prepared[b]]
		h.agents.mu.Unlock()
		if flushed != 1 {
			t.Fatalf("%s not flushed before removal", b)
		}
	}
	if got, _ := h.m.Get(ctx, prepared["lab-1"]); got.State != idepool.StateRunning {
		t.Fatalf("the started one: %+v", got.State)
	}
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Warm != 3 {
		t.Fatalf("pool not refilled: %+v", p)
	}
	h.checkNoLeak()
}

// TestPreparedSurvivesRestart: the expiry is in the labels.
func TestPreparedSurvivesRestart(t *testing.T) { synctest.Test(t, testPreparedSurvivesRestart) }

func testPreparedSurvivesRestart(t *testing.T) {
	s := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 1)}}
	h := newHarness(t, s)
	h.reconcile()
	ctx := context.Background()
	res, err := h.m.Prepare(ctx, PrepareRequest{Workspaces: []idepool.Workspace{ws("lab-1")}, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil || res[0].Status != PrepareBound {
		t.Fatal(res, err)
	}
	h.restart(s)
	c, err := h.m.Start(ctx, idepool.StartRequest{Workspace: ws("lab-1"), UserID: "bob"})
	if err != nil || c.Kind != ClaimPrepared || c.Container.ID != res[0].ContainerID {
		t.Fatalf("after restart: %+v %v", c, err)
	}
}

// TestReplaceInPlace: an unhealthy claimed container is flushed, removed
// and replaced by a new one for the same workspace; its old id redirects.
func TestReplaceInPlace(t *testing.T) { synctest.Test(t, testReplaceInPlace) }

func testReplaceInPlace(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 2)}})
	h.reconcile()
	ctx := context.Background()
	old := h.start("proj").Container
	if _, err := h.m.Replace(ctx, "nothere", idepool.ReasonUnhealthy); idepool.ErrorCode(err) != idepool.ENotFound {
		t.Fatalf("unknown: %v", err)
	}
	h.reconcile()
	warmID := ""
	if cs, _, _ := h.m.List(ctx, idepool.ContainerFilter{States: []idepool.State{idepool.StateWarm}}); len(cs) > 0 {
		warmID = cs[0].ID
	}
	if _, err := h.m.Replace(ctx, warmID, idepool.ReasonUnhealthy); idepool.ErrorCode(err) != idepool.EConflict {
		t.Fatalf("warm: %v", err)
	}
	nc, err := h.m.Replace(ctx, old.ID, idepool.ReasonUnhealthy)
	if err != nil {
		t.Fatal(err)
	}
	if nc.ID == old.ID || nc.Workspace == nil || nc.Workspace.Key() != old.Workspace.Key() || nc.UserID != old.UserID {
		t.Fatalf("replacement: %+v", nc)
	}
	if h.agents.flushed[old.ID] != 1 {
		t.Fatal("old container not flushed")
	}
	if got, _ := h.m.Get(ctx, old.ID); got.State != idepool.StateStopped || got.StopReason != idepool.ReasonUnhealthy {
		t.Fatalf("old: %+v", got)
	}
	if id, ok := h.m.ReplacedBy(old.ID); !ok || id != nc.ID {
		t.Fatalf("ReplacedBy = %q %v", id, ok)
	}
	if _, ok := h.m.Lookup(old.ID); ok {
		t.Fatal("Lookup still finds the old one")
	}
	// Replaced twice: the redirect follows the chain.
	nc2, err := h.m.Replace(ctx, nc.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := h.m.ReplacedBy(old.ID); id != nc2.ID {
		t.Fatalf("chain: %s, want %s", id, nc2.ID)
	}
	if c := h.start("proj"); c.Kind != idepool.ClaimReused || c.Container.ID != nc2.ID {
		t.Fatalf("the workspace's container: %+v", c)
	}
	h.m.bg.Wait()
	h.checkNoLeak()
}

// TestInitialSyncErrorFails: a synced report with an error means the
// initial pull failed: the container fails (never running), without a
// flush, and the workspace is free for a new start.
func TestInitialSyncErrorFails(t *testing.T) { synctest.Test(t, testInitialSyncErrorFails) }

func testInitialSyncErrorFails(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 1)}})
	h.agents.mu.Lock()
	h.agents.noSync = true
	h.agents.mu.Unlock()
	h.reconcile()
	ctx := context.Background()
	c := h.start("broken").Container
	h.m.AgentReport(idepool.AgentReport{ContainerID: c.ID, Kind: idepool.AgentSynced, Generation: c.Generation,
		Workspace: c.Workspace, Error: "access denied"})
	got, err := h.m.WaitReady(ctx, c.ID)
	if idepool.ErrorCode(err) != idepool.EStartFailed || got.State != idepool.StateFailed {
		t.Fatalf("WaitReady: %+v %v", got.State, err)
	}
	if h.events.count(idepool.EventSyncError, "initial-pull") != 1 {
		t.Fatal("no sync error event")
	}
	h.reconcile()
	if h.agents.flushed[c.ID] != 0 {
		t.Fatal("a failed pull must not be flushed")
	}
	if got, _ := h.m.Get(ctx, c.ID); got.State != idepool.StateStopped {
		t.Fatalf("not removed: %+v", got.State)
	}
	h.agents.mu.Lock()
	h.agents.noSync = false
	h.agents.mu.Unlock()
	if c2 := h.start("broken"); c2.Container.ID == c.ID || c2.Kind == idepool.ClaimReused {
		t.Fatalf("new start: %+v", c2)
	}
}
