package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// oaDoc is the embedded document, parsed loosely.
type oaDoc struct {
	root map[string]any
}

func loadDoc(t testing.TB) oaDoc {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(openAPIDoc, &m); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return oaDoc{m}
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

// resolve follows a local $ref ("#/components/schemas/X").
func (d oaDoc) resolve(t testing.TB, v map[string]any) map[string]any {
	t.Helper()
	for i := 0; i < 10; i++ {
		ref, ok := v["$ref"].(string)
		if !ok {
			return v
		}
		cur := any(d.root)
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = obj(cur)[part]
		}
		if obj(cur) == nil {
			t.Fatalf("unresolved $ref %s", ref)
		}
		v = obj(cur)
	}
	t.Fatal("$ref loop")
	return nil
}

// docPath turns a ServeMux pattern path into the document's path.
func docPath(p string) string {
	if p == "/{$}" {
		return "/"
	}
	return p
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operations lists "METHOD /path" → operation of the document.
func (d oaDoc) operations() map[string]map[string]any {
	out := map[string]map[string]any{}
	for p, item := range obj(d.root["paths"]) {
		for _, m := range httpMethods {
			if op := obj(obj(item)[m]); op != nil {
				out[strings.ToUpper(m)+" "+p] = op
			}
		}
	}
	return out
}

// TestOpenAPIMatchesRoutes: every route of routes.go is described (method and
// path), nothing else is, and what the document says about each route agrees
// with the table (security, rate limit, path parameters).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := loadDoc(t)
	if v, _ := d.root["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi version %q", v)
	}
	ops := d.operations()
	h := newHarness(t, nil)
	ids := map[string]bool{}
	paramRE := regexp.MustCompile(`\{([a-z]+)\}`)
	for _, rt := range h.srv.Routes() {
		key := rt.Method + " " + docPath(rt.Path)
		op, ok := ops[key]
		if !ok {
			t.Errorf("route %s %s is not described in openapi.json", rt.Method, rt.Path)
			continue
		}
		delete(ops, key)
		t.Run(key, func(t *testing.T) {
			id, _ := op["operationId"].(string)
			if id == "" || ids[id] {
				t.Errorf("operationId %q missing or repeated", id)
			}
			ids[id] = true
			if s, _ := op["summary"].(string); s == "" {
				t.Error("no summary")
			}
			sec, hasSec := op["security"].([]any)
			public := hasSec && len(sec) == 0
			if public == rt.Auth {
				t.Errorf("security %v disagrees with Auth=%v", op["security"], rt.Auth)
			}
			resps := obj(op["responses"])
			if resps["default"] == nil {
				t.Error("no default (error envelope) response")
			}
			if rt.Auth && resps["401"] == nil {
				t.Error("authenticated route without a 401 response")
			}
			if (resps["429"] != nil) != rt.RateLimited() {
				t.Errorf("429 documented = %v, rate limited = %v", resps["429"] != nil, rt.RateLimited())
			}
			for code, r := range resps {
				r := d.resolve(t, obj(r))
				if r["description"] == nil {
					t.Errorf("%s: no description", code)
				}
				if rt.RateLimited() && strings.HasPrefix(code, "2") && obj(r["headers"])["X-RateLimit-Remaining"] == nil {
					t.Errorf("%s: rate-limit headers not documented", code)
				}
			}
			// Path parameters: exactly the pattern's wildcards.
			item := obj(obj(d.root["paths"])[docPath(rt.Path)])
			params, _ := item["parameters"].([]any)
			if ps, ok := op["parameters"].([]any); ok {
				params = append(slices.Clone(params), ps...)
			}
			var inPath []string
			for _, p := range params {
				p := d.resolve(t, obj(p))
				if p["in"] == "path" {
					inPath = append(inPath, p["name"].(string))
					if p["required"] != true {
						t.Errorf("path parameter %v not required", p["name"])
					}
				}
			}
			var want []string
			for _, m := range paramRE.FindAllStringSubmatch(rt.Path, -1) {
				want = append(want, m[1])
			}
			sort.Strings(inPath)
			sort.Strings(want)
			if !slices.Equal(inPath, want) {
				t.Errorf("path parameters %v, pattern has %v", inPath, want)
			}
			if (rt.Method == "POST" || rt.Method == "PUT") && op["requestBody"] == nil {
				t.Error("no requestBody")
			}
		})
	}
	for key := range ops {
		t.Errorf("openapi.json describes %s, which routes.go does not serve", key)
	}
	// Every $ref anywhere resolves.
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if _, ok := v["$ref"]; ok {
				d.resolve(t, v)
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d.root)
	scheme := obj(obj(obj(d.root["components"])["securitySchemes"])["bearerAuth"])
	if scheme["type"] != "http" || scheme["scheme"] != "bearer" {
		t.Errorf("bearer scheme %v", scheme)
	}
}

// TestOpenAPIErrorCodes: the envelope's code enum is exactly the status
// table's codes.
func TestOpenAPIErrorCodes(t *testing.T) {
	d := loadDoc(t)
	s := obj(obj(obj(d.root["components"])["schemas"])["ErrorCode"])
	var doc []string
	for _, c := range s["enum"].([]any) {
		doc = append(doc, c.(string))
	}
	var code []string
	for _, c := range idepool.Codes() {
		code = append(code, string(c))
	}
	sort.Strings(doc)
	sort.Strings(code)
	if !slices.Equal(doc, code) {
		t.Fatalf("ErrorCode enum %v\nstatus table   %v", doc, code)
	}
	desc := s["description"].(string)
	for _, c := range idepool.Codes() {
		if st := c.HTTPStatus(); !strings.Contains(desc, fmt.Sprintf("%s %d", c, st)) {
			t.Errorf("ErrorCode description lacks %q", fmt.Sprintf("%s %d", c, st))
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	h := newHarness(t, nil)
	for _, p := range []string{"/api/openapi.json", "/openapi.json"} {
		w, m := h.do(t, call{method: "GET", path: p, noAuth: true})
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("%s: %d %v", p, w.Code, w.Header())
		}
		if obj(m["info"])["version"] != "test" || obj(m["paths"])["/api/containers/start"] == nil {
			t.Fatalf("%s: %v", p, m["info"])
		}
	}
	if _, err := OpenAPI("x"); err != nil {
		t.Fatal(err)
	}
}

// validator checks a decoded JSON value against a schema of the document:
// types, required and known properties (a property the document does not
// name is an error unless additionalProperties allows it), enums, nullable,
// date-times.
type validator struct {
	t    testing.TB
	d    oaDoc
	errs []string
}

func (v *validator) fail(path, format string, args ...any) {
	v.errs = append(v.errs, path+": "+fmt.Sprintf(format, args...))
}

func (v *validator) check(path string, schema map[string]any, val any) {
	s := v.d.resolve(v.t, schema)
	if alts, ok := s["oneOf"].([]any); ok {
		// Exactly one alternative must match.
		matched := 0
		var why []string
		for _, a := range alts {
			sub := &validator{t: v.t, d: v.d}
			sub.check(path, obj(a), val)
			if len(sub.errs) == 0 {
				matched++
			} else {
				why = append(why, strings.Join(sub.errs, "; "))
			}
		}
		if matched != 1 {
			v.fail(path, "%d of %d oneOf alternatives match: %v", matched, len(alts), why)
		}
		return
	}
	if val == nil {
		if s["nullable"] != true {
			v.fail(path, "null, schema not nullable")
		}
		return
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, val) {
		v.fail(path, "%v not in enum %v", val, enum)
	}
	switch s["type"] {
	case "object":
		m, ok := val.(map[string]any)
		if !ok {
			v.fail(path, "want object, got %T", val)
			return
		}
		props := obj(s["properties"])
		for _, r := range asStrings(s["required"]) {
			if _, ok := m[r]; !ok {
				v.fail(path, "required property %q missing", r)
			}
		}
		for k, x := range m {
			if ps := obj(props[k]); ps != nil {
				v.check(path+"."+k, ps, x)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					v.fail(path, "property %q not described", k)
				}
			case map[string]any:
				v.check(path+"."+k, ap, x)
			default:
				v.fail(path, "property %q not described", k)
			}
		}
	case "array":
		a, ok := val.([]any)
		if !ok {
			v.fail(path, "want array, got %T", val)
			return
		}
		for i, x := range a {
			v.check(path+"["+strconv.Itoa(i)+"]", obj(s["items"]), x)
		}
	case "string":
		str, ok := val.(string)
		if !ok {
			v.fail(path, "want string, got %T", val)
			return
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				v.fail(path, "not a date-time: %q", str)
			}
		}
	case "integer":
		f, ok := val.(float64)
		if !ok || f != float64(int64(f)) {
			v.fail(path, "want integer, got %v", val)
		}
	case "number":
		if _, ok := val.(float64); !ok {
			v.fail(path, "want number, got %T", val)
		}
	case "boolean":
		if _, ok := val.(bool); !ok {
			v.fail(path, "want boolean, got %T", val)
		}
	default:
		v.fail(path, "schema without a type: %v", s)
	}
}

func asStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		out = append(out, x.(string))
	}
	return out
}

// TestOpenAPIResponsesValidate sends real requests through the handlers and
// checks each answer against the document: its status is documented for the
// operation (or falls to "default" for errors), and its body matches the
// schema.
func TestOpenAPIResponsesValidate(t *testing.T) { synctest.Test(t, testOpenAPIResponsesValidate) }

func testOpenAPIResponsesValidate(t *testing.T) {
	d := loadDoc(t)
	ops := d.operations()
	clk := fixedClock{t0}
	h := newHarness(t, func(o *Options) {
		o.Clock = clk
		o.RateLimit = RateLimit{Requests: 1000, Window: time.Minute}
		o.Events = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "id: 1\ndata: {}\n\n")
		})
		o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			io.WriteString(w, "idepool_up 1\n")
		})
	})
	warm := func(o *fakeOrch) {
		w := idepool.Workspace{Bucket: "used-bucket", Prefix: "a/", Region: "eu-west-1"}
		o.mu.Lock()
		o.containers["used0001"] = idepool.Container{ID: "used0001", Profile: "default", State: idepool.StateRunning, Workspace: &w,
			Generation: 3, CreatedAt: t0, ClaimedAt: t0, LastActivity: t0, UserID: "u",
			Health: idepool.Health{Status: idepool.HealthHealthy, LastCheck: t0, Checks: map[string]string{"code": "ok"}}}
		o.mu.Unlock()
	}
	warm(h.orch)
	calls := []call{
		{method: "GET", path: "/", noAuth: true},
		{method: "GET", path: "/api/health", noAuth: true},
		{method: "GET", path: "/health", noAuth: true},
		{method: "GET", path: "/api/openapi.json", noAuth: true},
		{method: "GET", path: "/api/profiles"},
		{method: "GET", path: "/api/profiles", noAuth: true},
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket","userId":"u1"}`},            // warm claim
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"cold-bucket","profile":"big"}`},        // cold
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"used-bucket","s3Prefix":"a"}`},         // reused
		{method: "POST", path: "/containers/start?wait=ready", body: `{"s3Bucket":"wait-bucket","profile":"big"}`}, // ready
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"X"}`},
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":1}`},
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket"}`, header: map[string]string{"Content-Type": "text/plain"}},
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket","profile":"nope"}`},
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"` + strings.Repeat("a", 5000) + `"}`},
		{method: "GET", path: "/api/containers"},
		{method: "GET", path: "/api/containers?status=running&limit=1"},
		{method: "GET", path: "/api/containers?limit=0"},
		{method: "GET", path: "/api/containers/used0001"},
		{method: "GET", path: "/containers/warm0002"},
		{method: "GET", path: "/api/containers/nope1234"},
		{method: "GET", path: "/api/containers/used0001", noAuth: true},
		{method: "POST", path: "/api/containers/warm0002/inactivity-shutdown", body: `{"reason":"idle"}`},
		{method: "POST", path: "/api/containers/used0001/sync/confirm-deletions"},
		{method: "POST", path: "/api/containers/nope1234/sync/confirm-deletions", body: `{}`},
		{method: "DELETE", path: "/api/containers/used0001"},
		{method: "DELETE", path: "/api/containers/used0001"},
		{method: "GET", path: "/api/pool"},
		{method: "PUT", path: "/api/pool/default", body: `{"target":3}`},
		{method: "PUT", path: "/pool/nope", body: `{"target":3}`},
		{method: "PUT", path: "/api/pool/default", body: `{}`},
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"queued-bucket"}`}, // 202 queued
		{method: "GET", path: "/api/queue/q1-abc"},
		{method: "GET", path: "/queue/q2-abc"},
		{method: "GET", path: "/api/queue/q3-abc"},
		{method: "GET", path: "/api/queue/nope"},
		{method: "GET", path: "/api/pool/default/schedules"},
		{method: "GET", path: "/api/pool/big/schedules"},
		{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":[{"days":["Mon"],"start":"09:50","end":"11:30","timezone":"Europe/Berlin","target":320}]}`},
		{method: "PUT", path: "/api/pool/default/schedules", body: `{}`},
		{method: "POST", path: "/api/workspaces/prepare", body: `{"profile":"default","expiresInSeconds":3600,"workspaces":[{"s3Bucket":"class-a","s3Prefix":"s1/"},{"s3Bucket":"X"}]}`},
		{method: "POST", path: "/api/workspaces/prepare", body: `{"workspaces":[]}`},
		{method: "GET", path: "/api/events?after=0"},
		{method: "GET", path: "/events", noAuth: true},
		{method: "GET", path: "/metrics", noAuth: true},
		// The classroom routes (classroom.go).
		{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"queued-bucket"}`}, // queued: 202
		{method: "GET", path: "/api/queue/q1-abc"},
		{method: "GET", path: "/api/queue/q2-abc"},
		{method: "GET", path: "/api/queue/q3-abc"},
		{method: "GET", path: "/api/pool/default/schedules"},
		{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":[{"days":["Mon","Wed"],"start":"09:50","end":"11:30","timezone":"Europe/Berlin","target":320}]}`},
		{method: "POST", path: "/api/workspaces/prepare", body: `{"expiresInSeconds":600,"workspaces":[{"s3Bucket":"lab-1"},{"s3Bucket":"NO"}]}`},
	}
	validated := map[string]bool{}   // operations with a checked 2xx answer
	canonical := map[string]string{} // mounted path → the table's path
	for _, rt := range h.srv.Routes() {
		for _, p := range rt.Paths() {
			canonical[p] = rt.Path
		}
	}
	run := func(c call) {
		t.Helper()
		w := h.raw(t, c)
		r := httptest.NewRequest(c.method, c.path, nil)
		_, pattern := h.srv.mux.Handler(r)
		method, p, _ := strings.Cut(pattern, " ")
		p = canonical[p] // an alias → its /api path
		op := ops[method+" "+docPath(p)]
		if op == nil {
			t.Errorf("%s %s: pattern %q has no operation", c.method, c.path, pattern)
			return
		}
		if w.Code < 300 {
			validated[method+" "+docPath(p)] = true
		}
		resps := obj(op["responses"])
		code := strconv.Itoa(w.Code)
		resp := obj(resps[code])
		if resp == nil {
			if w.Code < 400 {
				t.Errorf("%s %s: status %d not documented", c.method, c.path, w.Code)
				return
			}
			resp = obj(resps["default"])
		}
		resp = d.resolve(t, resp)
		content := obj(resp["content"])
		schema := obj(obj(content["application/json"])["schema"])
		if schema == nil {
			// Not JSON (the event stream, metrics): the media type must match.
			ct := w.Header().Get("Content-Type")
			mt, _, _ := strings.Cut(ct, ";")
			if content[mt] == nil {
				t.Errorf("%s %s: %d answers %q, documented %v", c.method, c.path, w.Code, ct, content)
			}
			return
		}
		var m any
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Errorf("%s %s: %d: body is not JSON: %q", c.method, c.path, w.Code, w.Body)
			return
		}
		v := &validator{t: t, d: d}
		v.check("body", schema, m)
		for _, e := range v.errs {
			t.Errorf("%s %s → %d: %s", c.method, c.path, w.Code, e)
		}
		for name := range obj(resp["headers"]) {
			if w.Header().Get(name) == "" {
				t.Errorf("%s %s → %d: documented header %s missing", c.method, c.path, w.Code, name)
			}
		}
	}
	for _, c := range calls {
		run(c)
	}

	// Degraded health, a 202 start, a 429 and a 500.
	h.srv.o.Health = fakeHealth{HealthReport{Runtime: "swarm", Error: "unreachable"}}
	run(call{method: "GET", path: "/api/health", noAuth: true})
	h.orch.neverReady = true
	run(call{method: "POST", path: "/api/containers/start?wait=ready&timeout=0.01", body: `{"s3Bucket":"slow-bucket","profile":"big"}`})
	h.orch.startErr = errFake("boom")
	run(call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"boom-bucket"}`})
	h.orch.startErr = idepool.Errorf(idepool.ECapacity, "full")
	run(call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"full-bucket"}`})
	tight := newHarness(t, func(o *Options) { o.Clock = clk; o.RateLimit = RateLimit{Requests: 1} })
	h = tight
	run(call{method: "GET", path: "/api/containers"})
	run(call{method: "GET", path: "/api/containers"})
	run(call{method: "GET", path: "/api/events"}) // not enabled: 404
	run(call{method: "GET", path: "/metrics"})

	// A new route needs a call above.
	for key := range ops {
		if !validated[key] {
			t.Errorf("%s: no successful answer validated; add a call", key)
		}
	}
}

// raw sends c like harness.do without decoding the answer.
func (h *harness) raw(t testing.TB, c call) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
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
	return w
}
