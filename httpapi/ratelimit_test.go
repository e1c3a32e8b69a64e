package httpapi

import (
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

func TestLimiterWindows(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 3, Window: time.Minute})
	type step struct {
		at         time.Duration // since t0
		key        string
		allowed    bool
		remaining  int
		reset      time.Duration // since t0
		retryAfter int64
	}
	steps := []step{
		{0, "a", true, 2, 60 * time.Second, 0},
		{10 * time.Second, "a", true, 1, 60 * time.Second, 0},
		{20 * time.Second, "b", true, 2, 80 * time.Second, 0}, // keys are independent
		{30 * time.Second, "a", true, 0, 60 * time.Second, 0},
		{30 * time.Second, "a", false, 0, 60 * time.Second, 30},
		{59*time.Second + 100*time.Millisecond, "a", false, 0, 60 * time.Second, 1}, // rounded up
		{60 * time.Second, "a", true, 2, 120 * time.Second, 0},                      // a new window opens at the reset
		{61 * time.Second, "b", true, 1, 80 * time.Second, 0},
	}
	for i, s := range steps {
		v := l.take(s.key, t0.Add(s.at))
		if v.allowed != s.allowed || v.remaining != s.remaining || !v.reset.Equal(t0.Add(s.reset)) || v.retryAfter != s.retryAfter || v.limit != 3 {
			t.Fatalf("step %d (%s at %s): got %+v, want %+v", i, s.key, s.at, v, s)
		}
	}
	if newLimiter(RateLimit{}) != nil || newLimiter(RateLimit{Requests: -1}) != nil {
		t.Fatal("a zero limit must disable the limiter")
	}
	if l := newLimiter(RateLimit{Requests: 1}); l.window != time.Minute || l.max != defaultRateKeys {
		t.Fatalf("defaults %+v", l)
	}
}

func TestLimiterFirstRefusalLoggedOnce(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 1, Window: time.Minute})
	l.take("k", t0)
	if v := l.take("k", t0); v.allowed || !v.first {
		t.Fatalf("first refusal %+v", v)
	}
	if v := l.take("k", t0); v.allowed || v.first {
		t.Fatalf("second refusal %+v", v)
	}
	if v := l.take("k", t0.Add(time.Minute)); !v.allowed {
		t.Fatalf("next window %+v", v)
	}
	if v := l.take("k", t0.Add(time.Minute)); !v.first {
		t.Fatalf("a new window logs again %+v", v)
	}
}

// TestLimiterBoundedMemory: idle keys are swept once their window ended; the
// store never holds more than MaxKeys.
func TestLimiterBoundedMemory(t *testing.T) {
	l := newLimiter(RateLimit{Requests: 5, Window: time.Minute, MaxKeys: 100})
	for i := range 1000 {
		l.take("key"+strconv.Itoa(i), t0.Add(time.Duration(i)*time.Millisecond))
		if n := l.size(); n > 100 {
			t.Fatalf("%d entries after %d keys", n, i+1)
		}
	}
	l.take("late", t0.Add(2*time.Minute))
	if n := l.size(); n != 1 {
		t.Fatalf("idle keys not swept: %d entries", n)
	}
}

func BenchmarkLimiter(b *testing.B) {
	l := newLimiter(RateLimit{Requests: 1 << 30, Window: time.Minute})
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "key" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.take(keys[i%len(keys)], t0)
			i++
		}
	})
}

// TestRateLimitHTTP: the original's headers on every container answer, 429
// with Retry-After and {retryAfter, resetTime} in details and (for the
// original's clients) in error itself; other routes and keys unaffected.
func TestRateLimitHTTP(t *testing.T) { synctest.Test(t, testRateLimitHTTP) }

func testRateLimitHTTP(t *testing.T) {
	start := time.Now()
	reset1, at30s, reset2 := timestamp(start.Add(time.Minute)), timestamp(start.Add(30*time.Second)), timestamp(start.Add(2*time.Minute))
	h := newHarness(t, func(o *Options) {
		o.Clock = idepool.SystemClock{} // the bubble's
		o.RateLimit = RateLimit{Requests: 2, Window: 60 * time.Second}
	})
	for i, want := range []string{"1", "0"} {
		w, _ := h.do(t, call{method: "GET", path: "/api/containers"})
		if w.Code != 200 || w.Header().Get("X-RateLimit-Limit") != "2" || w.Header().Get("X-RateLimit-Remaining") != want ||
			w.Header().Get("X-RateLimit-Reset") != reset1 || w.Header().Get("Retry-After") != "" {
			t.Fatalf("request %d: %d %v", i, w.Code, w.Header())
		}
		time.Sleep(15 * time.Second)
	}
	// The alias shares the key's window; a bad id costs a request too.
	w, m := h.do(t, call{method: "GET", path: "/containers/nope1234"})
	if w.Code != 429 || w.Header().Get("Retry-After") != "30" || w.Header().Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("429: %d %v %v", w.Code, w.Header(), m)
	}
	e := m["error"].(map[string]any)
	if e["code"] != string(idepool.ERateLimited) || m["path"] != "/containers/nope1234" || m["timestamp"] != at30s {
		t.Fatalf("envelope %v", m)
	}
	d := e["details"].(map[string]any)
	if d["retryAfter"] != 30.0 || d["resetTime"] != reset1 || e["retryAfter"] != 30.0 || e["resetTime"] != reset1 {
		t.Fatalf("429 body %v", m)
	}
	if !strings.Contains(h.logs.String(), "rate limit exceeded") || strings.Contains(h.logs.String(), testKey) {
		t.Errorf("refusal log: %s", h.logs)
	}
	// Another key has its own window; non-container routes are not limited;
	// a request without a valid key is refused before it counts.
	for _, c := range []call{
		{method: "GET", path: "/api/containers", header: map[string]string{"Authorization": "Bearer other-key"}},
		{method: "GET", path: "/api/pool"},
		{method: "GET", path: "/api/profiles"},
		{method: "GET", path: "/api/health", noAuth: true},
	} {
		w, _ := h.do(t, c)
		if w.Code != 200 {
			t.Fatalf("%s %s: %d", c.method, c.path, w.Code)
		}
		limited := w.Header().Get("X-RateLimit-Limit") != ""
		if limited != strings.HasPrefix(c.path, "/api/containers") {
			t.Errorf("%s: X-RateLimit-Limit %q", c.path, w.Header().Get("X-RateLimit-Limit"))
		}
	}
	if w, _ := h.do(t, call{method: "GET", path: "/api/containers", noAuth: true}); w.Code != 401 || w.Header().Get("X-RateLimit-Limit") != "" {
		t.Fatalf("unauthenticated: %d %v", w.Code, w.Header())
	}
	// The window ends: allowed again with a fresh count.
	time.Sleep(30 * time.Second)
	w, _ = h.do(t, call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket"}`})
	if w.Code != 201 || w.Header().Get("X-RateLimit-Remaining") != "1" || w.Header().Get("X-RateLimit-Reset") != reset2 {
		t.Fatalf("next window: %d %v", w.Code, w.Header())
	}

	// Disabled: no headers at all.
	h = newHarness(t, nil)
	for range 5 {
		if w, _ := h.do(t, call{method: "GET", path: "/api/containers"}); w.Code != 200 || w.Header().Get("X-RateLimit-Limit") != "" {
			t.Fatalf("disabled: %d %v", w.Code, w.Header())
		}
	}
}

// TestRateLimitConcurrent: N parallel requests against a limit of L let
// exactly L through (race detector on the limiter).
func TestRateLimitConcurrent(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.RateLimit = RateLimit{Requests: 20, Window: time.Minute} })
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest("GET", "/api/containers", nil)
			r.Header.Set("Authorization", "Bearer "+testKey)
			w := httptest.NewRecorder()
			h.srv.ServeHTTP(w, r)
			mu.Lock()
			codes[w.Code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[200] != 20 || codes[429] != 30 {
		t.Fatalf("codes %v", codes)
	}
}
