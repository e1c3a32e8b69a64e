// Package proxy is idepool's built-in router: /<route>/<id>/... is proxied to
// the container's endpoint for that route with httputil.ReverseProxy
// (websockets included), after checking a per-container cookie obtained by
// exchanging a one-time token. It also serves Traefik's ForwardAuth.
//
// The IDE is meant to live in an iframe of the configured parent origins
// (FrameAncestors): proxied answers get a CSP frame-ancestors policy unless
// the workload set one, and never X-Frame-Options from idepool; route
// cookies are HttpOnly, SameSite as configured (None when framed) and
// Secure over HTTPS.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/htmlpage"
)

// Backend is what the router needs from the orchestrator (implemented by
// *pool.Manager).
type Backend interface {
	// Lookup is cheap and in memory; it is called on every request.
	Lookup(id string) (idepool.Container, bool)
	// Touch reports user activity (requests, websocket traffic), at most
	// once per Options.TouchEvery per container or connection.
	Touch(id string)
	// Profiles gives the route table of each profile; the router reuses
	// an answer for up to a second.
	Profiles() []idepool.Profile
}

// Options configure a Router.
type Options struct {
	Backend Backend
	// Secret is the HMAC key of route cookies (the server keeps it under
	// DATA_DIR so cookies survive a restart). Empty: a random one, and
	// cookies die with the process.
	Secret []byte
	// PublicURL prefixes the URLs handed out ("https://ide.example.com");
	// empty gives relative URLs.
	PublicURL string
	Clock     idepool.Clock
	Logger    *slog.Logger
	// TokenTTL is how long a one-time token may be redeemed (default 5 min).
	TokenTTL time.Duration
	// CookieTTL is how long a route cookie is valid (default 12 h).
	CookieTTL time.Duration
	// CookieSecure sets Secure on every route cookie. Secure is also set
	// when PublicURL is https, for TLS requests, for X-Forwarded-Proto:
	// https from a TrustedProxies peer (and at ForwardAuth, whose caller is
	// the proxy), and always with SameSite=None.
	CookieSecure bool
	// CookieSameSite of route cookies (SameSiteMode parses COOKIE_SAMESITE).
	// Zero: None when FrameAncestors is set (the IDE lives in an iframe of
	// another site, whose requests carry only SameSite=None cookies), else
	// Lax. Browsers accept None only with Secure, so it needs HTTPS.
	CookieSameSite http.SameSite
	// FrameAncestors are the origins allowed to embed the IDE in an iframe
	// (CSP host sources such as https://app.example.com); proxied answers
	// without a frame-ancestors policy of their own get
	// "Content-Security-Policy: frame-ancestors 'self' <FrameAncestors>".
	// CheckFrameAncestors validates the list at start-up.
	FrameAncestors []string
	// TrustedProxies are the peers whose X-Forwarded-Proto is believed for
	// the cookies' Secure flag; nil: loopback addresses only.
	TrustedProxies []netip.Prefix
	// DialTimeout bounds connecting to a container (default 5 s), so an
	// unreachable upstream answers 502 instead of hanging. A refused or
	// unreachable dial is tried again for up to 3 s (retryDial).
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a container's response
	// headers (default 60 s; streams and websockets are not limited once
	// their headers arrived).
	ResponseHeaderTimeout time.Duration
	// TouchEvery throttles Touch (default 1 s): per container for
	// requests, per connection for websocket reads and writes; negative
	// reports every request, read and write.
	TouchEvery time.Duration
	// Transport replaces the default upstream transport (tests).
	Transport http.RoundTripper
}

// Router is the built-in router. It is an http.Handler for the route paths.
type Router struct {
	o      Options
	log    *slog.Logger
	clock  idepool.Clock
	secret []byte
	rp     *httputil.ReverseProxy
	// httpsPublic: PublicURL is https, so every cookie is Secure.
	httpsPublic bool
	// frameCSP is the frame-ancestors policy of the IDE routes.
	frameCSP string

	mu        sync.Mutex
	tokens    map[string]tokenEntry
	lastSweep time.Time

	// The hot path's caches (hotpath.go).
	profiles        atomic.Pointer[profileTable]
	verifiedCookies cookieCache
	touched         sync.Map // container id → *atomic.Int64, unix ns of the last Touch
	touchSweep      atomic.Int64

	stats struct {
		requests, upgrades, wsReads, wsWrites, bytesIn, bytesOut atomic.Int64
	}
}

var _ http.Handler = (*Router)(nil)

type tokenEntry struct {
	id         string
	generation int64
	expires    time.Time
}

// New returns a Router. o.Backend is required.
func New(o Options) *Router {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = 5 * time.Minute
	}
	if o.CookieTTL <= 0 {
		o.CookieTTL = 12 * time.Hour
	}
	if o.CookieSameSite == 0 {
		o.CookieSameSite = http.SameSiteLaxMode
		if len(o.FrameAncestors) > 0 {
			o.CookieSameSite = http.SameSiteNoneMode
		}
	}
	if o.TrustedProxies == nil {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = 60 * time.Second
	}
	if o.TouchEvery == 0 {
		o.TouchEvery = time.Second
	}
	o.PublicURL = strings.TrimRight(o.PublicURL, "/")
	rt := &Router{o: o, log: o.Logger, clock: o.Clock, tokens: map[string]tokenEntry{},
		httpsPublic: strings.HasPrefix(strings.ToLower(o.PublicURL), "https://"),
		frameCSP:    frameAncestorsCSP(o.FrameAncestors)}
	if o.CookieSameSite == http.SameSiteNoneMode && !rt.httpsPublic && !o.CookieSecure {
		rt.log.Warn("proxy: route cookies are SameSite=None, which browsers accept only with Secure, i.e. over HTTPS; PUBLIC_URL is not https")
	}
	rt.secret = o.Secret
	if len(rt.secret) == 0 {
		rt.secret = make([]byte, 32)
		rand.Read(rt.secret)
		rt.log.Warn("proxy: no cookie secret configured; route cookies will not survive a restart")
	} else if len(rt.secret) < 32 {
		rt.log.Warn("proxy: cookie secret shorter than 32 bytes")
	}
	tr := o.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy: nil, // containers are never reached through an HTTP proxy
			DialContext: retryDial{
				dial:   (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
				budget: 3 * time.Second,
			}.DialContext,
			// Every route of a container is one host, and a busy IDE keeps
			// many requests in flight: with fewer idle connections kept per
			// host than requests in flight, each burst closes the surplus
			// and dials it again (dials, TIME_WAIT sockets, slower answers).
			// Traefik keeps 200 per host.
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			// The client's Accept-Encoding goes through as it came: a
			// proxy must not ask for gzip on its own and then unpack it.
			DisableCompression:    true,
			ExpectContinueTimeout: time.Second,
			ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		}
	}
	rt.rp = &httputil.ReverseProxy{
		Rewrite:   rt.rewrite,
		Transport: tr,
		// ReverseProxy flushes every write at once where it matters:
		// event streams and answers of unknown length (streams, long
		// polls, chunked). An answer of known length is flushed at least
		// every 100 ms (as Traefik does): flushing each of its writes at
		// once cost a goroutine and an extra write per request.
		FlushInterval:  100 * time.Millisecond,
		BufferPool:     &bufferPool{},
		ErrorHandler:   rt.upstreamError,
		ModifyResponse: rt.modifyResponse,
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	return rt
}

// bufferPool lends ReverseProxy its copy buffers: without one it allocates
// 32 KiB per request, most of the router's garbage.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// Stats are the router's counters since it started.
type Stats struct {
	Requests int64 `json:"requests"`
	Upgrades int64 `json:"upgrades"`
	// WSReads and WSWrites count reads and writes on hijacked (websocket)
	// connections: client → container and container → client.
	WSReads  int64 `json:"wsReads"`
	WSWrites int64 `json:"wsWrites"`
	BytesIn  int64 `json:"bytesIn"`
	BytesOut int64 `json:"bytesOut"`
}

// Stats returns the counters.
func (rt *Router) Stats() Stats {
	return Stats{
		Requests: rt.stats.requests.Load(), Upgrades: rt.stats.upgrades.Load(),
		WSReads: rt.stats.wsReads.Load(), WSWrites: rt.stats.wsWrites.Load(),
		BytesIn: rt.stats.bytesIn.Load(), BytesOut: rt.stats.bytesOut.Load(),
	}
}

// target is where a request goes, found by resolve.
type target struct {
	route     idepool.Route
	container idepool.Container
	endpoint  string
	prefix    string // "/<route>/<id>"
	rest      string // escaped path after the prefix ("" when none)
}

type ctxTarget struct{}

// parsePath splits "/<route>/<id>[/rest]" (escaped path).
func parsePath(escaped string) (route, id, rest string, ok bool) {
	p, found := strings.CutPrefix(escaped, "/")
	if !found {
		return "", "", "", false
	}
	route, p, found = strings.Cut(p, "/")
	if !found || route == "" {
		return "", "", "", false
	}
	id, rest, found = strings.Cut(p, "/")
	if found {
		rest = "/" + rest
	}
	return route, id, rest, id != ""
}

// resolve finds the container and route a path names. Unknown ids, unknown
// routes and containers not claimed (warm, stopping) are 404; one a cold
// start gave a user and still being created is 503.
func (rt *Router) resolve(escapedPath string) (target, error) {
	route, id, rest, ok := parsePath(escapedPath)
	if !ok || !idepool.ValidID(id) {
		return target{}, idepool.Errorf(idepool.ERouteNotFound, "not found")
	}
	c, ok := rt.o.Backend.Lookup(id)
	if ok && c.Workspace != nil && (c.State == idepool.StateCreating || c.State == idepool.StateStarting) {
		// Given to a user by a cold start, not running yet: its link will
		// work soon (the token is not spent here).
		return target{}, idepool.Errorf(idepool.EUnavailable, "container %s is starting", id)
	}
	if !ok || !c.State.Claimed() {
		return target{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	prof, _ := rt.profile(c.Profile)
	r, ok := prof.Route(route)
	if !ok {
		return target{}, idepool.Errorf(idepool.ERouteNotFound, "container %s has no route %q", id, route)
	}
	return target{route: r, container: c, endpoint: c.Endpoints[route], prefix: "/" + route + "/" + id, rest: rest}, nil
}

// Match reports whether path has the shape of a route path of a known
// container, so a server can decide to hand a request to the router.
func (rt *Router) Match(path string) bool {
	_, id, _, ok := parsePath(path)
	if !ok || !idepool.ValidID(id) {
		return false
	}
	_, ok = rt.o.Backend.Lookup(id)
	return ok
}

// ServeHTTP serves /<route>/<id>/...
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt.stats.requests.Add(1)
	t, err := rt.resolve(r.URL.EscapedPath())
	if err != nil {
		if rt.redirectReplaced(w, r, err) {
			return
		}
		rt.writeError(w, r, err)
		return
	}
	id := t.container.ID
	if t.rest == "" {
		// /code/<id> → /code/<id>/ (query kept) so relative links in the
		// workload resolve.
		u := *r.URL
		u.Path, u.RawPath = r.URL.Path+"/", ""
		rt.ownHeaders(w.Header())
		http.Redirect(w, r, u.RequestURI(), http.StatusFound)
		return
	}
	// Parsing the query costs a map per request: only a query can hold a token.
	if r.URL.RawQuery != "" {
		if q := r.URL.Query(); q.Has("token") {
			rt.exchange(w, r, t.container, q.Get("token"), r.TLS != nil || rt.forwardedHTTPS(r), stripToken(r.URL))
			return
		}
	}
	if !rt.cookieOK(r, t.container) {
		rt.writeError(w, r, idepool.Errorf(idepool.EUnauthorized, "no valid route cookie for container %s: open the URL from the start response", id))
		return
	}
	if t.endpoint == "" {
		rt.writeError(w, r, idepool.Errorf(idepool.EUnavailable, "route %s of container %s has no endpoint yet", t.route.Name, id))
		return
	}
	rt.touch(id)
	if r.Header.Get("Upgrade") != "" {
		rt.stats.upgrades.Add(1)
		w = &hijackCounter{ResponseWriter: w, rt: rt, id: id}
	}
	rt.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxTarget{}, t)))
}

// exchange redeems a one-time token: a cookie and a redirect to the URL
// without the token. A request with an invalid token but a valid cookie is
// just redirected (a reload of the original link keeps working).
func (rt *Router) exchange(w http.ResponseWriter, r *http.Request, c idepool.Container, tok string, secure bool, clean string) {
	// The token URL must not leak through Referer or caches.
	rt.ownHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if rt.redeem(tok, c) {
		http.SetCookie(w, rt.cookie(c, secure))
		http.Redirect(w, r, clean, http.StatusFound)
		return
	}
	if rt.cookieOK(r, c) {
		http.Redirect(w, r, clean, http.StatusFound)
		return
	}
	rt.writeError(w, r, idepool.Errorf(idepool.EUnauthorized, "invalid or expired route token"))
}

// stripToken returns u's path and query without the token parameter.
func stripToken(u *url.URL) string {
	q := u.Query()
	q.Del("token")
	out := url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: q.Encode()}
	return out.RequestURI()
}

// rewrite builds the upstream request: prefix stripped (unless KeepPrefix),
// X-Forwarded-* set, the token and every idepool cookie removed.
func (rt *Router) rewrite(pr *httputil.ProxyRequest) {
	t, _ := pr.In.Context().Value(ctxTarget{}).(target)
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = t.endpoint
	if !t.route.KeepPrefix {
		rest := t.rest
		if rest == "" {
			rest = "/"
		}
		if p, err := url.PathUnescape(rest); err == nil {
			out.URL.Path, out.URL.RawPath = p, rest
		} else {
			out.URL.Path, out.URL.RawPath = rest, ""
		}
	}
	if out.URL.RawQuery != "" && out.URL.Query().Has("token") {
		q := out.URL.Query()
		q.Del("token")
		out.URL.RawQuery = q.Encode()
	}
	pr.SetXForwarded()
	out.Header.Set("X-Forwarded-Prefix", t.prefix)
	stripCookies(out.Header)
	// The workload is not ours to authenticate to with an API key.
	out.Header.Del("Authorization")
}

// stripCookies removes every idepool_* cookie (any container's) and keeps
// the others byte for byte.
func stripCookies(h http.Header) {
	lines := h.Values("Cookie")
	if len(lines) == 0 {
		return
	}
	var keep []string
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			name, _, _ := strings.Cut(part, "=")
			if strings.HasPrefix(strings.TrimSpace(name), cookiePrefix) {
				continue
			}
			keep = append(keep, part)
		}
	}
	h.Del("Cookie")
	if len(keep) > 0 {
		h.Set("Cookie", strings.Join(keep, "; "))
	}
}

func (rt *Router) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nothing to answer
	}
	t, _ := r.Context().Value(ctxTarget{}).(target)
	rt.log.Warn("proxy: upstream error", slog.String("container", t.container.ID), slog.String("route", t.route.Name),
		slog.String("error", err.Error()))
	rt.writeError(w, r, &idepool.Error{Code: idepool.EBadGateway, Message: "the container did not answer"})
}

// writeError answers in the API's envelope {error:{code,message},timestamp,path},
// or, to a browser loading a page, with a page a person can act on.
func (rt *Router) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if htmlpage.WantsHTML(r) {
		rt.writePage(w, r, err)
		return
	}
	code := idepool.ErrorCode(err)
	body, _ := json.Marshal(map[string]any{
		"error":     map[string]any{"code": code, "message": idepool.ErrorMessage(err)},
		"timestamp": rt.clock.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		"path":      r.URL.Path,
	})
	h := w.Header()
	rt.ownHeaders(h)
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code.HTTPStatus())
	w.Write(append(body, '\n'))
}

// replacements is implemented by a Backend that replaces unhealthy
// containers in place (pool.Manager).
type replacements interface {
	ReplacedBy(id string) (string, bool)
}

// redirectReplaced sends the user of a replaced container to its
// replacement: a holder of the old container's cookie gets a 307 to the new
// container's route with a fresh one-time token (which the router then
// swaps for the new cookie). It reports whether it answered.
func (rt *Router) redirectReplaced(w http.ResponseWriter, r *http.Request, err error) bool {
	rb, ok := rt.o.Backend.(replacements)
	if !ok || idepool.ErrorCode(err) != idepool.ENotFound {
		return false
	}
	route, old, rest, ok := parsePath(r.URL.EscapedPath())
	if !ok {
		return false
	}
	newID, ok := rb.ReplacedBy(old)
	if !ok {
		return false
	}
	c, ok := rt.o.Backend.Lookup(newID)
	if !ok || !c.State.Claimed() || !rt.cookieSignedFor(r, old) {
		return false
	}
	tok, terr := rt.Mint(c.ID, c.Generation)
	if terr != nil {
		return false
	}
	u := *r.URL
	u.Path, u.RawPath = "/"+route+"/"+newID+"/"+strings.TrimPrefix(rest, "/"), ""
	q := u.Query()
	q.Del("token")
	q.Set("token", tok)
	u.RawQuery = q.Encode()
	rt.ownHeaders(w.Header())
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.RequestURI(), http.StatusTemporaryRedirect)
	return true
}
