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
	"strconv"
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
	"github.com/idepool/idepool/ide"
	"github.com/idepool/idepool/idle"
	"github.com/idepool/idepool/internal/dirlock"
	"github.com/idepool/idepool/internal/peerset"
	"github.com/idepool/idepool/metrics"
	"github.com/idepool/idepool/pool"
	"github.com/idepool/idepool/proxy"
	"github.com/idepool/idepool/runtime/fake"
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
	closers  []func()
	lock     *dirlock.Lock
	startup  startup
}

// New builds a server from its configuration: it prepares DATA_DIR, the API
// key, the runtime and every part, and recovers the runtime's containers.
func New(ctx context.Context, cfg config.Config, opts Options) (_ *Server, err error) {
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

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create DATA_DIR: %w", err)
	}
	lock, err := lockDataDir(cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	s.lock = lock // released last, in Serve
	keys := cfg.APIKeys
	if len(keys) == 0 {
		key, generated, err := config.EnsureAPIKey(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("API key: %w", err)
		}
		s.startup.KeySource = "DATA_DIR/" + config.APIKeyFile
		s.startup.KeyGenerated = generated
		if generated {
			// Printed once, to stdout only, never to the log.
			fmt.Fprintf(opts.Stdout, "idepool: no API_KEY set; generated one and stored it in %s:\n\n    %s\n\n",
				filepath.Join(cfg.DataDir, config.APIKeyFile), key)
		}
		keys = []string{key}
	}
	secret, err := readSecret(cfg.DataDir, "router-secret")
	if err != nil {
		return nil, fmt.Errorf("router secret: %w", err)
	}
	if cfg.Runtime == config.RuntimeProcess {
		// The default profile runs the IDE installed here (EMBEDDED_IDE).
		choice, err := ide.Detect(ctx, ide.Options{Want: cfg.EmbeddedIDE})
		if err != nil {
			return nil, err
		}
		cfg.IDE, s.cfg.IDE = choice, choice
	}
	profiles, err := cfg.Profiles()
	if err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	if cfg.Runtime == config.RuntimeProcess {
		s.startup.IDE = ide.Describe(profiles[0], cfg.IDE)
	}
	if err := httpapi.CheckRouteNames(profiles); err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	if err := httpapi.CheckOrigins(cfg.CORSOrigins); err != nil {
		return nil, err
	}
	if err := proxy.CheckFrameAncestors(cfg.FrameAncestors); err != nil {
		return nil, err
	}

	ln := opts.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Addr())
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Addr(), err)
		}
	}
	s.listener = ln
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		_ = lock.SetPort(a.Port) // only a name for whoever is refused
	}
	agentURL := cfg.AgentURL
	if opts.Listener != nil && cfg.Runtime != config.RuntimeSwarm {
		// Tests listen on a random port; agents must dial that one.
		agentURL = "http://" + ln.Addr().String()
	}
	publicURL := cfg.PublicURL
	if opts.Listener != nil && cfg.PublicURL == "" {
		publicURL = "http://" + ln.Addr().String()
	}

	s.startup.URL = strings.TrimSuffix(publicURL, "/")
	if s.startup.URL == "" {
		s.startup.URL = "http://" + ln.Addr().String()
	}
	creds, s3Endpoint := cfg.S3Credentials(), cfg.S3Endpoint
	var buckets *bucketEnsurer
	if creds.IsZero() && s3Endpoint == "" && cfg.Runtime != config.RuntimeSwarm {
		store, err := startEmbeddedS3(ctx, cfg, log)
		if err != nil {
			ln.Close()
			return nil, err
		}
		s.closers = append(s.closers, func() { _ = store.Stop() })
		creds = idepool.Credentials{AccessKeyID: store.accessKey, SecretAccessKey: store.secretKey}
		s3Endpoint = store.Endpoint
		buckets = &bucketEnsurer{create: store.EnsureBucket, done: map[string]bool{}}
		s.startup.Store = "embedded"
	} else {
		s.startup.Store = "s3"
	}
	s.startup.StoreEndpoint = s3Endpoint

	rt, err := newRuntime(ctx, cfg, opts, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.rt = rt
	if c, ok := rt.(interface{ Close() error }); ok {
		s.closers = append(s.closers, func() { _ = c.Close() })
	}

	hubBinding := &lateBinding[*pool.Manager]{}
	heartbeats := health.NewHeartbeatTracker(idepool.SystemClock{})
	s.hub = control.NewHub(control.Options{
		Verifier: verifierFunc(func(id, token string) bool {
			if m := hubBinding.get(); m != nil {
				return m.VerifyAgent(id, token)
			}
			return false
		}),
		Observer: health.Tee(observerFunc(func(r idepool.AgentReport) {
			if m := hubBinding.get(); m != nil {
				m.AgentReport(r)
			}
		}), heartbeats),
		Logger: log.With("part", "control"),
	})

	s.bus = events.New(events.Options{})
	var nodes capacity.NodeSource
	if sw, ok := rt.(*swarm.Runtime); ok {
		// On Swarm, admission counts every node's capacity minus the
		// reservations of what runs there, as the scheduler does.
		nodes = capacity.NodeSourceFunc(func(ctx context.Context) ([]capacity.Node, error) {
			ns, err := sw.Nodes(ctx)
			out := make([]capacity.Node, 0, len(ns))
			for _, n := range ns {
				out = append(out, capacity.Node(n))
			}
			return out, err
		})
	}
	s.admitter = capacity.New(capacity.Options{
		Nodes:            nodes,
		MaxMemoryPercent: float64(cfg.MaxMemoryPercent),
		MaxCPUPercent:    float64(cfg.MaxCPUPercent),
		Host:             opts.CapacityHost,
		SampleInterval:   opts.CapacityInterval,
		Logger:           log.With("part", "capacity"),
	})
	var admitter pool.Admitter = s.admitter
	if cfg.Runtime != config.RuntimeSwarm {
		admitter = processAdmitter{s.admitter}
	}
	s.metrics = metrics.New(metrics.Options{
		Pools: func() []idepool.PoolStatus {
			if m := hubBinding.get(); m != nil {
				return m.Pools()
			}
			return nil
		},
		Containers: metrics.ListerFunc(func(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error) {
			if m := hubBinding.get(); m != nil {
				return m.List(ctx, f)
			}
			return nil, 0, nil
		}),
		Capacity: func() (float64, float64) {
			snap := s.admitter.Snapshot(context.Background())
			return snap.MemoryPercent, snap.CPUPercent
		},
		Host:    s.hostFigures,
		Version: opts.Version,
		Runtime: rt.Name(),
		Process: true,
	})
	policies, err := poolPolicies(cfg)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("profiles: %w", err)
	}
	// The agents' own settings reach them through their environment (unset:
	// the agent's defaults).
	agentEnv := map[string]string{}
	if cfg.AgentOrphanTimeout > 0 {
		agentEnv[idepool.EnvOrphanTimeout] = cfg.AgentOrphanTimeout.String()
	}
	if cfg.SyncMaxDeletePercent > 0 {
		agentEnv[idepool.EnvSyncMaxDeletePercent] = strconv.Itoa(cfg.SyncMaxDeletePercent)
	}
	mgr, err := pool.New(pool.Options{
		RouteGate:          traefikGate(cfg, profiles),
		Queue:              pool.QueueOptions{Enabled: cfg.QueueEnabled, Limit: cfg.QueueLimit, Timeout: cfg.QueueTimeout},
		Policies:           policies,
		Runtime:            rt,
		Agents:             s.hub,
		Admitter:           admitter,
		Events:             events.NewFanout(s.bus, s.metrics, events.LogSink(log.With("part", "events"))),
		Profiles:           profiles,
		Deployment:         cfg.Deployment,
		AgentURL:           agentURL,
		AgentEnv:           agentEnv,
		DefaultCredentials: creds,
		S3Endpoint:         s3Endpoint,
		Logger:             log.With("part", "pool"),
		CreateTimeout:      cfg.CreateTimeout,
		FlushTimeout:       cfg.FlushTimeout,
	})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("pool: %w", err)
	}
	s.pool = mgr
	hubBinding.set(mgr)
	if cfg.Runtime == config.RuntimeSwarm {
		s.admitter.SetCommitted(mgr)
	} else {
		s.admitter.SetCommitted(processCommitted{mgr})
	}
	s.monitor = health.New(health.Options{
		Pool:       mgr,
		Replacer:   replacer{mgr},
		Heartbeats: heartbeats,
		Interval:   cfg.HealthCheckInterval,
		Timeout:    cfg.HealthCheckTimeout,
		Retries:    cfg.HealthCheckRetries,
		Logger:     log.With("part", "health"),
	})
	s.reaper = idle.New(idle.Options{
		Pool:     mgr,
		Interval: idleInterval(profiles),
		Policy:   idle.Policy{DefaultIdleTimeout: cfg.InactivityTimeout, SkipMaxAge: true},
		Logger:   log.With("part", "idle"),
	})

	s.router = proxy.New(proxy.Options{
		Backend:        mgr,
		Secret:         secret,
		PublicURL:      publicURL,
		FrameAncestors: cfg.FrameAncestors,
		CookieSameSite: proxy.SameSiteMode(cfg.CookieSameSite),
		Logger:         log.With("part", "router"),
	})
	s.dash = dashboard.New(dashboard.Options{
		Orchestrator: mgr,
		CheckKey:     dashboard.KeyChecker(keys),
		Events:       s.bus,
		Resources:    s.dashboardResources,
		Logger:       log.With("part", "dashboard"),
		Version:      opts.Version,
	})
	nets, trusted, err := agentNetworks(ctx, cfg, rt, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	bodiesPerClient := cfg.BodiesPerClient
	if bodiesPerClient == 0 {
		bodiesPerClient = -1 // 0 in the config: no bound
	}
	s.api = httpapi.New(httpapi.Options{
		AgentNetworks: nets,
		TrustedPeer:   trusted,
		Orchestrator:  timedOrchestrator{mgr, s.metrics, buckets},
		Sync:          syncControl{mgr, s.hub},
		Health:        healthReporter{s},
		Events:        s.bus.Handler(events.HandlerOptions{Error: s.apiError}),
		Metrics:       s.metrics.Handler(),
		Keys:          keys,
		URLs:          s.router,
		Logger:        log.With("part", "api"),
		MaxBodyBytes:  cfg.MaxBodyBytes,
		RateLimit:     httpapi.RateLimit{Requests: cfg.RateLimitRequests, Window: cfg.RateLimitWindow},
		CORSOrigins:   cfg.CORSOrigins,
		Version:       opts.Version,
		Fallback:      s.routes(),

		BodyTimeout:     cfg.BodyTimeout,
		BodiesPerClient: bodiesPerClient,
	})
	s.handler = s.api

	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := mgr.Recover(rctx); err != nil {
		ln.Close()
		return nil, fmt.Errorf("recover containers from the %s runtime: %w", rt.Name(), err)
	}
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
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.listener) }()
	s.logStartup(ctx)
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
	_ = s.hub.Close(shut)
	wg.Wait()
	_ = s.pool.Close()
	left := s.leftRunning()
	for _, c := range s.closers {
		c()
	}
	_ = s.lock.Close()
	s.logStopped(left)
	return err
}

func newRuntime(ctx context.Context, cfg config.Config, opts Options, log *slog.Logger) (idepool.Runtime, error) {
	switch cfg.Runtime {
	case config.RuntimeProcess:
		var user *process.User
		if cfg.ProcessUser != "off" && os.Geteuid() == 0 {
			u, err := process.ParseUser(cfg.ProcessUser)
			if err != nil {
				return nil, fmt.Errorf("PROCESS_USER: %w", err)
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
			return nil, fmt.Errorf("process runtime: %w", err)
		}
		return rt, nil
	case config.RuntimeSwarm:
		o := swarm.Options{
			Deployment: cfg.Deployment,
			Network:    cfg.SwarmNetwork,
			Router:     cfg.Router,
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
			return nil, fmt.Errorf("swarm runtime: %w", err)
		}
		if err := rt.Ping(ctx); err != nil {
			rt.Close()
			return nil, fmt.Errorf("swarm runtime: %w", err)
		}
		return rt, nil
	case config.RuntimeFake:
		return fake.New(fake.Config{Deployment: cfg.Deployment}), nil
	default:
		return nil, fmt.Errorf("RUNTIME=%s is not available in this build", cfg.Runtime)
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
// networks (AGENT_NETWORKS, or on swarm the overlay's subnets) and the
// trusted peers on them (TRUSTED_PEERS, or on swarm the discovered
// infrastructure services) that are exempt.
func agentNetworks(ctx context.Context, cfg config.Config, rt idepool.Runtime, log *slog.Logger) ([]netip.Prefix, func(context.Context, netip.Addr) bool, error) {
	nets := cfg.AgentNetworks
	type subnets interface {
		NetworkSubnets(ctx context.Context) ([]netip.Prefix, error)
	}
	if sn, ok := rt.(subnets); ok && len(nets) == 0 {
		var err error
		if nets, err = sn.NetworkSubnets(ctx); err != nil {
			return nil, nil, fmt.Errorf("the containers' network (set AGENT_NETWORKS to skip this look-up): %w", err)
		}
	}
	if len(nets) == 0 {
		return nil, nil, nil
	}
	po := peerset.Options{Names: cfg.TrustedPeers, Logger: log}
	type peerNames interface {
		PeerNames(ctx context.Context) ([]string, error)
	}
	if pn, ok := rt.(peerNames); ok && len(cfg.TrustedPeers) == 0 {
		po.NamesFunc = pn.PeerNames
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
