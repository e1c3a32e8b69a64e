package htmlpage

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWantsHTML(t *testing.T) {
	for _, c := range []struct {
		method, accept string
		want           bool
	}{
		{"GET", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", true}, // Chromium, Firefox
		{"GET", "application/xhtml+xml", true},
		{"HEAD", "text/html", true},
		{"GET", "TEXT/HTML; charset=utf-8", true},
		{"GET", "", false},                 // curl without -H
		{"GET", "*/*", false},              // curl, fetch()
		{"GET", "application/json", false}, // API clients
		{"GET", "application/json, text/html;q=0", false},
		{"GET", "text/html;q=0.0", false},
		{"GET", "text/htmlx", false},
		{"GET", ";;;,,", false},
		{"POST", "text/html", false}, // a form post is not a page to answer with a page
		{"DELETE", "text/html", false},
	} {
		r := httptest.NewRequest(c.method, "/", nil)
		if c.accept != "" {
			r.Header.Set("Accept", c.accept)
		}
		if got := WantsHTML(r); got != c.want {
			t.Errorf("%s Accept %q: %v, want %v", c.method, c.accept, got, c.want)
		}
	}
}

func TestWriteEscapesAndLocksDown(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, httptest.NewRequest("GET", "/", nil), http.StatusConflict, Page{
		Title: `<script>alert(1)</script>`, Lines: []string{`"><img src=x onerror=alert(1)>`},
		Links: []Link{{Text: "x", Href: "javascript:alert(1)"}}, Refresh: 3,
	})
	body := w.Body.String()
	if w.Code != http.StatusConflict || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s", w.Code, w.Header().Get("Content-Type"))
	}
	for _, bad := range []string{"<script>", "<img", "javascript:alert"} {
		if strings.Contains(body, bad) {
			t.Errorf("page holds %q unescaped: %s", bad, body)
		}
	}
	if !strings.Contains(body, `<meta http-equiv="refresh" content="3">`) {
		t.Errorf("no refresh: %s", body)
	}
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	w = httptest.NewRecorder()
	Write(w, httptest.NewRequest("HEAD", "/", nil), http.StatusOK, Page{Title: "t"})
	if w.Body.Len() != 0 {
		t.Errorf("HEAD has a body")
	}
}
