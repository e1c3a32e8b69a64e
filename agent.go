package idepool

import "time"

// ProbeHeader marks a request of idepool's own probes (the health monitor's,
// the agent's readiness checks) to a container's workloads: it is not user
// activity, so the built-in placeholder does not count it as such.
const ProbeHeader = "X-Idepool-Probe"

// Assignment binds a container to a workspace. It is sent to the agent over
// its control connection and is the only way S3 credentials reach a
// container.
type Assignment struct {
	Generation int64 `json:"generation"`
	// Epoch orders the containers a workspace has had: the claim's time
	// (Unix ns; EpochOf). The agent stamps it on every object it writes,
	// so one superseded while cut off (its container replaced on another
	// node) yields the name to the later one's writes instead of
	// overwriting them. 0: unknown (an orchestrator before it).
	Epoch       int64       `json:"epoch,omitempty"`
	Workspace   Workspace   `json:"workspace"`
	UserID      string      `json:"userId,omitempty"`
	Credentials Credentials `json:"credentials"`
	// S3Endpoint is a custom S3-compatible endpoint (path-style); empty
	// means AWS.
	S3Endpoint  string `json:"s3Endpoint,omitempty"`
	VNCPassword string `json:"vncPassword,omitempty"`
	// IdleExempt and PreWarmed complete the claim's record, which the
	// agent persists before it acknowledges: the orchestrator answers a
	// claim before its runtime labels say so, and after a crash in that
	// window it adopts the claim from the agent's hello (ClaimRecord).
	IdleExempt bool `json:"idleExempt,omitempty"`
	PreWarmed  bool `json:"preWarmed,omitempty"`
}

// ClaimRecord is what an agent keeps of its claim beside the workspace and
// generation (AgentReport's), reported in its hello: enough for an
// orchestrator that lost the claim (it crashed before writing the
// container's labels) to adopt it as it was. It holds no secret.
type ClaimRecord struct {
	Epoch      int64  `json:"epoch,omitempty"`
	UserID     string `json:"userId,omitempty"`
	IdleExempt bool   `json:"idleExempt,omitempty"`
	PreWarmed  bool   `json:"preWarmed,omitempty"`
}

// ClaimedAt is the claim's time (its epoch), zero when unknown.
func (r ClaimRecord) ClaimedAt() time.Time {
	if r.Epoch == 0 {
		return time.Time{}
	}
	return time.Unix(0, r.Epoch).UTC()
}

// EpochOf is the owner epoch of a claim made at claimedAt.
func EpochOf(claimedAt time.Time) int64 {
	if claimedAt.IsZero() {
		return 0
	}
	return claimedAt.UnixNano()
}

// AgentReportKind names what an agent reported.
type AgentReportKind string

// Agent report kinds.
const (
	// AgentHello: the agent connected (or reconnected) and said who it is;
	// Workspace and Generation say what it believes it is assigned to.
	AgentHello AgentReportKind = "hello"
	// AgentReady: every route's workload answers locally.
	AgentReady AgentReportKind = "ready"
	// AgentHeartbeat: periodic liveness with activity and process states.
	AgentHeartbeat AgentReportKind = "heartbeat"
	// AgentSynced: the initial pull of the assigned workspace finished.
	AgentSynced AgentReportKind = "synced"
	// AgentFlushed: every pending change was pushed (answer to a flush).
	AgentFlushed AgentReportKind = "flushed"
	// AgentSyncEvent: sync figures, a conflict or an error.
	AgentSyncEvent AgentReportKind = "sync"
	// AgentGone: the control connection closed.
	AgentGone AgentReportKind = "gone"
)

// ProcessStatus is one supervised workload process as the agent sees it.
type ProcessStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"` // running, restarting, exited, failed
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since,omitzero"`
	Message  string    `json:"message,omitempty"`
}

// SyncStats are an agent's workspace sync figures since it was assigned.
type SyncStats struct {
	BytesUp      int64         `json:"bytesUp"`
	BytesDown    int64         `json:"bytesDown"`
	ObjectsUp    int64         `json:"objectsUp"`
	ObjectsDown  int64         `json:"objectsDown"`
	Conflicts    int64         `json:"conflicts"`
	Errors       int64         `json:"errors"`
	Pending      int           `json:"pending"`
	Lag          time.Duration `json:"lag"`
	LastSync     time.Time     `json:"lastSync,omitzero"`
	LastError    string        `json:"lastError,omitempty"`
	LastConflict string        `json:"lastConflict,omitempty"`
	// DeletionsHeld: local files deleted in the store that the mass-deletion
	// guard keeps on disk until the deletions are confirmed.
	DeletionsHeld int `json:"deletionsHeld,omitempty"`
}

// AgentReport is one message from an agent, as the orchestrator consumes it.
type AgentReport struct {
	ContainerID string          `json:"containerId"`
	Kind        AgentReportKind `json:"kind"`
	Time        time.Time       `json:"time"`
	// Generation and Workspace: what the agent is assigned to (hello,
	// synced, flushed).
	Generation int64      `json:"generation,omitempty"`
	Workspace  *Workspace `json:"workspace,omitempty"`
	// Claim is the rest of the agent's persisted claim (hello).
	Claim *ClaimRecord `json:"claim,omitempty"`
	// Ready is the agent's readiness at hello/heartbeat time.
	Ready bool `json:"ready,omitempty"`
	// LastActivity is the newest user activity the agent saw (workspace
	// writes, workload sessions).
	LastActivity time.Time       `json:"lastActivity,omitzero"`
	Processes    []ProcessStatus `json:"processes,omitempty"`
	Sync         *SyncStats      `json:"sync,omitempty"`
	// Event is a sync event's type (conflict, error, limit) and Message its text.
	Event   string `json:"event,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}
