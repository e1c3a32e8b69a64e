package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
	routes := map[string]string{}
	for _, p := range profiles {
		if len(p.Routes) > 0 {
			routes[p.Name] = p.Routes[0].Name
		}
	}
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
