package pool

import (
	"testing"
	"testing/synctest"

	"github.com/idepool/idepool"
)

// An agent's remote-reset and deletions-held reports become their own
// events on the bus (with the count held), not generic sync statuses.
func TestSyncSafetyReportsBecomeEvents(t *testing.T) {
	synctest.Test(t, testSyncSafetyReportsBecomeEvents)
}

func testSyncSafetyReportsBecomeEvents(t *testing.T) {
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 1)}})
	h.reconcile()
	c := h.start("lost-store").Container
	h.m.AgentReport(idepool.AgentReport{ContainerID: c.ID, Kind: idepool.AgentSyncEvent, Event: "remote-reset",
		Message: "the workspace's store lost its identity marker", Sync: &idepool.SyncStats{}})
	h.m.AgentReport(idepool.AgentReport{ContainerID: c.ID, Kind: idepool.AgentSyncEvent, Event: "deletions-held",
		Message: "8 of 10 local files were deleted in the store at once", Sync: &idepool.SyncStats{DeletionsHeld: 8}})
	if h.events.count(idepool.EventSyncRemoteReset, "remote-reset") != 1 {
		t.Fatal("no sync.remote_reset event")
	}
	if h.events.count(idepool.EventSyncDeletionsHeld, "deletions-held") != 1 {
		t.Fatal("no sync.deletions_held event")
	}
	h.events.mu.Lock()
	defer h.events.mu.Unlock()
	for _, e := range h.events.evs {
		if e.Type == idepool.EventSyncDeletionsHeld && (e.ContainerID != c.ID || e.Data["deletionsHeld"] != 8) {
			t.Fatalf("deletions-held event: %+v", e)
		}
	}
}

// The agents' settings (AgentEnv) go into every container's environment,
// beside the agent's own variables, which they cannot override.
func TestAgentEnvInSpec(t *testing.T) { synctest.Test(t, testAgentEnvInSpec) }

func testAgentEnvInSpec(t *testing.T) {
	h := newHarness(t, setup{opts: func(o *Options) {
		o.AgentEnv = map[string]string{idepool.EnvOrphanTimeout: "15m0s", idepool.EnvAgentID: "spoofed"}
	}})
	spec, _ := h.m.spec("abcd1", testProfile(idepool.DefaultProfile, 1), nil)
	if spec.Env[idepool.EnvOrphanTimeout] != "15m0s" || spec.Env[idepool.EnvAgentID] != "abcd1" || spec.Env[idepool.EnvAgentToken] == "" {
		t.Fatalf("env: %v", spec.Env)
	}
	if h.m.opts.AgentEnv[idepool.EnvAgentToken] != "" {
		t.Fatal("the token leaked into the shared AgentEnv")
	}
}
