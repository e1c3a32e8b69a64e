package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
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

func TestPeerSet(t *testing.T) {
	ctx := context.Background()
	res := &fakeResolver{table: map[string][]string{
		"tasks.idepool": {"10.0.1.2"},
		"tasks.traefik": {"10.0.1.3", "10.0.1.4"},
	}}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	p := NewPeerSet(PeerSetOptions{Names: []string{"tasks.idepool", "tasks.traefik"}, Resolver: res,
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

func TestParsePeerNames(t *testing.T) {
	for in, want := range map[string][]string{
		"":                                nil,
		"tasks.idepool":                   {"tasks.idepool"},
		" tasks.idepool , ,tasks.traefik": {"tasks.idepool", "tasks.traefik"},
	} {
		if got := ParsePeerNames(in); !slices.Equal(got, want) {
			t.Errorf("ParsePeerNames(%q) = %q, want %q", in, got, want)
		}
	}
}

// echoServer answers each line with "echo: <line>".
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := io.WriteString(c, "echo: "+sc.Text()+"\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRelay(t *testing.T) {
	target := echoServer(t)
	var mu sync.Mutex
	allow := true
	var seen []netip.Addr
	allowed := func(_ context.Context, ip netip.Addr) bool {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, ip)
		return allow
	}
	r, err := startRelay("code", "127.0.0.1:0", target, allowed, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()

	// An allowed peer talks to the workload, both ways, several times.
	c, err := net.Dial("tcp", r.addr())
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for _, msg := range []string{"one", "two"} {
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != "echo: "+msg+"\n" {
			t.Fatalf("through the relay: %q, %v", line, err)
		}
	}
	// A half-close still lets the answer through.
	io.WriteString(c, "last\n")
	c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "echo: last\n" {
		t.Fatalf("after half-close: %q, %v", rest, err)
	}
	c.Close()
	mu.Lock()
	if len(seen) != 1 || !seen[0].IsLoopback() {
		t.Errorf("peer addresses checked: %v, want one loopback address", seen)
	}
	allow = false
	mu.Unlock()

	// A refused peer gets no byte at all: the connection ends (reset or
	// EOF) before anything is answered, whatever it sends.
	c, err = net.Dial("tcp", r.addr())
	if isReset(err) {
		return // the reset came before the dial returned: refused all the same
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if len(b) != 0 || err != nil && !isReset(err) {
		t.Fatalf("refused peer read %q, %v; want nothing and EOF or a reset", b, err)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || errors.Is(err, io.EOF))
}

// TestRelayCloseCutsConnections: closing the relay ends relayed
// connections (the agent is shutting down).
func TestRelayCloseCutsConnections(t *testing.T) {
	target := echoServer(t)
	r, err := startRelay("code", "127.0.0.1:0", target, func(context.Context, netip.Addr) bool { return true }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hi\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "echo: hi\n" {
		t.Fatalf("%q, %v", line, err)
	}
	r.close() // returns only once every relayed connection is done
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("relayed connection still open after close")
	}
}

// TestWorkloadEnvBehindRelay: behind relays the workloads are told their
// internal ports and loopback, once each (the runtime's public values are
// dropped from the inherited environment).
func TestWorkloadEnvBehindRelay(t *testing.T) {
	cfg := &Config{
		Routes:     []idepool.Route{{Name: "code", Port: 8080}, {Name: "web-2", Port: 3000}},
		workRoutes: []idepool.Route{{Name: "code", Port: 41001}, {Name: "web-2", Port: 41002}},
		workHost:   "127.0.0.1",
		BaseEnv:    []string{"PATH=/bin", "IDEPOOL_AGENT_TOKEN=secret", "IDEPOOL_PORT_CODE=8080", "IDEPOOL_LISTEN_HOST=0.0.0.0"},
	}
	got := workloadEnv(cfg)
	want := []string{"PATH=/bin", "IDEPOOL_PORT_CODE=41001", "IDEPOOL_PORT_WEB_2=41002", "IDEPOOL_LISTEN_HOST=127.0.0.1"}
	if !slices.Equal(got, want) {
		t.Errorf("workloadEnv = %q, want %q", got, want)
	}
	// Without relays: the route ports, and the inherited listen host.
	cfg.workRoutes, cfg.workHost = nil, ""
	got = workloadEnv(cfg)
	want = []string{"PATH=/bin", "IDEPOOL_LISTEN_HOST=0.0.0.0", "IDEPOOL_PORT_CODE=8080", "IDEPOOL_PORT_WEB_2=3000"}
	if !slices.Equal(got, want) {
		t.Errorf("workloadEnv without relays = %q, want %q", got, want)
	}
}

// TestAgentBehindRelay: with allowed peers the placeholder moves to a
// loopback port, the route port is the relay, readiness works through it
// and a request over loopback reaches the placeholder.
func TestAgentBehindRelay(t *testing.T) {
	e := startHub(t, "")
	cfg := testConfig(t, e.srv.URL)
	cfg.AllowedPeers = []string{"tasks.idepool"}
	cfg.Resolver = &fakeResolver{table: map[string][]string{"tasks.idepool": {"10.0.9.9"}}}
	runAgent(t, cfg)
	e.rec.waitFor(t, 0, "ready heartbeat", func(r idepool.AgentReport) bool { return r.Kind == idepool.AgentHeartbeat && r.Ready })
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(cfg.Routes[0].Port) + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ok\n" {
		t.Fatalf("placeholder through the relay: %d %q", resp.StatusCode, b)
	}
}

// BenchmarkRelayRoundTrip: one line echoed over a kept connection, direct
// and through the relay (the relay's added latency per round trip).
func BenchmarkRelayRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					io.WriteString(c, sc.Text()+"\n")
				}
			}()
		}
	}()
	r, err := startRelay("code", "127.0.0.1:0", ln.Addr().String(), func(context.Context, netip.Addr) bool { return true }, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer r.close()
	for _, tc := range []struct{ name, addr string }{{"direct", ln.Addr().String()}, {"relay", r.addr()}} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			start := time.Now()
			n := 0
			for b.Loop() {
				n++
				io.WriteString(c, "ping\n")
				if _, err := br.ReadString('\n'); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n), "µs/roundtrip")
		})
	}
}
