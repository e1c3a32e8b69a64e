package server_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// TestRestartAdoptsContainers is the restart promise on the process runtime:
// stop `serve` with warm and claimed containers, start it again, and find
// claimed still claimed to the same workspace, warm still warm, nothing
// duplicated, and anything that cannot be adopted removed.
func TestRestartAdoptsContainers(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 3)

	first := start(t, cfg)
	first.waitPool(t, "3 warm", time.Minute, func(w, s, c int) bool { return w == 3 && s == 0 })

	claimed := map[string]string{} // bucket → id
	for _, bucket := range []string{"restart-a", "restart-b"} {
		var res startJSON
		code := first.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": bucket, "userId": "u-" + bucket}, &res)
		if code != 201 || !res.IsPreWarmed {
			t.Fatalf("start %s: %d %+v", bucket, code, res)
		}
		claimed[bucket] = res.ID
	}
	first.waitPool(t, "3 warm again + 2 claimed", time.Minute, func(w, s, c int) bool { return w == 3 && s == 0 && c == 2 })
	before := listIDs(t, first)
	if len(before) != 5 {
		t.Fatalf("before restart: want 5 containers, got %v", before)
	}
	first.stop(t)

	// While idepool is down: one warm container dies, and a container
	// directory appears that no one can adopt (broken record).
	var warmIDs []string
	for id, state := range before {
		if state == string(idepool.StateWarm) {
			warmIDs = append(warmIDs, id)
		}
	}
	sort.Strings(warmIDs)
	victim := warmIDs[0]
	killContainer(t, dataDir, victim)
	broken := filepath.Join(dataDir, "containers", "brokenrecord1")
	if err := os.MkdirAll(broken, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "meta.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	second := start(t, cfg)
	defer second.stop(t)
	second.waitPool(t, "2 claimed, 3 warm after restart", 2*time.Minute, func(w, s, c int) bool { return w == 3 && s == 0 && c == 2 })

	after := listIDs(t, second)
	for bucket, id := range claimed {
		if after[id] != string(idepool.StateRunning) {
			t.Errorf("claimed %s (%s): state %q after restart, want running", id, bucket, after[id])
		}
		var got startJSON
		if code := second.call(t, "GET", "/api/containers/"+id, nil, &got); code != 200 || got.S3Bucket != bucket {
			t.Errorf("GET %s after restart: %d bucket %q, want %q", id, code, got.S3Bucket, bucket)
		}
		// A new start for the same workspace returns the same container.
		var again startJSON
		if code := second.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": bucket}, &again); code != 200 || !again.IsReused || again.ID != id {
			t.Errorf("start %s after restart: %d %+v, want 200 reused %s", bucket, code, again, id)
		}
	}
	for _, id := range warmIDs[1:] {
		if after[id] != string(idepool.StateWarm) {
			t.Errorf("warm %s: state %q after restart, want warm (adopted, not recreated)", id, after[id])
		}
	}
	if _, ok := after[victim]; ok {
		t.Errorf("dead container %s still listed after restart", victim)
	}
	if len(after) != 5 {
		t.Errorf("after restart: want 5 containers (2 claimed + 3 warm), got %v", after)
	}

	// The runtime holds exactly what the API shows: nothing duplicated, the
	// broken record and the dead container removed.
	deadline := time.Now().Add(time.Minute)
	for {
		insts := runtimeIDs(t, second)
		if len(insts) == len(after) && !insts["brokenrecord1"] && !insts[victim] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runtime holds %v, API shows %v", insts, after)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func listIDs(t *testing.T, in *instance) map[string]string {
	t.Helper()
	var l listJSON
	if code := in.call(t, "GET", "/api/containers?limit=500", nil, &l); code != 200 {
		t.Fatalf("list: %d", code)
	}
	out := map[string]string{}
	for _, c := range l.Containers {
		out[c.ID] = c.State
	}
	return out
}

func runtimeIDs(t *testing.T, in *instance) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	insts, err := in.srv.Runtime().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, i := range insts {
		out[i.ID] = true
	}
	return out
}

// killContainer kills a container's agent from outside, as a crash would.
func killContainer(t *testing.T, dataDir, id string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "containers", id, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Process struct {
			PID int `json:"pid"`
		} `json:"process"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Process.PID <= 1 {
		t.Fatalf("meta.json of %s: pid %d, %v", id, m.Process.PID, err)
	}
	if err := syscall.Kill(-m.Process.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", id, err)
	}
}
