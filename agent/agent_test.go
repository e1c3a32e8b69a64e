package agent

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/control"
)

const (
	testID    = "abcd1"
	testToken = "secret-agent-token"
)

// verifier accepts testToken for testID (unless it knows no agent) and
// counts attempts.
type verifier struct {
	calls   atomic.Int64
	knowsNo bool
}

func (v *verifier) VerifyAgent(id, token string) bool {
	v.calls.Add(1)
	return !v.knowsNo && id == testID && token == testToken
}

// recorder is an Observer that keeps every report.
type recorder struct {
	mu      sync.Mutex
	reports []idepool.AgentReport
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) AgentReport(rep idepool.AgentReport) {
	r.mu.Lock()
	r.reports = append(r.reports, rep)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// waitFor returns the first report at index >= from matching ok, and the
// index after it.
func (r *recorder) waitFor(t *testing.T, from int, what string, ok func(idepool.AgentReport) bool) (idepool.AgentReport, int) {
	t.Helper()
	deadline := time.After(60 * time.Second) // a hang guard, not a timing assertion
	for {
		r.mu.Lock()
		for i := from; i < len(r.reports); i++ {
			if ok(r.reports[i]) {
				rep := r.reports[i]
				r.mu.Unlock()
				return rep, i + 1
			}
		}
		ch := r.changed
		n := len(r.reports)
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s report among %d", what, n)
		}
	}
}

func kind(k idepool.AgentReportKind) func(idepool.AgentReport) bool {
	return func(r idepool.AgentReport) bool { return r.Kind == k }
}

type hubEnv struct {
	hub *control.Hub
	srv *httptest.Server
	rec *recorder
	ver *verifier
}

// startHub serves a hub on addr ("" = any free port).
func startHub(t *testing.T, addr string) *hubEnv {
	t.Helper()
	return startHubWith(t, addr, &verifier{})
}

// startHubWith serves a hub checking agents with v.
func startHubWith(t *testing.T, addr string, v *verifier) *hubEnv {
	t.Helper()
	e := &hubEnv{rec: newRecorder(), ver: v}
	e.hub = control.NewHub(control.Options{Verifier: e.ver, Observer: e.rec})
	mux := http.NewServeMux()
	mux.Handle(control.Path, e.hub)
	e.srv = httptest.NewUnstartedServer(mux)
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen again on %s: %v", addr, err)
		}
		e.srv.Listener.Close()
		e.srv.Listener = ln
	}
	e.srv.Start()
	t.Cleanup(e.stop)
	return e
}

func (e *hubEnv) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.hub.Close(ctx)
	e.srv.Close()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// fakeSyncer records what the agent asks of it.
type fakeSyncer struct {
	mu      sync.Mutex
	starts  []idepool.Assignment
	flushes int
	stops   int
	held    int
	report  func(idepool.AgentReport)
}

func (f *fakeSyncer) Start(_ context.Context, a idepool.Assignment, report func(idepool.AgentReport)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts = append(f.starts, a)
	f.report = report
	return nil
}

func (f *fakeSyncer) Flush(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes++
	return nil
}

func (f *fakeSyncer) Stats() idepool.SyncStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return idepool.SyncStats{ObjectsDown: int64(len(f.starts))}
}

func (f *fakeSyncer) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops++
	return nil
}

func (f *fakeSyncer) ConfirmDeletions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.held
	f.held = 0
	return n
}

func (f *fakeSyncer) counts() (starts, flushes, stops int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.starts), f.flushes, f.stops
}

func testConfig(t *testing.T, url string) Config {
	t.Helper()
	ws := t.TempDir()
	if err := os.WriteFile(filepath.Join(ws, "hello.txt"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Config{
		URL:               url,
		Token:             testToken,
		ContainerID:       testID,
		WorkspaceDir:      ws,
		StateDir:          t.TempDir(),
		Routes:            []idepool.Route{{Name: "code", Port: freePort(t)}},
		ListenHost:        "127.0.0.1",
		HeartbeatInterval: 10 * time.Millisecond,
		ReconnectMax:      50 * time.Millisecond,
		FlushTimeout:      10 * time.Second,
		KillGrace:         5 * time.Second,
		Logger:            slog.New(slog.DiscardHandler),
	}
}

// runAgent runs the agent until the test ends (or the returned cancel).
func runAgent(t *testing.T, cfg Config) (cancel func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- Run(ctx, cfg); close(ch) }() // closed: the cleanup may wait again
	t.Cleanup(func() {
		cancel()
		select {
		case <-ch:
		case <-time.After(60 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return cancel, ch
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not stop")
		return nil
	}
}

func TestEndToEnd(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL) // http URL: the agent adds ws and the path
	fs := &fakeSyncer{}
	cfg.NewSyncer = func(ws, st string, _ *slog.Logger) Syncer {
		if ws != cfg.WorkspaceDir || st != cfg.StateDir {
			t.Errorf("syncer dirs %s %s", ws, st)
		}
		return fs
	}
	cancel, done := runAgent(t, cfg)
	ctx := context.Background()

	hello, i := e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	if hello.ContainerID != testID || hello.Workspace != nil || hello.Generation != 0 {
		t.Fatalf("hello of a warm agent: %+v", hello)
	}
	if !hello.Ready {
		e.rec.waitFor(t, i, "ready", kind(idepool.AgentReady))
	}
	_, i = e.rec.waitFor(t, i, "ready heartbeat", func(r idepool.AgentReport) bool { return r.Kind == idepool.AgentHeartbeat && r.Ready })

	// Assignment: ack, persisted without secrets, syncer started, synced.
	w := idepool.Workspace{Bucket: "bucket-a", Prefix: "users/7/"}
	asg := idepool.Assignment{Generation: 1, Workspace: w, UserID: "u7",
		Credentials: idepool.Credentials{AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: "very-secret-key"}, VNCPassword: "vnc-pass"}
	if err := e.hub.Assign(ctx, testID, asg); err != nil {
		t.Fatalf("assign: %v", err)
	}
	synced, i := e.rec.waitFor(t, i, "synced", kind(idepool.AgentSynced))
	if synced.Generation != 1 || synced.Workspace == nil || *synced.Workspace != w || synced.Error != "" {
		t.Fatalf("synced: %+v", synced)
	}
	b, err := os.ReadFile(filepath.Join(cfg.StateDir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"very-secret-key", "AKIAEXAMPLE", "vnc-pass"} {
		if strings.Contains(string(b), secret) {
			t.Fatalf("persisted state holds a secret: %s", b)
		}
	}
	if !strings.Contains(string(b), "bucket-a") {
		t.Fatalf("persisted state lacks the workspace: %s", b)
	}
	fs.mu.Lock()
	gotCreds := fs.starts[0].Credentials
	fs.mu.Unlock()
	if gotCreds.SecretAccessKey != "very-secret-key" {
		t.Fatal("the syncer did not get the credentials")
	}

	// Same generation again: acknowledged, no second syncer; stale: refused.
	if err := e.hub.Assign(ctx, testID, asg); err != nil {
		t.Fatalf("repeated assign: %v", err)
	}
	_, i = e.rec.waitFor(t, i, "synced again", kind(idepool.AgentSynced))
	if err := e.hub.Assign(ctx, testID, idepool.Assignment{Generation: 0}); idepool.ErrorCode(err) != idepool.EConflict {
		t.Fatalf("stale assign: %v", err)
	}
	if s, _, _ := fs.counts(); s != 1 {
		t.Fatalf("syncer started %d times", s)
	}

	// Syncer reports are relayed.
	fs.mu.Lock()
	report := fs.report
	fs.mu.Unlock()
	report(idepool.AgentReport{Kind: idepool.AgentSyncEvent, Event: "conflict", Message: "a.txt"})
	ev, i := e.rec.waitFor(t, i, "sync", kind(idepool.AgentSyncEvent))
	if ev.Event != "conflict" || ev.Generation != 1 {
		t.Fatalf("sync event: %+v", ev)
	}

	// Flush.
	if err := e.hub.Flush(ctx, testID); err != nil {
		t.Fatalf("flush: %v", err)
	}
	_, i = e.rec.waitFor(t, i, "flushed", kind(idepool.AgentFlushed))
	if _, f, _ := fs.counts(); f != 1 {
		t.Fatalf("flushes = %d", f)
	}

	// Activity on the placeholder shows in heartbeats.
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(cfg.Routes[0].Port) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hb, _ := e.rec.waitFor(t, i, "heartbeat with activity", func(r idepool.AgentReport) bool {
		return r.Kind == idepool.AgentHeartbeat && !r.LastActivity.IsZero()
	})
	if hb.Sync == nil || hb.Generation != 1 {
		t.Fatalf("heartbeat: %+v", hb)
	}

	// The orchestrator restarts: the agent reconnects and says what it is.
	addr := e.srv.Listener.Addr().String()
	e.stop()
	e.rec.waitFor(t, 0, "gone", kind(idepool.AgentGone))
	e2 := startHub(t, addr)
	hello, j := e2.rec.waitFor(t, 0, "hello after reconnect", kind(idepool.AgentHello))
	if !hello.Ready || hello.Generation != 1 || hello.Workspace == nil || *hello.Workspace != w {
		t.Fatalf("hello after reconnect: %+v", hello)
	}
	_, j = e2.rec.waitFor(t, j, "synced after reconnect", kind(idepool.AgentSynced))

	// SIGTERM: flush, report flushed, stop.
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	e2.rec.waitFor(t, j, "final flushed", kind(idepool.AgentFlushed))
	if _, f, s := fs.counts(); f != 2 || s != 1 {
		t.Fatalf("flushes %d, stops %d", f, s)
	}
}

func TestStopMessage(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	_, done := runAgent(t, cfg)
	_, i := e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	if err := e.hub.Assign(context.Background(), testID, idepool.Assignment{Generation: 3, Workspace: idepool.Workspace{Bucket: "bucket-b"}}); err != nil {
		t.Fatal(err)
	}
	// No syncer: synced at once.
	_, i = e.rec.waitFor(t, i, "synced", kind(idepool.AgentSynced))
	if err := e.hub.Stop(context.Background(), testID); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	fl, _ := e.rec.waitFor(t, i, "flushed", kind(idepool.AgentFlushed))
	if fl.Generation != 3 {
		t.Fatalf("flushed: %+v", fl)
	}
	e.rec.waitFor(t, i, "gone", kind(idepool.AgentGone))
}

func TestRestartedAgentKnowsItsAssignment(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	w := idepool.Workspace{Bucket: "bucket-c", Prefix: "p/"}
	if err := saveState(cfg.StateDir, stateOf(idepool.Assignment{Generation: 5, Workspace: w})); err != nil {
		t.Fatal(err)
	}
	fs := &fakeSyncer{}
	cfg.NewSyncer = func(string, string, *slog.Logger) Syncer { return fs }
	runAgent(t, cfg)
	hello, i := e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	if hello.Generation != 5 || hello.Workspace == nil || *hello.Workspace != w {
		t.Fatalf("hello: %+v", hello)
	}
	// The orchestrator re-sends the assignment (with credentials): the
	// agent, having no syncer yet in this process, starts one.
	if err := e.hub.Assign(context.Background(), testID, idepool.Assignment{Generation: 5, Workspace: w}); err != nil {
		t.Fatal(err)
	}
	e.rec.waitFor(t, i, "synced", kind(idepool.AgentSynced))
	if s, _, _ := fs.counts(); s != 1 {
		t.Fatalf("syncer starts: %d", s)
	}
}

// A 401 that does not come from the orchestrator (a proxy's, without
// control.HeaderRefused) is retried, not taken for a refusal.
func TestProxy401KeepsRetrying(t *testing.T) {
	var calls atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	defer proxy.Close()
	cfg := testConfig(t, proxy.URL+control.Path)
	cancel, done := runAgent(t, cfg)
	for calls.Load() < 3 {
		select {
		case <-done:
			t.Fatal("the agent gave up on a 401 its orchestrator did not send")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestConfirmDeletionsReachesTheSyncer(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	fs := &fakeSyncer{held: 7}
	cfg.NewSyncer = func(string, string, *slog.Logger) Syncer { return fs }
	runAgent(t, cfg)
	ctx := context.Background()
	_, i := e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	if _, err := e.hub.ConfirmDeletions(ctx, testID); idepool.ErrorCode(err) != idepool.EConflict {
		t.Fatalf("confirm before any assignment: %v", err)
	}
	if err := e.hub.Assign(ctx, testID, idepool.Assignment{Generation: 1, Workspace: idepool.Workspace{Bucket: "bucket-d"}}); err != nil {
		t.Fatal(err)
	}
	e.rec.waitFor(t, i, "synced", kind(idepool.AgentSynced))
	if n, err := e.hub.ConfirmDeletions(ctx, testID); err != nil || n != 7 {
		t.Fatalf("confirm: %d, %v", n, err)
	}
	if _, err := e.hub.ConfirmDeletions(ctx, testID); idepool.ErrorCode(err) != idepool.EConflict {
		t.Fatalf("confirm with nothing held: %v", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	base := map[string]string{
		idepool.EnvAgentURL:   "http://orch:3001",
		idepool.EnvAgentToken: "t",
		idepool.EnvAgentID:    "abcd1",
		idepool.EnvStateDir:   "/state",
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			if len(c.Routes) != 3 || c.Routes[0].Port != 8080 || c.WorkspaceDir != "/workspace" || len(c.Workloads) != 0 {
				t.Fatalf("%+v", c)
			}
			if u, _ := controlURL(c.URL); u != "ws://orch:3001/agent/v1/connect" {
				t.Fatalf("url %s", u)
			}
		}},
		{name: "routes and ports", env: map[string]string{
			idepool.EnvRoutes:       `[{"name":"code","port":8080},{"name":"web-2","port":3000}]`,
			"IDEPOOL_PORT_CODE":     "41000",
			"IDEPOOL_PORT_WEB_2":    "41001",
			idepool.EnvWorkloads:    `[{"name":"ide","command":["sh","-c","true"]}]`,
			idepool.EnvWorkspaceDir: "/w",
			EnvListenHost:           "127.0.0.1",
		}, check: func(t *testing.T, c Config) {
			if c.Routes[0].Port != 41000 || c.Routes[1].Port != 41001 || c.Workloads[0].Name != "ide" || c.WorkspaceDir != "/w" || c.ListenHost != "127.0.0.1" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "no url", env: map[string]string{idepool.EnvAgentURL: ""}, wantErr: idepool.EnvAgentURL},
		{name: "bad scheme", env: map[string]string{idepool.EnvAgentURL: "ftp://x"}, wantErr: "want http"},
		{name: "no token", env: map[string]string{idepool.EnvAgentToken: ""}, wantErr: idepool.EnvAgentToken},
		{name: "bad id", env: map[string]string{idepool.EnvAgentID: "A/B"}, wantErr: idepool.EnvAgentID},
		{name: "bad port", env: map[string]string{"IDEPOOL_PORT_CODE": "99999"}, wantErr: "IDEPOOL_PORT_CODE"},
		{name: "bad routes", env: map[string]string{idepool.EnvRoutes: "{"}, wantErr: idepool.EnvRoutes},
		{name: "bad workloads", env: map[string]string{idepool.EnvWorkloads: `[{"name":""}]`}, wantErr: "workload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := ConfigFromEnv(func(k string) string { return env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error with %q, got %v", tc.wantErr, err)
				}
				if strings.Contains(err.Error(), "t\"") {
					t.Fatalf("error leaks the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	for attempt := range 20 {
		d := backoff(attempt, 100*time.Millisecond, 5*time.Second)
		if d <= 0 || d > 5*time.Second {
			t.Fatalf("attempt %d: %v", attempt, d)
		}
		if attempt >= 6 && d < 2500*time.Millisecond {
			t.Fatalf("attempt %d: %v below half the cap", attempt, d)
		}
	}
}

// BenchmarkAssignRoundTrip measures Hub.Assign against a real agent over
// loopback: send, persist the assignment, acknowledge.
func BenchmarkAssignRoundTrip(b *testing.B) {
	e := &hubEnv{rec: newRecorder(), ver: &verifier{}}
	e.hub = control.NewHub(control.Options{Verifier: e.ver})
	mux := http.NewServeMux()
	mux.Handle(control.Path, e.hub)
	e.srv = httptest.NewServer(mux)
	defer e.stop()
	cfg := Config{URL: e.srv.URL, Token: testToken, ContainerID: testID, WorkspaceDir: b.TempDir(), StateDir: b.TempDir(),
		ListenHost: "127.0.0.1", Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	defer func() { cancel(); <-done }()
	for !e.hub.Connected(testID) {
		time.Sleep(time.Millisecond)
	}
	asg := idepool.Assignment{Workspace: idepool.Workspace{Bucket: "bucket-a", Prefix: "users/1/"},
		Credentials: idepool.Credentials{AccessKeyID: "AKIA0000", SecretAccessKey: "secret"}}
	start := time.Now()
	n := 0
	for b.Loop() {
		n++
		asg.Generation = int64(n) // a new claim each time, not an idempotent repeat
		if err := e.hub.Assign(context.Background(), testID, asg); err != nil {
			b.Fatal(err)
		}
	}
	rt := time.Since(start) / time.Duration(n)
	b.ReportMetric(float64(rt.Microseconds()), "µs/roundtrip")
	b.Logf("assign round trip to a real agent over loopback: %v (n=%d)", rt, n)
}

// A sync event raised while the orchestrator is away (a store replaced
// while it restarted) is delivered once it is back; figures are not kept.
func TestSyncEventsWhileDisconnectedAreDelivered(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	fs := &fakeSyncer{}
	cfg.NewSyncer = func(string, string, *slog.Logger) Syncer { return fs }
	runAgent(t, cfg)
	_, i := e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	if err := e.hub.Assign(context.Background(), testID, idepool.Assignment{Generation: 2, Workspace: idepool.Workspace{Bucket: "bucket-e"}}); err != nil {
		t.Fatal(err)
	}
	e.rec.waitFor(t, i, "synced", kind(idepool.AgentSynced))
	addr := e.srv.Listener.Addr().String()
	e.stop()
	fs.mu.Lock()
	report := fs.report
	fs.mu.Unlock()
	report(idepool.AgentReport{Kind: idepool.AgentSyncEvent, Event: "stats"})
	report(idepool.AgentReport{Kind: idepool.AgentSyncEvent, Event: "remote-reset", Message: "store lost"})
	e2 := startHub(t, addr)
	ev, _ := e2.rec.waitFor(t, 0, "remote-reset", func(r idepool.AgentReport) bool { return r.Kind == idepool.AgentSyncEvent && r.Event != "stats" })
	if ev.Event != "remote-reset" || ev.Message != "store lost" || ev.Generation != 2 {
		t.Fatalf("delivered after the reconnect: %+v", ev)
	}
}

// The ack of an assignment is the claim's durable record (issue 18): when
// the orchestrator has it, the assignment is on disk with its whole claim,
// and a restarted agent reports that claim in its hello. A state directory
// that cannot be written makes the agent refuse instead.
func TestAssignmentPersistedBeforeAck(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	fs := &fakeSyncer{}
	cfg.NewSyncer = func(string, string, *slog.Logger) Syncer { return fs }
	cancel, done := runAgent(t, cfg)
	_, i := e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	w := idepool.Workspace{Bucket: "bucket-p", Prefix: "s1/"}
	asg := idepool.Assignment{Generation: 1, Epoch: 1_700_000_000_123_456_789, Workspace: w, UserID: "stu",
		IdleExempt: true, PreWarmed: true, Credentials: idepool.Credentials{AccessKeyID: "AKIA", SecretAccessKey: "never-on-disk"}}
	if err := e.hub.Assign(context.Background(), testID, asg); err != nil {
		t.Fatal(err)
	}
	st, err := loadState(cfg.StateDir) // read at the ack, before anything else
	if err != nil {
		t.Fatal(err)
	}
	want := savedState{Generation: 1, Workspace: w, UserID: "stu", Epoch: asg.Epoch, IdleExempt: true, PreWarmed: true}
	if st != want {
		t.Fatalf("state at the ack: %+v, want %+v", st, want)
	}
	b, _ := os.ReadFile(filepath.Join(cfg.StateDir, stateFile))
	if strings.Contains(string(b), "never-on-disk") {
		t.Fatal("the secret key reached the disk")
	}
	e.rec.waitFor(t, i, "synced", kind(idepool.AgentSynced))
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}

	// Restarted: its hello carries the claim.
	runAgent(t, cfg)
	hello, _ := e.rec.waitFor(t, i, "hello after restart", func(r idepool.AgentReport) bool {
		return r.Kind == idepool.AgentHello && r.Claim != nil
	})
	if hello.Generation != 1 || hello.Workspace == nil || *hello.Workspace != w ||
		*hello.Claim != (idepool.ClaimRecord{Epoch: asg.Epoch, UserID: "stu", IdleExempt: true, PreWarmed: true}) {
		t.Fatalf("hello after restart: %+v claim %+v", hello, hello.Claim)
	}
}

func TestUnwritableStateRefusesAssignment(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	cfg.NewSyncer = func(string, string, *slog.Logger) Syncer { return &fakeSyncer{} }
	runAgent(t, cfg)
	e.rec.waitFor(t, 0, "hello", kind(idepool.AgentHello))
	// A file where the state directory should be: every write fails.
	if err := os.RemoveAll(cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.StateDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := e.hub.Assign(context.Background(), testID, idepool.Assignment{Generation: 1, Workspace: idepool.Workspace{Bucket: "bucket-q"}})
	if idepool.ErrorCode(err) != idepool.EConflict || !strings.Contains(err.Error(), "cannot record the assignment") {
		t.Fatalf("assign with an unwritable state: %v", err)
	}
}
