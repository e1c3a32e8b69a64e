package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestFallbackShortcut: paths whose first segment is no pattern's go
// straight to Fallback; API paths, mounts, "/" and unclean paths still
// meet the mux (404 and 405 envelopes, redirects).
func TestFallbackShortcut(t *testing.T) {
	var hit string
	h := newHarness(t, func(o *Options) {
		o.Fallback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit = r.URL.Path; w.WriteHeader(299) })
		o.Mounts = map[string]http.Handler{"GET /_auth/forward": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(298) })}
	})
	for _, tc := range []struct {
		method, path string
		status       int
		fallback     bool // Fallback served it
		short        bool // without the mux
	}{
		{"GET", "/code/abcd1234/index.html", 299, true, true},
		{"POST", "/vnc/abcd1234/x", 299, true, true},
		{"GET", "/dashboard", 299, true, true},
		{"GET", "/_auth/forward", 298, false, false},
		{"GET", "/api/nope", 404, false, false},
		{"PUT", "/api/containers", 405, false, false},
		{"PUT", "/containers", 405, false, false},
		{"GET", "/", 200, false, false},
		{"GET", "/code/../api/pool", 307, false, false},
		{"GET", "//code/x", 299, true, false},
	} {
		hit = ""
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, httptest.NewRequest(tc.method, "http://idepool.test"+tc.path, nil))
		if w.Code != tc.status || (hit != "") != tc.fallback {
			t.Errorf("%s %s: %d, fallback %q; want %d, fallback %v", tc.method, tc.path, w.Code, hit, tc.status, tc.fallback)
		}
		if h.srv.toFallback(tc.path) != tc.short {
			t.Errorf("toFallback(%q) = %v", tc.path, !tc.short)
		}
	}
	if firstSegments(map[string]bool{"GET /api/x": true, "/": true}, nil) != nil ||
		firstSegments(map[string]bool{"GET /{id}/x": true}, nil) != nil ||
		firstSegments(nil, map[string]http.Handler{"example.com/x": nil}) != nil {
		t.Error("a pattern matching any first segment must turn the shortcut off")
	}
}
