// Package httpapi is idepool's REST API: the original system's paths, bodies,
// response fields and error envelope, behind bearer API keys compared in
// constant time. routes.go lists the whole API in one table; every /api/x
// route is also served at /x, like the original.
//
// Decisions, where the original was loose or unsafe:
//
//   - Keys: "Authorization: Bearer <key>" and, for the original's clients,
//     the raw "Authorization: <key>". Only SHA-256 hashes are kept; the
//     presented key's hash is compared with every stored one in constant
//     time. Other schemes (Basic ...) are refused.
//   - POST /api/containers/{id}/inactivity-shutdown requires a key (it was
//     open: anyone could stop anyone's container).
//   - Route tokens appear only in the start answer (201/200/202). GET
//     answers carry the same URLs without a token; a client that needs a
//     fresh token calls start again for the workspace (200, isReused).
//   - Unknown body fields are ignored (compatibility); known ones are type
//     checked and the error names the field. An empty body is {}. A missing
//     Content-Type is read as JSON; any other non-JSON type is 415.
//   - status: the original's four statuses keep their meaning (starting =
//     creating|starting|syncing, running = warm|running, stopped =
//     stopping|stopped, failed); ?state= filters on our exact states.
//   - ?wait=ready that runs out of time answers 202 with the URLs (their
//     tokens would otherwise be lost) and ready:false.
//   - Ids that cannot be ids are 404, like unknown ones; DELETE of an
//     unknown or gone container is 404 CONTAINER_NOT_FOUND, never 500.
//   - Rate limit: the original's fixed window per key on the container
//     routes, its X-RateLimit-* headers (Reset as ISO 8601) and its 429 body,
//     plus Retry-After; bounded memory.
//   - CORS only for configured exact origins, never with credentials (the
//     original answered * with credentials). API answers carry nosniff,
//     X-Frame-Options DENY, no-referrer and a CSP that allows nothing;
//     Mounts and Fallback (router, dashboard) set their own.
//   - openapi.json (embedded, at /api/openapi.json) describes routes.go;
//     its tests keep both in step and validate real answers against it.
package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// Orchestrator is what the API drives (implemented by *pool.Manager). It is
// the PLAN's orchestrator surface minus Lookup and Touch, which only the
// router uses.
type Orchestrator interface {
	Start(ctx context.Context, req idepool.StartRequest) (idepool.Claim, error)
	Get(ctx context.Context, id string) (idepool.Container, error)
	List(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error)
	Stop(ctx context.Context, id, reason string) (idepool.Container, error)
	WaitReady(ctx context.Context, id string) (idepool.Container, error)
	Pools() []idepool.PoolStatus
	SetTarget(ctx context.Context, profile string, n int) error
	Profiles() []idepool.Profile
	// Profile returns the named profile (its routes, images, limits;
	// Profiles has the current pool targets). Every start asks it, so it
	// must not wait for the pool's lock.
	Profile(name string) (idepool.Profile, bool)
}

// SyncControl acts on a container's workspace sync.
type SyncControl interface {
	// ConfirmDeletions lets the deletions the container's sync holds back
	// (a mass deletion) go through and returns how many; ENotFound for an
	// unknown container, EConflict when none are held.
	ConfirmDeletions(ctx context.Context, id string) (int, error)
}

// URLs builds the public URLs of a container's routes (implemented by
// *proxy.Router).
type URLs interface {
	// RouteURLs returns route name → URL carrying a fresh one-time token.
	// Only the start answer uses it.
	RouteURLs(c idepool.Container, profile idepool.Profile) (map[string]string, error)
	// BaseURLs returns route name → URL without a token (GET answers).
	BaseURLs(c idepool.Container, profile idepool.Profile) map[string]string
}

// HealthReporter says how the orchestrator's dependencies are doing.
type HealthReporter interface {
	Health(ctx context.Context) HealthReport
}

// HealthReport is what a HealthReporter returns.
type HealthReport struct {
	// Runtime is the runtime's name (process, swarm, fake).
	Runtime string
	// Connected is false when the runtime cannot be reached; the health
	// endpoint then answers 503 "degraded".
	Connected bool
	// Error says why the runtime is unreachable; it must hold no secret.
	Error     string
	Resources Resources
	// Pools may be nil: the API then asks the Orchestrator.
	Pools []idepool.PoolStatus
}

// Resources are host figures in the original's shape. Zero values are fine
// while no sampler exists.
type Resources struct {
	CPU        CPUUsage        `json:"cpu"`
	Memory     Usage           `json:"memory"`
	Disk       Usage           `json:"disk"`
	Containers ContainerCounts `json:"containers"`
}

// CPUUsage is CPU load.
type CPUUsage struct {
	Cores        float64 `json:"cores"`
	UsagePercent float64 `json:"usagePercent"`
}

// Usage is a memory or disk figure, in bytes.
type Usage struct {
	Total        int64   `json:"total"`
	Used         int64   `json:"used"`
	Available    int64   `json:"available"`
	UsagePercent float64 `json:"usagePercent"`
}

// ContainerCounts counts containers.
type ContainerCounts struct {
	Running int `json:"running"`
	Total   int `json:"total"`
}

// Options configure a Server.
type Options struct {
	Orchestrator Orchestrator
	// Classroom serves the admission queue, schedules and pre-assignment
	// (classroom.go); nil: the Orchestrator if it implements Classroom,
	// else those routes answer 503.
	Classroom Classroom
	// Sync serves POST /api/containers/{id}/sync/confirm-deletions; nil:
	// the Orchestrator if it implements SyncControl, else 503.
	Sync SyncControl
	// Keys are the accepted API keys; only their SHA-256 is kept. No keys
	// means every authenticated route answers 401.
	Keys   []string
	URLs   URLs           // nil: answers carry no URLs
	Health HealthReporter // nil: the runtime is assumed reachable
	Logger *slog.Logger
	Clock  idepool.Clock
	// MaxBodyBytes bounds request bodies (default 1 MiB); more → 413.
	MaxBodyBytes int64
	Version      string
	// Events serves GET /api/events (the SSE stream); nil → 404.
	Events http.Handler
	// Metrics serves GET /metrics (Prometheus); nil → 404.
	Metrics http.Handler
	// Fallback serves requests that match no API route (the router,
	// ForwardAuth, the agent endpoint are mounted by the server instead);
	// nil → 404 in the envelope.
	Fallback http.Handler
	// Middleware wraps every authenticated route, inside authentication
	// (KeyID(ctx) is set): room for the per-key rate limit.
	Middleware []func(http.Handler) http.Handler
	// Global wraps every request (API, mounts and fallback), inside request
	// ids, access log and panic recovery. (CORS and the API's security
	// headers are built in: see CORSOrigins.)
	Global []func(http.Handler) http.Handler
	// Mounts are extra ServeMux patterns served WITHOUT an API key, e.g.
	// "GET /_auth/forward" (proxy ForwardAuth) and "/agent/v1/connect"
	// (control hub). They are not part of the API table.
	Mounts map[string]http.Handler
	// DefaultWait and MaxWait bound POST /api/containers/start?wait=ready
	// (defaults 60 s and 5 min).
	DefaultWait time.Duration
	MaxWait     time.Duration
	// RateLimit is the per-key limit on the container routes (zero
	// Requests: none).
	RateLimit RateLimit
	// AgentNetworks are the IDE containers' networks (config
	// AGENT_NETWORKS): a peer there may only reach AgentPaths (default
	// DefaultAgentPaths); anything else answers 403 FORBIDDEN. Empty: no
	// restriction. TrustedPeer exempts peers on those networks that forward
	// users' requests (Traefik).
	AgentNetworks []netip.Prefix
	AgentPaths    []string
	TrustedPeer   TrustedPeerFunc
	// CORSOrigins are the exact origins (scheme://host[:port]) whose pages
	// may call the API; empty: no CORS headers at all. Credentials are never
	// allowed. CheckOrigins validates the list at start-up.
	CORSOrigins []string

	// BodyTimeout is how long reading a request body may wait for data
	// (default 30 s), on every route: a stalled body is cut, a slow upload
	// that keeps sending is not (bodyguard.go).
	BodyTimeout time.Duration
	// BodiesPerClient bounds the request bodies one client address may
	// have unfinished at once (default 128; negative: no bound); more → 429.
	BodiesPerClient int
}

// Server is the REST API. It is an http.Handler.
type Server struct {
	o       Options
	log     *slog.Logger
	clock   idepool.Clock
	keys    keyring
	mux     *http.ServeMux
	handler http.Handler
	limiter *limiter    // nil: no rate limit
	cors    *corsPolicy // nil: no CORS
	// apiPatterns are the mux patterns of the API table (not Mounts): the
	// answers that get the API's security and CORS headers.
	apiPatterns map[string]bool
	openAPI     []byte
	openAPIErr  error
	bodies      bodyCounter
	// ownFirst are the first path segments of every pattern of the mux
	// (API routes and Mounts); nil when a pattern matches any (see
	// toFallback).
	ownFirst map[string]bool
}

var _ http.Handler = (*Server)(nil)

const (
	defaultMaxBody = 1 << 20
	defaultWait    = 60 * time.Second
	defaultMaxWait = 5 * time.Minute
)

// New returns the API server. o.Orchestrator is required.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBody
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = defaultBodyTimeout
	}
	if o.BodiesPerClient == 0 {
		o.BodiesPerClient = defaultBodiesPerIP
	}
	if o.DefaultWait <= 0 {
		o.DefaultWait = defaultWait
	}
	if o.MaxWait <= 0 {
		o.MaxWait = defaultMaxWait
	}
	if o.DefaultWait > o.MaxWait {
		o.DefaultWait = o.MaxWait
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	s := &Server{o: o, log: o.Logger, clock: o.Clock, keys: newKeyring(o.Keys), mux: http.NewServeMux(),
		limiter: newLimiter(o.RateLimit), cors: newCORS(o.CORSOrigins), apiPatterns: map[string]bool{},
		bodies: bodyCounter{max: o.BodiesPerClient, n: map[string]int{}}}
	s.openAPI, s.openAPIErr = OpenAPI(o.Version)
	for _, rt := range s.routes() {
		h := http.Handler(s.adapt(rt.handler))
		if rt.Auth {
			for i := len(o.Middleware) - 1; i >= 0; i-- {
				h = o.Middleware[i](h)
			}
			if s.limiter != nil && rt.RateLimited() {
				h = s.rateLimit(h)
			}
			h = s.requireKey(h)
		}
		for _, p := range rt.paths() {
			s.mux.Handle(rt.Method+" "+p, h)
			s.apiPatterns[rt.Method+" "+p] = true
		}
	}
	for pattern, h := range o.Mounts {
		s.mux.Handle(pattern, h)
	}
	s.ownFirst = firstSegments(s.apiPatterns, o.Mounts)
	inner := http.Handler(http.HandlerFunc(s.dispatch))
	for i := len(o.Global) - 1; i >= 0; i-- {
		inner = o.Global[i](inner)
	}
	s.handler = s.requestID(s.accessLog(s.guardBody(s.recoverPanic(s.restrictNetworks(inner)))))
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// dispatch sends a request to its route, or answers 404/405 in the envelope
// (ServeMux's own answers are plain text), or hands it to Fallback.
//
// API answers (routes of the table, and the 404/405 envelopes) get the
// security headers and CORS; Mounts and Fallback set their own (the router's
// answers must stay embeddable by the configured parent origins).
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if s.preflight(w, r) {
		return
	}
	if s.toFallback(r.URL.Path) {
		s.o.Fallback.ServeHTTP(w, r)
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		if s.apiPatterns[pattern] {
			s.apiHeaders(w, r)
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
			}
		}
		s.mux.ServeHTTP(w, r)
		return
	}
	// No pattern: ServeMux would answer 404 or 405; ask it which, quietly.
	probe := &probeWriter{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.code == http.StatusMethodNotAllowed {
		s.apiHeaders(w, r)
		w.Header().Set("Allow", probe.header.Get("Allow"))
		s.writeError(w, r, idepool.Errorf(idepool.EMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
		return
	}
	// Nothing under /api/ is the router's or the dashboard's: an unknown
	// API path is the API's 404.
	if s.o.Fallback != nil && r.URL.Path != "/api" && !strings.HasPrefix(r.URL.Path, "/api/") {
		s.o.Fallback.ServeHTTP(w, r)
		return
	}
	s.apiHeaders(w, r)
	s.writeError(w, r, idepool.Errorf(idepool.ERouteNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// toFallback reports whether path can only be Fallback's: it is clean and
// its first segment is no pattern's. Such requests (the router's: every
// request of every IDE) skip the mux's lookup, the not-found probe and its
// 405 method scan, which are the same for them every time.
func (s *Server) toFallback(path string) bool {
	if s.o.Fallback == nil || s.ownFirst == nil || strings.Contains(path, "//") || strings.Contains(path, "/.") {
		return false // unclean paths get the mux's redirect
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return !s.ownFirst[first]
}

// firstSegments returns the first path segment of each pattern ("" for
// "/{$}"), or nil when one matches any first segment ("/", "/{x}/...",
// a host pattern).
func firstSegments(api map[string]bool, mounts map[string]http.Handler) map[string]bool {
	patterns := make([]string, 0, len(api)+len(mounts))
	for p := range api {
		patterns = append(patterns, p)
	}
	for p := range mounts {
		patterns = append(patterns, p)
	}
	out := map[string]bool{}
	for _, p := range patterns {
		if _, rest, ok := strings.Cut(p, " "); ok {
			p = strings.TrimSpace(rest) // "GET /x": the method
		}
		if !strings.HasPrefix(p, "/") {
			return nil // a host, or something this does not know
		}
		first, _, _ := strings.Cut(p[1:], "/")
		switch {
		case first == "{$}":
			first = ""
		case first == "" || strings.Contains(first, "{"):
			return nil
		}
		out[first] = true
	}
	return out
}

// probeWriter records what ServeMux's not-found/not-allowed handler would say.
type probeWriter struct {
	header http.Header
	code   int
}

func (p *probeWriter) Header() http.Header { return p.header }
func (p *probeWriter) WriteHeader(c int) {
	if p.code == 0 {
		p.code = c
	}
}
func (p *probeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// apiHandler is a handler that returns its error for the envelope.
type apiHandler func(w http.ResponseWriter, r *http.Request) error

func (s *Server) adapt(h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}
