package health

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

type fakePool struct {
	mu       sync.Mutex
	cs       []idepool.Container
	health   map[string][]idepool.Health
	stopped  map[string]string
	replaced []string
}

func newPool(cs ...idepool.Container) *fakePool {
	return &fakePool{cs: cs, health: map[string][]idepool.Health{}, stopped: map[string]string{}}
}

func (p *fakePool) List(context.Context, idepool.ContainerFilter) ([]idepool.Container, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.cs), len(p.cs), nil
}

func (p *fakePool) Profiles() []idepool.Profile {
	return []idepool.Profile{{Name: "default", Routes: []idepool.Route{{Name: "code", Port: 8080, HealthPath: "/healthz"}, {Name: "web", Port: 3000}}}}
}

func (p *fakePool) SetHealth(id string, h idepool.Health) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.health[id] = append(p.health[id], h)
	return true
}

func (p *fakePool) Stop(_ context.Context, id, reason string) (idepool.Container, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped[id] = reason
	p.cs = slices.DeleteFunc(p.cs, func(c idepool.Container) bool { return c.ID == id })
	return idepool.Container{ID: id}, nil
}

// Replace binds a new generation under the same id.
func (p *fakePool) Replace(_ context.Context, id, reason string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.replaced = append(p.replaced, id+":"+reason)
	for i := range p.cs {
		if p.cs[i].ID == id {
			p.cs[i].Generation++
			p.cs[i].Endpoints = map[string]string{"code": "new:1", "web": "new:2"}
		}
	}
	return nil
}

func (p *fakePool) stops() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.stopped)
}

func (p *fakePool) replacements() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.replaced)
}

func (p *fakePool) last(id string) idepool.Health {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.health[id]
	if len(h) == 0 {
		return idepool.Health{}
	}
	return h[len(h)-1]
}

type fakeProber struct {
	mu   sync.Mutex
	down map[string]bool
	seen []string
}

func (f *fakeProber) Probe(_ context.Context, ep, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, ep+path)
	if f.down[ep] {
		return errors.New("dial tcp: connection refused")
	}
	return nil
}

func (f *fakeProber) set(ep string, down bool) {
	f.mu.Lock()
	f.down[ep] = down
	f.mu.Unlock()
}

func ctr(id string, s idepool.State, gen int64) idepool.Container {
	return idepool.Container{ID: id, Profile: "default", State: s, Generation: gen,
		Endpoints: map[string]string{"code": id + ":1", "web": id + ":2"}}
}

// round advances fake time by one interval and lets the loop finish.
func round(m *Monitor) {
	time.Sleep(m.o.Interval)
	synctest.Wait()
}

func TestUnhealthyWarmIsStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pool := newPool(ctr("warm1", idepool.StateWarm, 0), ctr("ok1", idepool.StateWarm, 0), ctr("new1", idepool.StateStarting, 0))
		pr := &fakeProber{down: map[string]bool{"warm1:2": true}}
		m := New(Options{Pool: pool, Prober: pr, Interval: 10 * time.Second, Retries: 3})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- m.Run(ctx) }()

		wantFailures := []int{1, 2, 3}
		wantStatus := []idepool.HealthStatus{idepool.HealthUnknown, idepool.HealthUnknown, idepool.HealthUnhealthy}
		for i := range 3 {
			round(m)
			h := pool.last("warm1")
			if h.ConsecutiveFailures != wantFailures[i] || h.Status != wantStatus[i] {
				t.Fatalf("round %d: health = %+v", i+1, h)
			}
			if h.Checks["web"] != "refused" || h.Checks["code"] != "ok" {
				t.Fatalf("checks = %v", h.Checks)
			}
			if i < 2 && len(pool.stops()) > 0 {
				t.Fatalf("stopped before the threshold: %v", pool.stopped)
			}
		}
		if st := pool.stops(); st["warm1"] != idepool.ReasonUnhealthy || len(st) != 1 {
			t.Fatalf("stopped = %v", pool.stopped)
		}
		if h := pool.last("ok1"); h.Status != idepool.HealthHealthy || h.ConsecutiveFailures != 0 {
			t.Fatalf("ok1 = %+v", h)
		}
		if pool.last("new1").Status != "" {
			t.Fatal("a starting container was judged")
		}
		pr.mu.Lock()
		defer pr.mu.Unlock()
		if !slices.Contains(pr.seen, "ok1:1/healthz") || !slices.Contains(pr.seen, "ok1:2/") {
			t.Fatalf("probed %v", pr.seen)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestUnhealthyClaimedReportedThenReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pool := newPool(ctr("user1", idepool.StateRunning, 1))
		pr := &fakeProber{down: map[string]bool{"user1:1": true}}
		events := &sink{}
		m := New(Options{Pool: pool, Prober: pr, Replacer: pool, Events: events, Interval: 5 * time.Second, Retries: 2, ReplaceAfter: 4})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go m.Run(ctx)

		for i := 1; i <= 3; i++ {
			round(m)
		}
		if h := pool.last("user1"); h.Status != idepool.HealthUnhealthy || h.ConsecutiveFailures != 3 {
			t.Fatalf("after 3 rounds: %+v", h)
		}
		if len(pool.replacements()) != 0 || len(pool.stops()) != 0 {
			t.Fatalf("acted before the replace threshold: %v %v", pool.replacements(), pool.stops())
		}
		if got := events.statuses("user1"); !slices.Equal(got, []string{"unhealthy"}) {
			t.Fatalf("events = %v, want one unhealthy", got)
		}
		round(m) // 4th failure: replaced
		if r := pool.replacements(); !slices.Equal(r, []string{"user1:unhealthy"}) {
			t.Fatalf("replaced = %v", r)
		}
		round(m) // the replacement answers
		if h := pool.last("user1"); h.Status != idepool.HealthHealthy {
			t.Fatalf("after replacement: %+v", h)
		}
		if r := pool.replacements(); len(r) != 1 {
			t.Fatalf("replaced twice: %v", r)
		}
	})
}

func TestReplaceBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pool := newPool(ctr("user1", idepool.StateRunning, 1))
		pr := &fakeProber{down: map[string]bool{"user1:1": true}}
		failing := replacerFunc(func(ctx context.Context, id, reason string) error { return errors.New("no capacity") })
		var calls int
		var mu sync.Mutex
		counting := replacerFunc(func(ctx context.Context, id, reason string) error {
			mu.Lock()
			calls++
			mu.Unlock()
			return failing(ctx, id, reason)
		})
		m := New(Options{Pool: pool, Prober: pr, Replacer: counting, Interval: time.Second, Retries: 1, ReplaceAfter: 1, ReplaceBackoff: 3 * time.Second})
		for range 7 {
			if _, err := m.CheckOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			m.Wait()
			time.Sleep(time.Second)
		}
		if calls != 3 { // t = 0, 3, 6
			t.Fatalf("replace attempts = %d, want 3", calls)
		}
	})
}

type replacerFunc func(ctx context.Context, id, reason string) error

func (f replacerFunc) Replace(ctx context.Context, id, reason string) error {
	return f(ctx, id, reason)
}

type sink struct {
	mu  sync.Mutex
	evs []idepool.Event
}

func (s *sink) Publish(e idepool.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, e)
	s.mu.Unlock()
}

func (s *sink) statuses(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.evs {
		if e.ContainerID == id && e.Type == idepool.EventHealth {
			out = append(out, e.Data["status"].(string))
		}
	}
	return out
}

func TestRecoveryAndHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pool := newPool(ctr("c1", idepool.StateRunning, 1), ctr("c2", idepool.StateWarm, 0))
		pr := &fakeProber{down: map[string]bool{"c1:1": true}}
		hb := NewHeartbeatTracker(nil)
		obs := Tee(nil, hb)
		obs.AgentReport(idepool.AgentReport{ContainerID: "c1", Kind: idepool.AgentHeartbeat})
		obs.AgentReport(idepool.AgentReport{ContainerID: "c2", Kind: idepool.AgentHello})
		obs.AgentReport(idepool.AgentReport{ContainerID: "gone", Kind: idepool.AgentHello})
		m := New(Options{Pool: pool, Prober: pr, Heartbeats: hb, Interval: 10 * time.Second, Retries: 3, HeartbeatTimeout: 25 * time.Second})
		check := func() {
			if _, err := m.CheckOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			m.Wait()
		}
		check()
		check()
		if h := pool.last("c1"); h.ConsecutiveFailures != 2 || h.Status != idepool.HealthUnknown {
			t.Fatalf("c1 = %+v", h)
		}
		pr.set("c1:1", false) // it answers again
		check()
		if h := pool.last("c1"); h.ConsecutiveFailures != 0 || h.Status != idepool.HealthHealthy || h.Checks["agent"] != "ok" {
			t.Fatalf("c1 recovered = %+v", h)
		}
		if _, ok := hb.LastHeartbeat("gone"); ok {
			t.Fatal("tracker kept a container that is not live")
		}
		// c2's agent goes silent; c1's keeps talking.
		obs.AgentReport(idepool.AgentReport{ContainerID: "c2", Kind: idepool.AgentGone})
		for range 3 {
			time.Sleep(10 * time.Second)
			obs.AgentReport(idepool.AgentReport{ContainerID: "c1", Kind: idepool.AgentHeartbeat})
			check()
		}
		if h := pool.last("c1"); h.Status != idepool.HealthHealthy {
			t.Fatalf("c1 = %+v", h)
		}
		// 30 s silent: stale from the 3rd round (> 25 s), so one failure.
		if h := pool.last("c2"); h.Checks["agent"] != "stale" || h.ConsecutiveFailures != 1 {
			t.Fatalf("c2 = %+v", h)
		}
	})
}

// The real prober against real servers: any HTTP answer is alive (a
// workload's 404 too); a refused connection or a silent server is not.
func TestHTTPProber(t *testing.T) {
	p := NewHTTPProber(200 * time.Millisecond)
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	redirect := httptest.NewServer(http.RedirectHandler("http://example.invalid/", http.StatusFound))
	defer redirect.Close()
	stop := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	defer silent.Close()
	defer close(stop)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := dead.Listener.Addr().String()
	dead.Close() // stopped answering

	// A listener that accepts and never speaks HTTP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	tests := []struct {
		name, ep, want string
	}{
		{"workload 404 is alive", notFound.Listener.Addr().String(), "ok"},
		{"redirect is alive, not followed", redirect.Listener.Addr().String(), "ok"},
		{"with scheme", notFound.URL, "ok"},
		{"stopped answering", deadAddr, "refused"},
		{"hangs", silent.Listener.Addr().String(), "timeout"},
		{"accepts, never answers", ln.Addr().String(), "timeout"},
		{"no endpoint", "", "no endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := describe(p.Probe(t.Context(), tc.ep, "/health")); got != tc.want {
				t.Fatalf("probe = %q, want %q", got, tc.want)
			}
		})
	}
}

// End to end with real HTTP: a workload server that stops answering turns
// its warm container unhealthy and stopped after Retries rounds.
func TestMonitorRealHTTP(t *testing.T) {
	code := httptest.NewServer(http.NotFoundHandler())
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	c := idepool.Container{ID: "w1", Profile: "default", State: idepool.StateWarm,
		Endpoints: map[string]string{"code": code.Listener.Addr().String(), "web": web.Listener.Addr().String()}}
	pool := newPool(c)
	m := New(Options{Pool: pool, Retries: 2, Timeout: time.Second})
	vs, err := m.CheckOnce(t.Context())
	if err != nil || len(vs) != 1 || vs[0].Health.Status != idepool.HealthHealthy {
		t.Fatalf("verdicts %+v, %v", vs, err)
	}
	code.Close()
	for range 2 {
		if vs, err = m.CheckOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	m.Wait()
	if vs[0].Health.Status != idepool.HealthUnhealthy || vs[0].Action != "stop" || pool.stops()["w1"] != idepool.ReasonUnhealthy {
		t.Fatalf("verdict %+v, stopped %v", vs[0], pool.stops())
	}
}
