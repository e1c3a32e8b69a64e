package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// TestAgentNetworks: from the containers' network only the agent endpoint
// and ForwardAuth answer; the API (even with a valid key), the dashboard,
// metrics and the router get 403 FORBIDDEN in the envelope. Other peers,
// and trusted ones on that network (Traefik), are served as before.
func TestAgentNetworks(t *testing.T) {
	mount := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	}
	traefik := netip.MustParseAddr("10.0.1.3")
	h := newHarness(t, func(o *Options) {
		o.AgentNetworks = []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("fd00:1::/64")}
		o.TrustedPeer = func(_ context.Context, ip netip.Addr) bool { return ip == traefik }
		o.Mounts = map[string]http.Handler{"/agent/v1/connect": mount("agent"), "GET /_auth/forward": mount("forward-auth")}
		o.Fallback = mount("router")
		o.Metrics = mount("metrics")
	})
	tests := []struct {
		remote, method, path string
		want                 int
		body                 string // for 200
	}{
		// A container: its agent channel and ForwardAuth only.
		{"10.0.1.7:40000", "GET", "/agent/v1/connect", 200, "agent"},
		{"10.0.1.7:40000", "GET", "/_auth/forward", 200, "forward-auth"},
		{"10.0.1.7:40000", "GET", "/api/containers", 403, ""},
		{"10.0.1.7:40000", "GET", "/containers", 403, ""},
		{"10.0.1.7:40000", "POST", "/api/containers/start", 403, ""},
		{"10.0.1.7:40000", "GET", "/api/health", 403, ""},
		{"10.0.1.7:40000", "GET", "/metrics", 403, ""},
		{"10.0.1.7:40000", "GET", "/dashboard/", 403, ""},
		{"10.0.1.7:40000", "GET", "/code/abcd1234/", 403, ""}, // the built-in router
		{"10.0.1.7:40000", "GET", "/agent/v1/connect/../../api/containers", 403, ""},
		{"[::ffff:10.0.1.7]:40000", "GET", "/api/containers", 403, ""},
		{"[fd00:1::5]:40000", "GET", "/api/containers", 403, ""},
		// Traefik on the same network forwards users: served.
		{"10.0.1.3:40000", "GET", "/api/containers", 200, ""},
		{"10.0.1.3:40000", "GET", "/code/abcd1234/", 200, "router"},
		// Anyone else (the host, a published port's gateway): served.
		{"172.18.0.1:40000", "GET", "/api/containers", 200, ""},
		{"127.0.0.1:40000", "GET", "/metrics", 200, "metrics"},
		{"[fd00:2::5]:40000", "GET", "/code/abcd1234/", 200, "router"},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		r.RemoteAddr = tc.remote
		r.Header.Set("Authorization", "Bearer "+testKey)
		r.Header.Set("X-Forwarded-For", "172.18.0.1") // never believed
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s %s from %s: %d, want %d: %s", tc.method, tc.path, tc.remote, w.Code, tc.want, w.Body)
			continue
		}
		switch {
		case tc.want == 403:
			var m map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || errCode(t, m, tc.path) != "FORBIDDEN" {
				t.Errorf("%s %s from %s: body %s, want the FORBIDDEN envelope", tc.method, tc.path, tc.remote, w.Body)
			}
		case tc.body != "" && w.Body.String() != tc.body:
			t.Errorf("%s %s from %s: body %q, want %q", tc.method, tc.path, tc.remote, w.Body, tc.body)
		}
	}
}

// TestAgentNetworksUnset: without networks nothing changes.
func TestAgentNetworksUnset(t *testing.T) {
	h := newHarness(t, nil)
	r := httptest.NewRequest("GET", "/api/containers", nil)
	r.RemoteAddr = "10.0.1.7:40000"
	r.Header.Set("Authorization", "Bearer "+testKey)
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("%d: %s", w.Code, w.Body)
	}
}
