package peerset

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeResolver answers from a table the test changes, and counts lookups.
type fakeResolver struct {
	mu      sync.Mutex
	table   map[string][]string
	fail    bool
	lookups int
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.fail {
		return nil, errors.New("dns down")
	}
	var out []netip.Addr
	for _, s := range f.table[host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func (f *fakeResolver) set(host string, addrs ...string) {
	f.mu.Lock()
	f.table[host] = addrs
	f.mu.Unlock()
}

func (f *fakeResolver) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestSet(t *testing.T) {
	ctx := context.Background()
	res := &fakeResolver{table: map[string][]string{
		"tasks.idepool": {"10.0.1.2"},
		"tasks.traefik": {"10.0.1.3", "10.0.1.4"},
	}}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	p := New(Options{Names: []string{"tasks.idepool", "tasks.traefik"}, Resolver: res,
		MaxAge: 10 * time.Second, MissInterval: time.Second, Now: clk.now})

	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"10.0.1.2", true},
		{"10.0.1.4", true},
		{"::ffff:10.0.1.3", true}, // v4-mapped, as a dual-stack listener reports it
		{"127.0.0.1", true},       // the container itself (readiness probes)
		{"::1", true},
		{"10.0.1.9", false}, // another container
		{"172.18.0.1", false},
	} {
		if got := p.Allowed(ctx, netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("Allowed(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}

	// Misses re-resolve at most once per MissInterval: a flood of
	// strangers costs one lookup round, not one each.
	n := res.count()
	for range 50 {
		p.Allowed(ctx, netip.MustParseAddr("10.0.1.9"))
	}
	if got := res.count() - n; got != 0 {
		t.Errorf("%d lookups for 50 misses within the miss interval, want 0", got)
	}

	// idepool restarts with a new address: allowed on the first miss after
	// the interval.
	res.set("tasks.idepool", "10.0.1.20")
	clk.advance(1500 * time.Millisecond)
	if !p.Allowed(ctx, netip.MustParseAddr("10.0.1.20")) {
		t.Error("a peer's new address is not allowed after a miss")
	}
	if p.Allowed(ctx, netip.MustParseAddr("10.0.1.2")) {
		t.Error("a peer's old address is still allowed after a new resolution")
	}

	// The old address goes to a container: after MaxAge a check
	// re-resolves even for a known address, so stale addresses expire.
	res.set("tasks.traefik", "10.0.1.3")
	clk.advance(11 * time.Second)
	if p.Allowed(ctx, netip.MustParseAddr("10.0.1.4")) {
		t.Error("an address given up by a peer is still allowed after MaxAge")
	}

	// DNS down: what was known stays allowed, strangers stay refused.
	res.mu.Lock()
	res.fail = true
	res.mu.Unlock()
	clk.advance(11 * time.Second)
	if !p.Allowed(ctx, netip.MustParseAddr("10.0.1.3")) {
		t.Error("a known peer is refused while DNS fails")
	}
	if p.Allowed(ctx, netip.MustParseAddr("10.0.1.9")) {
		t.Error("a stranger is allowed while DNS fails")
	}
	got := p.Addrs()
	slices.SortFunc(got, netip.Addr.Compare)
	if want := []netip.Addr{netip.MustParseAddr("10.0.1.3"), netip.MustParseAddr("10.0.1.20")}; !slices.Equal(got, want) {
		t.Errorf("Addrs() = %v, want %v", got, want)
	}
}

// One name's lookup timing out (the cluster's DNS under load) keeps that
// peer's addresses; a name that no longer exists drops its own.
func TestSetKeepsAPeerWhoseLookupFailed(t *testing.T) {
	ctx := context.Background()
	res := &timeoutResolver{fakeResolver: fakeResolver{table: map[string][]string{
		"tasks.idepool": {"10.0.1.2"},
		"tasks.traefik": {"10.0.1.3"},
		"tasks.gone":    {"10.0.1.5"},
	}}, timeouts: map[string]bool{}}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	p := New(Options{Names: []string{"tasks.idepool", "tasks.traefik", "tasks.gone"}, Resolver: res,
		MaxAge: 10 * time.Second, MissInterval: time.Second, Now: clk.now})
	if !p.Allowed(ctx, netip.MustParseAddr("10.0.1.3")) || !p.Allowed(ctx, netip.MustParseAddr("10.0.1.5")) {
		t.Fatal("peers refused at the first resolution")
	}
	res.mu.Lock()
	res.timeouts["tasks.traefik"] = true
	res.mu.Unlock()
	res.set("tasks.gone")
	res.set("tasks.idepool", "10.0.1.20")
	clk.advance(11 * time.Second)
	if !p.Allowed(ctx, netip.MustParseAddr("10.0.1.3")) {
		t.Error("the router is refused because its name's lookup timed out once")
	}
	if !p.Allowed(ctx, netip.MustParseAddr("10.0.1.20")) {
		t.Error("a peer that resolved is refused")
	}
	if p.Allowed(ctx, netip.MustParseAddr("10.0.1.5")) {
		t.Error("the address of a peer whose name no longer exists is still allowed")
	}
}

// timeoutResolver times out on the names in timeouts.
type timeoutResolver struct {
	fakeResolver
	timeouts map[string]bool
}

func (r *timeoutResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	to := r.timeouts[host]
	r.mu.Unlock()
	if to {
		return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
	}
	return r.fakeResolver.LookupNetIP(ctx, network, host)
}
