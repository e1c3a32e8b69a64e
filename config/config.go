// Package config reads idepool's settings from the environment and an
// optional .env file. One table (Describe) gives every variable's name,
// default, kind and meaning; it drives parsing, validation, redacted
// printing and the documentation test against ENVIRONMENT_VARIABLES.md.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/ide"
)

// Config is every setting, typed. Build it with Load (or Defaults in
// tests); fields are documented in ENVIRONMENT_VARIABLES.md under the
// variable named in the comment.
type Config struct {
	// Server and API.
	Port    int      // PORT
	APIKeys []string // API_KEY ∪ API_KEYS; secret
	// API_KEY_FILE and ROUTER_SECRET_FILE: files of secrets (Docker
	// secrets on Swarm), read by the server at start-up; "" = none.
	APIKeyFile       string
	RouterSecretFile string
	Domain           string // DOMAIN, lower case
	PublicURL        string // PUBLIC_URL, derived when unset; no trailing slash
	AgentURL         string // AGENT_URL, derived when unset; as given (http/https/ws/wss)
	MaxBodyBytes     int64  // MAX_BODY_BYTES
	// REQUEST_BODY_TIMEOUT and MAX_BODIES_PER_CLIENT (0 = no bound).
	BodyTimeout     time.Duration
	BodiesPerClient int

	// Browser security and the rate limit.
	CORSOrigins       []string      // CORS_ORIGINS; empty = no CORS
	FrameAncestors    []string      // FRAME_ANCESTORS; origins that may embed the IDE
	CookieSameSite    string        // COOKIE_SAMESITE: auto, lax, strict, none
	RateLimitRequests int           // RATE_LIMIT_REQUESTS; 0 = no limit
	QueueEnabled      bool          // QUEUE_ENABLED
	QueueLimit        int           // QUEUE_LIMIT
	QueueTimeout      time.Duration // QUEUE_TIMEOUT
	RateLimitWindow   time.Duration // RATE_LIMIT_WINDOW_SECONDS

	// Containers and the default profile.
	Image             string        // IDE_CONTAINER_IMAGE
	PoolTarget        int           // PRE_WARMED_QUEUE_SIZE
	CPULimit          float64       // CONTAINER_CPU_LIMIT, cores
	MemoryLimit       int64         // CONTAINER_MEMORY_LIMIT, bytes
	InactivityTimeout time.Duration // INACTIVITY_TIMEOUT_SECONDS; 0 = never
	ProfilesFile      string        // PROFILES_FILE
	CreateTimeout     time.Duration // CREATE_TIMEOUT
	CreateConcurrency int           // CREATE_CONCURRENCY
	FlushTimeout      time.Duration // FLUSH_TIMEOUT
	// AgentOrphanTimeout: AGENT_ORPHAN_TIMEOUT, passed to every agent.
	AgentOrphanTimeout time.Duration

	// Capacity.
	MaxMemoryPercent int // MAX_MEMORY_PERCENT
	MaxCPUPercent    int // MAX_CPU_PERCENT

	// Health checks.
	HealthCheckInterval time.Duration // HEALTH_CHECK_INTERVAL
	HealthCheckTimeout  time.Duration // HEALTH_CHECK_TIMEOUT
	HealthCheckRetries  int           // HEALTH_CHECK_RETRIES

	// Runtime and deployment.
	Runtime     string // RUNTIME: RuntimeProcess, RuntimeSwarm, RuntimeKubernetes, RuntimeFake
	DataDir     string // DATA_DIR, absolute
	ProcessNice int    // PROCESS_NICE
	ProcessUser string // PROCESS_USER: "off" or uid[:gid]
	GCPercent   int    // GC_PERCENT; 0 = the Go runtime's own
	// GCMemoryLimit is GC_MEMORY_LIMIT in bytes; 0 = the Go runtime's own.
	GCMemoryLimit int64
	Deployment    string // DEPLOYMENT: value of idepool.LabelManaged
	Router        string // ROUTER: RouterBuiltin, RouterTraefik
	TraefikURL    string // TRAEFIK_URL; "" = no routing check
	// TraefikIngressClass, TraefikAuthMiddleware, TraefikStripMiddleware:
	// TRAEFIK_INGRESS_CLASS, TRAEFIK_AUTH_MIDDLEWARE and
	// TRAEFIK_STRIP_MIDDLEWARE, the Kubernetes runtime's Ingresses.
	TraefikIngressClass    string
	TraefikAuthMiddleware  string
	TraefikStripMiddleware string
	SwarmNetwork           string // SWARM_NETWORK
	// KubernetesNamespace: KUBERNETES_NAMESPACE, "" = the pod's own.
	KubernetesNamespace string
	// StopGracePeriod: STOP_GRACE_PERIOD, the swarm runtime's time
	// between SIGTERM and SIGKILL of a container's task.
	StopGracePeriod time.Duration
	// NodeSilence: NODE_SILENCE, after which a node whose agents are all
	// gone is judged lost (0: only the engine's word).
	NodeSilence time.Duration
	DockerHost  string // DOCKER_HOST
	// FaultHoldLabelWrites: FAULT_HOLD_LABEL_WRITES, a testing fault point
	// (pool.Options.HoldLabelWrites).
	FaultHoldLabelWrites bool
	// AgentNetworks (AGENT_NETWORKS) are CIDRs of the containers' network;
	// empty on swarm: the network's own subnets. TrustedPeers
	// (TRUSTED_PEERS) are DNS names of the infrastructure on it (Traefik);
	// empty on swarm: discovered.
	AgentNetworks []netip.Prefix
	TrustedPeers  []string
	agentNetworks []string // AGENT_NETWORKS as given
	EnvFile       string   // ENV_FILE: the file actually read, "" if none

	// EMBEDDED_IDE (one of ide.Names), and the IDE server detected for it
	// (the zero value: the placeholder), which the process runtime's
	// default profile runs.
	EmbeddedIDE string
	IDE         ide.Choice

	// Workspace storage.
	AWSRegion          string // AWS_REGION
	AWSAccessKeyID     string // AWS_ACCESS_KEY_ID; secret
	AWSSecretAccessKey string // AWS_SECRET_ACCESS_KEY; secret
	S3Endpoint         string // S3_ENDPOINT; "" = AWS
	// SyncMaxDeletePercent: SYNC_MAX_DELETE_PERCENT, passed to every agent.
	SyncMaxDeletePercent int
	// SyncParallelism: SYNC_PARALLELISM, passed to every agent.
	SyncParallelism int
	S3EmbeddedAddr  string // S3_EMBEDDED_ADDR; "" = 127.0.0.1:PORT+1
	DebugAddr       string // DEBUG_ADDR; "" = no profiling listener

	// Logging.
	LogLevel  string // LOG_LEVEL: debug, info, warn, error
	LogFormat string // LOG_FORMAT: LogText, LogJSON

	// Warnings are things worth a log line at start-up that do not stop it
	// (unknown variables in the .env file, odd combinations).
	Warnings []string
}

// Load reads the configuration. getenv is the real environment (os.Getenv;
// nil means an empty one). The .env file read is envFile when non-empty,
// else $ENV_FILE, else ".env" in the working directory, which may be
// missing; a named file must exist. Real environment values win over the
// file's; an empty value counts as unset. Every invalid value is reported
// (errors.Join), each error naming its variable and what it accepts.
func Load(getenv func(string) string, envFile string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	path, named := envFile, true
	if path == "" {
		path = strings.TrimSpace(getenv("ENV_FILE"))
	}
	if path == "" {
		path, named = ".env", false
	}
	dotenv, err := readDotenv(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && !named:
		path, dotenv = "", nil
	case err != nil:
		return Config{}, fmt.Errorf("ENV_FILE: %w", err)
	}
	c, errs := build(func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return dotenv[name]
	})
	c.EnvFile = path
	known := map[string]bool{}
	for _, s := range vars() {
		known[s.Name] = true
	}
	for _, k := range sortedKeys(dotenv) {
		if !known[k] {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: unknown variable %s ignored", path, k))
		}
	}
	for _, r := range retired {
		if getenv(r.name) != "" || dotenv[r.name] != "" {
			c.Warnings = append(c.Warnings, r.name+" is no longer read: "+r.hint)
		}
	}
	if len(errs) == 0 {
		if _, err := c.Profiles(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// Defaults returns the configuration of an empty environment without
// reading any file: what a test needs. (The table's defaults are tested to
// parse, so it cannot fail.)
func Defaults() Config {
	c, _ := build(func(string) string { return "" })
	c.EnvFile = ""
	return c
}

// build parses every variable of the table with lookup, then derives and
// cross-checks.
func build(lookup func(string) string) (Config, []error) {
	var c Config
	var errs []error
	for _, s := range vars() {
		raw := strings.TrimSpace(lookup(s.Name))
		if raw == "" {
			raw = s.Default
		}
		if raw == "" {
			continue
		}
		v, err := s.parse(raw)
		if err == nil {
			err = s.assign(&c, v)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range c.agentNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("AGENT_NETWORKS: %q is not valid (want CIDRs such as 10.0.1.0/24, comma-separated)", n))
			continue
		}
		c.AgentNetworks = append(c.AgentNetworks, p.Masked())
	}
	if c.PublicURL == "" && c.Domain != "" && c.Port != 0 {
		c.PublicURL = derivePublicURL(c.Domain, c.Port)
	}
	if c.AgentURL == "" {
		switch c.Runtime {
		case RuntimeProcess, RuntimeFake:
			c.AgentURL = "http://127.0.0.1:" + strconv.Itoa(c.Port)
		default:
			c.AgentURL = c.PublicURL
			if u, err := url.Parse(c.AgentURL); err == nil && isLoopback(u.Hostname()) {
				c.Warnings = append(c.Warnings, "AGENT_URL is unset and PUBLIC_URL is a loopback address: agents in "+c.Runtime+" containers cannot reach it; set AGENT_URL")
			}
		}
	}
	if c.DebugAddr != "" {
		if host, _, err := net.SplitHostPort(c.DebugAddr); err != nil || !isLoopback(host) {
			errs = append(errs, fmt.Errorf("DEBUG_ADDR: %q is not a loopback address such as 127.0.0.1:6060 (the profiles are not behind the API key)", c.DebugAddr))
		}
	}
	if (c.AWSAccessKeyID == "") != (c.AWSSecretAccessKey == "") {
		errs = append(errs, errors.New("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: set both or neither"))
	}
	if c.DataDir != "" {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			errs = append(errs, fmt.Errorf("DATA_DIR: %w", err))
		}
		c.DataDir = abs
	}
	if c.Router == RouterTraefik && c.Runtime != RuntimeSwarm && c.Runtime != RuntimeKubernetes {
		c.Warnings = append(c.Warnings, "ROUTER=traefik has an effect only with RUNTIME=swarm or kubernetes")
	}
	if c.HealthCheckTimeout > c.HealthCheckInterval {
		c.Warnings = append(c.Warnings, "HEALTH_CHECK_TIMEOUT is longer than HEALTH_CHECK_INTERVAL")
	}
	return c, errs
}

// retired are variables of the original system that idepool no longer
// reads and that deserve a hint when found.
var retired = []struct{ name, hint string }{
	{"DOCKER_SOCKET", "set DOCKER_HOST=unix:///path/to/docker.sock"},
	{"CONTAINER_RESTART_POLICY", "the orchestrator replaces failed containers itself"},
	{"CONTAINER_RESTART_MAX_ATTEMPTS", "the orchestrator replaces failed containers itself"},
	{"BACKEND_API_URL", "workspaces sync with S3 directly"},
	{"CONTAINER_SERVICE_TOKEN", "agents authenticate with per-container tokens"},
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// derivePublicURL: a local name or an IP gets plain http on PORT (no
// certificate for it), a real name https on 443 as the original did.
func derivePublicURL(domain string, port int) string {
	host := strings.TrimSuffix(domain, ".")
	ip := net.ParseIP(host)
	if host != "localhost" && ip == nil {
		return "https://" + host
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// Addr is the HTTP server's listen address (":PORT").
func (c Config) Addr() string { return ":" + strconv.Itoa(c.Port) }

// SlogLevel is LOG_LEVEL as a slog.Level.
func (c Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// S3Credentials are the orchestrator's own S3 credentials (zero if unset).
func (c Config) S3Credentials() idepool.Credentials {
	return idepool.Credentials{AccessKeyID: c.AWSAccessKeyID, SecretAccessKey: c.AWSSecretAccessKey}
}

// redacted calls fn with each variable's name and printable value, in table
// order, once per field (API_KEY and API_KEYS share one), secrets redacted.
func (c Config) redacted(fn func(name string, v any)) {
	var seen []any
	for _, s := range vars() {
		p := s.bind(&c)
		if slices.Contains(seen, p) {
			continue
		}
		seen = append(seen, p)
		var v any
		switch p := p.(type) {
		case *string:
			v = *p
			if s.Secret && *p != "" {
				v = "REDACTED"
			}
		case *[]string:
			v = *p
			if s.Secret {
				v = ""
				if len(*p) > 0 {
					v = fmt.Sprintf("REDACTED(%d)", len(*p))
				}
			}
		case *int:
			v = *p
		case *int64:
			v = *p
		case *float64:
			v = *p
		case *bool:
			v = *p
		case *time.Duration:
			v = *p
		default:
			v = "?"
		}
		fn(s.Name, v)
	}
}

// String prints every setting with secrets redacted.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("Config{")
	first := true
	c.redacted(func(name string, v any) {
		if !first {
			b.WriteByte(' ')
		}
		first = false
		if s, ok := v.(string); ok {
			v = strconv.Quote(s)
		}
		fmt.Fprintf(&b, "%s=%v", name, v)
	})
	b.WriteString("}")
	return b.String()
}

// GoString keeps %#v from printing secrets.
func (c Config) GoString() string { return c.String() }

// LogValue logs every setting as a group, secrets redacted.
func (c Config) LogValue() slog.Value {
	var attrs []slog.Attr
	c.redacted(func(name string, v any) { attrs = append(attrs, slog.Any(name, v)) })
	return slog.GroupValue(attrs...)
}

// MarshalJSON encodes the settings by variable name, secrets redacted, so
// a Config never leaks through an API or a dump.
func (c Config) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	c.redacted(func(name string, v any) {
		if d, ok := v.(time.Duration); ok {
			v = d.String()
		}
		m[name] = v
	})
	return json.Marshal(m)
}

var (
	_ fmt.Stringer   = Config{}
	_ fmt.GoStringer = Config{}
	_ slog.LogValuer = Config{}
	_ json.Marshaler = Config{}
)

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
