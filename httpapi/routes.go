package httpapi

import "strings"

// Route describes one API route. Every route under /api/ is also served
// without the prefix (/containers, /health, ...), like the original.
type Route struct {
	Method string
	// Path is a Go 1.22 ServeMux pattern path ("/api/containers/{id}").
	Path string
	// Auth is true when an API key is required.
	Auth    bool
	Summary string
	handler apiHandler
}

// paths returns where the route is mounted: Path and, for /api/ paths, the
// same path without /api.
func (rt Route) paths() []string {
	if p, ok := strings.CutPrefix(rt.Path, "/api/"); ok {
		return []string{rt.Path, "/" + p}
	}
	return []string{rt.Path}
}

// Paths returns every path the route is mounted at.
func (rt Route) Paths() []string { return rt.paths() }

// RateLimited reports whether the route is under the per-key rate limit:
// the container routes, like the original's.
func (rt Route) RateLimited() bool {
	return rt.Auth && (rt.Path == "/api/containers" || strings.HasPrefix(rt.Path, "/api/containers/"))
}

// routes is THE table of the API. The OpenAPI test checks it.
func (s *Server) routes() []Route {
	return []Route{
		{"GET", "/{$}", false, "Service name, version and status.", s.handleRoot},
		{"GET", "/api/openapi.json", false, "This OpenAPI 3 description of the API.", s.handleOpenAPI},
		{"GET", "/api/health", false, "Health: runtime reachability, resources, pool counts. 503 when degraded. No secrets.", s.handleHealth},
		{"GET", "/api/profiles", true, "Profiles: name, routes and limits.", s.handleProfiles},
		{"POST", "/api/containers/start", true, "Start (claim) a container for a workspace; ?wait=ready&timeout=60s waits until it runs.", s.handleStart},
		{"GET", "/api/containers", true, "List containers: ?status=running,starting (or exact ?state=warm,syncing)&profile=&limit=50&offset=0, with the true total.", s.handleList},
		{"GET", "/api/containers/{id}", true, "One container's details (URLs without tokens).", s.handleGet},
		{"DELETE", "/api/containers/{id}", true, "Stop a container (flush, remove). Unknown or gone: 404.", s.handleDelete},
		{"POST", "/api/containers/{id}/inactivity-shutdown", true, "The original's inactivity webhook; now requires an API key.", s.handleInactivity},
		{"POST", "/api/containers/{id}/sync/confirm-deletions", true, "Apply the deletions a container's sync holds back (more than SYNC_MAX_DELETE_PERCENT of its files vanished from S3 at once; event sync.deletions_held). None held: 409.", s.handleConfirmDeletions},
		{"GET", "/api/pool", true, "Every profile's pool: target, warm, starting, claimed, failed.", s.handlePools},
		{"PUT", "/api/pool/{profile}", true, "Change a profile's pool target: {\"target\": n}.", s.handleSetTarget},
		{"GET", "/api/queue/{ticket}", true, "A queued start's state (position, estimate; its container once assigned); ?wait=ready&timeout=60s long-polls.", s.handleQueueTicket},
		{"GET", "/api/pool/{profile}/schedules", true, "A profile's scheduled pool windows.", s.handleGetSchedules},
		{"PUT", "/api/pool/{profile}/schedules", true, "Replace a profile's scheduled pool windows: {\"schedules\": [{\"days\": [\"Mon\"], \"start\": \"09:50\", \"end\": \"11:30\", \"timezone\": \"Europe/Berlin\", \"target\": 320}]}.", s.handleSetSchedules},
		{"POST", "/api/workspaces/prepare", true, "Bind containers to workspaces ahead of their starts; their files are pulled now; unused ones stop at expiry.", s.handlePrepare},
		{"GET", "/api/events", true, "Event stream (Server-Sent Events): every state change, claim, refusal, health verdict, sync conflict and stop; resume with Last-Event-ID or ?after=; filter with ?type= and ?container=.", s.handleEvents},
		{"GET", "/metrics", false, "Prometheus metrics (no secrets).", s.handleMetrics},
	}
}

// Routes returns the API table (handlers left out), for documentation and
// tests.
func (s *Server) Routes() []Route {
	rs := s.routes()
	for i := range rs {
		rs[i].handler = nil
	}
	return rs
}
