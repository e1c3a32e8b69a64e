package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/idepool/idepool"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type backend struct {
	mu         sync.Mutex
	containers map[string]idepool.Container
	profiles   []idepool.Profile
	touches    map[string]int
}

var _ Backend = (*backend)(nil)

func (b *backend) Lookup(id string) (idepool.Container, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.containers[id]
	return c, ok
}
func (b *backend) Touch(id string)             { b.mu.Lock(); b.touches[id]++; b.mu.Unlock() }
func (b *backend) Profiles() []idepool.Profile { return b.profiles }
func (b *backend) touched(id string) int       { b.mu.Lock(); defer b.mu.Unlock(); return b.touches[id] }
func (b *backend) set(c idepool.Container)     { b.mu.Lock(); b.containers[c.ID] = c; b.mu.Unlock() }

// seen is what the upstream received.
type seen struct {
	Path, RawPath, RawQuery, Cookie, Prefix, XFHost, XFProto, XFFor, Host, Auth string
}

type fixture struct {
	rt       *Router
	be       *backend
	clk      *clock
	front    *httptest.Server
	client   *http.Client
	upstream *httptest.Server
	mu       sync.Mutex
	last     seen
}

func (f *fixture) lastSeen() seen { f.mu.Lock(); defer f.mu.Unlock(); return f.last }

func newFixture(t testing.TB, mod func(*Options)) *fixture {
	t.Helper()
	f := &fixture{clk: &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}}
	f.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery, Cookie: r.Header.Get("Cookie"),
			Prefix: r.Header.Get("X-Forwarded-Prefix"), XFHost: r.Header.Get("X-Forwarded-Host"),
			XFProto: r.Header.Get("X-Forwarded-Proto"), XFFor: r.Header.Get("X-Forwarded-For"), Host: r.Host, Auth: r.Header.Get("Authorization")}
		f.mu.Lock()
		f.last = s
		f.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/ws") {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, msg, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if err := c.Write(r.Context(), typ, msg); err != nil {
					return
				}
			}
		}
		json.NewEncoder(w).Encode(s)
	}))
	t.Cleanup(f.upstream.Close)
	ep := strings.TrimPrefix(f.upstream.URL, "http://")
	routes := append(idepool.DefaultRoutes(), idepool.Route{Name: "lab", Port: 8888, KeepPrefix: true})
	eps := map[string]string{"code": ep, "vnc": ep, "web": ep, "lab": ep}
	f.be = &backend{touches: map[string]int{}, profiles: []idepool.Profile{{Name: "default", Routes: routes}}, containers: map[string]idepool.Container{
		"aaaa1111": {ID: "aaaa1111", Profile: "default", State: idepool.StateRunning, Generation: 1, Endpoints: eps},
		"bbbb2222": {ID: "bbbb2222", Profile: "default", State: idepool.StateRunning, Generation: 4, Endpoints: eps},
		"warm3333": {ID: "warm3333", Profile: "default", State: idepool.StateWarm, Endpoints: eps},
		"dead4444": {ID: "dead4444", Profile: "default", State: idepool.StateRunning, Generation: 1, Endpoints: map[string]string{"code": "127.0.0.1:1"}},
	}}
	o := Options{Backend: f.be, Secret: []byte("0123456789abcdef0123456789abcdef"), Clock: f.clk, TouchEvery: -1, DialTimeout: 2 * time.Second}
	if mod != nil {
		mod(&o)
	}
	f.rt = New(o)
	f.front = httptest.NewServer(f.rt)
	t.Cleanup(f.front.Close)
	f.rt.o.PublicURL = f.front.URL
	f.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(f.client.CloseIdleConnections)
	return f
}

func (f *fixture) get(t testing.TB, path string, cookies ...*http.Cookie) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.front.URL+path, nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	req.Header.Set("Authorization", "Bearer api-key-must-not-leak")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// login exchanges a fresh token for the route cookie.
func (f *fixture) login(t testing.TB, id, route string) *http.Cookie {
	t.Helper()
	c, _ := f.be.Lookup(id)
	urls, err := f.rt.RouteURLs(c, f.be.profiles[0])
	if err != nil {
		t.Fatal(err)
	}
	resp, body := f.get(t, strings.TrimPrefix(urls[route], f.front.URL))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("token exchange: %d %s", resp.StatusCode, body)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName(id) {
			return ck
		}
	}
	t.Fatal("no cookie set")
	return nil
}

func errCode(t testing.TB, body string) string {
	t.Helper()
	var m struct {
		Error struct{ Code, Message string }
		Path  string
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil || m.Error.Code == "" || m.Path == "" {
		t.Fatalf("not an error envelope: %q", body)
	}
	return m.Error.Code
}

func TestTokenCookieProxy(t *testing.T) {
	f := newFixture(t, nil)
	c, _ := f.be.Lookup("aaaa1111")
	urls, err := f.rt.RouteURLs(c, f.be.profiles[0])
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for k := range urls {
		names = append(names, k)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "code,lab,vnc,web" {
		t.Fatalf("routes %v", names)
	}
	u, _ := url.Parse(urls["code"])
	if u.Path != "/code/aaaa1111/" || len(u.Query().Get("token")) < 40 {
		t.Fatalf("url %s", urls["code"])
	}
	if base := f.rt.BaseURLs(c, f.be.profiles[0])["code"]; base != f.front.URL+"/code/aaaa1111/" {
		t.Fatalf("base url %s", base)
	}

	// Token → cookie and a redirect without the token (other params kept).
	resp, body := f.get(t, u.Path+"?x=1&token="+u.Query().Get("token"))
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/code/aaaa1111/?x=1" {
		t.Fatalf("exchange: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	ck := resp.Cookies()[0]
	raw := resp.Header.Get("Set-Cookie")
	if ck.Name != "idepool_aaaa1111" || !ck.HttpOnly || ck.Path != "/" || ck.SameSite != http.SameSiteLaxMode || ck.Secure || ck.MaxAge != 12*3600 {
		t.Fatalf("cookie %s", raw)
	}
	if f.be.touched("aaaa1111") != 0 {
		t.Errorf("touched before proxying")
	}

	// The cookie opens the route; the upstream sees neither cookie, token nor API key.
	other := &http.Cookie{Name: "theme", Value: "dark"}
	foreign := &http.Cookie{Name: "idepool_zzzz9999", Value: "x"}
	resp, body = f.get(t, "/code/aaaa1111/sub/dir?x=1&y=2", ck, other, foreign)
	if resp.StatusCode != 200 {
		t.Fatalf("proxied: %d %s", resp.StatusCode, body)
	}
	s := f.lastSeen()
	if s.Path != "/sub/dir" || s.RawQuery != "x=1&y=2" || s.Prefix != "/code/aaaa1111" || s.Cookie != "theme=dark" || s.Auth != "" {
		t.Fatalf("upstream saw %+v", s)
	}
	if s.XFHost == "" || s.XFProto != "http" || s.XFFor == "" {
		t.Errorf("X-Forwarded-*: %+v", s)
	}
	if f.be.touched("aaaa1111") != 1 {
		t.Errorf("touches = %d", f.be.touched("aaaa1111"))
	}

	// Escaped paths go through unchanged; KeepPrefix keeps the prefix.
	f.get(t, "/code/aaaa1111/a%2Fb/c", ck)
	if s := f.lastSeen(); s.RawPath != "/a%2Fb/c" || s.Path != "/a/b/c" {
		t.Errorf("escaped path: %+v", s)
	}
	f.get(t, "/lab/aaaa1111/tree?x=1", ck)
	if s := f.lastSeen(); s.Path != "/lab/aaaa1111/tree" || s.Prefix != "/lab/aaaa1111" || s.RawQuery != "x=1" {
		t.Errorf("keep prefix: %+v", s)
	}
	// The same cookie works on every route of the container.
	if resp, _ := f.get(t, "/vnc/aaaa1111/", ck); resp.StatusCode != 200 {
		t.Errorf("vnc with cookie: %d", resp.StatusCode)
	}

	// Without a slash: redirect first (the token travels along).
	resp, _ = f.get(t, "/code/aaaa1111?token=abc")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/code/aaaa1111/?token=abc" {
		t.Errorf("slash redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, nil)
	ckA := f.login(t, "aaaa1111", "code")
	c, _ := f.be.Lookup("aaaa1111")
	tok, _ := f.rt.Mint("aaaa1111", c.Generation)
	if resp, _ := f.get(t, "/code/aaaa1111/?token="+tok); resp.StatusCode != http.StatusFound {
		t.Fatalf("first use: %d", resp.StatusCode)
	}
	expTok, _ := f.rt.Mint("aaaa1111", c.Generation)
	bTok, _ := f.rt.Mint("bbbb2222", 4)
	oldGenTok, _ := f.rt.Mint("bbbb2222", 3)

	forged := *ckA
	forged.Value = strings.Replace(ckA.Value, "aaaa1111.1.", "aaaa1111.2.", 1)
	renamed := &http.Cookie{Name: "idepool_bbbb2222", Value: ckA.Value}

	cases := []struct {
		name    string
		path    string
		cookies []*http.Cookie
		status  int
		code    idepool.Code
		before  func()
	}{
		{"no cookie", "/code/aaaa1111/", nil, 401, idepool.EUnauthorized, nil},
		{"token reuse", "/code/aaaa1111/?token=" + tok, nil, 401, idepool.EUnauthorized, nil},
		{"unknown token", "/code/aaaa1111/?token=nope", nil, 401, idepool.EUnauthorized, nil},
		{"empty token", "/code/aaaa1111/?token=", nil, 401, idepool.EUnauthorized, nil},
		{"other container's token", "/code/aaaa1111/?token=" + bTok, nil, 401, idepool.EUnauthorized, nil},
		{"old generation token", "/code/bbbb2222/?token=" + oldGenTok, nil, 401, idepool.EUnauthorized, nil},
		{"other container's cookie", "/code/bbbb2222/", []*http.Cookie{ckA}, 401, idepool.EUnauthorized, nil},
		{"cookie renamed to another container", "/code/bbbb2222/", []*http.Cookie{renamed}, 401, idepool.EUnauthorized, nil},
		{"forged cookie", "/code/aaaa1111/", []*http.Cookie{&forged}, 401, idepool.EUnauthorized, nil},
		{"garbage cookie", "/code/aaaa1111/", []*http.Cookie{{Name: "idepool_aaaa1111", Value: "x.y"}}, 401, idepool.EUnauthorized, nil},
		{"unknown id", "/code/zzzz9999/", []*http.Cookie{ckA}, 404, idepool.ENotFound, nil},
		{"warm container", "/code/warm3333/", nil, 404, idepool.ENotFound, nil},
		{"invalid id", "/code/..%2F..%2Fetc/", nil, 404, idepool.ERouteNotFound, nil},
		{"unknown route", "/shell/aaaa1111/", []*http.Cookie{ckA}, 404, idepool.ERouteNotFound, nil},
		{"not a route path", "/favicon.ico", nil, 404, idepool.ERouteNotFound, nil},
		{"valid cookie still works", "/code/aaaa1111/", []*http.Cookie{ckA}, 200, "", nil},
		{"invalid token with valid cookie redirects", "/code/aaaa1111/?token=nope", []*http.Cookie{ckA}, 302, "", nil},
		{"expired token", "/code/aaaa1111/?token=" + expTok, nil, 401, idepool.EUnauthorized, func() { f.clk.Add(5*time.Minute + time.Second) }},
		{"reclaimed container: generation mismatch", "/code/aaaa1111/", []*http.Cookie{ckA}, 401, idepool.EUnauthorized, func() {
			c.Generation = 2
			f.be.set(c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			resp, body := f.get(t, tc.path, tc.cookies...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.code != "" {
				if got := errCode(t, body); got != string(tc.code) {
					t.Fatalf("code %s, want %s", got, tc.code)
				}
			}
		})
	}

	// An expired cookie is refused.
	f2 := newFixture(t, nil)
	ck := f2.login(t, "bbbb2222", "web")
	f2.clk.Add(12*time.Hour + time.Second)
	if resp, _ := f2.get(t, "/web/bbbb2222/", ck); resp.StatusCode != 401 {
		t.Fatalf("expired cookie: %d", resp.StatusCode)
	}
}

func TestCookieSurvivesRestart(t *testing.T) {
	f := newFixture(t, nil)
	ck := f.login(t, "aaaa1111", "code")
	rt2 := New(Options{Backend: f.be, Secret: []byte("0123456789abcdef0123456789abcdef"), Clock: f.clk})
	c, _ := f.be.Lookup("aaaa1111")
	if err := rt2.verifyCookie(ck.Value, c); err != nil {
		t.Fatalf("same secret: %v", err)
	}
	rt3 := New(Options{Backend: f.be, Secret: []byte("another secret, another server!"), Clock: f.clk})
	if err := rt3.verifyCookie(ck.Value, c); err == nil {
		t.Fatal("other secret accepted the cookie")
	}
}

func TestUpstreamErrors(t *testing.T) {
	f := newFixture(t, nil)
	ck := f.login(t, "dead4444", "code")
	resp, body := f.get(t, "/code/dead4444/", ck)
	if resp.StatusCode != http.StatusBadGateway || errCode(t, body) != string(idepool.EBadGateway) {
		t.Fatalf("refused upstream: %d %s", resp.StatusCode, body)
	}
	// A route whose workload has no endpoint yet.
	ck = f.login(t, "dead4444", "vnc")
	resp, body = f.get(t, "/vnc/dead4444/", ck)
	if resp.StatusCode != http.StatusServiceUnavailable || errCode(t, body) != string(idepool.EUnavailable) {
		t.Fatalf("no endpoint: %d %s", resp.StatusCode, body)
	}
	// An upstream that accepts but never answers: the header timeout ends
	// it with a 502 (no hang).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	f2 := newFixture(t, func(o *Options) { o.ResponseHeaderTimeout = 200 * time.Millisecond })
	c, _ := f2.be.Lookup("dead4444")
	c.Endpoints = map[string]string{"code": ln.Addr().String()}
	f2.be.set(c)
	ck = f2.login(t, "dead4444", "code")
	resp, body = f2.get(t, "/code/dead4444/", ck)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("silent upstream: %d %s", resp.StatusCode, body)
	}
}

func TestWebsocketThroughProxy(t *testing.T) {
	f := newFixture(t, nil)
	ck := f.login(t, "aaaa1111", "code")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(f.front.URL, "http") + "/code/aaaa1111/ws"

	// Without the cookie the upgrade is refused.
	if _, resp, err := websocket.Dial(ctx, wsURL, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("websocket without cookie: %v %v", err, resp)
	}

	h := http.Header{}
	h.Set("Cookie", ck.Name+"="+ck.Value+"; keep=me")
	conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	before := f.be.touched("aaaa1111")
	for i := range 20 {
		msg := []byte(strings.Repeat("x", i+1))
		if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.Read(ctx)
		if err != nil || string(got) != string(msg) {
			t.Fatalf("echo %d: %q %v", i, got, err)
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	st := f.rt.Stats()
	if st.Upgrades != 1 || st.WSReads < 20 || st.WSWrites < 20 || st.BytesIn < 210 || st.BytesOut < 210 {
		t.Fatalf("stats %+v", st)
	}
	if after := f.be.touched("aaaa1111"); after-before < 40 {
		t.Fatalf("touches during websocket: %d", after-before)
	}
	if s := f.lastSeen(); s.Cookie != "keep=me" || s.Path != "/ws" || s.Prefix != "/code/aaaa1111" {
		t.Fatalf("upgrade request at the upstream: %+v", s)
	}
	t.Logf("websocket stats: %+v", st)
}

func TestTouchThrottled(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.TouchEvery = time.Second })
	ck := f.login(t, "aaaa1111", "code")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Cookie", ck.Name+"="+ck.Value)
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.front.URL, "http")+"/code/aaaa1111/ws", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	for range 10 {
		conn.Write(ctx, websocket.MessageText, []byte("hi"))
		conn.Read(ctx)
	}
	// The clock does not move: one touch for the upgrade request, one for the connection.
	if n := f.be.touched("aaaa1111"); n != 2 {
		t.Fatalf("touches = %d, want 2", n)
	}
}

func TestForwardAuth(t *testing.T) {
	f := newFixture(t, nil)
	ck := f.login(t, "aaaa1111", "code")
	fa := f.rt.ForwardAuth()
	tok, _ := f.rt.Mint("bbbb2222", 4)
	tok2, _ := f.rt.Mint("bbbb2222", 4)
	cases := []struct {
		name     string
		uri      string
		proto    string
		cookie   *http.Cookie
		status   int
		location string
		secure   bool
	}{
		{"no uri", "", "", nil, 401, "", false},
		{"garbage uri", "::", "", nil, 401, "", false},
		{"valid cookie", "/code/aaaa1111/index.html", "http", ck, 200, "", false},
		{"valid cookie other route", "/vnc/aaaa1111/websockify", "http", ck, 200, "", false},
		{"no cookie", "/code/aaaa1111/", "http", nil, 401, "", false},
		{"cookie for another container", "/code/bbbb2222/", "http", ck, 401, "", false},
		{"unknown container", "/code/zzzz9999/", "http", ck, 404, "", false},
		{"warm container", "/code/warm3333/", "http", nil, 404, "", false},
		{"token", "/code/bbbb2222/?a=1&token=" + tok, "https", nil, 302, "/code/bbbb2222/?a=1", true},
		{"token reused", "/code/bbbb2222/?token=" + tok, "https", nil, 401, "", false},
		{"token without slash", "/code/bbbb2222?token=" + tok2, "http", nil, 302, "/code/bbbb2222/", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/_auth/forward", nil)
			if tc.uri != "" {
				r.Header.Set("X-Forwarded-Uri", tc.uri)
			}
			r.Header.Set("X-Forwarded-Proto", tc.proto)
			r.Header.Set("X-Forwarded-Host", "ide.example.com")
			r.Header.Set("X-Forwarded-Method", "GET")
			if tc.cookie != nil {
				r.AddCookie(tc.cookie)
			}
			w := httptest.NewRecorder()
			fa.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status >= 400 {
				errCode(t, w.Body.String())
			}
			if tc.location != "" {
				if got := w.Header().Get("Location"); got != tc.location {
					t.Fatalf("Location %q, want %q", got, tc.location)
				}
				sc := w.Result().Cookies()
				if len(sc) != 1 || sc[0].Name != "idepool_bbbb2222" || !sc[0].HttpOnly || sc[0].Secure != tc.secure {
					t.Fatalf("Set-Cookie %v", w.Header().Values("Set-Cookie"))
				}
			}
		})
	}
	if f.be.touched("aaaa1111") < 2 {
		t.Errorf("ForwardAuth did not report activity")
	}
}

func TestStripCookies(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a=1; idepool_x=2; b=3", "a=1; b=3"},
		{"idepool_x=2", ""},
		{"a=1;b=2", "a=1; b=2"},
		{" idepool_abc=1 ; c=\"q\"", `c="q"`},
	} {
		h := http.Header{"Cookie": {c.in}}
		stripCookies(h)
		if got := h.Get("Cookie"); got != c.want {
			t.Errorf("%q → %q, want %q", c.in, got, c.want)
		}
	}
}

func TestMintSweeps(t *testing.T) {
	f := newFixture(t, nil)
	for range 100 {
		if _, err := f.rt.Mint("aaaa1111", 1); err != nil {
			t.Fatal(err)
		}
	}
	f.clk.Add(6 * time.Minute)
	f.rt.Mint("aaaa1111", 1)
	f.rt.mu.Lock()
	n := len(f.rt.tokens)
	f.rt.mu.Unlock()
	if n != 1 {
		t.Fatalf("tokens after sweep: %d", n)
	}
	if _, err := f.rt.Mint("NOT VALID", 1); err == nil {
		t.Fatal("minted for an invalid id")
	}
}

// BenchmarkProxiedRequest measures a GET through the router (cookie check,
// lookup, ReverseProxy) against the same GET straight to the upstream.
func BenchmarkProxiedRequest(b *testing.B) {
	f := newFixture(b, nil)
	ck := f.login(b, "aaaa1111", "code")
	proxied, _ := http.NewRequest("GET", f.front.URL+"/code/aaaa1111/bench", nil)
	proxied.AddCookie(ck)
	direct, _ := http.NewRequest("GET", f.upstream.URL+"/bench", nil)
	for _, bc := range []struct {
		name string
		req  *http.Request
	}{{"direct", direct}, {"proxied", proxied}} {
		b.Run(bc.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				resp, err := f.client.Do(bc.req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
				lat = append(lat, time.Since(start))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// FuzzPathAndCookie: parsing route paths and verifying cookies never panics,
// and a cookie is never valid unless this router signed it.
func FuzzPathAndCookie(f *testing.F) {
	f.Add("/code/aaaa1111/x", "aaaa1111.1.1893456000.sig")
	f.Add("//", "...")
	f.Add("/code/aaaa1111", "aaaa1111.1.99999999999999999999.x")
	f.Add("/a/b/c/d%2F", "")
	rt := New(Options{Backend: &backend{}, Secret: []byte("0123456789abcdef0123456789abcdef")})
	c := idepool.Container{ID: "aaaa1111", Generation: 1}
	f.Fuzz(func(t *testing.T, path, cookie string) {
		parsePath(path)
		if rt.verifyCookie(cookie, c) == nil {
			t.Fatalf("forged cookie %q accepted", cookie)
		}
	})
}
