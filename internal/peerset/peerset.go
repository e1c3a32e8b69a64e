// Package peerset answers whether a network address belongs to one of a few
// peers named in DNS (on Swarm "tasks.idepool", "tasks.traefik"). The agent
// uses it to let only the orchestrator and its router reach a container's
// route ports; the orchestrator uses it to tell its router from containers.
package peerset

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Resolver looks names up (*net.Resolver satisfies it).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options configure a Set.
type Options struct {
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

// Set answers whether an address belongs to one of a few named peers.
// Loopback addresses (the container itself) are always allowed. A failed
// resolution keeps the addresses known before it.
type Set struct {
	o Options

	mu       sync.Mutex // held during a resolution: concurrent misses share it
	addrs    map[netip.Addr]bool
	byName   map[string][]netip.Addr // each name's last answer
	resolved time.Time               // of the last successful resolution
	tried    time.Time               // of the last attempt
}

// New returns a Set; nothing is resolved until the first check.
func New(o Options) *Set {
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
	return &Set{o: o, addrs: map[netip.Addr]bool{}, byName: map[string][]netip.Addr{}}
}

// Allowed reports whether ip may connect.
func (p *Set) Allowed(ctx context.Context, ip netip.Addr) bool {
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
func (p *Set) Addrs() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]netip.Addr, 0, len(p.addrs))
	for a := range p.addrs {
		out = append(out, a)
	}
	return out
}

// resolve replaces the addresses with those of every name; p.mu is held.
func (p *Set) resolve(ctx context.Context, now time.Time) {
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
	byName := make(map[string][]netip.Addr, len(p.o.Names))
	failed := 0
	for _, n := range p.o.Names {
		as, err := p.o.Resolver.LookupNetIP(ctx, "ip", n)
		var dnsErr *net.DNSError
		switch {
		case err == nil:
			byName[n] = as
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			failed++ // the peer is gone: its addresses go
			p.o.Logger.Debug("allowed peer did not resolve", "name", n, "err", err)
		default:
			// A lookup that timed out (the cluster's DNS under load) says
			// nothing of the peer: keep its last addresses, or every
			// request it forwards would be refused until the next one.
			failed++
			byName[n] = p.byName[n]
			p.o.Logger.Debug("allowed peer not resolved now; keeping its addresses", "name", n, "err", err)
		}
	}
	if failed == len(p.o.Names) && len(p.o.Names) > 0 {
		// DNS itself is down (or every peer is): keep what we knew.
		return
	}
	next := map[netip.Addr]bool{}
	for _, as := range byName {
		for _, a := range as {
			next[a.Unmap()] = true
		}
	}
	p.addrs, p.byName = next, byName
	p.resolved = now
}
