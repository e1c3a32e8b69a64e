package pool

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// salvagingRuntime is the fake runtime with the Salvage capability: it
// records each call and whether the container still existed then.
type salvagingRuntime struct {
	*helloRuntime
	mu    sync.Mutex
	calls []idepool.Assignment
	ids   []string
	alive []bool
	err   error // answered instead of a result when set
}

// Capabilities offers Salvage besides the fake's own.
func (r *salvagingRuntime) Capabilities() idepool.Capabilities {
	c := r.helloRuntime.Capabilities()
	c.Salvage = r.Salvage
	return c
}

func (r *salvagingRuntime) Salvage(ctx context.Context, id string, a idepool.Assignment) (idepool.SalvageResult, error) {
	_, err := r.Inspect(ctx, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, a)
	r.ids = append(r.ids, id)
	r.alive = append(r.alive, err == nil)
	if r.err != nil {
		return idepool.SalvageResult{}, r.err
	}
	return idepool.SalvageResult{Uploaded: 1, Bytes: 10, Paths: []string{"new.txt"}}, nil
}

// killAgent plays an agent that dies with its container: its connection
// closes, then the runtime reports the container failed.
func (h *harness) killAgent(id string, lastSync time.Time) {
	h.t.Helper()
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentSyncEvent, Event: "stats",
		Sync: &idepool.SyncStats{LastSync: lastSync}})
	h.agents.mu.Lock()
	h.agents.down[id] = true
	h.agents.mu.Unlock()
	h.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentGone})
	if err := h.rt.Kill(id); err != nil {
		h.t.Fatal(err)
	}
}

func (l *eventLog) find(t idepool.EventType, id string) (idepool.Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.evs {
		if e.Type == t && e.ContainerID == id {
			return e, true
		}
	}
	return idepool.Event{}, false
}

// TestDeadContainerSalvagedBeforeRemove: a claimed container whose agent
// died is salvaged (with the claim's assignment) before the runtime
// removes it, and an event says how many files were saved.
func TestDeadContainerSalvagedBeforeRemove(t *testing.T) {
	synctest.Test(t, testDeadContainerSalvagedBeforeRemove)
}

func testDeadContainerSalvagedBeforeRemove(t *testing.T) {
	sr := &salvagingRuntime{}
	h := newHarness(t, setup{opts: func(o *Options) {
		sr.helloRuntime = o.Runtime.(*helloRuntime)
		o.Runtime = sr
	}})
	h.reconcile()
	id := h.start("salvaged-ws").Container.ID
	h.killAgent(id, time.Now())
	h.reconcile()
	sr.mu.Lock()
	ids, calls, alive := sr.ids, sr.calls, sr.alive
	sr.mu.Unlock()
	if len(ids) != 1 || ids[0] != id {
		t.Fatalf("Salvage called for %v, want once for %s", ids, id)
	}
	if !alive[0] {
		t.Error("Salvage ran after the container was removed")
	}
	if calls[0].Workspace.Bucket != "salvaged-ws" || calls[0].Credentials.AccessKeyID != "AKIADEFAULT" {
		t.Errorf("salvage assignment = %+v, want the claim's workspace and credentials", calls[0].Workspace)
	}
	ev, ok := h.events.find(idepool.EventSalvaged, id)
	if !ok {
		t.Fatalf("no %s event; events: %+v", idepool.EventSalvaged, h.events.evs)
	}
	if ev.Data["salvaged"] != 1 || ev.Reason != "salvaged" {
		t.Errorf("event = %+v, want 1 salvaged", ev)
	}
	if c, _ := h.m.Get(context.Background(), id); c.State != idepool.StateStopped {
		t.Errorf("container after salvage: %s, want stopped", c.State)
	}
	h.checkNoLeak()
}

// TestDeadContainerUnreachableSaysWhatMayBeLost: a runtime that cannot
// reach a dead container's files (Swarm, a lost node) gets an event naming
// the last sync, after which edits may be lost.
func TestDeadContainerUnreachableSaysWhatMayBeLost(t *testing.T) {
	synctest.Test(t, testDeadContainerUnreachableSaysWhatMayBeLost)
}

func testDeadContainerUnreachableSaysWhatMayBeLost(t *testing.T) {
	h := newHarness(t, setup{})
	h.reconcile()
	id := h.start("lost-ws").Container.ID
	last := time.Now().Add(-42 * time.Second)
	h.killAgent(id, last)
	h.reconcile()
	ev, ok := h.events.find(idepool.EventSalvaged, id)
	if !ok {
		t.Fatalf("no %s event", idepool.EventSalvaged)
	}
	if ev.Reason != "unreachable" || ev.Data["salvaged"] != 0 || ev.Data["lastSync"] != last.UTC().Format(time.RFC3339) {
		t.Errorf("event = %+v, want unreachable, 0 salvaged, lastSync %s", ev, last.UTC().Format(time.RFC3339))
	}
	// A warm container (no user work) says nothing.
	for _, w := range h.managerIDs() {
		if w != id {
			if _, ok := h.events.find(idepool.EventSalvaged, w); ok {
				t.Errorf("salvage event for warm container %s", w)
			}
		}
	}
}

// TestSalvageUnreachableFallsBack: a runtime whose Salvage cannot reach the files
// (Swarm, the container on a lost node) leads to the "may be lost" event.
func TestSalvageUnreachableFallsBack(t *testing.T) { synctest.Test(t, testSalvageUnreachableFallsBack) }

func testSalvageUnreachableFallsBack(t *testing.T) {
	sr := &salvagingRuntime{err: idepool.Errorf(idepool.EUnavailable, "no stopped task container on this engine's node")}
	h := newHarness(t, setup{opts: func(o *Options) {
		sr.helloRuntime = o.Runtime.(*helloRuntime)
		o.Runtime = sr
	}})
	h.reconcile()
	id := h.start("lost-node-ws").Container.ID
	last := time.Now().Add(-time.Minute)
	h.killAgent(id, last)
	h.reconcile()
	ev, ok := h.events.find(idepool.EventSalvaged, id)
	if !ok {
		t.Fatalf("no %s event", idepool.EventSalvaged)
	}
	if ev.Reason != "unreachable" || ev.Data["lastSync"] != last.UTC().Format(time.RFC3339) || !strings.Contains(ev.Message, "may be lost") {
		t.Errorf("event = %+v, want unreachable with the last sync", ev)
	}
	h.checkNoLeak()
}
