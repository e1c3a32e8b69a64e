package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/httpapi"
	"github.com/idepool/idepool/server"
)

// startFake runs a real server (production http.Server and handler chain)
// on the fake runtime: no agents, no containers, for tests of the HTTP
// surface itself. extra overrides the configuration.
func startFake(t *testing.T, extra map[string]string) *instance {
	t.Helper()
	env := map[string]string{
		"PORT": "1", "API_KEY": testKey, "DATA_DIR": t.TempDir(), "RUNTIME": "fake",
		"PRE_WARMED_QUEUE_SIZE": "0", "S3_EMBEDDED_ADDR": "127.0.0.1:0",
	}
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, "")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *server.Server, 1)
	in := &instance{cfg: cfg, cancel: cancel, done: make(chan error, 1), base: "http://" + ln.Addr().String()}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		in.done <- server.Run(ctx, cfg, server.Options{Logger: logger, Listener: ln, Version: "test",
			Ready: func(s *server.Server) { ready <- s }})
	}()
	select {
	case in.srv = <-ready:
	case err := <-in.done:
		t.Fatalf("server ended at start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	t.Cleanup(func() { in.stop(t) })
	return in
}

// stalledPost opens a raw connection and sends a POST whose headers promise
// a body of which only the first byte comes.
func stalledPost(t *testing.T, addr string, withKey bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	auth := ""
	if withKey {
		auth = "Authorization: Bearer " + testKey + "\r\n"
	}
	req := "POST /api/containers/start HTTP/1.1\r\nHost: idepool\r\nContent-Type: application/json\r\n" + auth +
		"Content-Length: 200\r\n\r\n{"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	return c
}

// answerThenEOF reads one answer from c and then expects the server to
// close the connection: EOF, not the test's deadline.
func answerThenEOF(c net.Conn, deadline time.Time) (*http.Response, envelope, error) {
	c.SetReadDeadline(deadline)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, envelope{}, fmt.Errorf("read the answer: %w", err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return res, envelope{}, fmt.Errorf("read the answer's body: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return res, env, fmt.Errorf("answer %d is not the JSON envelope: %q", res.StatusCode, b)
	}
	if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return res, env, fmt.Errorf("after the answer the connection stays open (read %d bytes, %v), want EOF", n, err)
	}
	return res, env, nil
}

type envelope struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Timestamp string `json:"timestamp"`
	Path      string `json:"path"`
}

// TestStalledBodies: connections that send headers and stall their body
// are answered and closed — at once without a key, after
// REQUEST_BODY_TIMEOUT with one — and the API answers meanwhile.
func TestStalledBodies(t *testing.T) {
	in := startFake(t, map[string]string{"REQUEST_BODY_TIMEOUT": "2s"})
	addr := strings.TrimPrefix(in.base, "http://")
	const n = 50
	var keyed, anonymous []net.Conn
	for range n {
		keyed = append(keyed, stalledPost(t, addr, true))
	}
	for range n {
		anonymous = append(anonymous, stalledPost(t, addr, false))
	}

	// A generous deadline: a held connection fails the test here, long
	// before the production timeout would have cut it.
	deadline := time.Now().Add(25 * time.Second)
	for i, c := range anonymous {
		res, env, err := answerThenEOF(c, deadline)
		if err != nil {
			t.Fatalf("connection %d without a key: %v", i, err)
		}
		if res.StatusCode != http.StatusUnauthorized || env.Error.Code != "AUTHENTICATION_FAILED" {
			t.Fatalf("connection %d without a key: %d %+v, want 401 AUTHENTICATION_FAILED", i, res.StatusCode, env)
		}
	}

	// The API answers while 50 keyed connections still hold their bodies.
	hc := &http.Client{Timeout: 10 * time.Second}
	res, err := hc.Get(in.base + "/api/health")
	if err != nil {
		t.Fatalf("health while bodies stall: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("health while bodies stall: %d", res.StatusCode)
	}
	if st := in.call(t, "PUT", "/api/pool/default", map[string]int{"target": 0}, nil); st != http.StatusOK {
		t.Fatalf("a request with a whole body while others stall: %d", st)
	}

	for i, c := range keyed {
		res, env, err := answerThenEOF(c, deadline)
		if err != nil {
			t.Fatalf("keyed connection %d: %v", i, err)
		}
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(env.Error.Message, "stalled") {
			t.Fatalf("keyed connection %d: %d %+v, want 400 with a stalled body", i, res.StatusCode, env)
		}
	}
}

// TestErrorEnvelopeEveryRoute: every route of the API (the OpenAPI
// document, which the httpapi tests keep equal to the routes table)
// answers bad input in the JSON envelope with a 4xx. A route without
// cases here fails the test.
func TestErrorEnvelopeEveryRoute(t *testing.T) {
	type call struct {
		method, path string
		header       map[string]string
		body         string
		noKey        bool
	}
	big := `{"s3Bucket":"` + strings.Repeat("a", 2<<20) + `"}`
	cases := map[string][]call{
		"GET /":                 {{method: "POST", path: "/"}, {method: "DELETE", path: "/"}},
		"GET /api/openapi.json": {{method: "POST", path: "/api/openapi.json"}},
		"GET /api/health":       {{method: "POST", path: "/api/health", body: "{}"}, {method: "DELETE", path: "/health"}},
		"GET /api/profiles":     {{method: "GET", path: "/api/profiles", noKey: true}, {method: "POST", path: "/api/profiles"}},
		"POST /api/containers/start": {
			{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"b"}`, noKey: true},
			{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":`},
			{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":7}`},
			{method: "POST", path: "/api/containers/start", body: `[]`},
			{method: "POST", path: "/api/containers/start", body: `{}`},
			{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"../x"}`},
			{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"b","profile":"nope"}`},
			{method: "POST", path: "/api/containers/start?wait=maybe", body: `{"s3Bucket":"b"}`},
			{method: "POST", path: "/api/containers/start?wait=ready&timeout=-3", body: `{"s3Bucket":"b"}`},
			{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"b"}`, header: map[string]string{"Content-Type": "text/plain"}},
			{method: "POST", path: "/api/containers/start", body: big},
			{method: "POST", path: "/containers/start", body: `nope`},
			{method: "GET", path: "/api/containers/start"},
		},
		"GET /api/containers": {
			{method: "GET", path: "/api/containers", noKey: true},
			{method: "GET", path: "/api/containers?status=bogus"},
			{method: "GET", path: "/api/containers?state=running,nope"},
			{method: "GET", path: "/api/containers?limit=0"},
			{method: "GET", path: "/api/containers?limit=x"},
			{method: "GET", path: "/api/containers?offset=-1"},
			{method: "GET", path: "/api/containers?profile=nope"},
			{method: "GET", path: "/containers?limit=100000"},
			{method: "PATCH", path: "/api/containers"},
		},
		"GET /api/containers/{id}": {
			{method: "GET", path: "/api/containers/abc123", noKey: true},
			{method: "GET", path: "/api/containers/abc123"},
			{method: "GET", path: "/api/containers/..%2F..%2Fetc"},
			{method: "GET", path: "/api/containers/" + strings.Repeat("a", 300)},
			{method: "GET", path: "/containers/%00"},
			{method: "PATCH", path: "/api/containers/abc123"},
		},
		"DELETE /api/containers/{id}": {
			{method: "DELETE", path: "/api/containers/abc123", noKey: true},
			{method: "DELETE", path: "/api/containers/abc123"},
			{method: "DELETE", path: "/containers/not%20an%20id"},
		},
		"POST /api/containers/{id}/inactivity-shutdown": {
			{method: "POST", path: "/api/containers/abc123/inactivity-shutdown", noKey: true},
			{method: "POST", path: "/api/containers/abc123/inactivity-shutdown", body: `{"reason":`},
			{method: "POST", path: "/api/containers/abc123/inactivity-shutdown", body: `{"reason":5}`},
			{method: "POST", path: "/api/containers/abc123/inactivity-shutdown", body: `{}`},
			{method: "GET", path: "/api/containers/abc123/inactivity-shutdown"},
		},
		"POST /api/containers/{id}/sync/confirm-deletions": {
			{method: "POST", path: "/api/containers/abc123/sync/confirm-deletions", noKey: true},
			{method: "POST", path: "/api/containers/abc123/sync/confirm-deletions"},
			{method: "POST", path: "/api/containers/abc123/sync/confirm-deletions", body: `{"all":`},
			{method: "POST", path: "/api/containers/..%2Fx/sync/confirm-deletions"},
			{method: "GET", path: "/api/containers/abc123/sync/confirm-deletions"},
		},
		"GET /api/pool": {{method: "GET", path: "/api/pool", noKey: true}, {method: "POST", path: "/api/pool", body: "{}"}},
		"PUT /api/pool/{profile}": {
			{method: "PUT", path: "/api/pool/default", body: `{"target":1}`, noKey: true},
			{method: "PUT", path: "/api/pool/nope", body: `{"target":1}`},
			{method: "PUT", path: "/api/pool/default", body: `{"target":-1}`},
			{method: "PUT", path: "/api/pool/default", body: `{"target":"x"}`},
			{method: "PUT", path: "/api/pool/default", body: `{}`},
			{method: "PUT", path: "/api/pool/default", body: `{"target":1e9}`},
			{method: "PUT", path: "/pool/default", body: `{`},
			{method: "POST", path: "/api/pool/default", body: `{"target":1}`},
		},
		"GET /api/queue/{ticket}": {
			{method: "GET", path: "/api/queue/abc", noKey: true},
			{method: "GET", path: "/api/queue/abc"},
			{method: "GET", path: "/api/queue/" + strings.Repeat("z", 300)},
			{method: "GET", path: "/api/queue/abc?wait=maybe"},
			{method: "GET", path: "/api/queue/abc?wait=ready&timeout=x"},
			{method: "DELETE", path: "/queue/abc"},
		},
		"GET /api/pool/{profile}/schedules": {
			{method: "GET", path: "/api/pool/default/schedules", noKey: true},
			{method: "GET", path: "/api/pool/nope/schedules"},
			{method: "POST", path: "/api/pool/default/schedules"},
		},
		"PUT /api/pool/{profile}/schedules": {
			{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":[]}`, noKey: true},
			{method: "PUT", path: "/api/pool/nope/schedules", body: `{"schedules":[]}`},
			{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":`},
			{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":[{"days":["Funday"],"start":"09:00","end":"10:00","target":1}]}`},
			{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":[{"days":["Mon"],"start":"25:00","end":"10:00","target":1}]}`},
			{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":[{"days":["Mon"],"start":"09:00","end":"10:00","timezone":"Mars/Olympus","target":1}]}`},
			{method: "PUT", path: "/api/pool/default/schedules", body: `{"schedules":[{"days":["Mon"],"start":"09:00","end":"10:00","target":-4}]}`},
			{method: "PUT", path: "/pool/default/schedules", body: `{"schedules":7}`},
		},
		"POST /api/workspaces/prepare": {
			{method: "POST", path: "/api/workspaces/prepare", body: `{}`, noKey: true},
			{method: "POST", path: "/api/workspaces/prepare", body: `{`},
			{method: "POST", path: "/api/workspaces/prepare", body: `{}`},
			{method: "POST", path: "/api/workspaces/prepare", body: `{"workspaces":7}`},
			{method: "POST", path: "/api/workspaces/prepare", body: `{"workspaces":[{"s3Bucket":"../x"}]}`},
			{method: "POST", path: "/workspaces/prepare", body: `{"workspaces":[]}`, header: map[string]string{"Content-Type": "text/csv"}},
		},
		"GET /api/events": {
			{method: "GET", path: "/api/events", noKey: true},
			{method: "GET", path: "/api/events?after=x"},
			{method: "GET", path: "/api/events?after=-1"},
			{method: "GET", path: "/api/events?type=" + strings.Repeat("t", 100)},
			{method: "GET", path: "/api/events?type=" + strings.Repeat("a,", 40)},
			{method: "GET", path: "/api/events?container=no%20such%20id!"},
			{method: "GET", path: "/api/events", header: map[string]string{"Last-Event-ID": "yesterday"}},
			{method: "GET", path: "/events?after=1.5"},
			{method: "POST", path: "/api/events"},
		},
		"GET /metrics": {{method: "POST", path: "/metrics", body: "x"}, {method: "DELETE", path: "/metrics"}},
		// Not routes: unknown paths under /api are the API's 404.
		"unknown": {
			{method: "GET", path: "/api/nope"},
			{method: "GET", path: "/api/containers/abc123/nope"},
			{method: "POST", path: "/api/v2/containers/start", body: `{}`},
			{method: "GET", path: "/api"},
		},
	}

	doc, err := httpapi.OpenAPI("test")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &spec); err != nil {
		t.Fatal(err)
	}
	routes := []string{"unknown"}
	for p, ops := range spec.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			routes = append(routes, strings.ToUpper(m)+" "+p)
		}
	}
	slices.Sort(routes)
	for _, rt := range routes {
		if len(cases[rt]) == 0 {
			t.Errorf("route %s has no bad-input cases here: add some", rt)
		}
	}
	for rt := range cases {
		if !slices.Contains(routes, rt) {
			t.Errorf("cases for %s, which is not a route any more", rt)
		}
	}

	in := startFake(t, map[string]string{"MAX_BODY_BYTES": "1MiB"})
	hc := &http.Client{Timeout: 20 * time.Second}
	for _, rt := range routes {
		for _, c := range cases[rt] {
			name := c.method + " " + c.path
			if len(name) > 80 {
				name = name[:80]
			}
			t.Run(rt+"/"+name, func(t *testing.T) {
				var body io.Reader
				if c.body != "" {
					body = strings.NewReader(c.body)
				}
				req, err := http.NewRequest(c.method, in.base+c.path, body)
				if err != nil {
					t.Fatal(err)
				}
				if !c.noKey {
					req.Header.Set("Authorization", "Bearer "+testKey)
				}
				if c.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				for k, v := range c.header {
					req.Header.Set(k, v)
				}
				res, err := hc.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode < 400 || res.StatusCode > 499 {
					t.Errorf("%s: status %d, want a 4xx: %.300s", name, res.StatusCode, b)
				}
				if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("%s: Content-Type %q, want JSON: %.300s", name, ct, b)
				}
				var env envelope
				if err := json.Unmarshal(b, &env); err != nil || env.Error.Code == "" || env.Error.Message == "" || env.Path == "" || env.Timestamp == "" {
					t.Errorf("%s: not the envelope (%v): %.300s", name, err, b)
				}
				if strings.Contains(string(b), testKey) {
					t.Errorf("%s: the answer holds the API key", name)
				}
			})
		}
	}
}
