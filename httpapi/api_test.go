package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

const testKey = "k-0123456789abcdef"

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

type harness struct {
	srv  *Server
	orch *fakeOrch
	logs *bytes.Buffer
}

func newHarness(t testing.TB, mod func(*Options)) *harness {
	t.Helper()
	orch := newFakeOrch(t0)
	logs := &bytes.Buffer{}
	o := Options{
		Orchestrator: orch,
		Keys:         []string{"other-key", testKey},
		URLs:         &fakeURLs{},
		Health:       fakeHealth{HealthReport{Runtime: "fake", Connected: true}},
		Logger:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:        fixedClock{t0},
		MaxBodyBytes: 4096,
		Version:      "test",
	}
	if mod != nil {
		mod(&o)
	}
	return &harness{srv: New(o), orch: orch, logs: logs}
}

type call struct {
	method, path, body string
	header             map[string]string
	noAuth             bool
}

func (h *harness) do(t testing.TB, c call) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	var body *strings.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(c.method, c.path, body)
	if c.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if !c.noAuth {
		r.Header.Set("Authorization", "Bearer "+testKey)
	}
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, r)
	var m map[string]any
	if w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v: %q", c.method, c.path, err, w.Body.String())
		}
	}
	return w, m
}

// errCode returns the envelope's code after checking its shape.
func errCode(t testing.TB, m map[string]any, path string) string {
	t.Helper()
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error envelope: %v", m)
	}
	if _, ok := e["message"].(string); !ok {
		t.Fatalf("envelope without message: %v", m)
	}
	if m["path"] != path {
		t.Errorf("envelope path = %v, want %s", m["path"], path)
	}
	if ts, _ := m["timestamp"].(string); ts != "2026-11-27T12:00:00.000Z" {
		t.Errorf("envelope timestamp = %q", ts)
	}
	code, _ := e["code"].(string)
	return code
}

// concrete fills a route pattern's wildcards.
func concrete(p string) string {
	p = strings.ReplaceAll(p, "{$}", "")
	p = strings.ReplaceAll(p, "{id}", "warm0001")
	return strings.ReplaceAll(p, "{profile}", "default")
}

// TestAuthEveryRoute is the table test over every route of routes.go.
func TestAuthEveryRoute(t *testing.T) {
	h := newHarness(t, nil)
	open := map[string]bool{"GET /{$}": true, "GET /api/health": true, "GET /api/openapi.json": true, "GET /metrics": true}
	cases := []struct {
		name   string
		header string // Authorization value; "" = none
		ok     bool   // authenticated
	}{
		{"missing key", "", false},
		{"wrong key", "Bearer wrong-key", false},
		{"empty bearer", "Bearer ", false},
		{"other scheme", "Basic " + testKey, false},
		{"key prefix", "Bearer " + testKey[:len(testKey)-1], false},
		{"bearer key", "Bearer " + testKey, true},
		{"lower-case scheme", "bearer " + testKey, true},
		{"second key", "Bearer other-key", true},
		// The original accepted the raw key without "Bearer"; kept for its clients.
		{"raw header key", testKey, true},
	}
	for _, rt := range h.srv.Routes() {
		if open[rt.Method+" "+rt.Path] == rt.Auth {
			t.Errorf("%s %s: Auth=%v disagrees with the open list", rt.Method, rt.Path, rt.Auth)
		}
		for _, p := range rt.Paths() {
			path := concrete(p)
			if path == "" {
				path = "/"
			}
			for _, c := range cases {
				t.Run(rt.Method+" "+p+"/"+c.name, func(t *testing.T) {
					r := httptest.NewRequest(rt.Method, path, strings.NewReader(`{}`))
					r.Header.Set("Content-Type", "application/json")
					if c.header != "" {
						r.Header.Set("Authorization", c.header)
					}
					w := httptest.NewRecorder()
					h.srv.ServeHTTP(w, r)
					want401 := rt.Auth && !c.ok
					if got := w.Code == http.StatusUnauthorized; got != want401 {
						t.Fatalf("status %d, want 401=%v: %s", w.Code, want401, w.Body)
					}
					if want401 {
						var m map[string]any
						json.Unmarshal(w.Body.Bytes(), &m)
						if code := errCode(t, m, path); code != string(idepool.EUnauthorized) {
							t.Fatalf("code %s", code)
						}
						if w.Header().Get("WWW-Authenticate") == "" {
							t.Error("401 without WWW-Authenticate")
						}
					}
				})
			}
		}
	}
	// No keys configured: nothing authenticated is reachable.
	h2 := newHarness(t, func(o *Options) { o.Keys = nil })
	w, _ := h2.do(t, call{method: "GET", path: "/api/containers"})
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("no keys configured: %d", w.Code)
	}
}

func TestRoutesTable(t *testing.T) {
	h := newHarness(t, nil)
	seen := map[string]bool{}
	for _, rt := range h.srv.Routes() {
		k := rt.Method + " " + rt.Path
		if seen[k] {
			t.Errorf("duplicate route %s", k)
		}
		seen[k] = true
		if rt.Summary == "" {
			t.Errorf("%s: no summary", k)
		}
		if strings.HasPrefix(rt.Path, "/api/") && len(rt.Paths()) != 2 {
			t.Errorf("%s: want the /api and bare mounts", k)
		}
	}
}

func TestRootAndHealth(t *testing.T) {
	h := newHarness(t, nil)
	w, m := h.do(t, call{method: "GET", path: "/", noAuth: true})
	if w.Code != 200 || m["name"] != "idepool" || m["version"] != "test" || m["status"] != "running" {
		t.Fatalf("root: %d %v", w.Code, m)
	}
	for _, p := range []string{"/api/health", "/health"} {
		w, m = h.do(t, call{method: "GET", path: p, noAuth: true})
		if w.Code != 200 || m["status"] != "ok" {
			t.Fatalf("%s: %d %v", p, w.Code, m)
		}
		q := m["queue"].(map[string]any)
		if q["preWarmed"] != 2.0 || q["targetSize"] != 2.0 || q["withS3Bucket"] != 0.0 {
			t.Errorf("queue = %v", q)
		}
		// The fake runtime runs no Docker: docker.connected says so.
		if m["docker"].(map[string]any)["connected"] != false || m["runtime"].(map[string]any)["name"] != "fake" {
			t.Errorf("runtime = %v / %v", m["docker"], m["runtime"])
		}
		if _, ok := m["resources"].(map[string]any)["memory"]; !ok {
			t.Errorf("resources = %v", m["resources"])
		}
	}
	h = newHarness(t, func(o *Options) {
		o.Health = fakeHealth{HealthReport{Runtime: "swarm", Connected: false, Error: "cannot reach the Docker engine"}}
	})
	w, m = h.do(t, call{method: "GET", path: "/api/health", noAuth: true})
	if w.Code != 503 || m["status"] != "degraded" || m["docker"].(map[string]any)["error"] == nil {
		t.Fatalf("degraded: %d %v", w.Code, m)
	}
}

func TestStart(t *testing.T) {
	type want struct {
		status int
		code   idepool.Code // error code, or "" for success
		check  func(t *testing.T, m map[string]any, o *fakeOrch)
	}
	big := `{"s3Bucket":"b-ok","userId":"` + strings.Repeat("x", 5000) + `"}`
	cases := []struct {
		name  string
		c     call
		setup func(*fakeOrch)
		want  want
	}{
		{"warm claim", call{body: `{"s3Bucket":"my-bucket","s3Region":"us-east-1","userId":"u1","s3Prefix":"a/b"}`}, nil, want{201, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if m["status"] != "running" || m["isPreWarmed"] != true || m["isReused"] != false || m["s3Bucket"] != "my-bucket" {
				t.Errorf("body %v", m)
			}
			id := m["id"].(string)
			if m["serviceName"] != "idepool-"+id {
				t.Errorf("serviceName %v", m["serviceName"])
			}
			u := m["urls"].(map[string]any)
			if !strings.Contains(u["codeServer"].(string), "/code/"+id+"/?token=") || u["terminal"] != u["codeServer"] || u["vnc"] == nil || u["webServer"] == nil {
				t.Errorf("urls %v", u)
			}
			if len(m["routes"].(map[string]any)) != 3 {
				t.Errorf("routes %v", m["routes"])
			}
			if o.lastStart.Workspace.Prefix != "a/b" || o.lastStart.UserID != "u1" {
				t.Errorf("request %+v", o.lastStart)
			}
		}}},
		{"cold start with profile and credentials", call{body: `{"s3Bucket":"my-bucket","profile":"big","awsAccessKeyId":"AKIAXX","awsSecretAccessKey":"s3cr3t-value","idleExempt":true,"vncPassword":"pw"}`}, nil, want{201, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if m["status"] != "starting" || m["isPreWarmed"] != false || m["profile"] != "big" {
				t.Errorf("body %v", m)
			}
			if m["urls"].(map[string]any)["terminal"] == m["urls"].(map[string]any)["codeServer"] {
				t.Errorf("terminal route not used: %v", m["urls"])
			}
			if o.lastStart.Credentials.SecretAccessKey != "s3cr3t-value" || !o.lastStart.IdleExempt || o.lastStart.VNCPassword != "pw" {
				t.Errorf("request %v", o.lastStart)
			}
		}}},
		{"reused", call{body: `{"s3Bucket":"used-bucket"}`}, func(o *fakeOrch) {
			w := idepool.Workspace{Bucket: "used-bucket"}
			o.containers["used0001"] = idepool.Container{ID: "used0001", Profile: "default", State: idepool.StateRunning, Workspace: &w, Generation: 3}
		}, want{200, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if m["isReused"] != true || m["id"] != "used0001" || m["status"] != "running" {
				t.Errorf("body %v", m)
			}
		}}},
		{"unknown fields ignored", call{body: `{"s3Bucket":"my-bucket","futureField":{"x":[1,2]}}`}, nil, want{201, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if o.lastStart.WaitsReady {
				t.Errorf("a start without ?wait=ready was said to wait")
			}
		}}},
		{"no content type is accepted", call{body: `{"s3Bucket":"my-bucket"}`, header: map[string]string{"Content-Type": ""}}, nil, want{201, "", nil}},
		{"json with charset", call{body: `{"s3Bucket":"my-bucket"}`, header: map[string]string{"Content-Type": "application/json; charset=utf-8"}}, nil, want{201, "", nil}},
		{"wait ready", call{path: "?wait=ready&timeout=5s", body: `{"s3Bucket":"cold-bucket","profile":"big"}`}, nil, want{201, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if m["state"] != "running" || m["status"] != "starting" && m["status"] != "running" || m["ready"] != true {
				t.Errorf("body %v", m)
			}
			if !o.lastStart.WaitsReady {
				t.Errorf("the pool was not told the start waits for ready")
			}
		}}},
		{"wait timeout gives 202 with URLs", call{path: "?wait=ready&timeout=0.01", body: `{"s3Bucket":"cold-bucket","profile":"big"}`}, func(o *fakeOrch) { o.neverReady = true }, want{202, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if m["ready"] != false || m["urls"].(map[string]any)["codeServer"] == nil {
				t.Errorf("body %v", m)
			}
		}}},
		{"wait failure", call{path: "?wait=ready", body: `{"s3Bucket":"fails-to-start","profile":"big"}`}, nil, want{500, idepool.EStartFailed, func(t *testing.T, m map[string]any, o *fakeOrch) {
			if o.starts != startAttempts {
				t.Errorf("%d starts, want %d (a container that fails before ready gets one more)", o.starts, startAttempts)
			}
		}}},
		{"wait: a container that fails before ready gets one more", call{path: "?wait=ready", body: `{"s3Bucket":"fails-once","profile":"big"}`}, nil, want{201, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if o.starts != 2 || m["ready"] != true || m["generation"] != 2.0 {
				t.Errorf("%d starts, body %v", o.starts, m)
			}
		}}},
		{"no wait: a start is answered once", call{body: `{"s3Bucket":"fails-once","profile":"big"}`}, nil, want{201, "", func(t *testing.T, m map[string]any, o *fakeOrch) {
			if o.starts != 1 || m["ready"] != false {
				t.Errorf("%d starts, body %v", o.starts, m)
			}
		}}},
		{"bad wait", call{path: "?wait=soon", body: `{"s3Bucket":"my-bucket"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"bad timeout", call{path: "?wait=ready&timeout=banana", body: `{"s3Bucket":"my-bucket"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"negative timeout", call{path: "?wait=ready&timeout=-1", body: `{"s3Bucket":"my-bucket"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"timeout over max", call{path: "?wait=ready&timeout=1h", body: `{"s3Bucket":"my-bucket"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"huge seconds", call{path: "?wait=ready&timeout=1e300", body: `{"s3Bucket":"my-bucket"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"missing bucket", call{body: `{"s3Region":"us-east-1"}`}, nil, want{400, idepool.EInvalidBucket, nil}},
		{"empty body", call{body: ""}, nil, want{400, idepool.EInvalidBucket, nil}},
		{"null body", call{body: "null"}, nil, want{400, idepool.EInvalidBucket, nil}},
		{"uppercase bucket", call{body: `{"s3Bucket":"My_Bucket"}`}, nil, want{400, idepool.EInvalidBucket, nil}},
		{"ip bucket", call{body: `{"s3Bucket":"192.168.1.1"}`}, nil, want{400, idepool.EInvalidBucket, nil}},
		{"short bucket", call{body: `{"s3Bucket":"ab"}`}, nil, want{400, idepool.EInvalidBucket, nil}},
		{"prefix escape", call{body: `{"s3Bucket":"my-bucket","s3Prefix":"a/../b"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"bad region", call{body: `{"s3Bucket":"my-bucket","s3Region":"US EAST"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"malformed json", call{body: `{"s3Bucket":`}, nil, want{400, idepool.EInvalid, nil}},
		{"syntax error", call{body: `{"s3Bucket" "x"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"trailing data", call{body: `{"s3Bucket":"my-bucket"} {}`}, nil, want{400, idepool.EInvalid, nil}},
		{"array body", call{body: `["my-bucket"]`}, nil, want{400, idepool.EInvalid, nil}},
		{"wrong type names the field", call{body: `{"s3Bucket":123}`}, nil, want{400, idepool.EInvalid, func(t *testing.T, m map[string]any, o *fakeOrch) {
			e := m["error"].(map[string]any)
			if !strings.Contains(e["message"].(string), "s3Bucket") || e["details"].(map[string]any)["field"] != "s3Bucket" {
				t.Errorf("error %v", e)
			}
		}}},
		{"wrong type bool", call{body: `{"s3Bucket":"my-bucket","idleExempt":"yes"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"too large", call{body: big}, nil, want{413, idepool.ETooLarge, nil}},
		{"long field", call{body: `{"s3Bucket":"my-bucket","userId":"` + strings.Repeat("u", 300) + `"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"control chars", call{body: `{"s3Bucket":"my-bucket","userId":"a\u0000b"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"wrong content type", call{body: `{"s3Bucket":"my-bucket"}`, header: map[string]string{"Content-Type": "text/plain"}}, nil, want{415, idepool.EUnsupportedMedia, nil}},
		{"form content type", call{body: `s3Bucket=x`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, nil, want{415, idepool.EUnsupportedMedia, nil}},
		{"unknown profile", call{body: `{"s3Bucket":"my-bucket","profile":"nope"}`}, nil, want{400, idepool.EUnknownProfile, nil}},
		{"key without secret", call{body: `{"s3Bucket":"my-bucket","awsAccessKeyId":"AKIA"}`}, nil, want{400, idepool.EInvalid, nil}},
		{"capacity", call{body: `{"s3Bucket":"my-bucket"}`}, func(o *fakeOrch) {
			o.startErr = idepool.Errorf(idepool.ECapacity, "no room")
		}, want{503, idepool.ECapacity, nil}},
		{"internal error hides internals", call{body: `{"s3Bucket":"my-bucket"}`}, func(o *fakeOrch) {
			o.startErr = errFake("dial unix /var/run/docker.sock: secret internals")
		}, want{500, idepool.EInternal, func(t *testing.T, m map[string]any, o *fakeOrch) {
			if strings.Contains(m["error"].(map[string]any)["message"].(string), "secret") {
				t.Errorf("internals leaked: %v", m)
			}
		}}},
		{"panic is recovered", call{body: `{"s3Bucket":"panic-bucket"}`}, nil, want{500, idepool.EInternal, func(t *testing.T, m map[string]any, o *fakeOrch) {
			if strings.Contains(m["error"].(map[string]any)["message"].(string), "secret") {
				t.Errorf("internals leaked: %v", m)
			}
		}}},
	}
	for _, tc := range cases {
		// A bubble each: ?wait=ready runs out on fake time.
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				if tc.setup != nil {
					tc.setup(h.orch)
				}
				tc.c.method = "POST"
				path := "/api/containers/start"
				tc.c.path = path + tc.c.path
				w, m := h.do(t, tc.c)
				if w.Code != tc.want.status {
					t.Fatalf("status %d, want %d: %s", w.Code, tc.want.status, w.Body)
				}
				if tc.want.code != "" {
					if code := errCode(t, m, path); code != string(tc.want.code) {
						t.Fatalf("code %s, want %s", code, tc.want.code)
					}
				}
				if tc.want.check != nil {
					tc.want.check(t, m, h.orch)
				}
				if strings.Contains(h.logs.String(), "s3cr3t") || strings.Contains(h.logs.String(), testKey) {
					t.Fatalf("secret in logs: %s", h.logs)
				}
			})
		})
	}
}

type errFake string

func (e errFake) Error() string { return string(e) }

func TestListGetDelete(t *testing.T) {
	h := newHarness(t, nil)
	_, m := h.do(t, call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket"}`})
	id := m["id"].(string)

	// List: default paging, true total, legacy and new statuses.
	w, m := h.do(t, call{method: "GET", path: "/containers"})
	if w.Code != 200 || m["total"] != 2.0 || m["limit"] != 50.0 || m["offset"] != 0.0 || len(m["containers"].([]any)) != 2 {
		t.Fatalf("list: %d %v", w.Code, m)
	}
	w, m = h.do(t, call{method: "GET", path: "/api/containers?status=starting&limit=1&offset=0"})
	if w.Code != 200 || m["total"] != 1.0 {
		t.Fatalf("list starting: %d %v", w.Code, m)
	}
	got := h.orch.lastFilter.States
	if len(got) != 3 { // creating, starting, syncing
		t.Errorf("legacy starting → %v", got)
	}
	w, m = h.do(t, call{method: "GET", path: "/api/containers?status=warm,running&limit=1&offset=1"})
	if w.Code != 200 || m["total"] != 1.0 || len(m["containers"].([]any)) != 0 {
		t.Fatalf("list warm,running: %d %v", w.Code, m)
	}
	w, m = h.do(t, call{method: "GET", path: "/api/containers?state=starting"})
	if w.Code != 200 || len(h.orch.lastFilter.States) != 1 || h.orch.lastFilter.States[0] != idepool.StateStarting {
		t.Fatalf("state=starting: %d %v %v", w.Code, m, h.orch.lastFilter.States)
	}
	for _, q := range []string{"status=bogus", "state=pre-warmed", "limit=0", "limit=501", "limit=abc", "offset=-1", "profile=nope"} {
		w, m = h.do(t, call{method: "GET", path: "/api/containers?" + q})
		if w.Code != 400 {
			t.Errorf("%s: %d", q, w.Code)
		}
		errCode(t, m, "/api/containers")
	}

	// Get: detail fields, URLs without tokens.
	w, m = h.do(t, call{method: "GET", path: "/api/containers/" + id})
	if w.Code != 200 {
		t.Fatalf("get: %d %s", w.Code, w.Body)
	}
	for _, f := range []string{"id", "serviceName", "status", "state", "profile", "urls", "s3Bucket", "createdAt", "startedAt", "stoppedAt",
		"lastActivity", "uptime", "resourceLimits", "health", "isPreWarmed", "generation", "workspace"} {
		if _, ok := m[f]; !ok {
			t.Errorf("get: no field %s", f)
		}
	}
	if strings.Contains(w.Body.String(), "token") {
		t.Errorf("get answer carries a token: %s", w.Body)
	}
	if m["resourceLimits"].(map[string]any)["cpuLimit"] != 2.0 || m["health"].(map[string]any)["status"] != "unknown" {
		t.Errorf("get: %v", m)
	}
	for _, p := range []string{"/api/containers/nope1234", "/api/containers/BAD_ID", "/containers/x"} {
		w, m = h.do(t, call{method: "GET", path: p})
		if w.Code != 404 || errCode(t, m, p) != string(idepool.ENotFound) {
			t.Errorf("%s: %d %v", p, w.Code, m)
		}
	}

	// Delete twice: 200 then 404, never 500.
	w, m = h.do(t, call{method: "DELETE", path: "/api/containers/" + id})
	if w.Code != 200 || m["status"] != "stopped" || m["id"] != id || m["stoppedAt"] == nil || m["message"] == nil {
		t.Fatalf("delete: %d %v", w.Code, m)
	}
	w, m = h.do(t, call{method: "DELETE", path: "/api/containers/" + id})
	if w.Code != 404 || errCode(t, m, "/api/containers/"+id) != string(idepool.ENotFound) {
		t.Fatalf("delete again: %d %v", w.Code, m)
	}
	w, _ = h.do(t, call{method: "DELETE", path: "/containers/..."})
	if w.Code != 404 {
		t.Fatalf("delete invalid id: %d", w.Code)
	}

	// The inactivity webhook stops with reason inactivity.
	w, m = h.do(t, call{method: "POST", path: "/api/containers/warm0002/inactivity-shutdown", body: `{"reason":"idle"}`})
	if w.Code != 200 || m["reason"] != idepool.ReasonInactivity {
		t.Fatalf("inactivity: %d %v", w.Code, m)
	}
}

func TestPool(t *testing.T) {
	h := newHarness(t, nil)
	w, m := h.do(t, call{method: "GET", path: "/api/pool"})
	if w.Code != 200 || len(m["pools"].([]any)) != 2 {
		t.Fatalf("pool: %d %v", w.Code, m)
	}
	p := m["pools"].([]any)[0].(map[string]any)
	for _, f := range []string{"profile", "target", "warm", "starting", "claimed", "failed"} {
		if _, ok := p[f]; !ok {
			t.Errorf("pool: no %s in %v", f, p)
		}
	}
	w, m = h.do(t, call{method: "PUT", path: "/api/pool/default", body: `{"target":7}`})
	if w.Code != 200 || m["target"] != 7.0 || m["profile"] != "default" {
		t.Fatalf("set: %d %v", w.Code, m)
	}
	for _, c := range []struct {
		path, body string
		status     int
		code       idepool.Code
	}{
		{"/api/pool/nope", `{"target":1}`, 400, idepool.EUnknownProfile},
		{"/pool/default", `{"target":-1}`, 400, idepool.EInvalid},
		{"/pool/default", `{"target":100000}`, 400, idepool.EInvalid},
		{"/pool/default", `{"target":"3"}`, 400, idepool.EInvalid},
		{"/pool/default", `{"target":1.5}`, 400, idepool.EInvalid},
		{"/pool/default", `{}`, 400, idepool.EInvalid},
		{"/pool/default", `{"target":`, 400, idepool.EInvalid},
	} {
		w, m = h.do(t, call{method: "PUT", path: c.path, body: c.body})
		if w.Code != c.status || errCode(t, m, c.path) != string(c.code) {
			t.Errorf("PUT %s %s: %d %v", c.path, c.body, w.Code, m)
		}
	}
	w, m = h.do(t, call{method: "GET", path: "/api/profiles"})
	if w.Code != 200 || len(m["profiles"].([]any)) != 2 {
		t.Fatalf("profiles: %d %v", w.Code, m)
	}
}

func TestNotFoundMethodAndRequestID(t *testing.T) {
	h := newHarness(t, nil)
	w, m := h.do(t, call{method: "GET", path: "/nowhere"})
	if w.Code != 404 || errCode(t, m, "/nowhere") != string(idepool.ERouteNotFound) {
		t.Fatalf("404: %d %v", w.Code, m)
	}
	w, m = h.do(t, call{method: "PATCH", path: "/api/containers/abcd1234"})
	if w.Code != 405 || errCode(t, m, "/api/containers/abcd1234") != string(idepool.EMethodNotAllowed) {
		t.Fatalf("405: %d %v", w.Code, m)
	}
	if a := w.Header().Get("Allow"); !strings.Contains(a, "GET") || !strings.Contains(a, "DELETE") {
		t.Errorf("Allow = %q", a)
	}
	w, _ = h.do(t, call{method: "DELETE", path: "/api/health"})
	if w.Code != 405 || !strings.Contains(w.Header().Get("Allow"), "GET") {
		t.Errorf("DELETE /api/health: %d %q", w.Code, w.Header().Get("Allow"))
	}
	w, _ = h.do(t, call{method: "GET", path: "/api/health", header: map[string]string{"X-Request-ID": "abc-123"}})
	if w.Header().Get("X-Request-ID") != "abc-123" {
		t.Errorf("request id not echoed")
	}
	w, _ = h.do(t, call{method: "GET", path: "/api/health", header: map[string]string{"X-Request-ID": "bad id\x01"}})
	if id := w.Header().Get("X-Request-ID"); id == "" || strings.Contains(id, " ") {
		t.Errorf("generated request id %q", id)
	}
	if !strings.Contains(h.logs.String(), `"request_id":"abc-123"`) {
		t.Errorf("access log lacks the request id: %s", h.logs)
	}
	if strings.Contains(h.logs.String(), testKey) {
		t.Errorf("API key in logs")
	}

	// Fallback gets what no API route matches; 405 still wins for API paths.
	var hit string
	h = newHarness(t, func(o *Options) {
		o.Fallback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit = r.URL.Path; w.WriteHeader(299) })
	})
	w, _ = h.do(t, call{method: "GET", path: "/code/abcd1234/"})
	if w.Code != 299 || hit != "/code/abcd1234/" {
		t.Errorf("fallback: %d %q", w.Code, hit)
	}
	w, _ = h.do(t, call{method: "PUT", path: "/api/containers"})
	if w.Code != 405 {
		t.Errorf("405 before fallback: %d", w.Code)
	}
}

func TestMiddlewareSeesKeyID(t *testing.T) {
	var seen string
	h := newHarness(t, func(o *Options) {
		o.Middleware = []func(http.Handler) http.Handler{func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = KeyID(r.Context())
				next.ServeHTTP(w, r)
			})
		}}
	})
	h.do(t, call{method: "GET", path: "/api/pool"})
	if len(seen) != 16 {
		t.Fatalf("KeyID = %q", seen)
	}
}

// FuzzStartDecoder: whatever the body, Content-Type and query, the start
// handler never panics and never answers 500 (the fake orchestrator does not
// fail), and every error is in the envelope.
func FuzzStartDecoder(f *testing.F) {
	for _, s := range []string{
		`{"s3Bucket":"my-bucket"}`, `{"s3Bucket":123}`, `{"s3Bucket":"my-bucket","profile":"big","idleExempt":true}`,
		``, `null`, `[]`, `"x"`, `{"s3Bucket":"a..b"}`, `{"s3Prefix":"../.."}`, `{"s3Bucket":"my-bucket","awsAccessKeyId":"A"}`,
		`{"s3Bucket":"my-bucket"}{`, `{"s3Bucket":"\ud800"}`, `{"idleExempt":null}`, `{"s3Bucket":{"$gt":""}}`, "\xff\xfe",
	} {
		f.Add(s, "application/json", "")
	}
	f.Add(`{"s3Bucket":"my-bucket"}`, "text/plain", "")
	f.Add(`{"s3Bucket":"my-bucket"}`, "application/json; charset=\"", "")
	f.Add(`{"s3Bucket":"my-bucket"}`, "application/json", "wait=ready&timeout=1e308")
	f.Add(`{"s3Bucket":"my-bucket"}`, "application/json", "wait=ready&timeout=-Inf")
	f.Add(`{"s3Bucket":"my-bucket"}`, "application/json", "wait=ready&timeout=NaN")
	f.Add(`{"s3Bucket":"my-bucket"}`, "application/json", "wait=%zz")
	h := newHarness(f, nil)
	f.Fuzz(func(t *testing.T, body, ct, query string) {
		r := httptest.NewRequest("POST", "/api/containers/start", strings.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Authorization", "Bearer "+testKey)
		r.Header.Set("Content-Type", ct)
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)
		if w.Code >= 500 {
			if strings.Contains(body, "panic-bucket") {
				return
			}
			t.Fatalf("status %d for %q (%q, %q): %s", w.Code, body, ct, query, w.Body)
		}
		if w.Code >= 400 {
			var m ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || m.Error.Code == "" {
				t.Fatalf("no envelope for %q: %s", body, w.Body)
			}
		}
	})
}
