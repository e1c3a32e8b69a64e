package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/idepool/idepool"
)

func TestCheckOrigins(t *testing.T) {
	cases := []struct {
		in []string
		ok bool
	}{
		{nil, true},
		{[]string{"https://app.example.com", "http://localhost:5173", "https://app.example.com/"}, true},
		{[]string{"*"}, false},
		{[]string{"null"}, false},
		{[]string{"https://*.example.com"}, false},
		{[]string{"app.example.com"}, false},
		{[]string{"ftp://app.example.com"}, false},
		{[]string{"https://app.example.com/path"}, false},
		{[]string{"https://user@app.example.com"}, false},
		{[]string{"https://app.example.com?x=1"}, false},
	}
	for _, tc := range cases {
		err := CheckOrigins(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("CheckOrigins(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && idepool.ErrorCode(err) != idepool.EMisconfigured {
			t.Errorf("code %s", idepool.ErrorCode(err))
		}
	}
}

// TestCORS: headers only for configured origins, never credentials, never
// "*", Vary: Origin; preflights answered for API routes only.
func TestCORS(t *testing.T) {
	const app = "https://app.example.com"
	type want struct {
		status  int
		acao    string // Access-Control-Allow-Origin
		methods string // Access-Control-Allow-Methods
		vary    bool
	}
	cases := []struct {
		name    string
		origins []string
		method  string
		path    string
		header  map[string]string
		want    want
	}{
		{"not configured: nothing", nil, "GET", "/api/containers", map[string]string{"Origin": app}, want{200, "", "", false}},
		{"not configured: preflight is just a 405", nil, "OPTIONS", "/api/containers", map[string]string{"Origin": app, "Access-Control-Request-Method": "GET"}, want{405, "", "", false}},
		{"allowed origin", []string{app}, "GET", "/api/containers", map[string]string{"Origin": app}, want{200, app, "", true}},
		{"allowed origin, case-insensitive", []string{"HTTPS://App.Example.com/"}, "GET", "/containers", map[string]string{"Origin": app}, want{200, app, "", true}},
		{"allowed origin on an error", []string{app}, "GET", "/api/containers/nope1234", map[string]string{"Origin": app}, want{404, app, "", true}},
		{"allowed origin on a 401", []string{app}, "GET", "/api/pool", map[string]string{"Origin": app, "Authorization": ""}, want{401, app, "", true}},
		{"other origin", []string{app}, "GET", "/api/containers", map[string]string{"Origin": "https://evil.example.com"}, want{200, "", "", true}},
		{"no origin (same-origin or curl)", []string{app}, "GET", "/api/containers", nil, want{200, "", "", true}},
		{"preflight", []string{app}, "OPTIONS", "/api/containers/abcd1234", map[string]string{"Origin": app, "Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "authorization"}, want{204, app, "GET, DELETE", true}},
		{"preflight on the alias", []string{app}, "OPTIONS", "/containers/start", map[string]string{"Origin": app, "Access-Control-Request-Method": "POST"}, want{204, app, "GET, POST, DELETE", true}}, // {id} matches "start" too
		{"preflight from another origin", []string{app}, "OPTIONS", "/api/containers", map[string]string{"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"}, want{403, "", "", true}},
		{"preflight for a method the path lacks", []string{app}, "OPTIONS", "/api/containers", map[string]string{"Origin": app, "Access-Control-Request-Method": "PATCH"}, want{405, app, "", true}},
		{"preflight on a router path goes to the fallback", []string{app}, "OPTIONS", "/code/abcd1234/", map[string]string{"Origin": app, "Access-Control-Request-Method": "GET"}, want{299, "", "", false}},
		{"router path: no CORS", []string{app}, "GET", "/code/abcd1234/", map[string]string{"Origin": app}, want{299, "", "", false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) {
				o.CORSOrigins = tc.origins
				o.Fallback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
			})
			r := httptest.NewRequest(tc.method, tc.path, nil)
			r.Header.Set("Authorization", "Bearer "+testKey)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.srv.ServeHTTP(w, r)
			hd := w.Header()
			if w.Code != tc.want.status || hd.Get("Access-Control-Allow-Origin") != tc.want.acao || hd.Get("Access-Control-Allow-Methods") != tc.want.methods {
				t.Fatalf("%d %v", w.Code, hd)
			}
			if vary := strings.Contains(strings.Join(hd.Values("Vary"), ","), "Origin"); vary != tc.want.vary {
				t.Errorf("Vary %q", hd.Values("Vary"))
			}
			if hd.Get("Access-Control-Allow-Credentials") != "" || hd.Get("Access-Control-Allow-Origin") == "*" {
				t.Errorf("credentials or wildcard: %v", hd)
			}
			if tc.want.acao != "" && !strings.Contains(hd.Get("Access-Control-Expose-Headers"), "X-RateLimit-Remaining") {
				t.Errorf("expose headers %q", hd.Get("Access-Control-Expose-Headers"))
			}
			if tc.want.status == 204 && (!strings.Contains(hd.Get("Access-Control-Allow-Headers"), "Authorization") || hd.Get("Access-Control-Max-Age") == "") {
				t.Errorf("preflight headers %v", hd)
			}
		})
	}
}

// TestSecurityHeaders: every API answer (success, error, 404/405 envelope)
// has them; mounts and the fallback (router, dashboard) set their own.
func TestSecurityHeaders(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		o.Fallback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
		o.Mounts = map[string]http.Handler{"GET /dashboard/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", "default-src 'self'")
			w.WriteHeader(298)
		})}
	})
	api := []call{
		{method: "GET", path: "/", noAuth: true},
		{method: "GET", path: "/api/health", noAuth: true},
		{method: "GET", path: "/openapi.json", noAuth: true},
		{method: "GET", path: "/api/containers"},
		{method: "GET", path: "/api/containers", noAuth: true},
		{method: "PATCH", path: "/api/containers"},
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket"}`},
	}
	for _, c := range api {
		w, _ := h.do(t, c)
		hd := w.Header()
		if hd.Get("X-Content-Type-Options") != "nosniff" || hd.Get("X-Frame-Options") != "DENY" ||
			hd.Get("Content-Security-Policy") != apiCSP || hd.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s %s → %d: %v", c.method, c.path, w.Code, hd)
		}
	}
	for _, p := range []string{"/code/abcd1234/", "/dashboard/"} {
		r := httptest.NewRequest("GET", p, nil)
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)
		if w.Header().Get("X-Frame-Options") != "" || w.Header().Get("Content-Security-Policy") == apiCSP {
			t.Errorf("%s: API headers leaked onto %d: %v", p, w.Code, w.Header())
		}
	}
	// Without a fallback, the 404 envelope is an API answer.
	h = newHarness(t, nil)
	if w, _ := h.do(t, call{method: "GET", path: "/nowhere"}); w.Code != 404 || w.Header().Get("X-Frame-Options") != "DENY" {
		t.Errorf("404: %d %v", w.Code, w.Header())
	}
}

// TestStatusAgreesWithRouter: a code means the same status from the API
// and the router, since both answer the root package's one table (the
// router's side: proxy's TestErrorStatusFromTable).
func TestStatusAgreesWithRouter(t *testing.T) {
	h := newHarness(t, nil)
	for _, code := range idepool.Codes() {
		w := httptest.NewRecorder()
		h.srv.WriteError(w, httptest.NewRequest("GET", "/api/x", nil), idepool.Errorf(code, "x"))
		if w.Code != code.HTTPStatus() {
			t.Errorf("%s: API %d, table %d", code, w.Code, code.HTTPStatus())
		}
	}
}
