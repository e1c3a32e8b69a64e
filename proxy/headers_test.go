package proxy

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

func TestCookieAttributes(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cases := []struct {
		name     string
		opts     Options
		remote   string
		xfp      string
		tls      bool
		sameSite http.SameSite
		secure   bool
	}{
		{"default: lax, plain http", Options{}, "", "", false, http.SameSiteLaxMode, false},
		{"frame ancestors: none and secure", Options{FrameAncestors: []string{"https://lms.example.com"}}, "", "", false, http.SameSiteNoneMode, true},
		{"explicit strict wins over the framed default", Options{FrameAncestors: []string{"https://lms.example.com"}, CookieSameSite: SameSiteMode("strict")}, "", "", false, http.SameSiteStrictMode, false},
		{"explicit none is always secure", Options{CookieSameSite: SameSiteMode("None")}, "", "", false, http.SameSiteNoneMode, true},
		{"https public URL", Options{PublicURL: "HTTPS://ide.example.com"}, "", "", false, http.SameSiteLaxMode, true},
		{"cookie secure option", Options{CookieSecure: true}, "", "", false, http.SameSiteLaxMode, true},
		{"TLS request", Options{}, "", "", true, http.SameSiteLaxMode, true},
		{"forwarded https from an untrusted peer", Options{}, "192.0.2.1:4000", "https", false, http.SameSiteLaxMode, false},
		{"forwarded https from loopback (default trust)", Options{}, "127.0.0.1:4000", "https", false, http.SameSiteLaxMode, true},
		{"forwarded https from a v4-mapped loopback", Options{}, "[::ffff:127.0.0.1]:4000", "https", false, http.SameSiteLaxMode, true},
		{"forwarded http from loopback", Options{}, "127.0.0.1:4000", "http", false, http.SameSiteLaxMode, false},
		{"forwarded https from a configured proxy", Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, "10.1.2.3:4000", "https", false, http.SameSiteLaxMode, true},
		{"configured proxies replace loopback", Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, "127.0.0.1:4000", "https", false, http.SameSiteLaxMode, false},
		{"explicit loopback list", Options{TrustedProxies: loopback}, "127.0.0.1:1", "HTTPS", false, http.SameSiteLaxMode, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := &backend{touches: map[string]int{}, profiles: []idepool.Profile{{Name: "default", Routes: idepool.DefaultRoutes()}},
				containers: map[string]idepool.Container{"aaaa1111": {ID: "aaaa1111", Profile: "default", State: idepool.StateRunning, Generation: 2}}}
			o := tc.opts
			o.Backend, o.Secret, o.Clock = be, []byte("0123456789abcdef0123456789abcdef"), &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
			rt := New(o)
			tok, err := rt.Mint("aaaa1111", 2)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/code/aaaa1111/?token="+tok, nil)
			if tc.remote != "" {
				r.RemoteAddr = tc.remote
			}
			if tc.xfp != "" {
				r.Header.Set("X-Forwarded-Proto", tc.xfp)
			}
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			w := httptest.NewRecorder()
			rt.ServeHTTP(w, r)
			cks := w.Result().Cookies()
			if w.Code != http.StatusFound || len(cks) != 1 {
				t.Fatalf("exchange: %d %v", w.Code, w.Header())
			}
			ck := cks[0]
			if !ck.HttpOnly || ck.SameSite != tc.sameSite || ck.Secure != tc.secure {
				t.Fatalf("cookie %q: want SameSite %v Secure %v", w.Header().Get("Set-Cookie"), tc.sameSite, tc.secure)
			}
			if w.Header().Get("X-Frame-Options") != "" || !strings.Contains(w.Header().Get("Content-Security-Policy"), "frame-ancestors 'self'") {
				t.Errorf("exchange headers %v", w.Header())
			}
		})
	}
}

func TestSameSiteMode(t *testing.T) {
	for in, want := range map[string]http.SameSite{"auto": 0, "lax": http.SameSiteLaxMode, "Strict": http.SameSiteStrictMode, " NONE ": http.SameSiteNoneMode, "": 0, "sometimes": 0} {
		if got := SameSiteMode(in); got != want {
			t.Errorf("SameSiteMode(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestCheckFrameAncestors(t *testing.T) {
	cases := []struct {
		in []string
		ok bool
	}{
		{nil, true},
		{[]string{"https://lms.example.com"}, true},
		{[]string{"https://lms.example.com/", "http://localhost:8080", "https://*.example.com", "app.example.com:*"}, true},
		{[]string{"*"}, false},
		{[]string{"https://a.example.com; script-src *"}, false},
		{[]string{"'none'"}, false},
		{[]string{"https://a.example.com https://b.example.com"}, false},
		{[]string{"https://a.example.com/path"}, false},
		{[]string{"javascript://x"}, false},
		{[]string{""}, false},
	}
	for _, tc := range cases {
		err := CheckFrameAncestors(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("CheckFrameAncestors(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && idepool.ErrorCode(err) != idepool.EMisconfigured {
			t.Errorf("code %s", idepool.ErrorCode(err))
		}
	}
	if got := frameAncestorsCSP([]string{"https://a.example.com/", "bad; value", "https://*.b.example.com"}); got != "frame-ancestors 'self' https://a.example.com https://*.b.example.com" {
		t.Errorf("csp %q", got)
	}
}

// TestFramingHeaders: proxied IDE answers may be framed by the configured
// parents unless the workload set its own frame-ancestors; never
// X-Frame-Options DENY from idepool; the router's own answers likewise.
func TestFramingHeaders(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("csp"); v != "" {
			w.Header().Set("Content-Security-Policy", v)
		}
		if v := r.URL.Query().Get("xfo"); v != "" {
			w.Header().Set("X-Frame-Options", v)
		}
		w.Write([]byte("ide"))
	}))
	t.Cleanup(upstream.Close)
	ep := strings.TrimPrefix(upstream.URL, "http://")
	const parent = "frame-ancestors 'self' https://lms.example.com"
	cases := []struct {
		name      string
		ancestors []string
		query     string
		csp       []string
		xfo       string
	}{
		{"no policy upstream", []string{"https://lms.example.com"}, "", []string{parent}, ""},
		{"no ancestors configured: self only", nil, "", []string{"frame-ancestors 'self'"}, ""},
		{"upstream frame-ancestors wins", []string{"https://lms.example.com"}, "?csp=frame-ancestors+'none'&xfo=DENY", []string{"frame-ancestors 'none'"}, "DENY"},
		{"upstream CSP without frame-ancestors gets ours too", []string{"https://lms.example.com"}, "?csp=default-src+'self'", []string{"default-src 'self'", parent}, ""},
		{"upstream DENY dropped for configured parents", []string{"https://lms.example.com"}, "?xfo=DENY", []string{parent}, ""},
		{"upstream XFO kept without configured parents", nil, "?xfo=SAMEORIGIN", []string{"frame-ancestors 'self'"}, "SAMEORIGIN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(o *Options) { o.FrameAncestors = tc.ancestors })
			c, _ := f.be.Lookup("aaaa1111")
			c.Endpoints = map[string]string{"code": ep}
			f.be.set(c)
			ck := f.login(t, "aaaa1111", "code")
			resp, body := f.get(t, "/code/aaaa1111/"+tc.query, ck)
			if resp.StatusCode != 200 || body != "ide" {
				t.Fatalf("proxied: %d %s", resp.StatusCode, body)
			}
			got := resp.Header.Values("Content-Security-Policy")
			if strings.Join(got, "|") != strings.Join(tc.csp, "|") {
				t.Errorf("CSP %q, want %q", got, tc.csp)
			}
			if x := resp.Header.Get("X-Frame-Options"); x != tc.xfo {
				t.Errorf("X-Frame-Options %q, want %q", x, tc.xfo)
			}
		})
	}

	// The router's own answers: errors and redirects.
	f := newFixture(t, func(o *Options) { o.FrameAncestors = []string{"https://lms.example.com"} })
	for _, p := range []string{"/code/aaaa1111/", "/code/zzzz9999/", "/code/aaaa1111"} {
		resp, _ := f.get(t, p)
		h := resp.Header
		if h.Get("X-Frame-Options") != "" || h.Get("Content-Security-Policy") != "default-src 'none'; base-uri 'none'; "+parent ||
			h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: %d %v", p, resp.StatusCode, h)
		}
	}
}

// TestErrorStatusFromTable: the router answers every code with the root
// package's status for it, as the API does (httpapi's
// TestStatusAgreesWithRouter), in JSON and as a page.
func TestErrorStatusFromTable(t *testing.T) {
	rt := New(Options{Backend: &backend{}, Secret: []byte("0123456789abcdef0123456789abcdef")})
	for _, code := range idepool.Codes() {
		for _, accept := range []string{"application/json", "text/html"} {
			r := httptest.NewRequest("GET", "/code/abcd1234/", nil)
			r.Header.Set("Accept", accept)
			w := httptest.NewRecorder()
			rt.writeError(w, r, idepool.Errorf(code, "x"))
			if w.Code != code.HTTPStatus() {
				t.Errorf("%s (%s): router %d, table %d", code, accept, w.Code, code.HTTPStatus())
			}
		}
	}
}
