package pool

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

// helloFrom plays the hello of container id's agent after a restart: with
// the claim it persisted from as, or none.
func (h *harness) helloFrom(id string, as *idepool.Assignment) {
	r := idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true}
	if as != nil {
		ws := as.Workspace
		r.Workspace, r.Generation = &ws, as.Generation
		r.Claim = &idepool.ClaimRecord{Epoch: as.Epoch, UserID: as.UserID, IdleExempt: as.IdleExempt, PreWarmed: as.PreWarmed}
	}
	h.m.AgentReport(r)
}

// TestClaimAdoptedFromAgentRecord is the window issue 18 opened: a warm
// claim answers on its agent's ack, and its labels are written behind. A
// crash after the answer and before the labels (HoldLabelWrites, the exact
// point) leaves a container whose labels say unclaimed while its agent
// holds the claim. After the restart the first start for that workspace
// waits for the agent's hello and gets that container: no duplicate, no
// lost claim, and the labels are written then.
func TestClaimAdoptedFromAgentRecord(t *testing.T) { synctest.Test(t, testClaimAdoptedFromAgentRecord) }

func testClaimAdoptedFromAgentRecord(t *testing.T) {
	held := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 2)},
		opts: func(o *Options) { o.HoldLabelWrites = true }}
	h := newHarness(t, held)
	h.reconcile()
	ctx := context.Background()
	claim, err := h.m.Start(ctx, idepool.StartRequest{Workspace: ws("crash-ws"), UserID: "carol", IdleExempt: true})
	if err != nil || claim.Kind != idepool.ClaimWarm {
		t.Fatalf("claim: %+v %v", claim, err)
	}
	id := claim.Container.ID
	synctest.Wait()
	inst, err := h.rt.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, claimed := idepool.WorkspaceFromLabels(inst.Labels); claimed {
		t.Fatalf("the fault point did not hold the label write: %v", inst.Labels)
	}
	as := h.agents.assignments(id)
	if len(as) != 1 {
		t.Fatalf("assignments: %+v", as)
	}

	// The crash: the next run recovers from labels that do not know the claim.
	h.restart(setup{profiles: held.profiles})
	type result struct {
		c   idepool.Claim
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := h.m.Start(ctx, idepool.StartRequest{Workspace: ws("crash-ws"), UserID: "carol"})
		got <- result{c, err}
	}()
	synctest.Wait()
	select {
	case r := <-got:
		t.Fatalf("a start answered before the recovered agents reported: %+v %v", r.c, r.err)
	default:
	}
	for _, other := range h.managerIDs() {
		if other != id {
			h.helloFrom(other, nil)
		}
	}
	synctest.Wait()
	select {
	case r := <-got:
		t.Fatalf("a start answered before the claimed container's agent reported: %+v %v", r.c, r.err)
	default:
	}
	h.helloFrom(id, &as[0])
	r := <-got
	if r.err != nil || r.c.Container.ID != id || r.c.Kind != idepool.ClaimReused {
		t.Fatalf("start after the restart: %+v %v; want container %s reused", r.c, r.err, id)
	}
	c := r.c.Container
	if c.Generation != 1 || c.UserID != "carol" || !c.IdleExempt || !c.ClaimedAt.Equal(claim.Container.ClaimedAt) {
		t.Fatalf("adopted claim: %+v, want as claimed %+v", c, claim.Container)
	}
	claimedTo := 0
	for _, cc := range mustList(t, h.m, idepool.StateRunning, idepool.StateSyncing) {
		if cc.Workspace != nil && cc.Workspace.Key() == ws("crash-ws").Key() {
			claimedTo++
		}
	}
	if claimedTo != 1 {
		t.Fatalf("%d containers for the workspace, want 1", claimedTo)
	}
	if err := h.m.labels.wait(ctx); err != nil {
		t.Fatal(err)
	}
	inst, _ = h.rt.Inspect(ctx, id)
	if w, claimed := idepool.WorkspaceFromLabels(inst.Labels); !claimed || w.Key() != ws("crash-ws").Key() ||
		inst.Labels[idepool.LabelGeneration] != "1" || inst.Labels[idepool.LabelUser] != "carol" {
		t.Fatalf("labels after the adoption: %v", inst.Labels)
	}
	if n := len(h.agents.assignments(id)); n != 1 {
		t.Fatalf("%d assignments: the adopted claim must not be assigned again", n)
	}
	if h.events.count(idepool.EventClaim, "adopted") != 1 {
		t.Fatal("no adoption event")
	}
	h.checkNoLeak()
}

// TestAdoptionWaitIsBounded: an agent that stays silent after a restart
// holds the starts back AdoptWait at most; if it then reports a claim of a
// workspace that got a new container meanwhile, the older claim is doomed
// (flushed, then stopped), never a second live container.
func TestAdoptionWaitIsBounded(t *testing.T) { synctest.Test(t, testAdoptionWaitIsBounded) }

func testAdoptionWaitIsBounded(t *testing.T) {
	held := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 1)},
		opts: func(o *Options) { o.HoldLabelWrites = true }}
	h := newHarness(t, held)
	h.reconcile()
	ctx := context.Background()
	first := h.start("late-agent")
	as := h.agents.assignments(first.Container.ID)
	h.restart(setup{profiles: held.profiles, opts: func(o *Options) { o.AdoptWait = 3 * time.Second }})
	began := time.Now()
	second, err := h.m.Start(ctx, idepool.StartRequest{Workspace: ws("late-agent")})
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited != 3*time.Second {
		t.Fatalf("the start waited %s, want AdoptWait (3s)", waited)
	}
	if second.Container.ID == first.Container.ID {
		t.Fatal("the silent container was handed out before its agent reported")
	}
	h.settle(second.Container.ID)
	h.helloFrom(first.Container.ID, &as[0])
	h.reconcile()
	h.reconcile()
	if got, _ := h.m.Get(ctx, first.Container.ID); got.State != idepool.StateStopped || got.StopReason != ReasonDuplicate {
		t.Fatalf("older claim: %+v, want stopped as a duplicate", got)
	}
	if h.agents.flushed[first.Container.ID] != 1 {
		t.Fatal("the older claim was not flushed before its stop")
	}
	if got, _ := h.m.Get(ctx, second.Container.ID); got.State != idepool.StateRunning {
		t.Fatalf("newer claim: %+v", got)
	}
}

// TestWarmOnlyOnceAddressed: a container whose agent says it is ready before
// the runtime knows its address (a Kubernetes pod's IP arrives after Create)
// does not join the pool until the runtime reports one: a claim never gets
// a container the router cannot reach.
func TestWarmOnlyOnceAddressed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 1)},
			fake: fake.Config{Endpoints: func(idepool.ContainerSpec) map[string]string { return nil }}})
		h.reconcile()
		time.Sleep(2 * time.Second) // the resolver asks again and again
		synctest.Wait()
		if p := h.pool(idepool.DefaultProfile); p.Warm != 0 {
			t.Fatalf("pool %+v: warm without an address", p)
		}
		ids := h.managerIDs()
		if len(ids) != 1 {
			t.Fatalf("containers %v", ids)
		}
		if err := h.rt.Backend().SetEndpoints(ids[0], map[string]string{"code": "10.0.0.9:8080"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if p := h.pool(idepool.DefaultProfile); p.Warm != 1 {
			t.Fatalf("pool %+v: not warm once addressed", p)
		}
		c := h.start("addressed")
		if c.Kind != idepool.ClaimWarm || c.Container.Endpoints["code"] != "10.0.0.9:8080" {
			t.Fatalf("claim %+v", c)
		}
	})
}
