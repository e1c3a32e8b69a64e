package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

func procByName(ps []idepool.ProcessStatus, name string) (idepool.ProcessStatus, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p, true
		}
	}
	return idepool.ProcessStatus{}, false
}

// waitFile waits until path exists with content and returns it.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // hang guard
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			return string(b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s never written", path)
	return ""
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// supervisedConfig: workloads plus one route answered by a test server (the
// workloads here are shell one-liners, not HTTP servers).
func supervisedConfig(t *testing.T, e *hubEnv, workloads []idepool.Workload) Config {
	cfg := testConfig(t, e.srv.URL)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	t.Cleanup(web.Close)
	u, _ := url.Parse(web.URL)
	port, _ := strconv.Atoi(u.Port())
	cfg.Routes = []idepool.Route{{Name: "code", Port: port}}
	cfg.Workloads = workloads
	cfg.RestartMin = 5 * time.Millisecond
	cfg.RestartMax = 40 * time.Millisecond
	cfg.StableAfter = time.Hour
	return cfg
}

func TestSupervision(t *testing.T) {
	e := startHub(t, "")
	dir := t.TempDir()
	out := filepath.Join(dir, "env.out")
	cfg := supervisedConfig(t, e, []idepool.Workload{
		{Name: "crasher", Command: []string{"sh", "-c", "exit 3"}},
		{Name: "steady", Command: []string{"sh", "-c", `echo "$IDEPOOL_PORT_CODE ${IDEPOOL_AGENT_TOKEN:-none} $FOO $(pwd)" > ` + out + `; exec sleep 600`},
			Env: map[string]string{"FOO": "bar"}, Dir: dir},
		{Name: "stubborn", Command: []string{"sh", "-c", `trap "" TERM; echo $$ > ` + filepath.Join(dir, "stubborn.pid") + `; while :; do sleep 1; done`}},
		{Name: "missing", Command: []string{"/nonexistent/binary"}},
	})
	cfg.KillGrace = 100 * time.Millisecond
	cfg.BaseEnv = append(os.Environ(), "IDEPOOL_AGENT_TOKEN=must-not-leak")
	cancel, done := runAgent(t, cfg)

	// A readiness answer from any HTTP status (418 here).
	hb, _ := e.rec.waitFor(t, 0, "heartbeat with restarts", func(r idepool.AgentReport) bool {
		if r.Kind != idepool.AgentHeartbeat || !r.Ready {
			return false
		}
		c, _ := procByName(r.Processes, "crasher")
		s, _ := procByName(r.Processes, "steady")
		m, _ := procByName(r.Processes, "missing")
		return c.Restarts >= 3 && s.State == StateRunning && m.Restarts >= 1
	})
	c, _ := procByName(hb.Processes, "crasher")
	if c.State != StateRestarting && c.State != StateRunning {
		t.Fatalf("crasher: %+v", c)
	}
	if c.State == StateRestarting && c.Message != "exit status 3" {
		t.Fatalf("crasher message: %+v", c)
	}
	m, _ := procByName(hb.Processes, "missing")
	if m.State != StateFailed || m.Message == "" {
		t.Fatalf("missing: %+v", m)
	}
	s, _ := procByName(hb.Processes, "steady")
	if s.PID <= 0 || s.Restarts != 0 {
		t.Fatalf("steady: %+v", s)
	}
	if got, want := waitFile(t, out), strconv.Itoa(cfg.Routes[0].Port)+" none bar "+dir+"\n"; got != want {
		t.Fatalf("workload env: got %q, want %q", got, want)
	}
	stubborn, _ := strconv.Atoi(strings.TrimSpace(waitFile(t, filepath.Join(dir, "stubborn.pid"))))

	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	// SIGTERM for the steady one, SIGKILL after the grace for the stubborn one.
	if alive(s.PID) || alive(stubborn) {
		t.Fatalf("workloads survived the agent: steady %v stubborn %v", alive(s.PID), alive(stubborn))
	}
}

func TestSupervisorStatesAfterStop(t *testing.T) {
	cfg := Config{Workloads: []idepool.Workload{{Name: "a", Command: []string{"sleep", "600"}}}}
	cfg.withDefaults()
	cfg.KillGrace = time.Second
	s := newSupervisor(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	s.start(ctx)
	for s.statuses()[0].State != StateRunning {
		time.Sleep(time.Millisecond)
	}
	pid := s.statuses()[0].PID
	cancel()
	s.wait()
	st := s.statuses()[0]
	if st.State != StateExited || st.Message != "signal: terminated" || alive(pid) {
		t.Fatalf("after stop: %+v alive=%v", st, alive(pid))
	}
}
