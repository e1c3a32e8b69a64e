package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/memnet"
)

const key = "secret-key-123456"

func newTest(t *testing.T, h http.HandlerFunc, o Options) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, key, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newBubbleTest is newTest for a synctest bubble: the server listens in
// memory, so the client's timers (idle timeout, retry backoff) run on the
// bubble's fake time.
func newBubbleTest(t *testing.T, h http.HandlerFunc, o Options) *Client {
	t.Helper()
	srv := memnet.NewServer(t, h)
	o.HTTPClient = srv.Client
	c, err := New(srv.URL, key, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestErrorEnvelope(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		wantCode    idepool.Code
		notFound    bool
		unauth      bool
		capacity    bool
		wantMessage string
	}{
		{"envelope 404", 404, `{"error":{"code":"CONTAINER_NOT_FOUND","message":"container x not found"},"timestamp":"t","path":"/api/containers/abcd"}`,
			idepool.ENotFound, true, false, false, "container x not found"},
		{"envelope 401", 401, `{"error":{"code":"AUTHENTICATION_FAILED","message":"bad key"}}`, idepool.EUnauthorized, false, true, false, "bad key"},
		{"capacity", 503, `{"error":{"code":"RESOURCE_LIMIT_EXCEEDED","message":"full","details":{"free":0}}}`, idepool.ECapacity, false, false, true, "full"},
		{"proxy text", 502, `upstream down`, idepool.EUnavailable, false, false, false, "Bad Gateway: upstream down"},
		{"proxy html", 404, `<html>nope</html>`, idepool.ERouteNotFound, true, false, false, "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Request-ID", "rid")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}, Options{})
			_, err := c.Get(context.Background(), "abcd")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.Code != tt.wantCode || e.Status != tt.status || e.Message != tt.wantMessage || e.RequestID != "rid" {
				t.Errorf("got %+v", e)
			}
			if IsNotFound(err) != tt.notFound || IsUnauthorized(err) != tt.unauth || IsCapacity(err) != tt.capacity {
				t.Errorf("predicates wrong for %v", err)
			}
			if strings.Contains(err.Error(), key) {
				t.Error("error text holds the key")
			}
		})
	}
}

func TestRequests(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+key {
			w.WriteHeader(401)
			return
		}
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/api/containers/start":
			if !strings.Contains(string(b), `"s3Bucket":"bkt"`) || !strings.Contains(string(b), `"profile":"p"`) {
				t.Errorf("start body %s", b)
			}
			w.WriteHeader(201)
			io.WriteString(w, `{"id":"abcd1234","state":"warm","claim":"warm","urls":{"codeServer":"http://x/code/abcd1234/?token=t"}}`)
		case "/api/containers":
			io.WriteString(w, `{"containers":[{"id":"abcd1234","state":"running"}],"total":1,"limit":50,"offset":0}`)
		case "/api/pool/p":
			io.WriteString(w, `{"profile":"p","target":3}`)
		case "/api/health":
			w.WriteHeader(503)
			io.WriteString(w, `{"status":"degraded","runtime":{"name":"process","connected":false}}`)
		default:
			w.WriteHeader(404)
		}
	}, Options{})
	ctx := context.Background()
	st, err := c.Start(ctx, StartRequest{Bucket: "bkt", Profile: "p", Wait: true, WaitTimeout: 10 * time.Second})
	if err != nil || st.ID != "abcd1234" || st.HTTPStatus != 201 || st.URLs.CodeServer == "" {
		t.Fatalf("start: %+v %v", st, err)
	}
	l, err := c.List(ctx, ListOptions{Status: []string{"running", "starting"}, Limit: 10})
	if err != nil || l.Total != 1 || l.Containers[0].State != idepool.StateRunning {
		t.Fatalf("list: %+v %v", l, err)
	}
	ps, err := c.SetPoolTarget(ctx, "p", 3)
	if err != nil || ps.Target != 3 {
		t.Fatalf("set target: %+v %v", ps, err)
	}
	h, err := c.Health(ctx)
	if err != nil || h.Status != "degraded" || h.Runtime.Name != "process" {
		t.Fatalf("health: %+v %v", h, err)
	}
	if _, err := c.Get(ctx, "../x"); !IsNotFound(err) {
		t.Errorf("bad id: %v", err)
	}
	want := []string{"POST /api/containers/start?timeout=10s&wait=ready", "GET /api/containers?limit=10&status=running%2Cstarting", "PUT /api/pool/p", "GET /api/health"}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("requests\n got %q\nwant %q", seen, want)
	}
	if s := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(s, key) {
		t.Errorf("formatting the client shows the key: %s", s)
	}
}

func TestConnError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	c, _ := New(u, key, Options{})
	_, err := c.Pools(context.Background())
	var ce *ConnError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *ConnError", err)
	}
	if _, err := New("ftp://x", "", Options{}); err == nil {
		t.Error("ftp URL accepted")
	}
}

// sseServer serves events 1..n after Last-Event-ID, then closes the stream
// after each batch of 2, so the client must resume.
func sseServer(t *testing.T, n int, lastIDs *[]string, mu *sync.Mutex) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*lastIDs = append(*lastIDs, r.Header.Get("Last-Event-ID")+"|"+r.URL.Query().Get("after"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 10\n\n: heartbeat\n\n")
		var after int
		fmt.Sscan(r.Header.Get("Last-Event-ID"), &after)
		for i, sent := after+1, 0; i <= n && sent < 2; i, sent = i+1, sent+1 {
			fmt.Fprintf(w, "id: %d\r\nevent: container.state\r\ndata: {\"id\":%d,\"type\":\"container.state\",\r\ndata: \"containerId\":\"c%d\"}\r\n\r\n", i, i, i)
		}
		w.(http.Flusher).Flush()
		if after+2 >= n {
			<-r.Context().Done() // keep the last connection open
		}
	}
}

// The server says "retry: 10" (ms) and ends each stream after two events:
// the client waits that long, on fake time, and resumes.
func TestFollowResumes(t *testing.T) { synctest.Test(t, testFollowResumes) }

func testFollowResumes(t *testing.T) {
	var mu sync.Mutex
	var lastIDs []string
	c := newBubbleTest(t, sseServer(t, 5, &lastIDs, &mu), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []string
	err := c.Follow(ctx, 0, func(e idepool.Event) error {
		got = append(got, fmt.Sprintf("%d:%s", e.ID, e.ContainerID))
		if e.ID == 5 {
			cancel()
		}
		return nil
	}, FromStart())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[1:c1 2:c2 3:c3 4:c4 5:c5]" {
		t.Errorf("events %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(lastIDs) != "[|0 2|2 4|4]" {
		t.Errorf("Last-Event-ID|after per connection: %v", lastIDs)
	}
}

func TestFollowStopsOnAuthError(t *testing.T) {
	c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
		io.WriteString(w, `{"error":{"code":"AUTHENTICATION_FAILED","message":"no"}}`)
	}, Options{})
	err := c.Follow(context.Background(), 0, func(idepool.Event) error { return nil })
	if !IsUnauthorized(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestStreamIdle(t *testing.T) { synctest.Test(t, testStreamIdle) }

func testStreamIdle(t *testing.T) {
	c := newBubbleTest(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}, Options{EventIdleTimeout: 20 * time.Second})
	s, err := c.Events(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); !errors.Is(err, ErrStreamIdle) {
		t.Fatalf("err = %v, want ErrStreamIdle", err)
	}
}

// TestCodeForStatus: a bare answer (no envelope) of any status in the
// server's table decodes to a code of that same status, but a bare 502,
// which comes from a proxy in front of the server: unavailable.
func TestCodeForStatus(t *testing.T) {
	for _, c := range idepool.Codes() {
		st := c.HTTPStatus()
		got := decodeError(&http.Response{StatusCode: st, Header: http.Header{}}, []byte("<html></html>")).Code
		want := st
		if st == http.StatusBadGateway {
			want = http.StatusServiceUnavailable
		}
		if got.HTTPStatus() != want {
			t.Errorf("bare %d (%s) → %s (%d), want a code of %d", st, c, got, got.HTTPStatus(), want)
		}
	}
}
