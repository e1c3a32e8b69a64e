package idepool

import (
	"context"
	"time"
)

// RuntimeStatus is what the runtime itself says of a container, before the
// orchestrator adds what its agent reported.
type RuntimeStatus string

// Runtime statuses. A runtime maps its own states onto these precisely; in
// particular a container that exists is not "running" until its process
// (task) really runs.
const (
	// StatusPending: accepted, not yet running (Swarm: new, pending,
	// assigned, accepted, preparing, ready, starting; process: spawning).
	StatusPending RuntimeStatus = "pending"
	// StatusRunning: its main process runs.
	StatusRunning RuntimeStatus = "running"
	// StatusExited: it ended by itself with success (Swarm: complete,
	// shutdown without error; process: exit status 0).
	StatusExited RuntimeStatus = "exited"
	// StatusFailed: it ended with an error or could not be placed
	// (Swarm: failed, rejected, orphaned; process: non-zero exit, signal,
	// lost after a restart).
	StatusFailed RuntimeStatus = "failed"
)

// Terminal reports whether the container will never run again by itself.
func (s RuntimeStatus) Terminal() bool { return s == StatusExited || s == StatusFailed }

// ContainerSpec is what Runtime.Create is asked to make.
type ContainerSpec struct {
	// ID is chosen by the caller (NewID) and names the container in the
	// runtime (Swarm service "idepool-<id>").
	ID      string
	Profile Profile
	// Labels to record. The runtime adds LabelManaged, LabelID,
	// LabelProfile and LabelCreated itself; the caller adds LabelTokenHash
	// and, for a cold start, the claim labels.
	Labels map[string]string
	// Env for the agent: its token, the orchestrator's URL, its id. The
	// agent token is the only secret a container is given at creation; S3
	// credentials come later inside the assignment message.
	Env map[string]string
	// AvoidNodes names nodes (NodeState.Name) the container must not be
	// placed on: nodes that lack the profile's image, say. A runtime of
	// one machine ignores it.
	AvoidNodes []string
}

// Instance is one container as the runtime reports it.
type Instance struct {
	ID     string
	Status RuntimeStatus
	// Labels as recorded in the runtime, including the runtime's own.
	Labels map[string]string
	// Endpoints maps a route name to the host:port where the orchestrator
	// reaches it (process: 127.0.0.1:<free port>; Swarm: idepool-<id>:<port>
	// on the overlay network).
	Endpoints map[string]string
	CreatedAt time.Time
	// Node runs it (Swarm node name; the host name for process).
	Node string
	// Message explains a failure in the runtime's words.
	Message string
}

// RuntimeEvent is a hint that something about a container changed. Events
// may be lost, merged or repeated; consumers re-read the state with Inspect
// or List (level-triggered), never trust an event as the whole truth.
type RuntimeEvent struct {
	ID     string
	Status RuntimeStatus
	// Removed is true when the container no longer exists.
	Removed bool
}

// Runtime is where containers run. Every implementation passes the
// conformance suite in runtime/runtimetest, and keeps these rules:
//
// Identity and recovery. A container is found again only through its labels:
// List returns every container carrying LabelManaged with this runtime's
// deployment name, whoever created it (this process or one before a
// restart), and nothing else; containers without our labels are never
// listed, changed or removed. Recover is called once at start-up before
// anything else: it re-attaches to every surviving container (a process
// runtime re-adopts its processes; Swarm just lists) and returns them as List
// would. After Recover, Inspect/List/Events cover the recovered containers
// exactly as if this process had created them.
//
// Create makes a container with spec.ID and returns at once, without waiting
// for it to run: the returned Instance is usually StatusPending. Create is
// idempotent by id: if a container with spec.ID already exists it returns
// ErrExists-coded error and leaves it untouched. If Create returns another
// error, nothing with spec.ID is left behind: the runtime removes what it
// partly made, or it returns an error wrapping the partial state and a later
// Remove(spec.ID) cleans it; the orchestrator always calls Remove after a
// failed Create, so Remove must accept such leftovers.
//
// Remove stops the container (SIGTERM, then SIGKILL after the runtime's
// grace) and deletes it with everything the runtime made for it. It is
// idempotent: removing a container that does not exist, or was already
// removed, returns nil. It blocks until the container is gone or ctx ends.
// Flushing work is the orchestrator's job before it calls Remove.
//
// Inspect returns one container in any status, including terminal ones
// that are not yet removed; a container that does not exist gives an error
// coded ENotFound.
//
// List returns all managed containers, in no particular order, in any
// status; it never returns an error for one broken container (it reports
// it as StatusFailed with a Message).
//
// SetLabels merges labels into a container's record: a value of "" deletes
// the key. It must not restart or disturb the running container. The
// runtime's own labels (managed, id, profile, created) cannot be changed.
// A missing container gives ENotFound.
//
// Events streams hints until ctx ends, then closes the channel. A runtime
// sends one within seconds of a status change (including a container that
// died) and of a removal. Consumers must also List periodically.
//
// Capabilities says what the runtime does beyond this contract; it is the
// same for the runtime's whole life.
type Runtime interface {
	Name() string
	Recover(ctx context.Context) ([]Instance, error)
	Create(ctx context.Context, spec ContainerSpec) (Instance, error)
	Remove(ctx context.Context, id string) error
	Inspect(ctx context.Context, id string) (Instance, error)
	List(ctx context.Context) ([]Instance, error)
	SetLabels(ctx context.Context, id string, labels map[string]string) error
	Events(ctx context.Context) <-chan RuntimeEvent
	Capabilities() Capabilities
}

// Agent environment variables, set by every runtime on the container.
const (
	EnvAgentURL   = "IDEPOOL_AGENT_URL"   // ws(s)://orchestrator/agent/v1/connect
	EnvAgentToken = "IDEPOOL_AGENT_TOKEN" // per-container random token
	EnvAgentID    = "IDEPOOL_CONTAINER_ID"
	// EnvRoutePortPrefix + ROUTE (upper case) gives the port a route's
	// workload must listen on, e.g. IDEPOOL_PORT_CODE=8080.
	EnvRoutePortPrefix = "IDEPOOL_PORT_"
	// EnvWorkspaceDir is where the workspace lives (/workspace in images).
	EnvWorkspaceDir = "IDEPOOL_WORKSPACE"
	// EnvStateDir holds the agent's state (sync base), outside the workspace.
	EnvStateDir = "IDEPOOL_STATE_DIR"
	// EnvWorkloads is the profile's workload list as JSON.
	EnvWorkloads = "IDEPOOL_WORKLOADS"
	// EnvRoutes is the profile's routes as JSON.
	EnvRoutes = "IDEPOOL_ROUTES"
	// EnvOrphanTimeout (a Go duration): an agent that cannot reach its
	// orchestrator this long flushes its workspace and exits.
	EnvOrphanTimeout = "IDEPOOL_ORPHAN_TIMEOUT"
	// EnvSyncMaxDeletePercent: the share of a workspace's files one sync
	// pass may delete before the deletions wait for a confirmation.
	EnvSyncMaxDeletePercent = "IDEPOOL_SYNC_MAX_DELETE_PERCENT"
	// EnvSyncParallelism: how many transfers one agent's sync runs at once.
	EnvSyncParallelism = "IDEPOOL_SYNC_PARALLELISM"
	// EnvStartGate is the number of an inherited file descriptor (a pipe)
	// that the agent reads to its end before it starts anything. A runtime
	// that places the agent in its limits only after starting it (the
	// process runtime on cgroup v1, where a child cannot be cloned into a
	// group) closes the pipe once it has: a workload started earlier would
	// stay outside the limits. Unset: no gate.
	EnvStartGate = "IDEPOOL_START_GATE"
)
