package pool

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// nodeRuntime wraps the harness's runtime with what a cluster adds: the
// engine's node states, and task rejections for want of the image on a
// node. Everything else is the fake's.
type nodeRuntime struct {
	idepool.Runtime
	mu       sync.Mutex
	down     map[string]bool   // node → the engine lost it
	rejected map[string]string // container id → node that lacks the image
	nodeOf   map[string]string // container id → the node it runs on (default: the fake's)
	specs    []idepool.ContainerSpec
}

func (r *nodeRuntime) Capabilities() idepool.Capabilities {
	c := r.Runtime.Capabilities()
	c.NodeStates = func(context.Context) ([]idepool.NodeState, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return []idepool.NodeState{{Name: "fake", Down: r.down["fake"]}, {Name: "n2", Down: r.down["n2"]}}, nil
	}
	return c
}

func (r *nodeRuntime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	r.mu.Lock()
	r.specs = append(r.specs, spec)
	r.mu.Unlock()
	return r.Runtime.Create(ctx, spec)
}

func (r *nodeRuntime) List(ctx context.Context) ([]idepool.Instance, error) {
	insts, err := r.Runtime.List(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range insts {
		if node, ok := r.nodeOf[insts[i].ID]; ok {
			insts[i].Node = node
		}
		if node, ok := r.rejected[insts[i].ID]; ok {
			insts[i].Node, insts[i].Status = node, idepool.StatusFailed
			insts[i].Message = "task rejected: No such image: ide:test"
		}
	}
	return insts, err
}

func (r *nodeRuntime) lastSpec() idepool.ContainerSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.specs[len(r.specs)-1]
}

func newNodeHarness(t *testing.T, target int) (*harness, *nodeRuntime) {
	nr := &nodeRuntime{down: map[string]bool{}, rejected: map[string]string{}, nodeOf: map[string]string{}}
	h := newHarness(t, setup{
		profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, target)},
		opts: func(o *Options) {
			nr.Runtime = o.Runtime
			o.Runtime = nr
			o.ImageRetry = 5 * time.Minute
		},
	})
	return h, nr
}

// TestNodeLostReplacesClaimedAndWarm: the engine says a node is down and
// its agents are gone: the claimed container is replaced for the same
// workspace (its old id now leads to the new one; an event says what may be
// lost), the warm one is failed at once and the pool refills.
func TestNodeLostReplacesClaimedAndWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, nr := newNodeHarness(t, 1)
		h.reconcile()
		synctest.Wait()
		claim := h.start("lost-ws")
		old := claim.Container.ID
		h.reconcile()
		synctest.Wait()
		if p := h.pool(idepool.DefaultProfile); p.Warm != 1 || p.Claimed != 1 {
			t.Fatalf("before: %+v", p)
		}
		warm := h.m.profiles[idepool.DefaultProfile].warm[0]

		// The node dies: the agents' connections drop first.
		for _, id := range []string{old, warm} {
			h.agents.mu.Lock()
			h.agents.down[id] = true
			h.agents.mu.Unlock()
			h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentGone})
		}
		h.reconcile()
		synctest.Wait()
		if got, _ := h.m.Get(context.Background(), old); got.State != idepool.StateRunning {
			t.Fatalf("agent gone, node still up: the claimed container is %s, want kept running", got.State)
		}
		if _, ok := h.m.ReplacedBy(old); ok {
			t.Fatal("replaced before the engine said the node is down")
		}

		// The engine says it is down.
		nr.mu.Lock()
		nr.down["fake"] = true
		nr.mu.Unlock()
		h.reconcile()
		synctest.Wait()
		h.reconcile()
		synctest.Wait()

		newID, ok := h.m.ReplacedBy(old)
		if !ok {
			t.Fatal("claimed container on the lost node not replaced")
		}
		nc, err := h.m.Get(context.Background(), newID)
		if err != nil || nc.Workspace == nil || nc.Workspace.Bucket != "lost-ws" || !nc.State.Live() {
			t.Fatalf("replacement %s: %+v, %v", newID, nc, err)
		}
		again, err := h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "lost-ws"}, UserID: "u-lost-ws"})
		if err != nil || again.Container.ID != newID {
			t.Fatalf("start for the workspace answered %s (%v), want the replacement %s", again.Container.ID, err, newID)
		}
		if oc, _ := h.m.Get(context.Background(), old); oc.State != idepool.StateStopped || oc.StopReason != ReasonNodeLost {
			t.Errorf("old container: %s, reason %q; want stopped, %s", oc.State, oc.StopReason, ReasonNodeLost)
		}
		if wc, _ := h.m.Get(context.Background(), warm); wc.State != idepool.StateStopped {
			t.Errorf("warm container on the lost node: %s, want stopped", wc.State)
		}
		if n := h.events.count(idepool.EventSalvaged, "unreachable"); n != 1 {
			t.Errorf("%d events saying what may be lost, want 1", n)
		}
		if p := h.pool(idepool.DefaultProfile); p.Warm != 1 || p.Claimed != 1 || p.Starting != 0 {
			t.Errorf("after: %+v, want the pool refilled (1 warm) and one claim", p)
		}
		h.checkNoLeak()
	})
}

// TestSilentNodeLostBeforeTheEngine: every agent on one node gone for
// NodeSilence while an agent on another node answers: idepool replaces the
// node's claimed container before the engine calls the node down.
func TestSilentNodeLostBeforeTheEngine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, nr := newNodeHarness(t, 0)
		h.reconcile()
		lost := h.start("silent-ws").Container.ID
		kept := h.start("other-ws").Container.ID
		nr.mu.Lock()
		nr.nodeOf[kept] = "n2"
		nr.mu.Unlock()
		h.reconcile()
		synctest.Wait()

		h.agents.mu.Lock()
		h.agents.down[lost] = true
		h.agents.mu.Unlock()
		h.m.AgentReport(idepool.AgentReport{ContainerID: lost, Kind: idepool.AgentGone})
		h.reconcile()
		synctest.Wait()
		if _, ok := h.m.ReplacedBy(lost); ok {
			t.Fatal("replaced at once: a dropped connection alone is not a lost node")
		}
		time.Sleep(h.m.opts.NodeSilence)
		h.reconcile()
		synctest.Wait()
		h.reconcile()
		synctest.Wait()
		newID, ok := h.m.ReplacedBy(lost)
		if !ok {
			t.Fatalf("every agent on the node silent for %v, the engine still says up: not replaced", h.m.opts.NodeSilence)
		}
		if oc, _ := h.m.Get(context.Background(), lost); oc.StopReason != ReasonNodeLost {
			t.Errorf("old container stop reason %q, want %s", oc.StopReason, ReasonNodeLost)
		}
		if nc, _ := h.m.Get(context.Background(), newID); nc.Workspace == nil || nc.Workspace.Bucket != "silent-ws" {
			t.Errorf("replacement %+v", nc)
		}
		if kc, _ := h.m.Get(context.Background(), kept); kc.State != idepool.StateRunning {
			t.Errorf("the container on the answering node: %s, want running", kc.State)
		}
		h.checkNoLeak()
	})
}

// TestImageMissingNodeAvoided: a container rejected on a node for want of
// its image names the node in the pool's status, with an event; the
// profile's next creates keep off it until ImageRetry, then try it again.
func TestImageMissingNodeAvoided(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, nr := newNodeHarness(t, 1)
		h.reconcile()
		synctest.Wait()
		first := h.m.profiles[idepool.DefaultProfile].warm[0]
		if avoid := nr.lastSpec().AvoidNodes; avoid != nil {
			t.Fatalf("first create avoids %v", avoid)
		}
		nr.mu.Lock()
		nr.rejected[first] = "n2"
		nr.mu.Unlock()
		h.reconcile() // sees it failed, records n2, removes it
		synctest.Wait()
		h.reconcile() // refills
		synctest.Wait()

		p := h.pool(idepool.DefaultProfile)
		if len(p.NodesLackingImage) != 1 || p.NodesLackingImage[0].Node != "n2" || !imageMissing(p.NodesLackingImage[0].Error) {
			t.Fatalf("pool status: %+v, want n2 named as lacking the image", p)
		}
		if n := h.events.count(idepool.EventCreateFail, "image-missing"); n != 1 {
			t.Errorf("%d image-missing events, want 1", n)
		}
		if avoid := nr.lastSpec().AvoidNodes; !slices.Equal(avoid, []string{"n2"}) {
			t.Errorf("next create avoids %v, want [n2]", avoid)
		}

		time.Sleep(5 * time.Minute) // ImageRetry, in fake time
		h.reconcile()
		synctest.Wait()
		if p := h.pool(idepool.DefaultProfile); len(p.NodesLackingImage) != 0 {
			t.Errorf("after the retry time: %+v, want no node listed", p.NodesLackingImage)
		}
		if err := h.m.SetTarget(context.Background(), idepool.DefaultProfile, 2); err != nil {
			t.Fatal(err)
		}
		h.reconcile()
		synctest.Wait()
		if avoid := nr.lastSpec().AvoidNodes; avoid != nil {
			t.Errorf("create after the retry time avoids %v, want n2 tried again", avoid)
		}
	})
}
