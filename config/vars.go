package config

// MinAPIKeyLen is the shortest API key accepted.
const MinAPIKeyLen = 16

// Values of RUNTIME, ROUTER, LOG_FORMAT.
const (
	RuntimeProcess = "process"
	RuntimeSwarm   = "swarm"
	RuntimeFake    = "fake"
	RouterBuiltin  = "builtin"
	RouterTraefik  = "traefik"
	LogText        = "text"
	LogJSON        = "json"
)

// vars is THE table. To add a setting: a field in Config and a row here
// (within its topic), then a row in ENVIRONMENT_VARIABLES.md (the docs test
// says what to write).
func vars() []VarSpec {
	return []VarSpec{
		// Server and API.
		{Name: "PORT", Default: "3001", Kind: KindPort, Topic: TopicServer,
			Description: "TCP port of the HTTP server: REST API, router, agent channel.",
			bind:        func(c *Config) any { return &c.Port }},
		{Name: "API_KEY", Kind: KindKeys, MinLen: MinAPIKeyLen, Secret: true, Topic: TopicServer,
			Description: "Bearer keys accepted by the API, comma-separated. With none, `serve` generates one and keeps it in DATA_DIR/api-key (mode 0600).",
			bind:        func(c *Config) any { return &c.APIKeys }},
		{Name: "API_KEYS", Kind: KindKeys, MinLen: MinAPIKeyLen, Secret: true, Topic: TopicServer,
			Description: "More keys, same format; the union of API_KEY and API_KEYS is accepted.",
			bind:        func(c *Config) any { return &c.APIKeys }},
		{Name: "DOMAIN", Default: "localhost", Kind: KindHost, Topic: TopicServer,
			Description: "Public host name of this deployment; derives PUBLIC_URL when that is unset.",
			bind:        func(c *Config) any { return &c.Domain }},
		{Name: "PUBLIC_URL", Kind: KindURL, Topic: TopicServer,
			Description: "Base of the URLs handed to users. Unset: http://DOMAIN:PORT when DOMAIN is localhost or an IP address, else https://DOMAIN.",
			bind:        func(c *Config) any { return &c.PublicURL }},
		{Name: "AGENT_URL", Kind: KindURL, Values: []string{"http", "https", "ws", "wss"}, Topic: TopicServer,
			Description: "Base URL the agents in containers dial. Unset: http://127.0.0.1:PORT for the process and fake runtimes, PUBLIC_URL for swarm.",
			bind:        func(c *Config) any { return &c.AgentURL }},
		{Name: "MAX_BODY_BYTES", Default: "1048576", Kind: KindBytes, NonZero: true, Topic: TopicServer,
			Description: "Largest request body the API reads; larger bodies get 413.",
			bind:        func(c *Config) any { return &c.MaxBodyBytes }},
		{Name: "CORS_ORIGINS", Kind: KindList, Topic: TopicServer,
			Description: "Origins (scheme://host[:port], exact) whose pages may call the REST API from a browser; empty = no CORS headers at all. `*` is refused and credentials are never allowed.",
			bind:        func(c *Config) any { return &c.CORSOrigins }},
		{Name: "FRAME_ANCESTORS", Kind: KindList, Topic: TopicServer,
			Description: "Origins allowed to embed the IDE routes in an iframe (Content-Security-Policy frame-ancestors, besides 'self'); also makes route cookies SameSite=None.",
			bind:        func(c *Config) any { return &c.FrameAncestors }},
		{Name: "COOKIE_SAMESITE", Default: "auto", Kind: KindEnum, Values: []string{"auto", "lax", "strict", "none"}, Topic: TopicServer,
			Description: "SameSite attribute of route cookies; auto = none when FRAME_ANCESTORS is set (the IDE in a cross-site iframe; needs HTTPS, as browsers accept None only with Secure), else lax.",
			bind:        func(c *Config) any { return &c.CookieSameSite }},
		{Name: "GC_PERCENT", Default: "400", Kind: KindInt, Max: 10000, Topic: TopicServer,
			Description: "Go garbage collector target for `serve` (as GOGC): the heap may grow this many percent over the live heap before a collection. The orchestrator's live heap is small, so Go's default of 100 collects several times during a class's burst of starts; 400 keeps collections out of the claims' way for a few MB of memory. 0 leaves the Go runtime's own setting (GOGC, else 100).",
			bind:        func(c *Config) any { return &c.GCPercent }},
		{Name: "QUEUE_ENABLED", Default: "true", Kind: KindBool, Topic: TopicPool,
			Description: "When no warm container is free and capacity refuses a cold create, a start waits in a fair FIFO queue per profile (202 with its position and a status URL) instead of failing; false answers 503 at once.",
			bind:        func(c *Config) any { return &c.QueueEnabled }},
		{Name: "QUEUE_LIMIT", Default: "1000", Kind: KindInt, Topic: TopicPool,
			Description: "Most starts waiting in one profile's queue; more get 503 QUEUE_FULL.",
			bind:        func(c *Config) any { return &c.QueueLimit }},
		{Name: "QUEUE_TIMEOUT", Default: "10m", Kind: KindDuration, NonZero: true, Topic: TopicPool,
			Description: "Longest a start waits in the queue before 503 RESOURCE_LIMIT_EXCEEDED (reason queue-timeout).",
			bind:        func(c *Config) any { return &c.QueueTimeout }},
		{Name: "RATE_LIMIT_REQUESTS", Default: "1200", Kind: KindInt, Topic: TopicServer,
			Description: "Requests per API key and window on the container routes; more get 429 RATE_LIMIT_EXCEEDED. 0 = no limit. The original hard-coded 100 per minute, which one platform key serving a classroom of 300 exceeds at 10:00; 1200 per minute keeps a bound on a leaked key without refusing a classroom.",
			bind:        func(c *Config) any { return &c.RateLimitRequests }},
		{Name: "RATE_LIMIT_WINDOW_SECONDS", Default: "60", Kind: KindDuration, NonZero: true, Topic: TopicServer,
			Description: "Length of the rate limit's window, which opens at a key's first request.",
			bind:        func(c *Config) any { return &c.RateLimitWindow }},

		// Containers and the default profile.
		{Name: "IDE_CONTAINER_IMAGE", Default: "idepool-ide:latest", Kind: KindString, Pattern: `[^\s]+`,
			Accepts: "an image reference without spaces", Topic: TopicPool,
			Description: "Image of the default profile (ignored by the process runtime).",
			bind:        func(c *Config) any { return &c.Image }},
		{Name: "PRE_WARMED_QUEUE_SIZE", Default: "10", Kind: KindInt, Max: 10000, Topic: TopicPool,
			Description: "Warm containers kept for the default profile (its pool target; changeable at run time with PUT /api/pool/default).",
			bind:        func(c *Config) any { return &c.PoolTarget }},
		{Name: "CONTAINER_CPU_LIMIT", Default: "2", Kind: KindFloat, NonZero: true, Topic: TopicPool,
			Description: "CPU limit of a default-profile container, in cores.",
			bind:        func(c *Config) any { return &c.CPULimit }},
		{Name: "CONTAINER_MEMORY_LIMIT", Default: "4294967296", Kind: KindBytes, NonZero: true, Topic: TopicPool,
			Description: "Memory limit of a default-profile container, in bytes or with a unit (4GiB, 512MiB, 4g).",
			bind:        func(c *Config) any { return &c.MemoryLimit }},
		{Name: "INACTIVITY_TIMEOUT_SECONDS", Default: "600", Kind: KindDuration, Topic: TopicPool,
			Description: "A claimed container without user activity for this long is stopped (its workspace flushed first); 0 = never.",
			bind:        func(c *Config) any { return &c.InactivityTimeout }},
		{Name: "PROFILES_FILE", Kind: KindPath, Topic: TopicPool,
			Description: "Optional JSON file of more profiles and of overrides of `default` (format below).",
			bind:        func(c *Config) any { return &c.ProfilesFile }},
		{Name: "CREATE_TIMEOUT", Default: "120s", Kind: KindDuration, NonZero: true, Topic: TopicPool,
			Description: "A container not ready this long after its creation is failed and removed.",
			bind:        func(c *Config) any { return &c.CreateTimeout }},
		{Name: "FLUSH_TIMEOUT", Default: "30s", Kind: KindDuration, NonZero: true, Topic: TopicPool,
			Description: "How long a stop waits for the agent's final push of the workspace before removing the container.",
			bind:        func(c *Config) any { return &c.FlushTimeout }},

		// Capacity.
		{Name: "MAX_MEMORY_PERCENT", Default: "90", Kind: KindPercent, Topic: TopicCapacity,
			Description: "Starts are refused (503 RESOURCE_LIMIT_EXCEEDED) when memory in use would pass this share of capacity.",
			bind:        func(c *Config) any { return &c.MaxMemoryPercent }},
		{Name: "MAX_CPU_PERCENT", Default: "90", Kind: KindPercent, Topic: TopicCapacity,
			Description: "The same for CPU (enforced; the original only warned).",
			bind:        func(c *Config) any { return &c.MaxCPUPercent }},

		// Health checks.
		{Name: "HEALTH_CHECK_INTERVAL", Default: "10s", Kind: KindDuration, NonZero: true, Topic: TopicHealth,
			Description: "Time between health probes of a container's routes.",
			bind:        func(c *Config) any { return &c.HealthCheckInterval }},
		{Name: "HEALTH_CHECK_TIMEOUT", Default: "5s", Kind: KindDuration, NonZero: true, Topic: TopicHealth,
			Description: "Timeout of one probe.",
			bind:        func(c *Config) any { return &c.HealthCheckTimeout }},
		{Name: "HEALTH_CHECK_RETRIES", Default: "3", Kind: KindInt, NonZero: true, Topic: TopicHealth,
			Description: "Consecutive failed probes before a container is unhealthy.",
			bind:        func(c *Config) any { return &c.HealthCheckRetries }},

		// Runtime and deployment.
		{Name: "RUNTIME", Default: RuntimeProcess, Kind: KindEnum, Values: []string{RuntimeProcess, RuntimeSwarm, RuntimeFake}, Topic: TopicRuntime,
			Description: "Where containers run: local agent processes (no Docker needed), Docker Swarm services, or in memory (tests).",
			bind:        func(c *Config) any { return &c.Runtime }},
		{Name: "DATA_DIR", Default: "./idepool-data", Kind: KindPath, Topic: TopicRuntime,
			Description: "Directory of idepool's state: the generated API key, the process runtime's workspaces. Made absolute at start-up.",
			bind:        func(c *Config) any { return &c.DataDir }},
		{Name: "PROCESS_NICE", Default: "10", Kind: KindInt, Max: 19, Topic: TopicRuntime,
			Description: "With the process runtime: the scheduling niceness (0-19) of every agent and its workloads. Local containers have no CPU limits; a lower priority keeps claims and routing fast while hundreds of them start or sync at once. 0 runs them at idepool's own priority.",
			bind:        func(c *Config) any { return &c.ProcessNice }},
		{Name: "DEPLOYMENT", Default: "idepool", Kind: KindString, Pattern: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`,
			Accepts: "1-63 of a-z, 0-9 and '-', not starting or ending with '-'", Topic: TopicRuntime,
			Description: "Name of this deployment, the value of the idepool.managed label: two deployments on one engine leave each other's containers alone.",
			bind:        func(c *Config) any { return &c.Deployment }},
		{Name: "ROUTER", Default: RouterBuiltin, Kind: KindEnum, Values: []string{RouterBuiltin, RouterTraefik}, Topic: TopicRuntime,
			Description: "Who routes /<route>/<id>/ to containers: the built-in proxy, or Traefik (labels plus ForwardAuth to /_auth/forward).",
			bind:        func(c *Config) any { return &c.Router }},
		{Name: "TRAEFIK_URL", Kind: KindURL, Topic: TopicRuntime,
			Description: "With ROUTER=traefik: where idepool reaches Traefik's web entrypoint (http://traefik:80 on the overlay network). A ready container joins the pool only once Traefik routes it (its ForwardAuth answers through Traefik), so a claim never waits for Traefik's refresh. Unset: containers join at once.",
			bind:        func(c *Config) any { return &c.TraefikURL }},
		{Name: "SWARM_NETWORK", Default: "idepool", Kind: KindString, Pattern: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`,
			Accepts: "a Docker network name", Topic: TopicRuntime,
			Description: "Overlay network the swarm runtime attaches containers to.",
			bind:        func(c *Config) any { return &c.SwarmNetwork }},
		{Name: "AGENT_NETWORKS", Kind: KindList, Topic: TopicRuntime,
			Description: "CIDRs of the containers' network, comma-separated. A request from there reaches only the agents' endpoint (/agent/v1/connect) and ForwardAuth (/_auth/forward); the API, dashboard, metrics and built-in router answer 403 FORBIDDEN (TRUSTED_PEERS excepted). Unset with RUNTIME=swarm: the subnets of SWARM_NETWORK, read from Docker; unset otherwise: no restriction.",
			bind:        func(c *Config) any { return &c.agentNetworks }},
		{Name: "TRUSTED_PEERS", Kind: KindList, Topic: TopicRuntime,
			Description: "DNS names (e.g. tasks.traefik) of infrastructure on the containers' network: with idepool itself (the host of AGENT_URL), the only peers the agents let reach the route ports, and exempt from AGENT_NETWORKS. Unset with RUNTIME=swarm: every service on SWARM_NETWORK that is not an IDE container (tasks.<service>), looked up by idepool.",
			bind:        func(c *Config) any { return &c.TrustedPeers }},
		{Name: "DOCKER_HOST", Kind: KindString, Pattern: `[a-z]+://.*`,
			Accepts: "a Docker daemon address such as unix:///var/run/docker.sock or tcp://host:2376", Topic: TopicRuntime,
			Description: "Docker daemon of the swarm runtime; unset = the Docker client's default.",
			bind:        func(c *Config) any { return &c.DockerHost }},
		{Name: "ENV_FILE", Default: ".env", Kind: KindPath, Topic: TopicRuntime,
			Description: "The .env file read at start-up (a missing default .env is fine; a missing named file is an error). Real environment variables win over the file.",
			bind:        func(c *Config) any { return &c.EnvFile }},

		// Workspace storage.
		{Name: "AWS_REGION", Default: "us-east-1", Kind: KindString, Pattern: `[a-z0-9][a-z0-9-]{0,62}`,
			Accepts: "a region name such as us-east-1", Topic: TopicS3,
			Description: "Region of workspaces whose start request names none.",
			bind:        func(c *Config) any { return &c.AWSRegion }},
		{Name: "AWS_ACCESS_KEY_ID", Kind: KindSecret, Secret: true, Topic: TopicS3,
			Description: "The orchestrator's own S3 credentials, used for starts that bring none. Set both or neither. Never printed.",
			bind:        func(c *Config) any { return &c.AWSAccessKeyID }},
		{Name: "AWS_SECRET_ACCESS_KEY", Kind: KindSecret, Secret: true, Topic: TopicS3,
			Description: "Secret of AWS_ACCESS_KEY_ID. Never printed.",
			bind:        func(c *Config) any { return &c.AWSSecretAccessKey }},
		{Name: "S3_ENDPOINT", Kind: KindURL, Topic: TopicS3,
			Description: "Custom S3-compatible endpoint (MinIO, versitygw, …), addressed path-style; unset = AWS.",
			bind:        func(c *Config) any { return &c.S3Endpoint }},
		{Name: "S3_EMBEDDED_ADDR", Kind: KindString, Pattern: `[0-9A-Za-z.\-\[\]:]*:[0-9]{1,5}`, Topic: TopicS3,
			Description: "With no S3 configured at all (no S3_ENDPOINT, no AWS keys) and the process runtime, serve runs an embedded S3-compatible store (versitygw) under DATA_DIR/s3, local only; it listens here (default 127.0.0.1:PORT+1). Its credentials are generated into DATA_DIR/s3/credentials.json; buckets are created on first use.",
			bind:        func(c *Config) any { return &c.S3EmbeddedAddr }},

		// Logging.
		{Name: "LOG_LEVEL", Default: "info", Kind: KindEnum, Values: []string{"debug", "info", "warn", "error"}, Topic: TopicLogging,
			Description: "Least severe level logged.",
			bind:        func(c *Config) any { return &c.LogLevel }},
		{Name: "LOG_FORMAT", Default: LogText, Kind: KindEnum, Values: []string{LogText, LogJSON}, Topic: TopicLogging,
			Description: "Log line format: slog text or JSON.",
			bind:        func(c *Config) any { return &c.LogFormat }},
	}
}
