package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/control"
)

// Syncer keeps the workspace directory in step with the assigned workspace
// (implemented by wsync.AgentSyncer).
type Syncer interface {
	// Start pulls the assigned workspace into dir, then keeps both sides in
	// step until Stop. It returns once the initial pull is done (the agent
	// then reports "synced").
	Start(ctx context.Context, a idepool.Assignment, report func(idepool.AgentReport)) error
	// Flush pushes everything pending (then the agent reports "flushed").
	Flush(ctx context.Context) error
	Stats() idepool.SyncStats
	Stop(ctx context.Context) error
	// ConfirmDeletions lets the deletions the sync holds back (a mass
	// deletion) go through, and returns how many there are.
	ConfirmDeletions() int
}

// SyncerFactory makes the Syncer for an assignment.
type SyncerFactory func(workspaceDir, stateDir string, logger *slog.Logger) Syncer

// EnvListenHost optionally sets the address the built-in placeholder (or,
// with EnvAllowedPeers, the relays) listens on (default: all interfaces;
// the process runtime uses 127.0.0.1). Behind relays the agent sets it to
// 127.0.0.1 for the workloads, which should bind it.
const EnvListenHost = "IDEPOOL_LISTEN_HOST"

// Config is what Run needs. ConfigFromEnv fills it from the container's
// environment; zero durations get defaults.
type Config struct {
	// URL of the orchestrator (http, https, ws or wss); the control path is
	// added when the URL has none.
	URL         string
	Token       string
	ContainerID string
	// WorkspaceDir holds the user's files; StateDir the agent's own state
	// (assignment, sync base), outside the workspace.
	WorkspaceDir string
	StateDir     string
	// Routes with the ports the workloads really listen on.
	Routes []idepool.Route
	// Workloads to start and supervise; none runs the built-in placeholder
	// on every route, in process.
	Workloads []idepool.Workload
	// ListenHost is where the placeholder listens ("" = all interfaces);
	// with AllowedPeers, where the relays listen.
	ListenHost string
	// AllowedPeers (EnvAllowedPeers) are DNS names of the only peers, with
	// loopback, that may connect to the route ports. Set: a relay holds
	// every route port and the workloads listen on loopback ports of their
	// own; empty: the workloads listen on the route ports.
	AllowedPeers []string
	// Resolver resolves AllowedPeers (default net.DefaultResolver).
	Resolver Resolver

	// workRoutes are the routes with the ports the workloads listen on
	// (the internal ones behind relays), workHost their listen address;
	// set by Run.
	workRoutes []idepool.Route
	workHost   string

	NewSyncer SyncerFactory
	// Activity, if set, returns the newest user activity seen elsewhere
	// (e.g. workspace writes); the agent reports the newest of it and what
	// the placeholder saw.
	Activity func() time.Time

	Logger *slog.Logger
	// Output receives the workloads' stdout and stderr (default os.Stderr).
	// It must be an *os.File so children write to it directly.
	Output *os.File
	// BaseEnv is the environment workloads inherit (default os.Environ());
	// the agent token is always removed from it.
	BaseEnv []string

	HeartbeatInterval time.Duration // default 5 s
	// FlushTimeout bounds a flush on shutdown (default 30 s).
	FlushTimeout time.Duration
	// KillGrace is how long workloads get between SIGTERM and SIGKILL
	// (default 5 s: shorter than the runtimes' own stop grace of 10 s, so
	// the agent has stopped its workloads before it is killed itself).
	KillGrace time.Duration
	// ReconnectMax caps the reconnect backoff (default 5 s).
	ReconnectMax time.Duration
	// OrphanTimeout: an agent that could not reach its orchestrator for
	// this long flushes its workspace and exits (default 15 min;
	// EnvOrphanTimeout). An orchestrator that refuses it (HeaderRefused)
	// has the same effect at once.
	OrphanTimeout time.Duration
	// RestartMin and RestartMax bound a crashed workload's restart backoff
	// (defaults 200 ms, 30 s); it resets once a run lasted StableAfter
	// (default 30 s).
	RestartMin, RestartMax, StableAfter time.Duration
	// Reap makes the agent reap every exited child, orphans included, as
	// PID 1 must. Default: os.Getpid() == 1 (see ConfigFromEnv).
	Reap bool
}

func (c *Config) withDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Output == nil {
		c.Output = os.Stderr
	}
	if c.BaseEnv == nil {
		c.BaseEnv = os.Environ()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeartbeatInterval, 5*time.Second)
	def(&c.FlushTimeout, 30*time.Second)
	def(&c.KillGrace, 5*time.Second)
	def(&c.ReconnectMax, 5*time.Second)
	def(&c.OrphanTimeout, 15*time.Minute)
	def(&c.RestartMin, 200*time.Millisecond)
	def(&c.RestartMax, 30*time.Second)
	def(&c.StableAfter, 30*time.Second)
}

func (c *Config) validate() error {
	if c.URL == "" {
		return fmt.Errorf("agent: %s is required", idepool.EnvAgentURL)
	}
	if _, err := controlURL(c.URL); err != nil {
		return err
	}
	if c.Token == "" {
		return fmt.Errorf("agent: %s is required", idepool.EnvAgentToken)
	}
	if !idepool.ValidID(c.ContainerID) {
		return fmt.Errorf("agent: %s %q is not a container id", idepool.EnvAgentID, c.ContainerID)
	}
	if c.StateDir == "" {
		return fmt.Errorf("agent: %s is required", idepool.EnvStateDir)
	}
	for _, r := range c.Routes {
		if r.Port < 1 || r.Port > 65535 {
			return fmt.Errorf("agent: route %s: port %d out of range", r.Name, r.Port)
		}
	}
	for _, w := range c.Workloads {
		if w.Name == "" || len(w.Command) == 0 {
			return fmt.Errorf("agent: every workload needs a name and a command")
		}
	}
	return nil
}

// ConfigFromEnv reads the agent's settings from the IDEPOOL_* variables set
// by the runtime. Routes come from IDEPOOL_ROUTES (default: the default
// routes) with each port overridden by IDEPOOL_PORT_<ROUTE>.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		URL:          getenv(idepool.EnvAgentURL),
		Token:        getenv(idepool.EnvAgentToken),
		ContainerID:  getenv(idepool.EnvAgentID),
		WorkspaceDir: getenv(idepool.EnvWorkspaceDir),
		StateDir:     getenv(idepool.EnvStateDir),
		ListenHost:   getenv(EnvListenHost),
		AllowedPeers: ParsePeerNames(getenv(EnvAllowedPeers)),
		Reap:         os.Getpid() == 1,
	}
	if c.WorkspaceDir == "" {
		c.WorkspaceDir = "/workspace"
	}
	if s := getenv(idepool.EnvOrphanTimeout); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return Config{}, fmt.Errorf("agent: %s=%q: want a duration > 0 such as 15m", idepool.EnvOrphanTimeout, s)
		}
		c.OrphanTimeout = d
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(os.TempDir(), "idepool-agent")
	}
	if s := getenv(idepool.EnvRoutes); s != "" {
		if err := json.Unmarshal([]byte(s), &c.Routes); err != nil {
			return Config{}, fmt.Errorf("agent: %s: want a JSON list of routes: %w", idepool.EnvRoutes, err)
		}
	} else {
		c.Routes = idepool.DefaultRoutes()
	}
	for i, r := range c.Routes {
		name := idepool.EnvRoutePortPrefix + portEnvName(r.Name)
		if s := getenv(name); s != "" {
			p, err := strconv.Atoi(s)
			if err != nil || p < 1 || p > 65535 {
				return Config{}, fmt.Errorf("agent: %s=%q: want a port 1-65535", name, s)
			}
			c.Routes[i].Port = p
		}
	}
	if s := getenv(idepool.EnvWorkloads); s != "" {
		if err := json.Unmarshal([]byte(s), &c.Workloads); err != nil {
			return Config{}, fmt.Errorf("agent: %s: want a JSON list of workloads: %w", idepool.EnvWorkloads, err)
		}
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// portEnvName turns a route name into its env suffix: "web-2" → "WEB_2".
func portEnvName(route string) string {
	return strings.ToUpper(strings.ReplaceAll(route, "-", "_"))
}

// controlURL turns the orchestrator URL into the websocket URL of the
// control endpoint.
func controlURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("agent: orchestrator URL: %w", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("agent: orchestrator URL %q: want http, https, ws or wss", u.Redacted())
	}
	if u.Host == "" {
		return "", fmt.Errorf("agent: orchestrator URL %q has no host", u.Redacted())
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = control.Path
	}
	return u.String(), nil
}
