// Package traefik computes how Traefik v3 routes a container's routes:
// Routers, which the Kubernetes runtime turns into Ingresses, and Labels,
// the same routers as labels for Traefik's Swarm provider. Both are pure
// functions of the container id, its profile and the deployment's routing
// options, so they are tested with golden files and never talk to Traefik.
//
// For each route r of container id it makes one router, one service and a
// strip-prefix middleware (unless the route keeps its prefix):
//
//	router   idepool-<id>-<r>: rule Path(`/<r>/<id>`) || PathPrefix(`/<r>/<id>/`)
//	         (and Host(`<domain>`) when the domain is a name), middlewares
//	         auth (ForwardAuth back to idepool) then strip-prefix
//	service  idepool-<id>-<r>: the route's port on the container
//
// The rule uses Path || PathPrefix with a trailing slash rather than a bare
// PathPrefix(`/<r>/<id>`), so container abcd never catches /code/abcde/.
package traefik

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/idepool/idepool"
)

// Defaults of Options.
const (
	DefaultCertResolver = "letsencrypt"
	DefaultPriority     = 100
)

// Options are a deployment's routing settings.
type Options struct {
	// Domain is the public host name. Empty, "localhost" or an IP address
	// means no Host rule and plain HTTP (entrypoint web); a name adds
	// Host(`domain`), entrypoints web and websecure, and TLS.
	Domain string
	// EntryPoints overrides the entrypoints chosen from Domain.
	EntryPoints []string
	// CertResolver for TLS when Domain is a name ("letsencrypt" if empty).
	CertResolver string
	// ForwardAuthURL is idepool's ForwardAuth endpoint as Traefik reaches
	// it, e.g. http://idepool:3001/_auth/forward. Empty leaves the routes
	// without authentication, which only tests should do.
	ForwardAuthURL string
	// Network is the overlay network Traefik reaches the container on
	// (traefik.swarm.network).
	Network string
	// Priority of the routers (DefaultPriority if zero), above any
	// catch-all router of idepool itself.
	Priority int
	// Middlewares are appended to every router, after idepool's own, e.g.
	// "container-iframe-headers@file".
	Middlewares []string
}

// IsName reports whether domain is a DNS name (not empty, not localhost,
// not an IP address), which gets a Host rule and TLS.
func IsName(domain string) bool {
	host := domain
	if h, _, err := net.SplitHostPort(domain); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return false
	}
	return net.ParseIP(host) == nil
}

// Router is one route of a container as Traefik routes it: what both of
// idepool's Traefik providers (Swarm labels here, Kubernetes Ingresses in
// runtime/kubernetes) write in their own words.
type Router struct {
	// Name is the router's (and its service's) name, idepool-<id>-<route>.
	Name  string
	Route idepool.Route
	// Prefix is /<route>/<id>; the rule matches it and what is below it.
	Prefix string
	// Host is the Host rule's host ("" for none: Domain is not a name).
	Host string
	// Rule is the router's rule in Traefik's v3 syntax.
	Rule        string
	EntryPoints []string
	Priority    int
	// TLS with CertResolver when Domain is a name.
	TLS          bool
	CertResolver string
	// Strip: the prefix is stripped before the container sees the request
	// (the route does not keep it).
	Strip bool
}

// Routers returns the routers of container id of profile p, in the
// profile's route order.
func Routers(id string, p idepool.Profile, o Options) []Router {
	name := IsName(o.Domain)
	host := o.Domain
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !name {
		host = ""
	}
	entry := o.EntryPoints
	if len(entry) == 0 {
		entry = []string{"web"}
		if name {
			entry = []string{"web", "websecure"}
		}
	}
	prio := o.Priority
	if prio == 0 {
		prio = DefaultPriority
	}
	resolver := ""
	if name {
		resolver = o.CertResolver
		if resolver == "" {
			resolver = DefaultCertResolver
		}
	}
	out := make([]Router, 0, len(p.Routes))
	for _, r := range p.Routes {
		prefix := "/" + r.Name + "/" + id
		rule := fmt.Sprintf("(Path(`%s`) || PathPrefix(`%s/`))", prefix, prefix)
		if name {
			rule = fmt.Sprintf("Host(`%s`) && %s", host, rule)
		}
		out = append(out, Router{
			Name:         "idepool-" + id + "-" + r.Name,
			Route:        r,
			Prefix:       prefix,
			Host:         host,
			Rule:         rule,
			EntryPoints:  slices.Clone(entry),
			Priority:     prio,
			TLS:          name,
			CertResolver: resolver,
			Strip:        !r.KeepPrefix,
		})
	}
	return out
}

// Labels returns the Traefik labels for container id of profile p. The keys
// all start with "traefik."; they go on the container's Swarm service next
// to idepool's own labels.
func Labels(id string, p idepool.Profile, o Options) map[string]string {
	l := map[string]string{"traefik.enable": "true"}
	if o.Network != "" {
		l["traefik.swarm.network"] = o.Network
	}
	auth := ""
	if o.ForwardAuthURL != "" {
		auth = "idepool-" + id + "-auth"
		m := "traefik.http.middlewares." + auth + ".forwardauth."
		l[m+"address"] = o.ForwardAuthURL
		// The client's own X-Forwarded-* must not reach idepool: Traefik
		// sets them from the request it really received.
		l[m+"trustForwardHeader"] = "false"
		// The token exchange answers 302 with a relative Location and
		// Set-Cookie; Traefik passes non-2xx answers to the client, but
		// would resolve the Location against the ForwardAuth address
		// (http://idepool:3001/...) unless told to keep it as is.
		l[m+"preserveLocationHeader"] = "true"
	}
	for _, r := range Routers(id, p, o) {
		rk := "traefik.http.routers." + r.Name + "."
		l[rk+"rule"] = r.Rule
		l[rk+"entrypoints"] = strings.Join(r.EntryPoints, ",")
		l[rk+"priority"] = strconv.Itoa(r.Priority)
		l[rk+"service"] = r.Name
		if r.TLS {
			l[rk+"tls"] = "true"
			l[rk+"tls.certresolver"] = r.CertResolver
		}
		var mws []string
		if auth != "" {
			mws = append(mws, auth)
		}
		if r.Strip {
			strip := r.Name + "-strip"
			l["traefik.http.middlewares."+strip+".stripprefix.prefixes"] = r.Prefix
			mws = append(mws, strip)
		}
		mws = append(mws, o.Middlewares...)
		if len(mws) > 0 {
			l[rk+"middlewares"] = strings.Join(mws, ",")
		}
		l["traefik.http.services."+r.Name+".loadbalancer.server.port"] = strconv.Itoa(r.Route.Port)
	}
	return l
}

// IsLabel reports whether key is a Traefik label (so runtimes can tell them
// from idepool's own).
func IsLabel(key string) bool { return strings.HasPrefix(key, "traefik.") }
