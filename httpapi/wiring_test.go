package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/idepool/idepool/internal/apiwire"
	"github.com/idepool/idepool/proxy"
)

var (
	_ URLs          = (*proxy.Router)(nil)
	_ proxy.Backend = (*fakeOrch)(nil)
)

// TestWiringWithRouter wires the API and the router as the server does:
// start → the URL's token → cookie → proxied HTTP and websocket, all
// through the API's middleware; ForwardAuth as a mount.
func TestWiringWithRouter(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			typ, msg, err := c.Read(r.Context())
			if err == nil {
				c.Write(r.Context(), typ, msg)
			}
			c.Close(websocket.StatusNormalClosure, "")
			return
		}
		io.WriteString(w, "workload at "+r.URL.Path+" cookie="+r.Header.Get("Cookie"))
	}))
	defer upstream.Close()

	orch := newFakeOrch(t0)
	orch.endpoint = strings.TrimPrefix(upstream.URL, "http://")
	rt := proxy.New(proxy.Options{Backend: orch, Secret: []byte("0123456789abcdef0123456789abcdef"), Clock: fixedClock{t0},
		FrameAncestors: []string{"https://lms.example.com"}})
	api := New(Options{Orchestrator: orch, Keys: []string{testKey}, URLs: rt, Fallback: rt, Clock: fixedClock{t0},
		Mounts:      map[string]http.Handler{"GET /_auth/forward": rt.ForwardAuth()},
		RateLimit:   RateLimit{Requests: 100, Window: time.Minute},
		CORSOrigins: []string{"https://lms.example.com"}})
	front := httptest.NewServer(api)
	defer front.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()

	req, _ := http.NewRequest("POST", front.URL+"/api/containers/start?wait=ready", strings.NewReader(`{"s3Bucket":"wired-bucket"}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var start apiwire.StartResponse
	json.NewDecoder(resp.Body).Decode(&start)
	resp.Body.Close()
	if resp.StatusCode != 201 || start.URLs.CodeServer == "" {
		t.Fatalf("start: %d %+v", resp.StatusCode, start)
	}
	u, _ := url.Parse(start.URLs.CodeServer) // relative: no PublicURL set

	// Token → cookie.
	resp, err = client.Get(front.URL + u.RequestURI())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || len(resp.Cookies()) != 1 {
		t.Fatalf("exchange: %d", resp.StatusCode)
	}
	ck := resp.Cookies()[0]
	// Framed by the configured parent: SameSite=None, hence Secure.
	if ck.SameSite != http.SameSiteNoneMode || !ck.Secure || !ck.HttpOnly {
		t.Fatalf("cookie %q", resp.Header.Get("Set-Cookie"))
	}
	ck.Secure = false // the test server is plain http

	// ForwardAuth through the API's mux, without an API key.
	fa, _ := http.NewRequest("GET", front.URL+"/_auth/forward", nil)
	fa.Header.Set("X-Forwarded-Uri", u.Path)
	fa.AddCookie(ck)
	if resp, err = client.Do(fa); err != nil || resp.StatusCode != 200 {
		t.Fatalf("forward auth: %v %v", err, resp)
	}
	resp.Body.Close()

	// Proxied HTTP.
	get, _ := http.NewRequest("GET", front.URL+u.Path+"page", nil)
	get.AddCookie(ck)
	resp, err = client.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "workload at /page cookie=" {
		t.Fatalf("proxied: %d %q", resp.StatusCode, body)
	}
	// The IDE is embeddable by the parent; none of the API's headers.
	if h := resp.Header; h.Get("X-Frame-Options") != "" || h.Get("Content-Security-Policy") != "frame-ancestors 'self' https://lms.example.com" ||
		h.Get("X-RateLimit-Limit") != "" || h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("proxied headers %v", h)
	}

	// Websocket through the API's recorder and the router.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Cookie", ck.Name+"="+ck.Value)
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(front.URL, "http")+u.Path+"ws", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.Write(ctx, websocket.MessageText, []byte("ping"))
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "ping" {
		t.Fatalf("websocket echo: %q %v", msg, err)
	}
	// The router counts a write once its write to the client returned, so
	// the client can hold the echo before the count is there. A clean close
	// orders them: the workload's close frame comes back through the same
	// copy, after the echo's write was counted.
	if err := ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("websocket close: %v", err)
	}
	if st := rt.Stats(); st.Upgrades != 1 || st.WSReads == 0 || st.WSWrites == 0 {
		t.Fatalf("router stats %+v", st)
	}

	// GET answers carry URLs without a token.
	g, _ := http.NewRequest("GET", front.URL+"/api/containers/"+start.ID, nil)
	g.Header.Set("Authorization", testKey) // the raw form
	resp, err = client.Do(g)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Contains(string(body), "token") || !strings.Contains(string(body), `"codeServer":"/code/`+start.ID+`/"`) {
		t.Fatalf("get: %d %s", resp.StatusCode, body)
	}
	if h := resp.Header; h.Get("X-Frame-Options") != "DENY" || h.Get("X-RateLimit-Remaining") != "98" {
		t.Fatalf("API headers %v", h)
	}
}
