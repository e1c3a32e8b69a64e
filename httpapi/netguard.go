package httpapi

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"

	"github.com/idepool/idepool"
)

// DefaultAgentPaths are what containers may reach on idepool: their
// agent's control channel, and Traefik's ForwardAuth (harmless to them: it
// answers only whether a cookie or one-time token is valid, which a
// container can ask of the public URL as well).
var DefaultAgentPaths = []string{"/agent/v1/connect", "/_auth/forward"}

// restrictNetworks answers 403 FORBIDDEN to a request whose peer is in one
// of AgentNetworks (the IDE containers' network) unless it asks for one of
// AgentPaths or the peer is trusted (Traefik forwarding users). It covers
// everything else idepool serves: the REST API, the dashboard, metrics and
// the built-in router (a container must not reach another through it).
func (s *Server) restrictNetworks(next http.Handler) http.Handler {
	if len(s.o.AgentNetworks) == 0 {
		return next
	}
	paths := s.o.AgentPaths
	if paths == nil {
		paths = DefaultAgentPaths
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, ok := peerAddr(r)
		if !ok || !inAny(s.o.AgentNetworks, ip) || slices.Contains(paths, r.URL.Path) ||
			s.o.TrustedPeer != nil && s.o.TrustedPeer(r.Context(), ip) {
			next.ServeHTTP(w, r)
			return
		}
		s.apiHeaders(w, r)
		s.writeError(w, r, idepool.Errorf(idepool.EForbidden, "%s is not served to the containers' network", r.URL.Path))
	})
}

// peerAddr is the TCP peer's address (never a forwarding header: those are
// the client's to write).
func peerAddr(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

func inAny(nets []netip.Prefix, ip netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// TrustedPeerFunc adapts a peer check (such as (*peerset.Set).Allowed)
// to Options.TrustedPeer.
type TrustedPeerFunc = func(ctx context.Context, ip netip.Addr) bool
