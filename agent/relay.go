package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// EnvAllowedPeers lists the DNS names (comma-separated) whose addresses may
// connect to the container's route ports: the orchestrator and its router
// (on Swarm "tasks.idepool,tasks.traefik"). When it is set the agent puts a
// TCP relay on every route port that drops every other peer, and the
// workloads listen on loopback ports of their own (IDEPOOL_PORT_<ROUTE>).
// Unset (the process runtime): the workloads listen on the route ports.
const EnvAllowedPeers = "IDEPOOL_ALLOWED_PEERS"

// Resolver looks names up (*net.Resolver satisfies it).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// PeerSetOptions configure a PeerSet.
type PeerSetOptions struct {
	// Names are resolved to the allowed addresses.
	Names []string
	// NamesFunc, if set, gives the names at each resolution instead (a
	// failure keeps the previous ones).
	NamesFunc func(ctx context.Context) ([]string, error)
	// Resolver defaults to net.DefaultResolver.
	Resolver Resolver
	// MaxAge: the addresses are resolved again on a check once they are
	// this old (default 10 s), so an address given up by a peer (and maybe
	// reused by a container) stops being allowed within about that long.
	MaxAge time.Duration
	// MissInterval: an unknown address triggers a new resolution at most
	// this often (default 1 s), so a flood of strangers costs one lookup
	// per interval, not one each.
	MissInterval time.Duration
	// Timeout bounds one resolution of all names (default 2 s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// PeerSet answers whether an address belongs to one of a few named peers.
// Loopback addresses (the container itself) are always allowed. A failed
// resolution keeps the addresses known before it.
type PeerSet struct {
	o PeerSetOptions

	mu       sync.Mutex // held during a resolution: concurrent misses share it
	addrs    map[netip.Addr]bool
	resolved time.Time // of the last successful resolution
	tried    time.Time // of the last attempt
}

// NewPeerSet returns a PeerSet; nothing is resolved until the first check.
func NewPeerSet(o PeerSetOptions) *PeerSet {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 10 * time.Second
	}
	if o.MissInterval <= 0 {
		o.MissInterval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &PeerSet{o: o, addrs: map[netip.Addr]bool{}}
}

// ParsePeerNames splits a comma-separated list of names, dropping blanks.
func ParsePeerNames(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// Allowed reports whether ip may connect.
func (p *PeerSet) Allowed(ctx context.Context, ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.o.Now()
	if p.tried.IsZero() || now.Sub(p.resolved) >= p.o.MaxAge && now.Sub(p.tried) >= p.o.MissInterval {
		p.resolve(ctx, now)
	}
	if p.addrs[ip] {
		return true
	}
	// A peer that just (re)started has a new address: look again, bounded.
	if now.Sub(p.tried) >= p.o.MissInterval {
		p.resolve(ctx, now)
	}
	return p.addrs[ip]
}

// Addrs returns the addresses currently allowed (tests, logs).
func (p *PeerSet) Addrs() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]netip.Addr, 0, len(p.addrs))
	for a := range p.addrs {
		out = append(out, a)
	}
	return out
}

// resolve replaces the addresses with those of every name; p.mu is held.
func (p *PeerSet) resolve(ctx context.Context, now time.Time) {
	p.tried = now
	ctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	if p.o.NamesFunc != nil {
		names, err := p.o.NamesFunc(ctx)
		if err != nil {
			p.o.Logger.Warn("allowed peers: names not known; keeping the previous ones", "err", err)
		} else {
			p.o.Names = names
		}
	}
	next := map[netip.Addr]bool{}
	failed := 0
	for _, n := range p.o.Names {
		as, err := p.o.Resolver.LookupNetIP(ctx, "ip", n)
		if err != nil {
			failed++
			p.o.Logger.Debug("allowed peer did not resolve", "name", n, "err", err)
			continue
		}
		for _, a := range as {
			next[a.Unmap()] = true
		}
	}
	if failed == len(p.o.Names) && len(p.o.Names) > 0 {
		// DNS itself is down (or every peer is): keep what we knew.
		return
	}
	p.addrs = next
	p.resolved = now
}

// relay listens on a route's public port and passes the connections of
// allowed peers to the workload's loopback port; every other connection is
// reset at once, before a byte is read or written.
type relay struct {
	route   string
	ln      net.Listener
	target  string // 127.0.0.1:<internal port>
	allowed func(context.Context, netip.Addr) bool
	log     *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startRelay listens on addr and serves until close.
func startRelay(route, addr, target string, allowed func(context.Context, netip.Addr) bool, log *slog.Logger) (*relay, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: relay for route %s: %w", route, err)
	}
	r := &relay{route: route, ln: ln, target: target, allowed: allowed, log: log, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) serve() {
	defer r.wg.Done()
	for delay := time.Duration(0); ; {
		c, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off, bounded, and go on.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			r.log.Warn("relay accept failed", "route", r.route, "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !r.track(c) {
			c.Close()
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.untrack(c)
			r.handle(c)
		}()
	}
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *relay) handle(c net.Conn) {
	peer, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ok := r.allowed(ctx, peer.Addr())
	cancel()
	if !ok {
		r.log.Info("refused a connection from a peer that is not allowed", "route", r.route, "peer", peer.Addr().String())
		if tc, isTCP := c.(*net.TCPConn); isTCP {
			_ = tc.SetLinger(0) // close with a reset: no answer at all
		}
		return
	}
	up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		r.log.Debug("relay: workload not reachable", "route", r.route, "err", err)
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		up.Close()
		return
	}
	r.conns[up] = struct{}{}
	r.mu.Unlock()
	defer r.untrack(up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok && err == nil {
			// A clean end: half-close, the other direction may still
			// carry an answer.
			_ = tc.CloseWrite()
		} else {
			// A reset or an error: cut both sides.
			c.Close()
			up.Close()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// close stops listening and cuts every relayed connection.
func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.ln.Close()
	r.wg.Wait()
}

// freeLoopbackPort returns a port nothing listens on at 127.0.0.1 now.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// internalRoutes returns the routes with a free loopback port each, for
// the workloads behind the relays.
func internalRoutes(routes []idepool.Route) ([]idepool.Route, error) {
	out := slices.Clone(routes)
	for i := range out {
		p, err := freeLoopbackPort()
		if err != nil {
			return nil, fmt.Errorf("agent: internal port for route %s: %w", out[i].Name, err)
		}
		out[i].Port = p
	}
	return out, nil
}
