package pool

import (
	"context"
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

// restart simulates an orchestrator restart: the old manager goes away, a
// new runtime value over the same backend and a new manager recover.
func (h *harness) restart(s setup) {
	h.t.Helper()
	h.m.Close()
	cfg := h.rt.Config()
	cfg.Backend = h.rt.Backend()
	h.rt = fake.New(cfg)
	h.m = h.newManager(s, h.rt)
	if err := h.m.Recover(context.Background()); err != nil {
		h.t.Fatalf("Recover: %v", err)
	}
}

func TestRecoverKeepsClaimedAndWarm(t *testing.T) { synctest.Test(t, testRecoverKeepsClaimedAndWarm) }

func testRecoverKeepsClaimedAndWarm(t *testing.T) {
	s := setup{profiles: []idepool.Profile{testProfile("default", 3), testProfile("cold", 0)}}
	h := newHarness(t, s)
	ctx := context.Background()
	h.reconcile()
	warmClaim := h.start("ws-warm")
	coldClaim, err := h.m.Start(ctx, idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "ws-cold", Prefix: "p/q"}, Profile: "cold", UserID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.WaitReady(ctx, coldClaim.Container.ID); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	before := h.runtimeIDs()
	var warm []string
	for _, c := range mustList(t, h.m, idepool.StateWarm) {
		warm = append(warm, c.ID)
	}
	if len(before) != 5 || len(warm) != 3 {
		t.Fatalf("before restart: %v, warm %v", before, warm)
	}

	h.restart(s)
	if got := h.runtimeIDs(); !slices.Equal(got, before) {
		t.Fatalf("restart changed the runtime: %v vs %v", got, before)
	}
	for _, cl := range []idepool.Claim{warmClaim, coldClaim} {
		c, err := h.m.Get(ctx, cl.Container.ID)
		if err != nil || c.State != idepool.StateRunning || c.Workspace.Key() != cl.Container.Workspace.Key() ||
			c.Generation != 1 || c.UserID != cl.Container.UserID || c.PreWarmed != (cl.Kind == idepool.ClaimWarm) {
			t.Fatalf("recovered claim %+v (%v), was %+v", c, err, cl.Container)
		}
	}
	// Unclaimed ones wait for their agents before they rejoin the pool, and
	// count toward the target meanwhile: no creates, no removes.
	for _, id := range warm {
		if c, _ := h.m.Get(ctx, id); c.State != idepool.StateStarting {
			t.Fatalf("%s: %s before hello", id, c.State)
		}
	}
	if _, err := h.m.Start(ctx, idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "ws-warm"}}); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if h.rt.Creates() != 0 || h.rt.Removes() != 0 {
		t.Fatalf("after restart: creates %d removes %d", h.rt.Creates(), h.rt.Removes())
	}
	// Agents reconnect.
	for _, id := range warm {
		h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentHello, Ready: true})
	}
	for _, cl := range []idepool.Claim{warmClaim, coldClaim} {
		ws := *cl.Container.Workspace
		h.m.AgentReport(idepool.AgentReport{ContainerID: cl.Container.ID, Kind: idepool.AgentHello, Ready: true, Workspace: &ws, Generation: 1})
	}
	h.m.bg.Wait()
	if p := h.pool("default"); p.Warm != 3 || p.Claimed != 1 {
		t.Fatalf("default pool = %+v", p)
	}
	for _, cl := range []idepool.Claim{warmClaim, coldClaim} {
		if n := len(h.agents.assignments(cl.Container.ID)); n != 1 {
			t.Fatalf("%s: assignment re-sent to an agent that had it (%d)", cl.Container.ID, n)
		}
	}
	again, err := h.m.Start(ctx, idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "ws-cold", Prefix: "/p/q/"}, Profile: "cold"})
	if err != nil || again.Kind != idepool.ClaimReused || again.Container.ID != coldClaim.Container.ID {
		t.Fatalf("start after restart = %+v, %v", again, err)
	}
	for range 3 {
		h.reconcile()
	}
	if h.rt.Creates() != 0 || h.rt.Removes() != 0 {
		t.Fatalf("after hello: creates %d removes %d", h.rt.Creates(), h.rt.Removes())
	}
	// The tokens still verify: their hashes came back from the labels.
	for _, id := range before {
		if !h.m.VerifyAgent(id, h.agents.tokens[id]) {
			t.Fatalf("%s: token refused after restart", id)
		}
	}
	h.checkNoLeak()
}

func mustList(t *testing.T, m *Manager, states ...idepool.State) []idepool.Container {
	t.Helper()
	cs, _, err := m.List(context.Background(), idepool.ContainerFilter{States: states})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestRecoverRemovesWhatItCannotAdopt(t *testing.T) {
	synctest.Test(t, testRecoverRemovesWhatItCannotAdopt)
}

func testRecoverRemovesWhatItCannotAdopt(t *testing.T) {
	s := setup{profiles: []idepool.Profile{testProfile("default", 1)}}
	h := newHarness(t, s)
	ctx := context.Background()
	hash := map[string]string{idepool.LabelTokenHash: sha256hex("token")}
	with := func(extra map[string]string) map[string]string {
		l := maps.Clone(hash)
		maps.Copy(l, extra)
		return l
	}
	t0 := time.Now()
	ws2 := idepool.Workspace{Bucket: "shared-ws"}
	mk := func(id, profile string, labels map[string]string) {
		t.Helper()
		if _, err := h.rt.Create(ctx, idepool.ContainerSpec{ID: id, Profile: testProfile(profile, 0), Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	mk("nohash01", "default", nil)
	mk("ghost001", "ghost", with(nil))
	mk("badgen01", "default", with(map[string]string{idepool.LabelBucket: "b1", idepool.LabelGeneration: "x"}))
	mk("badbkt01", "default", with(idepool.ClaimLabels(idepool.Workspace{Bucket: "A_B"}, "", 1, true, t0)))
	mk("dead0001", "default", with(nil))
	if err := h.rt.Kill("dead0001"); err != nil {
		t.Fatal(err)
	}
	mk("good0001", "default", with(nil))
	mk("claimed1", "default", with(idepool.ClaimLabels(idepool.Workspace{Bucket: "ws-one"}, "u1", 3, true, t0)))
	mk("dupold01", "default", with(idepool.ClaimLabels(ws2, "u2", 1, true, t0)))
	mk("dupnew01", "default", with(idepool.ClaimLabels(ws2, "u2", 2, true, t0.Add(time.Second))))
	mk("silent01", "default", with(nil))

	h.restart(s)
	want := []string{"claimed1", "dupnew01", "dupold01", "good0001", "silent01"}
	if got := h.runtimeIDs(); !slices.Equal(got, want) {
		t.Fatalf("after Recover: %v, want %v", got, want)
	}
	for id, reason := range map[string]string{"nohash01": ReasonBroken, "ghost001": ReasonBroken, "badgen01": ReasonBroken,
		"badbkt01": ReasonBroken, "dead0001": idepool.ReasonFailed} {
		if c, err := h.m.Get(ctx, id); err != nil || c.State != idepool.StateStopped || c.StopReason != reason {
			t.Errorf("%s: %+v %v", id, c, err)
		}
	}
	if c, _ := h.m.Get(ctx, "claimed1"); c.Generation != 3 || c.State != idepool.StateRunning {
		t.Fatalf("claimed1: %+v", c)
	}
	// The newest claim of the shared workspace wins.
	if c := h.start("shared-ws"); c.Kind != idepool.ClaimReused || c.Container.ID != "dupnew01" {
		t.Fatalf("shared-ws start: %+v", c)
	}
	// Agents say hello; the duplicate is flushed, then removed.
	h.m.AgentReport(idepool.AgentReport{ContainerID: "good0001", Kind: idepool.AgentHello, Ready: true})
	h.m.AgentReport(idepool.AgentReport{ContainerID: "claimed1", Kind: idepool.AgentHello, Ready: true,
		Workspace: &idepool.Workspace{Bucket: "ws-one"}, Generation: 3})
	h.m.AgentReport(idepool.AgentReport{ContainerID: "dupold01", Kind: idepool.AgentHello, Ready: true, Workspace: &ws2, Generation: 1})
	h.m.AgentReport(idepool.AgentReport{ContainerID: "dupnew01", Kind: idepool.AgentHello, Ready: true, Workspace: &ws2, Generation: 2})
	h.reconcile()
	h.agents.mu.Lock()
	flushed := h.agents.flushed["dupold01"]
	h.agents.mu.Unlock()
	if flushed != 1 {
		t.Fatalf("duplicate flushed %d times", flushed)
	}
	if c, _ := h.m.Get(ctx, "dupold01"); c.State != idepool.StateStopped || c.StopReason != ReasonDuplicate {
		t.Fatalf("dupold01: %+v", c)
	}
	if got := h.runtimeIDs(); !slices.Equal(got, []string{"claimed1", "dupnew01", "good0001", "silent01"}) {
		t.Fatalf("after hello: %v", got)
	}
	if c, _ := h.m.Get(ctx, "good0001"); c.State != idepool.StateWarm {
		t.Fatalf("good0001: %s", c.State)
	}
	// silent01's agent never says hello: removed after the grace.
	time.Sleep(time.Minute + time.Second)
	h.reconcile()
	if slices.Contains(h.runtimeIDs(), "silent01") {
		t.Fatal("silent container kept past the adopt grace")
	}
	if h.rt.Creates() != 0 {
		t.Fatalf("creates = %d (pool was at target)", h.rt.Creates())
	}
	h.checkNoLeak()
}
