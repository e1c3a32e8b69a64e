package dashboard

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/events"
	"github.com/idepool/idepool/internal/memnet"
	"github.com/idepool/idepool/pool"
)

var (
	_ Orchestrator = (*pool.Manager)(nil)
	_ EventSource  = (*events.Bus)(nil)
)

const testKey = "dashboard-test-key-0123456789"

// fakeOrch is an in-memory orchestrator.
type fakeOrch struct {
	mu      sync.Mutex
	cs      map[string]idepool.Container
	targets map[string]int
	stops   []string
}

func newFakeOrch() *fakeOrch {
	return &fakeOrch{
		cs:      map[string]idepool.Container{},
		targets: map[string]int{"default": 2, "gpu": 0},
	}
}

func (f *fakeOrch) add(c idepool.Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cs[c.ID] = c
}

func (f *fakeOrch) List(ctx context.Context, flt idepool.ContainerFilter) ([]idepool.Container, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []idepool.Container
	for _, c := range f.cs {
		out = append(out, c)
	}
	return out, len(out), nil
}

func (f *fakeOrch) Pools() []idepool.PoolStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []idepool.PoolStatus
	for p, n := range f.targets {
		st := idepool.PoolStatus{Profile: p, Target: n}
		for _, c := range f.cs {
			if c.Profile == p {
				switch {
				case c.State == idepool.StateWarm:
					st.Warm++
				case c.State.Claimed():
					st.Claimed++
				default:
					st.Starting++
				}
			}
		}
		out = append(out, st)
	}
	return out
}

func (f *fakeOrch) Stop(ctx context.Context, id, reason string) (idepool.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cs[id]
	if !ok {
		return c, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	delete(f.cs, id)
	f.stops = append(f.stops, id+":"+reason)
	c.State = idepool.StateStopped
	return c, nil
}

func (f *fakeOrch) SetTarget(ctx context.Context, profile string, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.targets[profile]; !ok {
		return idepool.Errorf(idepool.EUnknownProfile, "unknown profile %q", profile)
	}
	f.targets[profile] = n
	return nil
}

func (f *fakeOrch) Profiles() []idepool.Profile {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []idepool.Profile
	for p := range f.targets {
		out = append(out, idepool.Profile{Name: p})
	}
	return out
}

// The tests run in testing/synctest bubbles, so sessions, the live view's
// ticker and the chart's sampling all run on fake time; the server listens
// in memory (memnet), which a bubble can wait on.

type fixture struct {
	d      *Dashboard
	orch   *fakeOrch
	url    string
	client *http.Client
	bus    *events.Bus
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, []string{"other-key-xxxxxxxxxxxx", testKey}, func(context.Context) []Resource {
		return []Resource{{Name: "host", Role: "host", CPUCores: 2, CPUPercent: 12, MemoryTotal: 8 << 30, MemoryUsed: 2 << 30}}
	})
}

func newFixtureWith(t *testing.T, keys []string, resources func(context.Context) []Resource) *fixture {
	t.Helper()
	f := &fixture{orch: newFakeOrch(), bus: events.New(events.Options{})}
	t.Cleanup(func() { f.bus.Close() })
	f.d = New(Options{Orchestrator: f.orch, CheckKey: KeyChecker(keys), Events: f.bus,
		SessionTTL: time.Hour, SnapshotEvery: 100 * time.Millisecond, Version: "test", Resources: resources})
	srv := memnet.NewServer(t, f.d)
	f.url, f.client = srv.URL, srv.Client
	f.orch.add(idepool.Container{ID: "abcd0001", Profile: "default", State: idepool.StateRunning, UserID: "alice",
		Workspace: &idepool.Workspace{Bucket: "bkt", Prefix: "alice"}, CreatedAt: time.Now().Add(-5 * time.Minute)})
	f.orch.add(idepool.Container{ID: "abcd0002", Profile: "default", State: idepool.StateWarm, CreatedAt: time.Now()})
	return f
}

// noRedirect is a client that shows redirects instead of following them.
func (f *fixture) noRedirect() *http.Client {
	return &http.Client{Transport: f.client.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login signs in and returns the session cookie.
func (f *fixture) login(t *testing.T, key string) (*http.Response, *http.Cookie) {
	t.Helper()
	res, err := f.noRedirect().PostForm(f.url+"/dashboard/login", url.Values{"key": {key}})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	for _, c := range res.Cookies() {
		if c.Name == CookieName {
			return res, c
		}
	}
	return res, nil
}

func (f *fixture) do(t *testing.T, method, path string, cookie *http.Cookie, body url.Values, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(body.Encode())
	}
	req, _ := http.NewRequest(method, f.url+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := f.noRedirect().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	var b []byte
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		b = make([]byte, 4096)
		n, _ := res.Body.Read(b)
		b = b[:n]
	} else {
		b, _ = io.ReadAll(res.Body)
	}
	return res, string(b)
}

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	const m = `name="csrf-token" content="`
	i := strings.Index(page, m)
	if i < 0 {
		t.Fatalf("no CSRF token in the page")
	}
	rest := page[i+len(m):]
	return rest[:strings.IndexByte(rest, '"')]
}

// concrete turns a route pattern into a path.
func concrete(p string) string {
	p = strings.ReplaceAll(p, "{$}", "")
	p = strings.ReplaceAll(p, "{id}", "abcd0001")
	p = strings.ReplaceAll(p, "{profile}", "default")
	return strings.ReplaceAll(p, "{name}", "app.js")
}

// TestEveryRouteNeedsSession walks the route table: only the sign-in form is
// public; everything else refuses a request without a session, with a
// forged cookie, and with an expired session — and changes nothing.
func TestEveryRouteNeedsSession(t *testing.T) { synctest.Test(t, testEveryRouteNeedsSession) }

func testEveryRouteNeedsSession(t *testing.T) {
	f := newFixture(t)
	_, expired := f.login(t, testKey)
	time.Sleep(2 * time.Hour)
	var public []string
	routes := f.d.routes()
	routes = append(routes, route{method: "GET", path: Prefix + "/no/such/page"}, route{method: "DELETE", path: Prefix + "/containers/abcd0001"})
	for _, rt := range routes {
		if rt.public {
			public = append(public, rt.method+" "+rt.path)
			continue
		}
		path := concrete(rt.path)
		for name, cookie := range map[string]*http.Cookie{
			"none":    nil,
			"forged":  {Name: CookieName, Value: strings.Repeat("ab", 32)},
			"garbage": {Name: CookieName, Value: "x"},
			"expired": expired,
		} {
			for _, accept := range []string{"text/html", "application/json"} {
				var body url.Values
				if rt.method == "POST" {
					body = url.Values{"target": {"7"}}
				}
				res, text := f.do(t, rt.method, path, cookie, body, map[string]string{"Accept": accept})
				ok := res.StatusCode == http.StatusUnauthorized ||
					(res.StatusCode == http.StatusSeeOther && res.Header.Get("Location") == "/dashboard/login" && rt.method == "GET")
				if !ok {
					t.Errorf("%s %s (cookie %s, %s): %d %s, want 401 or a redirect to sign in", rt.method, path, name, accept, res.StatusCode, text)
				}
				if strings.Contains(text, "abcd0001") {
					t.Errorf("%s %s leaked data without a session", rt.method, path)
				}
			}
		}
	}
	if fmt.Sprint(public) != "[GET /dashboard/login POST /dashboard/login]" {
		t.Errorf("public routes: %v", public)
	}
	if len(f.orch.stops) != 0 || f.orch.targets["default"] != 2 {
		t.Errorf("an action ran without a session: stops %v targets %v", f.orch.stops, f.orch.targets)
	}
}

func TestSignInAndOut(t *testing.T) { synctest.Test(t, testSignInAndOut) }

func testSignInAndOut(t *testing.T) {
	f := newFixture(t)
	res, c := f.login(t, "wrong-key")
	if res.StatusCode != http.StatusUnauthorized || c != nil {
		t.Fatalf("wrong key: %d, cookie %v", res.StatusCode, c)
	}
	res, c = f.login(t, testKey)
	if res.StatusCode != http.StatusSeeOther || c == nil || res.Header.Get("Location") != "/dashboard/" {
		t.Fatalf("sign in: %d %v", res.StatusCode, c)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/dashboard" || c.Secure || strings.Contains(c.Value, testKey) {
		t.Errorf("cookie %+v", c)
	}
	res, page := f.do(t, "GET", "/dashboard/", c, nil, nil)
	if res.StatusCode != 200 || strings.Contains(page, testKey) || !strings.Contains(page, "abcd0001") || !strings.Contains(page, "bkt/alice/") {
		t.Fatalf("page: %d\n%s", res.StatusCode, page)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	for _, p := range []string{"/dashboard/static/app.js", "/dashboard/static/app.css", "/dashboard/state"} {
		if res, body := f.do(t, "GET", p, c, nil, nil); res.StatusCode != 200 || strings.Contains(body, testKey) {
			t.Errorf("%s: %d", p, res.StatusCode)
		}
	}
	csrf := csrfOf(t, page)
	// Sign out needs the CSRF token.
	if res, _ := f.do(t, "POST", "/dashboard/logout", c, url.Values{}, nil); res.StatusCode != http.StatusForbidden {
		t.Errorf("sign out without CSRF: %d", res.StatusCode)
	}
	res, _ = f.do(t, "POST", "/dashboard/logout", c, url.Values{"csrf": {csrf}}, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/dashboard/login" {
		t.Errorf("sign out: %d", res.StatusCode)
	}
	if res, _ := f.do(t, "GET", "/dashboard/state", c, nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("after sign out: %d", res.StatusCode)
	}
	if n := f.d.sessions.count(); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

func TestSecureCookieOverHTTPS(t *testing.T) { synctest.Test(t, testSecureCookieOverHTTPS) }

func testSecureCookieOverHTTPS(t *testing.T) {
	f := newFixture(t)
	for name, mod := range map[string]func(*http.Request){
		"tls":     func(r *http.Request) { r.TLS = &tls.ConnectionState{} },
		"proxied": func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "https") },
	} {
		r := httptest.NewRequest("POST", "/dashboard/login", strings.NewReader("key="+testKey))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		mod(r)
		w := httptest.NewRecorder()
		f.d.ServeHTTP(w, r)
		cs := w.Result().Cookies()
		if len(cs) != 1 || !cs[0].Secure {
			t.Errorf("%s: cookies %+v", name, cs)
		}
	}
}

func TestActions(t *testing.T) { synctest.Test(t, testActions) }

func testActions(t *testing.T) {
	f := newFixture(t)
	_, c := f.login(t, testKey)
	_, page := f.do(t, "GET", "/dashboard/", c, nil, nil)
	csrf := csrfOf(t, page)
	js := map[string]string{"Accept": "application/json", "X-CSRF-Token": csrf}

	if res, _ := f.do(t, "POST", "/dashboard/containers/abcd0001/stop", c, url.Values{"csrf": {"wrong"}}, nil); res.StatusCode != http.StatusForbidden {
		t.Errorf("stop with a wrong token: %d", res.StatusCode)
	}
	cross := map[string]string{"Accept": "application/json", "X-CSRF-Token": csrf, "Origin": "https://evil.example"}
	if res, _ := f.do(t, "POST", "/dashboard/containers/abcd0001/stop", c, url.Values{}, cross); res.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin stop: %d", res.StatusCode)
	}
	res, body := f.do(t, "POST", "/dashboard/containers/abcd0001/stop", c, url.Values{}, js)
	if res.StatusCode != 200 || !strings.Contains(body, "stopped abcd0001") {
		t.Errorf("stop: %d %s", res.StatusCode, body)
	}
	res, body = f.do(t, "POST", "/dashboard/containers/abcd0001/stop", c, url.Values{}, js)
	if res.StatusCode != 404 || !strings.Contains(body, "not found") {
		t.Errorf("second stop: %d %s", res.StatusCode, body)
	}
	// A plain form post (no script) comes back to the page.
	res, _ = f.do(t, "POST", "/dashboard/containers/abcd0002/stop", c, url.Values{"csrf": {csrf}}, nil)
	if res.StatusCode != http.StatusSeeOther {
		t.Errorf("form stop: %d", res.StatusCode)
	}
	if fmt.Sprint(f.orch.stops) != "[abcd0001:manual abcd0002:manual]" {
		t.Errorf("stops %v", f.orch.stops)
	}

	for _, tt := range []struct {
		profile, target string
		want            int
	}{{"default", "5", 200}, {"default", "-1", 400}, {"default", "x", 400}, {"default", "1001", 400}, {"nosuch", "1", 404}} {
		res, body := f.do(t, "POST", "/dashboard/pools/"+tt.profile+"/target", c, url.Values{"target": {tt.target}}, js)
		if res.StatusCode != tt.want {
			t.Errorf("target %s=%s: %d %s", tt.profile, tt.target, res.StatusCode, body)
		}
	}
	if f.orch.targets["default"] != 5 {
		t.Errorf("target %d", f.orch.targets["default"])
	}
}

func TestStream(t *testing.T) { synctest.Test(t, testStream) }

func testStream(t *testing.T) {
	f := newFixture(t)
	_, c := f.login(t, testKey)
	f.bus.Publish(idepool.Event{Type: idepool.EventState, ContainerID: "abcd0001", State: idepool.StateRunning})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/dashboard/stream?after=0", nil)
	req.AddCookie(c)
	res, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("stream: %d", res.StatusCode)
	}
	sc := bufio.NewScanner(res.Body)
	next := func() (string, string) {
		var ev, data string
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == "" && ev != "":
				return ev, data
			case strings.HasPrefix(l, "event: "):
				ev = l[7:]
			case strings.HasPrefix(l, "data: "):
				data = l[6:]
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return "", ""
	}
	seen := map[string]string{}
	for len(seen) < 2 {
		ev, data := next()
		seen[ev] = data
	}
	var snap snapshot
	if err := json.Unmarshal([]byte(seen["snapshot"]), &snap); err != nil || snap.Total != 2 || len(snap.Pools) != 2 || len(snap.Resources) != 1 {
		t.Errorf("snapshot %s: %v", seen["snapshot"], err)
	}
	var e idepool.Event
	if err := json.Unmarshal([]byte(seen["log"]), &e); err != nil || e.ContainerID != "abcd0001" || e.ID != 1 {
		t.Errorf("log %s", seen["log"])
	}
	// Signing out ends the stream with a signout message.
	ss := f.d.sessions
	ss.mu.Lock()
	clear(ss.m)
	ss.mu.Unlock()
	for {
		if ev, _ := next(); ev == "signout" {
			break
		}
	}
}

func TestChart(t *testing.T) { synctest.Test(t, testChart) }

func testChart(t *testing.T) {
	orch := newFakeOrch()
	d := New(Options{Orchestrator: orch, SampleEvery: 10 * time.Second, History: time.Minute})
	for i := range 10 {
		orch.mu.Lock()
		orch.targets["default"] = i
		orch.mu.Unlock()
		d.sampleOnce()
		time.Sleep(10 * time.Second)
	}
	// The ring keeps 6 samples (a minute at 10 s): targets 4..9.
	c := d.charts.chart("default", time.Now(), time.Minute)
	if c.Samples != 6 || c.Max != 9 {
		t.Fatalf("chart %+v", c)
	}
	pts := strings.Fields(c.Target)
	if len(pts) != 6 || pts[len(pts)-1] != "300.0,2.0" || !strings.HasPrefix(pts[0], "0.0,") {
		t.Errorf("target points %q", c.Target)
	}
	if e := d.charts.chart("nosuch", time.Now(), time.Minute); e.Samples != 0 {
		t.Errorf("unknown profile %+v", e)
	}
}

func TestKeyChecker(t *testing.T) { synctest.Test(t, testKeyChecker) }

func testKeyChecker(t *testing.T) {
	check := KeyChecker([]string{"alpha-key", "", "beta-key"})
	for k, want := range map[string]bool{"alpha-key": true, "beta-key": true, "": false, "alpha": false, "alpha-key ": false} {
		if check(k) != want {
			t.Errorf("check(%q) = %v", k, !want)
		}
	}
	if KeyChecker(nil)("x") {
		t.Error("no keys accepted a key")
	}
}

func TestLoginRateLimit(t *testing.T) { synctest.Test(t, testLoginRateLimit) }

func testLoginRateLimit(t *testing.T) {
	f := newFixture(t)
	limited := false
	for range 30 {
		if res, _ := f.login(t, "guess"); res.StatusCode == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Error("30 quick guesses were never limited")
	}
}

// TestRunEndsStreams: when Run's context ends (the server shuts down), open
// live views end, so an http.Server's Shutdown does not wait for them.
func TestRunEndsStreams(t *testing.T) { synctest.Test(t, testRunEndsStreams) }

func testRunEndsStreams(t *testing.T) {
	f := newFixture(t)
	_, c := f.login(t, testKey)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- f.d.Run(ctx) }()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	req, _ := http.NewRequestWithContext(rctx, "GET", f.url+"/dashboard/stream", nil)
	req.AddCookie(c)
	res, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Errorf("the stream did not end cleanly: %v", err)
	}
	if res, _ := f.do(t, "GET", "/dashboard/stream", c, nil, nil); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream after Close: %d", res.StatusCode)
	}
}
