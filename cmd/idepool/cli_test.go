package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/client"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/events"
	"github.com/idepool/idepool/internal/testbin"
	"github.com/idepool/idepool/runtime/process"
	"github.com/idepool/idepool/server"
)

const cliTestKey = "cli-test-key-0123456789abcdef"

var cliBin testbin.Builder

// cliServer is a real `idepool serve` on the process runtime, in-process,
// with real agents; base is where the CLI talks to it.
type cliServer struct {
	base string
	srv  *server.Server
	// bus is the test's own event bus, mounted at /api/events when the
	// server does not serve events itself yet.
	bus *events.Bus
}

func startCLIServer(t *testing.T, poolTarget int) *cliServer {
	t.Helper()
	binDir := t.TempDir()
	agent, err := cliBin.Path(binDir)
	if err != nil {
		t.Fatalf("build idepool: %v", err)
	}
	dataDir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PORT": fmt.Sprint(ln.Addr().(*net.TCPAddr).Port), "API_KEY": cliTestKey, "DATA_DIR": dataDir, "RUNTIME": "process",
		"PRE_WARMED_QUEUE_SIZE": fmt.Sprint(poolTarget), "FLUSH_TIMEOUT": "5s",
		"EMBEDDED_IDE": "placeholder", // the CLI, not an IDE installed here
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, "")
	if err != nil {
		ln.Close()
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *server.Server, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(cliTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		done <- server.Run(ctx, cfg, server.Options{Logger: logger, Listener: ln, AgentCommand: []string{agent, "agent"},
			Version: "test", Ready: func(s *server.Server) { ready <- s }})
	}()
	cs := &cliServer{}
	select {
	case cs.srv = <-ready:
	case err := <-done:
		t.Fatalf("server ended at start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
		removeAll(t, dataDir)
	})
	cs.base = "http://" + cs.srv.Addr()
	if !servesEvents(t, cs.base) {
		// The server does not stream events yet: put a bus of the test's in
		// front, so `idepool events` is tested against the real SSE handler.
		cs.bus = events.New(events.Options{})
		t.Cleanup(func() { cs.bus.Close() })
		sse := cs.bus.Handler(events.HandlerOptions{})
		real := cs.srv.Handler()
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/events" {
				if r.Header.Get("Authorization") != "Bearer "+cliTestKey {
					w.WriteHeader(http.StatusUnauthorized)
					io.WriteString(w, `{"error":{"code":"AUTHENTICATION_FAILED","message":"API key required"}}`)
					return
				}
				sse.ServeHTTP(w, r)
				return
			}
			real.ServeHTTP(w, r)
		}))
		t.Cleanup(front.Close)
		cs.base = front.URL
		t.Log("the server serves no /api/events yet: the test mounts an events.Bus in front")
	}
	return cs
}

func servesEvents(t *testing.T, base string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer "+cliTestKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

func removeAll(t *testing.T, dataDir string) {
	rt, err := process.New(process.Options{DataDir: dataDir, StopGrace: 2 * time.Second})
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	insts, _ := rt.Recover(ctx)
	for _, i := range insts {
		if err := rt.Remove(ctx, i.ID); err != nil {
			t.Logf("cleanup %s: %v", i.ID, err)
		}
	}
}

type cliTestWriter struct{ t *testing.T }

func (w cliTestWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// result is one CLI run.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the idepool command line as main does, with env as the
// environment.
func runCLI(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb)
	r := result{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		r.code = exitCode(err)
		r.stderr += "idepool: " + err.Error() + "\n"
	}
	t.Logf("idepool %s → %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func (r result) want(t *testing.T, code int, contains ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range contains {
		if !strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("output lacks %q\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
		}
	}
}

func (r result) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
}

func waitWarm(t *testing.T, c *client.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var ps []idepool.PoolStatus
	var err error
	for time.Now().Before(deadline) {
		ps, err = c.Pools(context.Background())
		if err == nil {
			for _, p := range ps {
				if p.Profile == "default" && p.Warm >= n {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the pool never had %d warm containers; last %+v (%v)", n, ps, err)
}

func TestCLIAgainstRealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server with real agents")
	}
	cs := startCLIServer(t, 1)
	env := map[string]string{"IDEPOOL_URL": cs.base, "IDEPOOL_API_KEY": cliTestKey}
	api, err := client.New(cs.base, cliTestKey, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	waitWarm(t, api, 1)

	// start --wait: progress until it runs, then the URLs.
	r := runCLI(t, env, "start", "--bucket", "cli-bucket", "--prefix", "alice/", "--user", "alice", "--wait")
	r.want(t, 0, "container ", "running", "code")
	id := strings.Fields(r.stdout)[1]
	if !idepool.ValidID(id) {
		t.Fatalf("no container id in %q", r.stdout)
	}

	// start --json: the same workspace is reused.
	r = runCLI(t, env, "start", "--json", "--bucket", "cli-bucket", "--prefix", "alice")
	r.want(t, 0)
	var st client.StartResponse
	r.decode(t, &st)
	if st.ID != id || !st.IsReused || st.Claim != idepool.ClaimReused {
		t.Errorf("second start: %+v, want reuse of %s", st, id)
	}

	// ls: a table, --json with the true total, a status filter.
	runCLI(t, env, "ls").want(t, 0, "ID", "WORKSPACE", id, "cli-bucket/alice/", "alice")
	r = runCLI(t, env, "ls", "--json", "--state", "running")
	r.want(t, 0)
	var list client.ContainerList
	r.decode(t, &list)
	if list.Total != 1 || len(list.Containers) != 1 || list.Containers[0].ID != id {
		t.Errorf("ls --state running: %+v", list)
	}
	r = runCLI(t, env, "ls", "--status", "warm", "--json")
	r.decode(t, &list)
	for _, c := range list.Containers {
		if c.State != idepool.StateWarm {
			t.Errorf("ls --status warm listed %s in %s", c.ID, c.State)
		}
	}
	runCLI(t, env, "ls", "--status", "bogus").want(t, exitUsage, "accepted")

	// get: text, JSON (flags after the id), unknown id.
	runCLI(t, env, "get", id).want(t, 0, "state:", "running", "cli-bucket/alice/", "route code")
	r = runCLI(t, env, "get", id, "--json")
	r.want(t, 0)
	var ct client.Container
	r.decode(t, &ct)
	if ct.ID != id || ct.State != idepool.StateRunning || ct.UserID != "alice" {
		t.Errorf("get --json: %+v", ct)
	}
	runCLI(t, env, "get", "nosuchcontainer1").want(t, exitNotFound, "not found", "idepool ls")

	// pool: table, JSON, set.
	runCLI(t, env, "pool").want(t, 0, "PROFILE", "default")
	r = runCLI(t, env, "pool", "--json")
	var pools struct{ Pools []idepool.PoolStatus }
	r.decode(t, &pools)
	if len(pools.Pools) != 1 || pools.Pools[0].Profile != "default" || pools.Pools[0].Claimed != 1 {
		t.Errorf("pool --json: %+v", pools)
	}
	r = runCLI(t, env, "pool", "set", "default", "2", "--json")
	var ps idepool.PoolStatus
	r.decode(t, &ps)
	if ps.Target != 2 {
		t.Errorf("pool set: %+v", ps)
	}
	runCLI(t, env, "pool", "set", "default", "0").want(t, 0, "default")
	runCLI(t, env, "pool", "set", "nosuch", "1").want(t, exitUsage, "unknown profile", "default")
	runCLI(t, env, "pool", "set", "default", "many").want(t, exitUsage)

	// top --once: the pools and the containers, as a table and as JSON.
	runCLI(t, env, "top", "--once").want(t, 0, "idepool at", "PROFILE", "live containers", id)
	r = runCLI(t, env, "top", "--once", "--json")
	var f topFrame
	r.decode(t, &f)
	if f.Total < 1 || len(f.Pools) != 1 || f.Health == nil || f.Health.Version != "test" {
		t.Errorf("top --json: %+v", f)
	}

	// top without --once refreshes until interrupted.
	{
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncWriter{}
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"top", "--interval", "100ms"}, func(k string) string { return env[k] }, nil, out, io.Discard)
		}()
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(out.String(), "idepool at") < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("top interrupted: %v", err)
		}
		if n := strings.Count(out.String(), "\x1b[H\x1b[2J"); n < 2 {
			t.Errorf("top refreshed %d times", n)
		}
	}

	// stop --json of a warm container.
	r = runCLI(t, env, "ls", "--state", "warm", "--json")
	r.decode(t, &list)
	if len(list.Containers) > 0 {
		warm := list.Containers[0].ID
		r = runCLI(t, env, "stop", warm, "--json")
		r.want(t, 0)
		var sr client.StopResponse
		r.decode(t, &sr)
		if sr.ID != warm || sr.Status != "stopped" {
			t.Errorf("stop --json: %+v", sr)
		}
	}

	// events: replay from the start, stop after n.
	if cs.bus != nil {
		cs.bus.Publish(idepool.Event{Type: idepool.EventState, ContainerID: id, Profile: "default", State: idepool.StateRunning})
		cs.bus.Publish(idepool.Event{Type: idepool.EventPool, Profile: "default", Message: "target 2"})
	}
	r = runCLI(t, env, "events", "--after", "0", "-n", "2", "--json")
	r.want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("events -n 2 printed %d lines", len(lines))
	}
	for _, l := range lines {
		var e idepool.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.ID == 0 || e.Type == "" {
			t.Errorf("event line %q: %+v %v", l, e, err)
		}
	}
	runCLI(t, env, "events", "--after", "0", "-n", "1").want(t, 0, "#1")
	// Following: new events arrive while it runs; interrupted, it exits 0.
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncWriter{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"events", "--type", "container.*"}, func(k string) string { return env[k] }, nil, out, io.Discard)
	}()

	// stop: then it is gone; stopping again is "not found".
	runCLI(t, env, "stop", id).want(t, 0, "stopped "+id)
	if cs.bus != nil {
		// Give the follower time to connect, then publish (bounded).
		for i := 0; i < 100 && cs.bus.Subscribers() == 0; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		cs.bus.Publish(idepool.Event{Type: idepool.EventStopped, ContainerID: id, Reason: "manual"})
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), id) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("events interrupted: %v", err)
	}
	if s := out.String(); !strings.Contains(s, "container.") || !strings.Contains(s, id) {
		t.Errorf("followed events lack the stop of %s: %q", id, s)
	}
	r = runCLI(t, env, "stop", id, "--json")
	r.want(t, exitNotFound, "not found")
	r = runCLI(t, env, "get", id, "--json")
	r.decode(t, &ct)
	if ct.State != idepool.StateStopped {
		t.Errorf("after stop: %s", ct.State)
	}

	// Authentication and connection errors say what to do.
	bad := map[string]string{"IDEPOOL_URL": cs.base, "IDEPOOL_API_KEY": "wrong-key-wrong-key-wrong"}
	r = runCLI(t, bad, "ls")
	r.want(t, exitAuth, "the API key was refused: set IDEPOOL_API_KEY")
	if strings.Contains(r.stderr, "wrong-key") {
		t.Error("the refused key was printed")
	}
	runCLI(t, map[string]string{"IDEPOOL_URL": cs.base}, "pool").want(t, exitAuth, "no API key")
	runCLI(t, bad, "events", "-n", "1").want(t, exitAuth, "IDEPOOL_API_KEY")
	runCLI(t, map[string]string{"IDEPOOL_URL": cs.base}, "ls", "--api-key", cliTestKey).want(t, 0, "ID")

	// Usage mistakes.
	runCLI(t, env, "start").want(t, exitUsage, "--bucket is required")
	runCLI(t, env, "start", "--bucket", "Bad_Bucket").want(t, exitUsage, "s3Bucket", "rules")
	runCLI(t, env, "start", "--bucket", "abc", "--profile", "nosuch").want(t, exitUsage, "unknown profile", "the profiles are: default")
	runCLI(t, env, "get").want(t, exitUsage, "usage")
	runCLI(t, env, "ls", "--nosuchflag").want(t, exitUsage)
	r = runCLI(t, env, "start", "-h")
	r.want(t, 0, "Exit codes", "IDEPOOL_API_KEY", "--bucket")
	if strings.Contains(r.stdout, cliTestKey) {
		t.Error("help printed the API key")
	}
}

func TestCLIUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := runCLI(t, map[string]string{"IDEPOOL_URL": "http://" + addr, "IDEPOOL_API_KEY": "k"}, "ls")
	r.want(t, exitError, "cannot reach idepool", "IDEPOOL_URL")
	runCLI(t, map[string]string{"IDEPOOL_URL": "ftp://x"}, "ls").want(t, exitUsage, "IDEPOOL_URL")
}

// TestFailExitCodes checks the mapping of server answers to exit codes,
// including the ones a test server cannot easily provoke (capacity).
func TestFailExitCodes(t *testing.T) {
	tests := []struct {
		status int
		code   idepool.Code
		want   int
		hint   string
	}{
		{503, idepool.ECapacity, exitCapacity, "stop containers"},
		{503, idepool.EQueueFull, exitCapacity, "try again later"},
		{429, idepool.ELimitExceeded, exitCapacity, "refused"},
		{429, idepool.ERateLimited, exitError, "try again"},
		{401, idepool.EUnauthorized, exitAuth, "IDEPOOL_API_KEY"},
		{404, idepool.ENotFound, exitNotFound, "idepool ls"},
		{400, idepool.EInvalid, exitUsage, ""},
		{500, idepool.EStartFailed, exitError, "HTTP 500"},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprintf(w, `{"error":{"code":%q,"message":"m"},"path":%q}`, tt.code, r.URL.Path)
			}))
			defer srv.Close()
			r := runCLI(t, map[string]string{"IDEPOOL_URL": srv.URL, "IDEPOOL_API_KEY": "k"}, "start", "--bucket", "abc")
			r.want(t, tt.want, tt.hint)
		})
	}
}

// syncWriter lets the test read what a running command wrote.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
