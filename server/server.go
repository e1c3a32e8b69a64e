// Package server wires idepool's parts together for `idepool serve`: the
// runtime, the pool, the agents' control hub, the REST API, the router and
// the embedded S3 store. It is the only package that knows them all; keeping
// the wiring out of cmd/idepool lets end-to-end tests run a real server
// in-process.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/capacity"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/control"
	"github.com/idepool/idepool/dashboard"
	"github.com/idepool/idepool/events"
	"github.com/idepool/idepool/health"
	"github.com/idepool/idepool/httpapi"
	"github.com/idepool/idepool/idle"
	"github.com/idepool/idepool/internal/memlimit"
	"github.com/idepool/idepool/internal/peerset"
	"github.com/idepool/idepool/metrics"
	"github.com/idepool/idepool/pool"
	"github.com/idepool/idepool/proxy"
	"github.com/idepool/idepool/runtime/fake"
	"github.com/idepool/idepool/runtime/kubernetes"
	"github.com/idepool/idepool/runtime/process"
	"github.com/idepool/idepool/runtime/swarm"
	"github.com/idepool/idepool/traefik"
)

// Options are what the caller of Run provides besides the configuration.
type Options struct {
	Logger  *slog.Logger
	Stdout  io.Writer // where a generated API key is printed once
	Version string
	// Listener, when set, is used instead of listening on cfg.Port (tests).
	Listener net.Listener
	// Ready, when set, receives the running server once it serves.
	Ready func(*Server)
	// AgentCommand overrides how the process runtime starts agents
	// (default: this executable + "agent").
	AgentCommand []string
	// CapacityHost replaces the host sampler (tests simulate pressure);
	// CapacityInterval is how often it is sampled (default 5 s).
	CapacityHost     capacity.HostSource
	CapacityInterval time.Duration

	// Tests only (export_test.go): wrapRuntime wraps the runtime New
	// builds (to inject its failures); failAfter names a stage after which
	// New fails.
	wrapRuntime func(idepool.Runtime) idepool.Runtime
	failAfter   string
}

// Run serves until ctx ends. Stopping the server leaves every container
// running: a restarted idepool adopts them.
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	s, err := New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// readSecretFile returns the secret in path (ROUTER_SECRET_FILE), which
// must exist, be readable by its owner only and hold 32+ characters.
func readSecretFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ROUTER_SECRET_FILE: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ROUTER_SECRET_FILE %s is readable by others (mode %v): chmod 600 it (a Docker secret: mode 0400)", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ROUTER_SECRET_FILE: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 32 {
		return nil, fmt.Errorf("ROUTER_SECRET_FILE %s: secret shorter than 32 characters", path)
	}
	return []byte(s), nil
}

// readSecret returns the secret stored in name under dir, creating it (32
// random bytes, hex, mode 0600) when absent.
func readSecret(dir, name string) ([]byte, error) {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if err == nil {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", p, err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", p, st.Mode().Perm())
		}
		s := strings.TrimSpace(string(b))
		if len(s) < 32 {
			return nil, fmt.Errorf("%s: secret too short", p)
		}
		return []byte(s), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	s := hex.EncodeToString(raw)
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", p, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("chmod %s: %w", p, err)
	}
	if _, err := tmp.WriteString(s + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return nil, fmt.Errorf("store %s: %w", p, err)
	}
	return []byte(s), nil
}

// Server is a running idepool orchestrator.
type Server struct {
	cfg      config.Config
	opts     Options
	log      *slog.Logger
	rt       idepool.Runtime
	pool     *pool.Manager
	hub      *control.Hub
	router   *proxy.Router
	api      *httpapi.Server
	bus      *events.Bus
	admitter *capacity.Admitter
	metrics  *metrics.Metrics
	monitor  *health.Monitor
	reaper   *idle.Reaper
	dash     *dashboard.Dashboard
	handler  http.Handler
	listener net.Listener
	// debug answers runtime profiles on DEBUG_ADDR; nil when unset.
	debug *debugServer
	// heartbeats is the agents' heartbeats, fed by the hub, read by the
	// health monitor.
	heartbeats *health.HeartbeatTracker
	// release releases what New built, in reverse order: the pool, the
	// hub and event bus, the listener, the store, the runtime, the lock.
	release func()
	startup startup
}

// New builds a server from its configuration: it prepares DATA_DIR, the API
// key, the runtime and every part, and recovers the runtime's containers.
// It runs its stages (builder.stages) in order; when one fails, what the
// ones before it built is released in reverse, so a failed start leaves no
// goroutine, process, listener or lock behind. New owns Options.Listener:
// a failed start closes it.
func New(ctx context.Context, cfg config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	log := opts.Logger
	s := &Server{cfg: cfg, opts: opts, log: log}
	for _, w := range cfg.Warnings {
		log.Warn("configuration", "warning", w)
	}
	// The whole configuration is for debugging; a person gets the short
	// summary once serving (logStartup).
	log.Debug("starting idepool", "version", opts.Version, "config", cfg)
	s.startup = startup{Runtime: string(cfg.Runtime), DataDir: cfg.DataDir, KeySource: "API_KEY"}
	if cfg.GCPercent > 0 {
		// Process-wide, as GOGC: serve owns its process.
		debug.SetGCPercent(cfg.GCPercent)
	}
	var rel releaser
	if ln := opts.Listener; ln != nil {
		rel.add(func() { ln.Close() })
	}
	b := &builder{s: s}
	for _, st := range b.stages() {
		release, err := st.build(ctx)
		rel.add(release)
		if err == nil && opts.failAfter == st.name {
			err = fmt.Errorf("injected failure after stage %s", st.name)
		}
		if err != nil {
			rel.release()
			return nil, err
		}
	}
	s.release = rel.release
	return s, nil
}

// apiError answers err in the API's envelope and status table (the event
// stream's errors); s.api is set before any request.
func (s *Server) apiError(w http.ResponseWriter, r *http.Request, err error) {
	s.api.WriteError(w, r, err)
}

// routes serves what is not the REST API: the agents' endpoint, Traefik's
// ForwardAuth and the container routes.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/agent/v1/connect", s.hub)
	mux.Handle("/_auth/forward", s.router.ForwardAuth())
	mux.Handle("/dashboard", s.dash)
	mux.Handle("/dashboard/", s.dash)
	mux.Handle("/", s.router)
	return mux
}

// Handler is the server's whole HTTP surface.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is where the server listens.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// DebugAddr is where runtime profiles are answered (DEBUG_ADDR); "" when
// they are not.
func (s *Server) DebugAddr() string {
	if s.debug == nil {
		return ""
	}
	return s.debug.Addr()
}

// Pool is the server's pool manager (tests).
func (s *Server) Pool() *pool.Manager { return s.pool }

// Runtime is the server's runtime (tests).
func (s *Server) Runtime() idepool.Runtime { return s.rt }

// Serve runs the pool and the HTTP server until ctx ends, then shuts down
// without touching the containers.
func (s *Server) Serve(ctx context.Context) error {
	// No ReadTimeout: it would cut websockets, event streams and long
	// uploads through the router; the API's body guard puts a deadline on
	// every body instead (REQUEST_BODY_TIMEOUT).
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.pool.Run(ctx)
	}()
	wg.Add(4)
	go func() { defer wg.Done(); _ = s.dash.Run(ctx) }()
	go func() { defer wg.Done(); s.monitor.Run(ctx) }()
	go func() { defer wg.Done(); s.reaper.Run(ctx) }()
	go func() { defer wg.Done(); s.admitter.Run(ctx, s.pool) }()
	if limit := s.cfg.GCMemoryLimit; limit > 0 {
		// Process-wide, as GOMEMLIMIT (GC_PERCENT alone lets the heap
		// grow to five times what is live): see internal/memlimit.
		l := memlimit.Start(uint64(limit), s.log.With("part", "memory"))
		wg.Add(1)
		go func() { defer wg.Done(); l.Run(ctx, 10*time.Second) }()
	}
	// The summary comes before the first answer: whoever waits for the API
	// to answer finds it in the log (the listener is bound already).
	s.logStartup(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.listener) }()
	if s.debug != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.debug.serve() }()
	}
	if s.opts.Ready != nil {
		s.opts.Ready(s)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("http server: %w", err)
	}
	cancel()
	shut, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	s.bus.Close() // ends open event streams, or Shutdown would wait for them
	_ = srv.Shutdown(shut)
	if s.debug != nil {
		s.debug.shutdown(shut)
	}
	_ = s.hub.Close(shut)
	wg.Wait()
	_ = s.pool.Close() // before counting: no create is in flight
	left := s.leftRunning()
	s.release()
	s.logStopped(left)
	return err
}

// newRuntime builds cfg's runtime and returns it with its close (which
// leaves the containers running).
func newRuntime(ctx context.Context, cfg config.Config, opts Options, log *slog.Logger) (idepool.Runtime, func(), error) {
	switch cfg.Runtime {
	case config.RuntimeProcess:
		var user *process.User
		if cfg.ProcessUser != "off" && os.Geteuid() == 0 {
			u, err := process.ParseUser(cfg.ProcessUser)
			if err != nil {
				return nil, nil, fmt.Errorf("PROCESS_USER: %w", err)
			}
			user = &u
		}
		rt, err := process.New(process.Options{
			DataDir:      cfg.DataDir,
			Deployment:   cfg.Deployment,
			AgentCommand: opts.AgentCommand,
			Nice:         cfg.ProcessNice,
			User:         user,
			Limits:       true, // where cgroups allow; the start-up line says what is not isolated
			// Local processes share the host's network: workloads listen
			// on loopback only, reachable by the router, not the LAN.
			ExtraEnv: map[string]string{"IDEPOOL_LISTEN_HOST": "127.0.0.1"},
			Logger:   log.With("part", "runtime"),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("process runtime: %w", err)
		}
		return rt, func() { _ = rt.Close() }, nil
	case config.RuntimeSwarm:
		o := swarm.Options{
			Deployment: cfg.Deployment,
			Network:    cfg.SwarmNetwork,
			Router:     cfg.Router,
			// A drained node's tasks get SIGTERM from Swarm, not a flush
			// from us: the grace must cover the agent's own flush.
			StopGracePeriod: cfg.StopGracePeriod,
			Traefik: traefik.Options{
				Domain: cfg.Domain,
				// Traefik is on the same overlay network as the agents.
				ForwardAuthURL: forwardAuthURL(cfg.AgentURL),
			},
			// Only idepool and the infrastructure may reach the route ports
			// (docs/security.md, "Network isolation").
			DiscoverPeers: len(cfg.TrustedPeers) == 0,
			Logger:        log.With("part", "runtime"),
		}
		if len(cfg.TrustedPeers) > 0 {
			if u, err := url.Parse(cfg.AgentURL); err == nil && u.Hostname() != "" {
				o.AllowedPeers = append(o.AllowedPeers, u.Hostname())
			}
			o.AllowedPeers = append(o.AllowedPeers, cfg.TrustedPeers...)
		}
		rt, err := swarm.New(o)
		if err != nil {
			return nil, nil, fmt.Errorf("swarm runtime: %w", err)
		}
		if err := rt.Ping(ctx); err != nil {
			rt.Close()
			return nil, nil, fmt.Errorf("swarm runtime: %w", err)
		}
		return rt, func() { _ = rt.Close() }, nil
	case config.RuntimeKubernetes:
		o := kubernetes.Options{
			Namespace:  cfg.KubernetesNamespace,
			Deployment: cfg.Deployment,
			// The kubelet's SIGTERM on a drain or eviction must leave the
			// agent its flush, as on Swarm.
			StopGracePeriod: cfg.StopGracePeriod,
			Logger:          log.With("part", "runtime"),
		}
		if len(cfg.TrustedPeers) > 0 {
			if u, err := url.Parse(cfg.AgentURL); err == nil && u.Hostname() != "" {
				o.AllowedPeers = append(o.AllowedPeers, u.Hostname())
			}
			o.AllowedPeers = append(o.AllowedPeers, cfg.TrustedPeers...)
		}
		if cfg.Router == config.RouterTraefik {
			o.Traefik = &kubernetes.TraefikOptions{
				Routing:         traefik.Options{Domain: cfg.Domain},
				IngressClass:    cfg.TraefikIngressClass,
				AuthMiddleware:  cfg.TraefikAuthMiddleware,
				StripMiddleware: cfg.TraefikStripMiddleware,
			}
		}
		rt, err := kubernetes.New(o)
		if err != nil {
			return nil, nil, err
		}
		if err := rt.Ping(ctx); err != nil {
			return nil, nil, fmt.Errorf("kubernetes runtime: %w", err)
		}
		return rt, nil, nil
	case config.RuntimeFake:
		return fake.New(fake.Config{Deployment: cfg.Deployment}), nil, nil
	default:
		return nil, nil, fmt.Errorf("RUNTIME=%s is not available in this build", cfg.Runtime)
	}
}

type verifierFunc func(id, token string) bool

func (f verifierFunc) VerifyAgent(id, token string) bool { return f(id, token) }

type observerFunc func(idepool.AgentReport)

func (f observerFunc) AgentReport(r idepool.AgentReport) { f(r) }

// lateBinding breaks the construction cycle between the pool (which sends
// assignments through the hub) and the hub (which reports to the pool).
type lateBinding[T any] struct {
	mu sync.RWMutex
	v  T
}

func (l *lateBinding[T]) set(v T) { l.mu.Lock(); l.v = v; l.mu.Unlock() }
func (l *lateBinding[T]) get() T  { l.mu.RLock(); defer l.mu.RUnlock(); return l.v }

// idleInterval checks often enough that a short idle timeout (a profile's,
// or INACTIVITY_TIMEOUT_SECONDS) is kept to within a quarter of itself,
// between once a second and every 15 s.
func idleInterval(profiles []idepool.Profile) time.Duration {
	d := 15 * time.Second
	for _, p := range profiles {
		if p.IdleTimeout > 0 {
			d = min(d, p.IdleTimeout/4)
		}
	}
	return max(d, time.Second)
}

// forwardAuthURL is idepool's ForwardAuth endpoint at the agents' base URL
// (ws→http, wss→https).
func forwardAuthURL(agentURL string) string {
	u := strings.TrimSuffix(agentURL, "/")
	if rest, ok := strings.CutPrefix(u, "ws://"); ok {
		u = "http://" + rest
	} else if rest, ok := strings.CutPrefix(u, "wss://"); ok {
		u = "https://" + rest
	}
	return u + "/_auth/forward"
}

// agentNetworks returns what containers may not reach of idepool: the
// networks (AGENT_NETWORKS, or the runtime's containers' network) and the
// trusted peers on them (TRUSTED_PEERS, or the runtime's discovered
// infrastructure services) that are exempt.
func agentNetworks(ctx context.Context, cfg config.Config, caps idepool.Capabilities, log *slog.Logger) ([]netip.Prefix, func(context.Context, netip.Addr) bool, error) {
	nets := cfg.AgentNetworks
	if caps.NetworkSubnets != nil && len(nets) == 0 {
		var err error
		if nets, err = caps.NetworkSubnets(ctx); err != nil {
			return nil, nil, fmt.Errorf("the containers' network (set AGENT_NETWORKS to skip this look-up): %w", err)
		}
	}
	if len(nets) == 0 {
		return nil, nil, nil
	}
	po := peerset.Options{Names: cfg.TrustedPeers, Logger: log}
	if caps.PeerNames != nil && len(cfg.TrustedPeers) == 0 {
		po.NamesFunc = caps.PeerNames
	}
	if len(po.Names) == 0 && po.NamesFunc == nil {
		return nets, nil, nil
	}
	peers := peerset.New(po)
	trusted := func(ctx context.Context, ip netip.Addr) bool {
		// Loopback is never on the containers' network; peerset allows it.
		return !ip.IsLoopback() && peers.Allowed(ctx, ip)
	}
	log.Info("containers reach only the agent endpoint and ForwardAuth", "networks", nets, "trusted_peers", cfg.TrustedPeers)
	return nets, trusted, nil
}
