package control

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idepool/idepool"
)

type tokens map[string]string

func (t tokens) VerifyAgent(id, token string) bool { return t[id] != "" && t[id] == token }

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

// waitFor returns the first report (at or after index from) matching ok.
func (r *recorder) waitFor(t *testing.T, from int, ok func(idepool.AgentReport) bool) (idepool.AgentReport, int) {
	t.Helper()
	deadline := time.After(30 * time.Second) // a hang guard, not a timing assertion
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
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no matching report; have %+v", r.all())
		}
	}
}

func (r *recorder) all() []idepool.AgentReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]idepool.AgentReport(nil), r.reports...)
}

func kind(k idepool.AgentReportKind) func(idepool.AgentReport) bool {
	return func(r idepool.AgentReport) bool { return r.Kind == k }
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type env struct {
	hub *Hub
	srv *httptest.Server
	rec *recorder
	clk *fakeClock
}

func newEnv(t testing.TB) *env {
	rec := newRecorder()
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	hub := NewHub(Options{Verifier: tokens{"abcd1": "tok1", "abcd2": "tok2"}, Observer: rec, Clock: clk})
	mux := http.NewServeMux()
	mux.Handle(Path, hub)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hub.Close(ctx)
		srv.Close()
	})
	return &env{hub: hub, srv: srv, rec: rec, clk: clk}
}

func (e *env) dial(t testing.TB, id, token string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if id != "" {
		h.Set(HeaderContainer, id)
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(e.srv.URL, "http")+Path, &websocket.DialOptions{HTTPHeader: h})
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// agentConn dials as id and says hello.
func (e *env) agentConn(t testing.TB, id, token string) *websocket.Conn {
	t.Helper()
	c, _, err := e.dial(t, id, token)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	send(t, c, Message{V: Version, Type: TypeHello})
	return c
}

func send(t testing.TB, c *websocket.Conn, m Message) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := c.Write(context.Background(), websocket.MessageText, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// respond reads one message in the background and writes answer(m) back
// (nothing when it returns nil); the received message is sent on the
// returned channel. Errors are reported with t.Error (not from the test
// goroutine, so no Fatal).
func respond(t *testing.T, c *websocket.Conn, answer func(Message) *Message) <-chan Message {
	got := make(chan Message, 1)
	go func() {
		ctx := context.Background()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Errorf("agent read: %v", err)
			close(got)
			return
		}
		var m Message
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("agent decode: %v", err)
		}
		got <- m
		if a := answer(m); a != nil {
			a.V = Version
			b, _ := json.Marshal(a)
			if err := c.Write(ctx, websocket.MessageText, b); err != nil {
				t.Errorf("agent write: %v", err)
			}
		}
	}()
	return got
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, id, token string
		refused         bool // the orchestrator says it does not know the agent
	}{
		{"no credentials", "", "", false},
		{"no token", "abcd1", "", false},
		{"wrong token", "abcd1", "tok2", true},
		{"unknown id", "zzzz9", "tok1", true},
		{"invalid id", "ABCD/../1", "tok1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := e.dial(t, tc.id, tc.token)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("want 401, got resp=%v err=%v", resp, err)
			}
			if got := resp.Header.Get(HeaderRefused) == RefusedUnknownAgent; got != tc.refused {
				t.Fatalf("%s = %q, want refused=%v", HeaderRefused, resp.Header.Get(HeaderRefused), tc.refused)
			}
		})
	}
	if e.hub.Connected("abcd1") || len(e.rec.all()) != 0 {
		t.Fatalf("refused agents must leave no trace: %+v", e.rec.all())
	}
}

func TestReportsAndRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.hub.Assign(ctx, "abcd1", idepool.Assignment{Generation: 1}); idepool.ErrorCode(err) != idepool.EAgentUnavailable {
		t.Fatalf("assign to a missing agent: %v", err)
	}
	if err := e.hub.Flush(ctx, "abcd1"); idepool.ErrorCode(err) != idepool.EAgentUnavailable {
		t.Fatalf("flush to a missing agent: %v", err)
	}
	c := e.agentConn(t, "abcd1", "tok1")
	e.rec.waitFor(t, 0, kind(idepool.AgentHello))
	if !e.hub.Connected("abcd1") {
		t.Fatal("not connected after hello")
	}
	ws := idepool.Workspace{Bucket: "bucket-a", Prefix: "u/1/"}
	for _, m := range []Message{
		{Type: TypeReady, Ready: true},
		{Type: TypeHeartbeat, Ready: true, Processes: []idepool.ProcessStatus{{Name: "ide", State: "running", PID: 7}}},
		{Type: TypeSynced, Generation: 3, Workspace: &ws},
		{Type: TypeSync, Event: "conflict", Message: "a.txt"},
		{Type: "future-type"},
	} {
		m.V = Version
		send(t, c, m)
	}
	rep, _ := e.rec.waitFor(t, 0, kind(idepool.AgentSyncEvent))
	if rep.Event != "conflict" || rep.ContainerID != "abcd1" {
		t.Fatalf("sync report: %+v", rep)
	}
	got := e.rec.all()
	var kinds []string
	for _, r := range got {
		kinds = append(kinds, string(r.Kind))
	}
	if strings.Join(kinds, ",") != "hello,ready,heartbeat,synced,sync" {
		t.Fatalf("reports in order: %v", kinds)
	}
	if got[2].Processes[0].PID != 7 || got[3].Workspace.Bucket != "bucket-a" || got[3].Generation != 3 {
		t.Fatalf("fields lost: %+v", got)
	}

	// Assign: the agent acknowledges (it answers in another goroutine).
	asg := idepool.Assignment{Generation: 4, Workspace: ws, Credentials: idepool.Credentials{AccessKeyID: "AK", SecretAccessKey: "SK"}}
	answers := respond(t, c, func(m Message) *Message {
		return &Message{Type: TypeAck, ID: m.ID, Generation: m.Generation}
	})
	if err := e.hub.Assign(ctx, "abcd1", asg); err != nil {
		t.Fatalf("assign: %v", err)
	}
	m := <-answers
	if m.Type != TypeAssign || m.ID == "" || m.Assignment == nil || m.Assignment.Credentials.SecretAccessKey != "SK" || m.V != Version {
		t.Fatalf("assign message: %+v", m)
	}

	// A refusal.
	respond(t, c, func(m Message) *Message { return &Message{Type: TypeAck, ID: m.ID, Generation: 4, Error: "stale"} })
	if err := e.hub.Assign(ctx, "abcd1", idepool.Assignment{Generation: 4}); idepool.ErrorCode(err) != idepool.EConflict {
		t.Fatalf("refused assign: %v", err)
	}

	// Flush, answered by flushed with the request id; also reported.
	n := len(e.rec.all())
	respond(t, c, func(m Message) *Message { return &Message{Type: TypeFlushed, ID: m.ID, Generation: 4} })
	if err := e.hub.Flush(ctx, "abcd1"); err != nil {
		t.Fatalf("flush: %v", err)
	}
	e.rec.waitFor(t, n, kind(idepool.AgentFlushed))

	// No answer: ctx bounds the wait.
	cctx, cancel := context.WithCancel(ctx)
	respond(t, c, func(Message) *Message { cancel(); return nil })
	if err := e.hub.Flush(cctx, "abcd1"); idepool.ErrorCode(err) != idepool.ETimeout {
		t.Fatalf("unanswered flush: %v", err)
	}

	// Disconnect: gone, and a pending request fails at once.
	respond(t, c, func(Message) *Message { c.Close(websocket.StatusNormalClosure, "bye"); return nil })
	if err := e.hub.Flush(ctx, "abcd1"); idepool.ErrorCode(err) != idepool.EAgentUnavailable {
		t.Fatalf("flush to a departing agent: %v", err)
	}
	e.rec.waitFor(t, 0, kind(idepool.AgentGone))
	if e.hub.Connected("abcd1") {
		t.Fatal("still connected after gone")
	}
}

func TestDuplicateConnectionReplacesOld(t *testing.T) {
	e := newEnv(t)
	old := e.agentConn(t, "abcd1", "tok1")
	_, i := e.rec.waitFor(t, 0, kind(idepool.AgentHello))
	nu := e.agentConn(t, "abcd1", "tok1")
	_, i = e.rec.waitFor(t, i, kind(idepool.AgentHello))
	// The old connection is closed by the hub.
	_, _, err := old.Read(context.Background())
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("old connection: want policy violation close, got %v", err)
	}
	// Requests go to the new one.
	respond(t, nu, func(m Message) *Message { return &Message{Type: TypeAck, ID: m.ID, Generation: 1} })
	if err := e.hub.Assign(context.Background(), "abcd1", idepool.Assignment{Generation: 1}); err != nil {
		t.Fatalf("assign over the new connection: %v", err)
	}
	send(t, nu, Message{V: Version, Type: TypeHeartbeat})
	e.rec.waitFor(t, i, kind(idepool.AgentHeartbeat))
	for _, r := range e.rec.all() {
		if r.Kind == idepool.AgentGone {
			t.Fatalf("a replaced connection must not report gone: %+v", e.rec.all())
		}
	}
	if !e.hub.Connected("abcd1") {
		t.Fatal("not connected")
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	e := newEnv(t)
	c1 := e.agentConn(t, "abcd1", "tok1")
	e.agentConn(t, "abcd2", "tok2")
	e.rec.waitFor(t, 0, func(r idepool.AgentReport) bool { return r.Kind == idepool.AgentHello && r.ContainerID == "abcd2" })
	e.rec.waitFor(t, 0, func(r idepool.AgentReport) bool { return r.Kind == idepool.AgentHello && r.ContainerID == "abcd1" })

	e.clk.Advance(10 * time.Second)
	send(t, c1, Message{V: Version, Type: TypeHeartbeat})
	_, i := e.rec.waitFor(t, 0, kind(idepool.AgentHeartbeat))
	e.clk.Advance(10 * time.Second) // abcd2 silent for 20 s, abcd1 for 10 s
	e.hub.sweep()
	rep, _ := e.rec.waitFor(t, i, kind(idepool.AgentGone))
	if rep.ContainerID != "abcd2" {
		t.Fatalf("wrong agent timed out: %+v", rep)
	}
	if e.hub.Connected("abcd2") || !e.hub.Connected("abcd1") {
		t.Fatal("want abcd2 disconnected and abcd1 connected")
	}
}

func TestBadMessagesClose(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		data string
	}{
		{"malformed", websocket.MessageText, "{"},
		{"binary", websocket.MessageBinary, `{"v":1,"type":"hello"}`},
		{"future version", websocket.MessageText, `{"v":99,"type":"hello"}`},
		{"too large", websocket.MessageText, `{"v":1,"type":"hello","message":"` + strings.Repeat("x", DefaultReadLimit) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(e.rec.all())
			c, _, err := e.dial(t, "abcd1", "tok1")
			if err != nil {
				t.Fatal(err)
			}
			c.Write(context.Background(), tc.typ, []byte(tc.data))
			if _, _, err := c.Read(context.Background()); err == nil {
				t.Fatal("connection stayed open")
			}
			rep, _ := e.rec.waitFor(t, n, kind(idepool.AgentGone))
			for _, r := range e.rec.all()[n:] {
				if r.Kind != idepool.AgentGone {
					t.Fatalf("unexpected report %+v", r)
				}
			}
			_ = rep
		})
	}
}

func TestCloseRefusesNewAgents(t *testing.T) {
	e := newEnv(t)
	c := e.agentConn(t, "abcd1", "tok1")
	e.rec.waitFor(t, 0, kind(idepool.AgentHello))
	// The agent reads all the time, so it answers the close handshake.
	readErr := make(chan error, 1)
	go func() { _, _, err := c.Read(context.Background()); readErr <- err }()
	if err := e.hub.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("want going away, got %v", err)
	}
	e.rec.waitFor(t, 0, kind(idepool.AgentGone))
	_, resp, err := e.dial(t, "abcd1", "tok1")
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("want 503 after close, got %v %v", resp, err)
	}
}

func BenchmarkAssign(b *testing.B) {
	e := newEnv(b)
	c := e.agentConn(b, "abcd1", "tok1")
	go func() {
		ctx := context.Background()
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			var m Message
			json.Unmarshal(data, &m)
			out, _ := json.Marshal(Message{V: Version, Type: TypeAck, ID: m.ID, Generation: m.Assignment.Generation})
			if c.Write(ctx, websocket.MessageText, out) != nil {
				return
			}
		}
	}()
	for !e.hub.Connected("abcd1") {
		time.Sleep(time.Millisecond)
	}
	asg := idepool.Assignment{Generation: 1, Workspace: idepool.Workspace{Bucket: "bucket-a", Prefix: "users/1/"},
		Credentials: idepool.Credentials{AccessKeyID: "AKIA0000", SecretAccessKey: "secret"}}
	ctx := context.Background()
	start := time.Now()
	n := 0
	for b.Loop() {
		if err := e.hub.Assign(ctx, "abcd1", asg); err != nil {
			b.Fatal(err)
		}
		n++
	}
	rt := time.Since(start) / time.Duration(n)
	b.ReportMetric(float64(rt.Microseconds()), "µs/roundtrip")
	b.Logf("assign round trip over loopback: %v (n=%d)", rt, n)
}

// assignOnHello is an Observer that re-sends an assignment from inside
// AgentReport, as the orchestrator does when a known agent reconnects.
type assignOnHello struct {
	hub  *Hub
	errs chan error
}

func (o *assignOnHello) AgentReport(r idepool.AgentReport) {
	if r.Kind == idepool.AgentHello {
		o.errs <- o.hub.Assign(context.Background(), r.ContainerID, idepool.Assignment{Generation: 2})
	}
}

func TestObserverMayCallAssign(t *testing.T) {
	e := newEnv(t)
	o := &assignOnHello{errs: make(chan error, 1)}
	o.hub = NewHub(Options{Verifier: tokens{"abcd1": "tok1"}, Observer: o})
	e.srv.Config.Handler = o.hub
	t.Cleanup(func() { o.hub.Close(context.Background()) })
	c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(e.srv.URL, "http"),
		&websocket.DialOptions{HTTPHeader: http.Header{HeaderContainer: {"abcd1"}, "Authorization": {"Bearer tok1"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	send(t, c, Message{V: Version, Type: TypeHello})
	m := <-respond(t, c, func(m Message) *Message { return &Message{Type: TypeAck, ID: m.ID, Generation: m.Generation} })
	if m.Type != TypeAssign {
		t.Fatalf("got %+v", m)
	}
	if err := <-o.errs; err != nil {
		t.Fatalf("assign from the observer: %v", err)
	}
}
