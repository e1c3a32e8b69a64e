package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRootLandingPage: a browser at / gets a page (version, links to the
// dashboard, health and the API reference); API clients keep the JSON.
func TestRootLandingPage(t *testing.T) {
	h := newHarness(t, nil)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, r)
	body := w.Body.String()
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s %s", w.Code, w.Header().Get("Content-Type"), body)
	}
	for _, want := range []string{"idepool is running", "idepool test", `href="/dashboard/"`, `href="/api/health"`, `href="/api/openapi.json"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q: %s", want, body)
		}
	}
	if strings.Contains(body, testKey) {
		t.Error("the page holds an API key")
	}
	w2, m := h.do(t, call{method: "GET", path: "/", noAuth: true, header: map[string]string{"Accept": "application/json"}})
	if w2.Code != 200 || m["name"] != "idepool" {
		t.Fatalf("JSON client: %d %v", w2.Code, m)
	}
}
