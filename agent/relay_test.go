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

// tableResolver answers from a fixed table.
type tableResolver map[string][]string

func (f tableResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range f[host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
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
	cfg.Resolver = tableResolver{"tasks.idepool": {"10.0.9.9"}}
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
