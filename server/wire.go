package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	"github.com/idepool/idepool/metrics"
	"github.com/idepool/idepool/pool"
	"github.com/idepool/idepool/proxy"
)

// stage is one step of New: it builds some parts and returns how to
// release them (nil: nothing to release). A stage that fails releases its
// own partial work; New releases what the stages before it built.
type stage struct {
	name  string
	build func(ctx context.Context) (release func(), err error)
}

// builder carries what the stages hand on to each other.
type builder struct {
	s          *Server
	lock       *dirlock.Lock
	keys       []string
	secret     []byte
	profiles   []idepool.Profile
	policies   map[string]pool.Policy
	agentEnv   map[string]string
	caps       idepool.Capabilities
	creds      idepool.Credentials
	s3Endpoint string
	buckets    *bucketEnsurer // nil unless the store is embedded
	hubBinding *lateBinding[*pool.Manager]
	agentURL   string
	publicURL  string
}

// stages are New's steps, in order; each one's release runs in reverse.
func (b *builder) stages() []stage {
	return []stage{
		{"datadir", b.dataDir},           // DATA_DIR, its lock, the API key, the router secret
		{"settings", b.settings},         // the IDE, profiles and other checks of the configuration
		{"runtime", b.startRuntime},      // the runtime and what it can do
		{"store", b.startStore},          // the embedded S3 store, when no S3 is configured
		{"listener", b.listen},           // the HTTP listener and the URLs that follow from it
		{"debug", b.listenDebug},         // DEBUG_ADDR's profiles listener, when set
		{"hub", b.buildHub},              // the agents' hub and the event bus
		{"pool", b.buildPool},            // admission, metrics, the pool
		{"http", b.buildHTTP},            // the monitors, the router, the dashboard and the API
		{"recover", b.recoverContainers}, // the runtime's surviving containers, adopted
	}
}

// stageNames names the stages (tests inject a failure after each).
func stageNames() []string {
	var out []string
	for _, st := range (&builder{}).stages() {
		out = append(out, st.name)
	}
	return out
}

// releaser runs release functions in the reverse order of adding.
type releaser struct{ fs []func() }

func (r *releaser) add(f func()) {
	if f != nil {
		r.fs = append(r.fs, f)
	}
}

// release runs each function once.
func (r *releaser) release() {
	for len(r.fs) > 0 {
		f := r.fs[len(r.fs)-1]
		r.fs = r.fs[:len(r.fs)-1]
		f()
	}
}

// dataDir creates DATA_DIR, takes its lock and reads (or makes) the API
// key and the router secret.
func (b *builder) dataDir(context.Context) (func(), error) {
	s, cfg := b.s, b.s.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create DATA_DIR: %w", err)
	}
	lock, err := lockDataDir(cfg)
	if err != nil {
		return nil, err
	}
	b.lock = lock
	release := func() { _ = lock.Close() }
	b.keys = cfg.APIKeys
	if cfg.APIKeyFile != "" {
		keys, err := config.ReadAPIKeyFile(cfg.APIKeyFile)
		if err != nil {
			release()
			return nil, err
		}
		if len(b.keys) > 0 {
			s.startup.KeySource = "API_KEY and API_KEY_FILE"
		} else {
			s.startup.KeySource = "API_KEY_FILE"
		}
		b.keys = append(append([]string(nil), b.keys...), keys...)
	}
	if len(b.keys) == 0 {
		key, generated, err := config.EnsureAPIKey(cfg.DataDir)
		if err != nil {
			release()
			return nil, fmt.Errorf("API key: %w", err)
		}
		s.startup.KeySource = "DATA_DIR/" + config.APIKeyFile
		s.startup.KeyGenerated = generated
		if generated {
			// Printed once, to stdout only, never to the log.
			fmt.Fprintf(s.opts.Stdout, "idepool: no API_KEY set; generated one and stored it in %s:\n\n    %s\n\n",
				filepath.Join(cfg.DataDir, config.APIKeyFile), key)
		}
		b.keys = []string{key}
	}
	if cfg.RouterSecretFile != "" {
		// A secret that outlives this node (a Swarm secret): idepool moved
		// elsewhere still accepts every route cookie it signed.
		b.secret, err = readSecretFile(cfg.RouterSecretFile)
	} else {
		b.secret, err = readSecret(cfg.DataDir, "router-secret")
	}
	if err != nil {
		release()
		return nil, fmt.Errorf("router secret: %w", err)
	}
	return release, nil
}

// settings checks the rest of the configuration: profiles, policies, CORS
// origins, frame ancestors. It starts nothing.
func (b *builder) settings(ctx context.Context) (func(), error) {
	s := b.s
	cfg := &s.cfg
	if cfg.Runtime == config.RuntimeProcess {
		// The default profile runs the IDE installed here (EMBEDDED_IDE):
		// configuration, decided before any runtime exists.
		choice, err := ide.Detect(ctx, ide.Options{Want: cfg.EmbeddedIDE})
		if err != nil {
			return nil, err
		}
		cfg.IDE = choice
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
	if b.policies, err = poolPolicies(*cfg); err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	b.profiles = profiles
	// The agents' own settings reach them through their environment
	// (unset: the agent's defaults).
	b.agentEnv = map[string]string{}
	if cfg.AgentOrphanTimeout > 0 {
		b.agentEnv[idepool.EnvOrphanTimeout] = cfg.AgentOrphanTimeout.String()
	}
	if cfg.SyncMaxDeletePercent > 0 {
		b.agentEnv[idepool.EnvSyncMaxDeletePercent] = strconv.Itoa(cfg.SyncMaxDeletePercent)
	}
	if cfg.SyncParallelism > 0 {
		b.agentEnv[idepool.EnvSyncParallelism] = strconv.Itoa(cfg.SyncParallelism)
	}
	return nil, nil
}

// runtime builds the runtime (the process runtime starts its monitor) and
// reads its capabilities.
func (b *builder) startRuntime(ctx context.Context) (func(), error) {
	s := b.s
	rt, closeRT, err := newRuntime(ctx, s.cfg, s.opts, s.log)
	if err != nil {
		return nil, err
	}
	if s.opts.wrapRuntime != nil {
		rt = s.opts.wrapRuntime(rt)
	}
	s.rt = rt
	b.caps = rt.Capabilities()
	return closeRT, nil
}

// store starts the embedded S3 store when no S3 is configured and the
// agents share this machine's network (they reach it on loopback).
func (b *builder) startStore(ctx context.Context) (func(), error) {
	s, cfg := b.s, b.s.cfg
	b.creds, b.s3Endpoint = cfg.S3Credentials(), cfg.S3Endpoint
	if !b.creds.IsZero() || b.s3Endpoint != "" || !b.caps.HostNetwork {
		s.startup.Store, s.startup.StoreEndpoint = "s3", b.s3Endpoint
		return nil, nil
	}
	store, err := startEmbeddedS3(ctx, cfg, s.log)
	if err != nil {
		return nil, err
	}
	b.creds = idepool.Credentials{AccessKeyID: store.accessKey, SecretAccessKey: store.secretKey}
	b.s3Endpoint = store.Endpoint
	b.buckets = &bucketEnsurer{create: store.EnsureBucket, done: map[string]bool{}}
	s.startup.Store, s.startup.StoreEndpoint = "embedded", b.s3Endpoint
	return func() { _ = store.Stop() }, nil
}

// listen listens on PORT (or takes Options.Listener) and settles the URLs
// agents and people use.
func (b *builder) listen(context.Context) (func(), error) {
	s, cfg := b.s, b.s.cfg
	var release func()
	ln := s.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr()); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Addr(), err)
		}
		release = func() { ln.Close() }
	}
	s.listener = ln
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		_ = b.lock.SetPort(a.Port) // only a name for whoever is refused
	}
	b.agentURL = cfg.AgentURL
	if s.opts.Listener != nil && b.caps.HostNetwork {
		// Tests listen on a random port; agents on this machine must
		// dial that one.
		b.agentURL = "http://" + ln.Addr().String()
	}
	b.publicURL = cfg.PublicURL
	if s.opts.Listener != nil && cfg.PublicURL == "" {
		b.publicURL = "http://" + ln.Addr().String()
	}
	s.startup.URL = strings.TrimSuffix(b.publicURL, "/")
	if s.startup.URL == "" {
		s.startup.URL = "http://" + ln.Addr().String()
	}
	return release, nil
}

// buildHub builds the agents' hub (reporting to the pool, once built) and
// the event bus. Both start goroutines only for connections.
func (b *builder) buildHub(context.Context) (func(), error) {
	s := b.s
	hubBinding := &lateBinding[*pool.Manager]{}
	b.hubBinding = hubBinding
	s.heartbeats = health.NewHeartbeatTracker(idepool.SystemClock{})
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
		}), s.heartbeats),
		Logger: s.log.With("part", "control"),
	})
	s.bus = events.New(events.Options{})
	return func() {
		// Idempotent: Serve closes both first, in the order shutting
		// down needs.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.bus.Close()
		_ = s.hub.Close(ctx)
	}, nil
}

// buildPool builds the pool and what it reports through: admission and
// metrics. pool.New starts the pool's delivery goroutine.
func (b *builder) buildPool(context.Context) (func(), error) {
	s, cfg, log := b.s, b.s.cfg, b.s.log
	hubBinding := b.hubBinding
	s.admitter = capacity.New(capacity.Options{
		Nodes:            nodeSource(b.caps),
		MaxMemoryPercent: float64(cfg.MaxMemoryPercent),
		MaxCPUPercent:    float64(cfg.MaxCPUPercent),
		Host:             s.opts.CapacityHost,
		SampleInterval:   s.opts.CapacityInterval,
		Logger:           log.With("part", "capacity"),
	})
	var admitter pool.Admitter = s.admitter
	if !b.caps.Reservations {
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
		Version: s.opts.Version,
		Runtime: s.rt.Name(),
		Process: true,
	})
	mgr, err := pool.New(pool.Options{
		// idepool reaches the container itself (its router), then Traefik
		// routes it (where Traefik routes).
		RouteGate:          allGates(reachGate(b.profiles), traefikGate(cfg, b.profiles)),
		Queue:              pool.QueueOptions{Enabled: cfg.QueueEnabled, Limit: cfg.QueueLimit, Timeout: cfg.QueueTimeout},
		Policies:           b.policies,
		Runtime:            s.rt,
		Agents:             s.hub,
		Admitter:           admitter,
		Events:             events.NewFanout(s.bus, s.metrics, events.LogSink(log.With("part", "events"))),
		Profiles:           b.profiles,
		Deployment:         cfg.Deployment,
		AgentURL:           b.agentURL,
		AgentEnv:           b.agentEnv,
		DefaultCredentials: b.creds,
		S3Endpoint:         b.s3Endpoint,
		Logger:             log.With("part", "pool"),
		CreateTimeout:      cfg.CreateTimeout,
		CreateConcurrency:  cfg.CreateConcurrency,
		NodeSilence:        nodeSilence(cfg.NodeSilence),
		FlushTimeout:       cfg.FlushTimeout,
		HoldLabelWrites:    cfg.FaultHoldLabelWrites,
	})
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	s.pool = mgr
	hubBinding.set(mgr)
	if b.caps.Reservations {
		s.admitter.SetCommitted(mgr)
	} else {
		s.admitter.SetCommitted(processCommitted{mgr})
	}
	return func() {
		// Idempotent: Serve closes the pool itself before counting
		// what is left running.
		_ = mgr.Close()
	}, nil
}

// nodeSource is admission's view of the runtime's nodes: on a cluster,
// every node's capacity minus the reservations of what runs there, as its
// scheduler counts; nil on one machine.
func nodeSource(caps idepool.Capabilities) capacity.NodeSource {
	if caps.Nodes == nil {
		return nil
	}
	return capacity.NodeSourceFunc(func(ctx context.Context) ([]capacity.Node, error) {
		ns, err := caps.Nodes(ctx)
		out := make([]capacity.Node, 0, len(ns))
		for _, n := range ns {
			out = append(out, capacity.Node(n))
		}
		return out, err
	})
}

// http builds what runs beside the pool (health monitor, idle reaper) and
// the HTTP surface: router, dashboard and API. Nothing here runs before
// Serve.
func (b *builder) buildHTTP(ctx context.Context) (func(), error) {
	s, cfg, log := b.s, b.s.cfg, b.s.log
	mgr := s.pool
	s.monitor = health.New(health.Options{
		Pool:       mgr,
		Replacer:   replacer{mgr},
		Heartbeats: s.heartbeats,
		Interval:   cfg.HealthCheckInterval,
		Timeout:    cfg.HealthCheckTimeout,
		Retries:    cfg.HealthCheckRetries,
		Logger:     log.With("part", "health"),
	})
	s.reaper = idle.New(idle.Options{
		Pool:     mgr,
		Interval: idleInterval(b.profiles),
		Policy:   idle.Policy{DefaultIdleTimeout: cfg.InactivityTimeout, SkipMaxAge: true},
		Logger:   log.With("part", "idle"),
	})
	s.router = proxy.New(proxy.Options{
		Backend:        mgr,
		Secret:         b.secret,
		PublicURL:      b.publicURL,
		FrameAncestors: cfg.FrameAncestors,
		CookieSameSite: proxy.SameSiteMode(cfg.CookieSameSite),
		Logger:         log.With("part", "router"),
	})
	s.dash = dashboard.New(dashboard.Options{
		Orchestrator: mgr,
		CheckKey:     dashboard.KeyChecker(b.keys),
		Events:       s.bus,
		Resources:    s.dashboardResources,
		Logger:       log.With("part", "dashboard"),
		Version:      s.opts.Version,
	})
	nets, trusted, err := agentNetworks(ctx, cfg, b.caps, log)
	if err != nil {
		return nil, err
	}
	bodiesPerClient := cfg.BodiesPerClient
	if bodiesPerClient == 0 {
		bodiesPerClient = -1 // 0 in the config: no bound
	}
	s.api = httpapi.New(httpapi.Options{
		AgentNetworks: nets,
		TrustedPeer:   trusted,
		Orchestrator:  &timedOrchestrator{mgr, s.metrics, b.buckets},
		Sync:          syncControl{mgr, s.hub},
		Health:        healthReporter{s},
		Events:        s.bus.Handler(events.HandlerOptions{Error: s.apiError}),
		Metrics:       s.metrics.Handler(),
		Keys:          b.keys,
		URLs:          s.router,
		Logger:        log.With("part", "api"),
		MaxBodyBytes:  cfg.MaxBodyBytes,
		RateLimit:     httpapi.RateLimit{Requests: cfg.RateLimitRequests, Window: cfg.RateLimitWindow},
		CORSOrigins:   cfg.CORSOrigins,
		Version:       s.opts.Version,
		Fallback:      s.routes(),

		BodyTimeout:     cfg.BodyTimeout,
		BodiesPerClient: bodiesPerClient,
	})
	s.handler = s.api
	return nil, nil
}

// recover adopts the runtime's surviving containers. A failure leaves
// them running, as a stop does.
func (b *builder) recoverContainers(ctx context.Context) (func(), error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := b.s.pool.Recover(rctx); err != nil {
		return nil, fmt.Errorf("recover containers from the %s runtime: %w", b.s.rt.Name(), err)
	}
	return nil, nil
}

// nodeSilence is NODE_SILENCE as the pool takes it: 0 (off) is negative
// there, where 0 is the default.
func nodeSilence(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
