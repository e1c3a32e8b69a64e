package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/process"
)

// recordedClaims reads every container's labels under dataDir, as the next
// run's Recover will: container id → the bucket its labels claim ("" for
// unclaimed).
func recordedClaims(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	rt, err := process.New(process.Options{DataDir: dataDir, StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	insts, err := rt.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, in := range insts {
		ws, _ := idepool.WorkspaceFromLabels(in.Labels)
		out[in.ID] = ws.Bucket
	}
	return out
}

// TestServeKilledRightAfterClaims: a 201 means the claim is durable. On
// the process runtime (Capabilities.LocalLabels) the claim is in the
// container's labels before the 201, so nothing on the claim's path waits
// for the labels written behind the answers: the real `serve` binary runs
// with FAULT_HOLD_LABEL_WRITES (nothing behind the answers is written) and
// is SIGKILLed right after two 201s. The labels record both claims, and
// the next run answers each workspace's start with its container: nothing
// duplicated or lost. (On Swarm, where the agent's record answers and the
// labels follow, the same kill is e2e/swarm's
// TestSwarmKilledBetweenClaimAndLabels.)
func TestServeKilledRightAfterClaims(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 3)
	cmd := exec.Command(agentBinary(t), "serve")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(cfg.Port), "API_KEY="+testKey, "DATA_DIR="+dataDir,
		"PRE_WARMED_QUEUE_SIZE=3", "RUNTIME=process", "S3_EMBEDDED_ADDR="+cfg.S3EmbeddedAddr, "LOG_LEVEL=warn",
		"EMBEDDED_IDE=placeholder", "FAULT_HOLD_LABEL_WRITES=true")
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	first := &instance{cfg: cfg, base: fmt.Sprintf("http://127.0.0.1:%d", cfg.Port)}
	deadline := time.Now().Add(time.Minute)
	for {
		if code := first.callQuiet("GET", "/api/pool"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not answer within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	first.waitPool(t, "3 warm", 2*time.Minute, func(w, s, c int) bool { return w == 3 })

	claimed := map[string]string{} // bucket → container id
	for _, bucket := range []string{"window-a", "window-b"} {
		var res startJSON
		if code := first.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": bucket, "userId": "u-" + bucket}, &res); code != 201 || !res.IsPreWarmed {
			t.Fatalf("start %s: %d %+v", bucket, code, res)
		}
		claimed[bucket] = res.ID
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	before := recordedClaims(t, dataDir)
	for bucket, id := range claimed {
		if before[id] != bucket {
			t.Fatalf("container %s: labels claim %q at the kill, want %s", id, before[id], bucket)
		}
	}

	second := start(t, cfg)
	for bucket, id := range claimed {
		var res startJSON
		code := second.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": bucket, "userId": "u-" + bucket}, &res)
		if code != 200 && code != 201 || res.ID != id || !res.IsReused {
			t.Fatalf("start %s after the crash: %d %+v; want its container %s, reused", bucket, code, res, id)
		}
	}
	second.waitPool(t, "3 warm + the 2 adopted claims", 2*time.Minute, func(w, s, c int) bool { return w == 3 && c == 2 })
	var list listJSON
	second.call(t, "GET", "/api/containers", nil, &list)
	perBucket := map[string]int{}
	for _, c := range list.Containers {
		if c.S3Bucket != "" {
			perBucket[c.S3Bucket]++
		}
	}
	for bucket := range claimed {
		if perBucket[bucket] != 1 {
			t.Fatalf("%d containers for %s, want exactly 1: %+v", perBucket[bucket], bucket, list.Containers)
		}
	}
	second.stop(t)
	after := recordedClaims(t, dataDir)
	for bucket, id := range claimed {
		if after[id] != bucket {
			t.Fatalf("container %s: labels claim %q after the restart, want %s", id, after[id], bucket)
		}
	}
	third := start(t, cfg) // the claims hold from the labels alone now
	defer third.stop(t)
	third.waitPool(t, "the claims from the labels", 2*time.Minute, func(w, s, c int) bool { return w == 3 && c == 2 })
}

// callQuiet is a GET that reports a connection error as status 0.
func (in *instance) callQuiet(method, path string) int {
	req, _ := http.NewRequest(method, in.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}
