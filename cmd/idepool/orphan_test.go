package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// startOrphans runs a real serve with a pool of one and a claimed
// container, SIGKILLs it, and returns its port and DATA_DIR: the
// agents of that DATA_DIR are alive and no serve knows them.
func startOrphans(t *testing.T, orphanTimeout string) (int, string) {
	t.Helper()
	dataDir := t.TempDir()
	t.Cleanup(func() { removeAll(t, dataDir) }) // whatever a failure left
	env, port := serveEnv(t, dataDir, 1)
	env["AGENT_ORPHAN_TIMEOUT"] = orphanTimeout
	serve := startBinary(t, env, "serve")
	serve.waitServing(t, port)
	var started struct {
		State string `json:"state"`
	}
	if code := apiCall(t, port, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": "orphans", "s3Prefix": "bob"}, &started); code != 201 || started.State != "running" {
		t.Fatalf("start: %d %+v\nstderr:\n%s", code, started, serve.stderr)
	}
	if err := serve.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	serve.wait(t, 30*time.Second)
	if len(processesUnder(t, dataDir)) == 0 {
		t.Fatal("the agents ended with serve: nothing is orphaned, the test would prove nothing")
	}
	return port, dataDir
}

// waitNoProcesses waits (bounded) until no process of dataDir is left.
func waitNoProcesses(t *testing.T, dataDir string, d time.Duration, why string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(processesUnder(t, dataDir)) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: processes of DATA_DIR still alive after %v: %v", why, d, processesUnder(t, dataDir))
}

// TestOrphansOfAKilledServeExit: the agents of a SIGKILLed serve, whose
// orchestrator never comes back, flush and exit after AGENT_ORPHAN_TIMEOUT
// instead of dialling a dead address forever.
func TestOrphansOfAKilledServeExit(t *testing.T) {
	_, dataDir := startOrphans(t, "3s")
	waitNoProcesses(t, dataDir, 2*time.Minute, "unreachable orchestrator")
}

// TestOrphansRefusedByAnotherServeExit: a serve on the same address that
// does not know the agents (another DATA_DIR) refuses them, and they exit
// at once — the orphan timeout (15m) is not what ends them.
func TestOrphansRefusedByAnotherServeExit(t *testing.T) {
	port, dataDir := startOrphans(t, "15m")
	other := t.TempDir()
	env2, _ := serveEnv(t, other, 0)
	env2["PORT"] = fmt.Sprint(port) // where the orphans dial
	serve2 := startBinary(t, env2, "serve")
	serve2.waitServing(t, port)
	waitNoProcesses(t, dataDir, 2*time.Minute, "refused by an orchestrator that does not know them")
}
