package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/proxy"
)

// traefikGate returns the pool's RouteGate for ROUTER=traefik with
// TRAEFIK_URL: a container is routable once a request for its first route,
// sent through Traefik, reaches idepool's ForwardAuth (which marks its
// answers) instead of Traefik's own 404. nil when there is nothing to check.
func traefikGate(cfg config.Config, profiles []idepool.Profile) func(context.Context, idepool.Container) error {
	if cfg.Router != config.RouterTraefik || cfg.TraefikURL == "" {
		return nil
	}
	routes := firstRoutes(profiles)
	host := ""
	if d := cfg.Domain; d != "" && d != "localhost" && net.ParseIP(d) == nil {
		host = d // the routers' rules carry Host(`domain`)
	}
	base := strings.TrimRight(cfg.TraefikURL, "/")
	hc := &http.Client{
		Timeout: 5 * time.Second,
		// The probe must see Traefik's answer itself, not follow it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context, c idepool.Container) error {
		route, ok := routes[c.Profile]
		if !ok {
			return nil
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+route+"/"+c.ID+"/", nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		res, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("probe through Traefik: %w", err)
		}
		io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
		if res.Header.Get(proxy.HeaderForwardAuth) == "" {
			return fmt.Errorf("/%s/%s/ is not routed by Traefik yet (status %d)", route, c.ID, res.StatusCode)
		}
		return nil
	}
}

// reachGate returns the pool's RouteGate for idepool's own router: a
// container is routable once idepool connects to its first route. On a
// cluster a new task's name and address reach idepool's node by gossip a
// moment after the task runs; a claim must not find a warm container the
// built-in router cannot reach yet (its first request would wait on the
// dial's retries or fail).
func reachGate(profiles []idepool.Profile) func(context.Context, idepool.Container) error {
	routes := firstRoutes(profiles)
	d := net.Dialer{Timeout: time.Second} // short: the pool probes again
	return func(ctx context.Context, c idepool.Container) error {
		route, ok := routes[c.Profile]
		if !ok {
			return nil
		}
		addr := c.Endpoints[route]
		if addr == "" {
			return fmt.Errorf("no endpoint for route %s", route)
		}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("idepool does not reach %s (route %s) yet: %w", addr, route, err)
		}
		conn.Close()
		return nil
	}
}

// firstRoutes maps each profile with routes to its first route's name.
func firstRoutes(profiles []idepool.Profile) map[string]string {
	routes := map[string]string{}
	for _, p := range profiles {
		if len(p.Routes) > 0 {
			routes[p.Name] = p.Routes[0].Name
		}
	}
	return routes
}

// allGates returns a RouteGate that passes once every non-nil gate does,
// in order; nil when there is none.
func allGates(gates ...func(context.Context, idepool.Container) error) func(context.Context, idepool.Container) error {
	gates = slices.DeleteFunc(gates, func(g func(context.Context, idepool.Container) error) bool { return g == nil })
	if len(gates) == 0 {
		return nil
	}
	return func(ctx context.Context, c idepool.Container) error {
		for _, g := range gates {
			if err := g(ctx, c); err != nil {
				return err
			}
		}
		return nil
	}
}
