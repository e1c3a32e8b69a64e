package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool/internal/proctest"
	"github.com/idepool/idepool/runtime/process"
)

// startedUnder maps every live process whose environment puts its agent
// state under dataDir's containers to its container id: agents, and all
// they started.
func startedUnder(t testing.TB, dataDir string) map[int]string {
	t.Helper()
	out, err := proctest.StartedUnder(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sessionOf returns the session id of pid (field 6 of /proc/<pid>/stat).
func sessionOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	i := bytes.LastIndexByte(b, ')')
	if err != nil || i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return 0
	}
	sid, _ := strconv.Atoi(f[3])
	return sid
}

// TestServeKilledMidBurst SIGKILLs the real `idepool serve` binary while it
// creates a pool of containers, then starts serve again on the same
// DATA_DIR: every agent process must be one a record tracks (adopted), and
// none may survive once the containers are removed.
func TestServeKilledMidBurst(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 10)
	cfg.S3EmbeddedAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(agentBinary(t), "serve")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(cfg.Port), "API_KEY="+testKey, "DATA_DIR="+dataDir,
		"PRE_WARMED_QUEUE_SIZE=10", "RUNTIME=process", "S3_EMBEDDED_ADDR="+cfg.S3EmbeddedAddr, "LOG_LEVEL=warn",
		"EMBEDDED_IDE=placeholder")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Killed once the burst is under way: at least three agents started
	// (their directories are made before them), at a point of some create
	// that the test does not choose.
	deadline := time.Now().Add(time.Minute)
	for {
		ents, _ := os.ReadDir(filepath.Join(dataDir, "containers"))
		if len(ents) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("serve created no containers within a minute")
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("killed with %d agent processes running", len(startedUnder(t, dataDir)))

	second := start(t, cfg)
	second.waitPool(t, "10 warm after restart", 2*time.Minute, func(w, s, c int) bool { return w == 10 && s == 0 })
	for pid, id := range startedUnder(t, dataDir) {
		b, err := os.ReadFile(filepath.Join(dataDir, "containers", id, "meta.json"))
		var m struct {
			Process struct {
				PID int `json:"pid"`
			} `json:"process"`
		}
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		// The recorded agent, or a workload in its session.
		if err != nil || m.Process.PID <= 1 || (m.Process.PID != pid && sessionOf(pid) != m.Process.PID) {
			t.Errorf("process %d of container %s runs untracked (record pid %d, %v)", pid, id, m.Process.PID, err)
		}
	}
	second.stop(t)
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
	for _, i := range insts {
		if err := rt.Remove(ctx, i.ID); err != nil {
			t.Errorf("Remove(%s): %v", i.ID, err)
		}
	}
	if left := startedUnder(t, dataDir); len(left) > 0 {
		t.Errorf("processes left after every container was removed: %v", left)
	}
}
