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
