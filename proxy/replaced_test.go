package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/idepool/idepool"
)

// replacingBackend is a backend whose container aaaa1111 was replaced in
// place by cccc3333 (an unhealthy container replaced by the pool).
type replacingBackend struct {
	*backend
	mu       sync.Mutex
	replaced map[string]string
}

func (b *replacingBackend) ReplacedBy(id string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.replaced[id]
	return n, ok
}

func TestReplacedContainerRedirect(t *testing.T) {
	f := newFixture(t, nil)
	rb := &replacingBackend{backend: f.be, replaced: map[string]string{}}
	f.rt.o.Backend = rb
	old := f.login(t, "aaaa1111", "code")
	other := f.login(t, "bbbb2222", "code")

	// The pool replaces aaaa1111 with cccc3333.
	oldC, _ := f.be.Lookup("aaaa1111")
	f.be.mu.Lock()
	delete(f.be.containers, "aaaa1111")
	f.be.containers["cccc3333"] = idepool.Container{ID: "cccc3333", Profile: "default", State: idepool.StateRunning, Generation: 1, Endpoints: oldC.Endpoints}
	f.be.mu.Unlock()
	rb.mu.Lock()
	rb.replaced["aaaa1111"] = "cccc3333"
	rb.mu.Unlock()

	// The old container's user is sent on with a one-time token.
	resp, body := f.get(t, "/code/aaaa1111/src/main.py?x=1", old)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("old cookie: %d %s, want 307", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Path != "/code/cccc3333/src/main.py" || loc.Query().Get("x") != "1" || loc.Query().Get("token") == "" {
		t.Fatalf("Location %q", resp.Header.Get("Location"))
	}
	// The token opens the new container.
	resp, body = f.get(t, loc.RequestURI())
	if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Set-Cookie"), CookieName("cccc3333")) {
		t.Fatalf("token of the redirect: %d %s", resp.StatusCode, body)
	}

	// Through Traefik, which may route the old id a moment longer:
	// ForwardAuth answers the same redirect.
	r := httptest.NewRequest("GET", "/_auth/forward", nil)
	r.Header.Set("X-Forwarded-Uri", "/code/aaaa1111/src/main.py?x=1")
	r.AddCookie(old)
	w := httptest.NewRecorder()
	f.rt.ForwardAuth().ServeHTTP(w, r)
	floc, err := url.Parse(w.Header().Get("Location"))
	if w.Code != http.StatusTemporaryRedirect || err != nil || floc.Path != "/code/cccc3333/src/main.py" || floc.Query().Get("token") == "" {
		t.Fatalf("ForwardAuth with the old cookie: %d %q, want 307 to cccc3333 with a token", w.Code, w.Header().Get("Location"))
	}
	r = httptest.NewRequest("GET", "/_auth/forward", nil)
	r.Header.Set("X-Forwarded-Uri", "/code/aaaa1111/")
	r.AddCookie(other)
	w = httptest.NewRecorder()
	f.rt.ForwardAuth().ServeHTTP(w, r)
	if w.Code != http.StatusNotFound || w.Header().Get("Location") != "" {
		t.Errorf("ForwardAuth with another container's cookie: %d %q, want 404", w.Code, w.Header().Get("Location"))
	}

	// Without the old container's cookie (another user's cookie, or none)
	// there is no redirect and no token.
	for name, cks := range map[string][]*http.Cookie{"none": nil, "other container's": {other}} {
		resp, body := f.get(t, "/code/aaaa1111/", cks...)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
			t.Errorf("%s cookie: %d %s, want 404", name, resp.StatusCode, body)
		}
	}
}
