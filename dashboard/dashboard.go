// Package dashboard is idepool's web dashboard at /dashboard: a live view of
// the pools (with a chart of the last hour), the containers, the host and
// node resources and the event log, with actions to stop a container and
// change a pool target.
//
// Every endpoint but the sign-in form needs a session: an API key, checked
// once, is exchanged for an HttpOnly, SameSite=Strict cookie naming a
// server-side session. The key is never kept in the page or in JavaScript.
// Actions need the session's CSRF token. Pages are server-rendered from
// embedded templates with a little plain JavaScript; nothing is fetched from
// elsewhere, so it works offline.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/idepool/idepool"
)

// Prefix is where the dashboard is mounted.
const Prefix = "/dashboard"

// Orchestrator is what the dashboard shows and drives (implemented by
// *pool.Manager).
type Orchestrator interface {
	List(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error)
	Pools() []idepool.PoolStatus
	Stop(ctx context.Context, id, reason string) (idepool.Container, error)
	SetTarget(ctx context.Context, profile string, n int) error
	Profiles() []idepool.Profile
}

// EventSource is the event bus (implemented by *events.Bus).
type EventSource interface {
	// Subscribe streams the kept events after afterID, then live ones,
	// until ctx ends (the channel is then closed).
	Subscribe(ctx context.Context, afterID uint64) (<-chan idepool.Event, error)
	LastID() uint64
}

// Resource is one machine's figures: the host (process runtime) or a Swarm
// node. Zero figures are shown as unknown.
type Resource struct {
	Name        string  `json:"name"`
	Role        string  `json:"role,omitempty"`  // host, manager, worker
	State       string  `json:"state,omitempty"` // ready, down, drain ...
	CPUCores    float64 `json:"cpuCores,omitempty"`
	CPUPercent  float64 `json:"cpuPercent"` // 0 is a figure: shown when CPUCores is known
	MemoryTotal int64   `json:"memoryTotal,omitempty"`
	MemoryUsed  int64   `json:"memoryUsed,omitempty"`
	DiskTotal   int64   `json:"diskTotal,omitempty"`
	DiskUsed    int64   `json:"diskUsed,omitempty"`
	Containers  int     `json:"containers,omitempty"`
}

// Options configure the dashboard.
type Options struct {
	Orchestrator Orchestrator // required
	// CheckKey reports whether an API key is valid, in constant time
	// (KeyChecker builds one). Nil refuses every sign-in.
	CheckKey func(key string) bool
	// Events feeds the event log and prompt refreshes; nil: the view is
	// refreshed every few seconds only, without a log.
	Events EventSource
	// Resources returns host and node figures; nil shows none.
	Resources func(ctx context.Context) []Resource
	Logger    *slog.Logger
	Clock     idepool.Clock
	// SessionTTL is how long a sign-in lasts (default 12 h).
	SessionTTL time.Duration
	// MaxSessions bounds the session store (default 1000; the oldest goes).
	MaxSessions int
	// MaxStreams bounds concurrent live views (default 100).
	MaxStreams int
	// SampleEvery is the chart's sampling period (default 10 s), History
	// its span (default 1 h).
	SampleEvery time.Duration
	History     time.Duration
	// SnapshotEvery is the longest time between two refreshes of a live
	// view (default 2 s); events refresh it sooner.
	SnapshotEvery time.Duration
	Version       string
}

// Dashboard is the /dashboard handler. Run samples the pools for the charts.
type Dashboard struct {
	o        Options
	log      *slog.Logger
	clock    idepool.Clock
	sessions *sessions
	tmpl     *template.Template
	static   map[string]staticFile
	mux      *http.ServeMux
	logins   *rate.Limiter
	charts   *history

	streamsMu sync.Mutex
	streams   int

	closing   chan struct{} // closed by Close: live views end
	closeOnce sync.Once
}

var _ http.Handler = (*Dashboard)(nil)

//go:embed templates/*.html static/*
var assets embed.FS

type staticFile struct {
	body        []byte
	contentType string
}

// New returns the dashboard. It panics when o.Orchestrator is nil or the
// embedded templates do not parse (a build mistake).
func New(o Options) *Dashboard {
	if o.Orchestrator == nil {
		panic("dashboard: Options.Orchestrator is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.CheckKey == nil {
		o.CheckKey = func(string) bool { return false }
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1000
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 100
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = 10 * time.Second
	}
	if o.History <= 0 {
		o.History = time.Hour
	}
	if o.SnapshotEvery <= 0 {
		o.SnapshotEvery = 2 * time.Second
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	d := &Dashboard{
		o: o, log: o.Logger, clock: o.Clock,
		sessions: newSessions(o.Clock, o.SessionTTL, o.MaxSessions),
		tmpl:     template.Must(template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html")),
		static:   map[string]staticFile{},
		mux:      http.NewServeMux(),
		// Sign-in attempts: a burst of 10, then 2 a second, for everyone
		// together: guessing keys stays hopeless, people are not slowed.
		logins:  rate.NewLimiter(2, 10),
		charts:  newHistory(int(o.History / o.SampleEvery)),
		closing: make(chan struct{}),
	}
	for name, ct := range map[string]string{"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"} {
		b, err := assets.ReadFile("static/" + name)
		if err != nil {
			panic("dashboard: " + err.Error())
		}
		d.static[name] = staticFile{body: b, contentType: ct}
	}
	for _, rt := range d.routes() {
		h := rt.handler
		if !rt.public {
			h = d.requireSession(rt.sessionHandler, rt.csrf)
		}
		d.mux.Handle(rt.method+" "+rt.path, h)
	}
	// Anything else under the prefix: the session first, then 404, so
	// nothing about the dashboard shows to strangers.
	d.mux.Handle(Prefix+"/", d.requireSession(func(w http.ResponseWriter, r *http.Request, s *session) {
		http.Error(w, "not found", http.StatusNotFound)
	}, false))
	return d
}

// Close ends every live view (their SSE streams would otherwise hold an
// http.Server's Shutdown until its deadline). Run calls it when its context
// ends. The dashboard keeps answering other requests.
func (d *Dashboard) Close() {
	d.closeOnce.Do(func() { close(d.closing) })
}

// route is one dashboard endpoint. Only public routes are served without a
// session; the test walks this table.
type route struct {
	method, path   string
	public         bool
	csrf           bool
	handler        http.HandlerFunc                                         // public routes
	sessionHandler func(w http.ResponseWriter, r *http.Request, s *session) // the others
}

func (d *Dashboard) routes() []route {
	return []route{
		{method: "GET", path: Prefix + "/login", public: true, handler: d.handleLoginPage},
		{method: "POST", path: Prefix + "/login", public: true, handler: d.handleLogin},
		{method: "GET", path: Prefix, sessionHandler: d.handlePage},
		{method: "GET", path: Prefix + "/{$}", sessionHandler: d.handlePage},
		{method: "POST", path: Prefix + "/logout", csrf: true, sessionHandler: d.handleLogout},
		{method: "GET", path: Prefix + "/stream", sessionHandler: d.handleStream},
		{method: "GET", path: Prefix + "/state", sessionHandler: d.handleState},
		{method: "GET", path: Prefix + "/static/{name}", sessionHandler: d.handleStatic},
		{method: "POST", path: Prefix + "/containers/{id}/stop", csrf: true, sessionHandler: d.handleStop},
		{method: "POST", path: Prefix + "/pools/{profile}/target", csrf: true, sessionHandler: d.handleTarget},
	}
}

// ServeHTTP serves /dashboard and everything under it.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: with no-referrer browsers send
	// "Origin: null" on form posts, which sameOrigin must refuse.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if r.Method == http.MethodPost && !sameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	d.mux.ServeHTTP(w, r)
}

// sameOrigin refuses POSTs a browser sent from another site (the Origin
// header names it); requests without Origin (curl, old browsers) are left
// to the CSRF token.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	host := r.Host
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" {
		host = fh
	}
	return strings.EqualFold(u.Host, host)
}

// requireSession lets a request through only with a live session (and,
// with csrf, the session's token). Without one: a page navigation goes to
// the sign-in form, anything else gets 401.
func (d *Dashboard) requireSession(next func(http.ResponseWriter, *http.Request, *session), csrf bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var s *session
		if c, err := r.Cookie(CookieName); err == nil {
			s, _ = d.sessions.get(c.Value)
		}
		if s == nil {
			if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
				http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
				return
			}
			writeJSONError(w, http.StatusUnauthorized, "sign in first: "+Prefix+"/login")
			return
		}
		if csrf {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !checkCSRF(r, s) {
				writeJSONError(w, http.StatusForbidden, "missing or wrong CSRF token: reload the page")
				return
			}
		}
		next(w, r, s)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// wantsJSON tells the page's fetch calls from plain form posts.
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

type loginData struct {
	Error   string
	Version string
	Nonce   string
}

// renderLogin shows the sign-in form. Its few styles are inline, allowed by
// a per-response nonce, because the stylesheet needs a session.
func (d *Dashboard) renderLogin(w http.ResponseWriter, status int, msg string) {
	nonce := randomHex(16)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	d.render(w, status, "login.html", loginData{Error: msg, Version: d.o.Version, Nonce: nonce})
}

func (d *Dashboard) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		if _, ok := d.sessions.get(c.Value); ok {
			http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
			return
		}
	}
	d.renderLogin(w, http.StatusOK, "")
}

func (d *Dashboard) handleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if !d.logins.Allow() {
		d.renderLogin(w, http.StatusTooManyRequests, "Too many sign-in attempts: wait a few seconds.")
		return
	}
	key := strings.TrimSpace(r.PostFormValue("key"))
	if !d.o.CheckKey(key) {
		d.log.Warn("dashboard sign-in refused", "remote", r.RemoteAddr)
		d.renderLogin(w, http.StatusUnauthorized, "That API key was refused.")
		return
	}
	// A sign-in replaces the browser's previous session (no fixation).
	if c, err := r.Cookie(CookieName); err == nil {
		if old, ok := d.sessions.get(c.Value); ok {
			d.sessions.remove(old)
		}
	}
	s, value := d.sessions.create(keyID(key))
	http.SetCookie(w, sessionCookie(r, value, d.o.SessionTTL))
	d.log.Info("dashboard sign-in", "session", s.short(), "key_id", s.keyID, "remote", r.RemoteAddr)
	http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
}

func (d *Dashboard) handleLogout(w http.ResponseWriter, r *http.Request, s *session) {
	d.sessions.remove(s)
	http.SetCookie(w, clearCookie(r))
	d.log.Info("dashboard sign-out", "session", s.short())
	http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
}

type pageData struct {
	Snapshot  snapshot
	ChartSpan string
	CSRF      string
	After     uint64
	Version   string
	KeyID     string
}

func (d *Dashboard) handlePage(w http.ResponseWriter, r *http.Request, s *session) {
	if r.URL.Path == Prefix {
		http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var after uint64
	if d.o.Events != nil {
		// The live view replays the last few events into the log.
		if last := d.o.Events.LastID(); last > 50 {
			after = last - 50
		}
	}
	span := "Last hour"
	if d.o.History != time.Hour {
		span = "Last " + strings.TrimSuffix(strings.TrimSuffix(d.o.History.String(), "0s"), "0m")
	}
	d.render(w, http.StatusOK, "page.html", pageData{Snapshot: d.snapshot(ctx), ChartSpan: span, CSRF: s.csrf, After: after, Version: d.o.Version, KeyID: s.keyID})
}

func (d *Dashboard) handleState(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	writeJSON(w, http.StatusOK, d.snapshot(ctx))
}

func (d *Dashboard) handleStatic(w http.ResponseWriter, r *http.Request, s *session) {
	f, ok := d.static[r.PathValue("name")]
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Cache-Control", "private, no-cache")
	w.Write(f.body)
}

func (d *Dashboard) handleStop(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !idepool.ValidID(id) {
		d.actionDone(w, r, http.StatusNotFound, "no such container")
		return
	}
	// A stop flushes the workspace first, which can take a while.
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Minute)
	defer cancel()
	_, err := d.o.Orchestrator.Stop(ctx, id, idepool.ReasonManual)
	d.log.Info("dashboard stop", "session", s.short(), "key_id", s.keyID, "container", id, "ok", err == nil)
	if err != nil {
		d.actionDone(w, r, statusOf(err), fmt.Sprintf("stop %s: %s", id, idepool.ErrorMessage(err)))
		return
	}
	d.actionDone(w, r, http.StatusOK, "stopped "+id)
}

// maxTarget matches the REST API's bound.
const maxTarget = 1000

func (d *Dashboard) handleTarget(w http.ResponseWriter, r *http.Request, s *session) {
	profile := r.PathValue("profile")
	n, err := strconv.Atoi(strings.TrimSpace(r.PostFormValue("target")))
	if err != nil || n < 0 || n > maxTarget {
		d.actionDone(w, r, http.StatusBadRequest, fmt.Sprintf("target: want a number from 0 to %d", maxTarget))
		return
	}
	known := false
	for _, p := range d.o.Orchestrator.Profiles() {
		known = known || p.Name == profile
	}
	if !known {
		d.actionDone(w, r, http.StatusNotFound, "no such profile")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	err = d.o.Orchestrator.SetTarget(ctx, profile, n)
	d.log.Info("dashboard pool target", "session", s.short(), "key_id", s.keyID, "profile", profile, "target", n, "ok", err == nil)
	if err != nil {
		d.actionDone(w, r, statusOf(err), fmt.Sprintf("pool %s: %s", profile, idepool.ErrorMessage(err)))
		return
	}
	d.actionDone(w, r, http.StatusOK, fmt.Sprintf("pool %s: target %d", profile, n))
}

// actionDone answers an action: JSON for the page's scripts, a redirect
// back to the page for a plain form post.
func (d *Dashboard) actionDone(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if wantsJSON(r) {
		if status == http.StatusOK {
			writeJSON(w, status, map[string]string{"message": msg})
		} else {
			writeJSONError(w, status, msg)
		}
		return
	}
	if status != http.StatusOK {
		http.Error(w, msg, status)
		return
	}
	http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
}

// statusOf is the page's status for an orchestrator error: its code's, and
// 504 for a bare deadline (which carries no code).
func statusOf(err error) int {
	st := idepool.ErrorCode(err).HTTPStatus()
	if st == http.StatusInternalServerError && errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return st
}

func (d *Dashboard) render(w http.ResponseWriter, status int, name string, data any) {
	var b strings.Builder
	if err := d.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		d.log.Error("dashboard template", "template", name, "error", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, b.String())
}
