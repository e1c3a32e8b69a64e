package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/idepool/idepool"
)

// historyBackend remembers stopped containers, as pool.Manager does.
type historyBackend struct {
	*backend
	stopped map[string]idepool.Container
}

func (h historyBackend) Get(_ context.Context, id string) (idepool.Container, error) {
	if c, ok := h.stopped[id]; ok {
		return c, nil
	}
	return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
}

const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

// TestStudentPages: a browser loading a route that cannot be served gets a
// small page saying what happened and what to do, with the envelope's
// status; API clients keep the envelope. No page holds a token or key.
func TestStudentPages(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.FrameAncestors = []string{"https://lms.example.com"}
	})
	f.be.set(idepool.Container{ID: "cold5555", Profile: "default", State: idepool.StateRunning, Generation: 1})
	f.be.set(idepool.Container{ID: "boot7777", Profile: "default", State: idepool.StateStarting, Generation: 1,
		Workspace: &idepool.Workspace{Bucket: "b"}})
	f.rt.o.Backend = historyBackend{backend: f.be, stopped: map[string]idepool.Container{
		"gone6666": {ID: "gone6666", Profile: "default", State: idepool.StateStopped, StopReason: idepool.ReasonInactivity},
	}}
	used, err := f.rt.Mint("aaaa1111", 1)
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := f.get(t, "/code/aaaa1111/?token="+used); res.StatusCode != http.StatusFound {
		t.Fatalf("first use of the link: %d", res.StatusCode)
	}
	cases := []struct {
		name, path string
		status     int
		text       string
		refresh    bool
	}{
		{"used link", "/code/aaaa1111/?token=" + used, 401, "This link was already used", false},
		{"no link", "/code/aaaa1111/", 401, "This IDE needs its link", false},
		{"not ready", "/code/cold5555/", 503, "This IDE is starting", true},
		{"cold start", "/code/boot7777/?token=not-spent-yet", 503, "This IDE is starting", true},
		{"stopped", "/code/gone6666/", 404, "This IDE was stopped", false},
		{"unknown", "/code/zzzz9999/", 404, "There is no IDE at this address", false},
		{"warm", "/code/warm3333/", 404, "There is no IDE at this address", false},
		{"not answering", "/code/dead4444/", 502, "This IDE is not answering yet", true},
	}
	cookie := map[string]*http.Cookie{"cold5555": f.login(t, "cold5555", "code"), "dead4444": f.login(t, "dead4444", "code")}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, accept := range []string{browserAccept, "application/json", "*/*", ""} {
				req, _ := http.NewRequest("GET", f.front.URL+c.path, nil)
				if accept != "" {
					req.Header.Set("Accept", accept)
				}
				_, id, _, _ := parsePath(strings.Split(c.path, "?")[0])
				if ck := cookie[id]; ck != nil {
					req.AddCookie(ck)
				}
				res, err := f.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				body := string(b)
				if res.StatusCode != c.status {
					t.Errorf("Accept %q: status %d, want %d: %s", accept, res.StatusCode, c.status, body)
				}
				ct := res.Header.Get("Content-Type")
				if accept != browserAccept {
					if !strings.HasPrefix(ct, "application/json") || !strings.Contains(body, `"error"`) {
						t.Errorf("Accept %q: %s %s, want the JSON envelope", accept, ct, body)
					}
					continue
				}
				if !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, c.text) {
					t.Errorf("browser: %s %q, want a page saying %q", ct, body, c.text)
				}
				if got := strings.Contains(body, `http-equiv="refresh"`); got != c.refresh {
					t.Errorf("browser: reloads itself = %v, want %v", got, c.refresh)
				}
				if strings.Contains(body, used) || strings.Contains(body, "token=") || strings.Contains(body, "api-key") {
					t.Errorf("the page holds a token: %s", body)
				}
				if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'self' https://lms.example.com") || !strings.Contains(csp, "default-src 'none'") {
					t.Errorf("page CSP %q: want it framable where the IDE is, running nothing", csp)
				}
			}
		})
	}
}

// TestForwardAuthPage: through Traefik the page speaks of the user's URL.
func TestForwardAuthPage(t *testing.T) {
	f := newFixture(t, nil)
	fa := f.rt.ForwardAuth()
	for _, c := range []struct{ uri, text string }{
		{"/code/aaaa1111/?token=nope", "This link was already used"},
		{"/code/zzzz9999/", "There is no IDE at this address"},
	} {
		req, _ := http.NewRequest("GET", "/_auth/forward", nil)
		req.Header.Set("X-Forwarded-Uri", c.uri)
		req.Header.Set("Accept", browserAccept)
		w := httptest.NewRecorder()
		fa.ServeHTTP(w, req)
		if !strings.Contains(w.Body.String(), c.text) {
			t.Errorf("%s: %d %s, want %q", c.uri, w.Code, w.Body.String(), c.text)
		}
	}
}
