package idepool

import (
	"crypto/rand"
	"errors"
	"strconv"
	"time"
)

// State is where a container is in its life, as the orchestrator sees it
// (the runtime's own view is RuntimeStatus).
//
//	creating ─► starting ─► warm ─► syncing ─► running ─► stopping ─► stopped
//	    │           │         │  (claim)                   ▲
//	    └───────────┴─────────┴──────────► failed ─────────┘
//
// A cold start skips warm: creating ─► starting ─► syncing ─► running.
type State string

// States of a container.
const (
	// StateCreating: the runtime was asked to create it; nothing runs yet.
	StateCreating State = "creating"
	// StateStarting: it runs, but its agent has not yet said it is ready
	// (hello received and every route's workload answering).
	StateStarting State = "starting"
	// StateWarm: ready and unclaimed, waiting in the pool.
	StateWarm State = "warm"
	// StateSyncing: claimed; the agent is pulling the workspace.
	StateSyncing State = "syncing"
	// StateRunning: claimed, synced and ready for its user.
	StateRunning State = "running"
	// StateStopping: the agent is flushing; removal follows.
	StateStopping State = "stopping"
	// StateStopped: removed from the runtime.
	StateStopped State = "stopped"
	// StateFailed: it died or never became ready; it will be removed.
	StateFailed State = "failed"
)

// AllStates lists every state, in life order.
var AllStates = []State{StateCreating, StateStarting, StateWarm, StateSyncing, StateRunning, StateStopping, StateStopped, StateFailed}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	for _, k := range AllStates {
		if s == k {
			return true
		}
	}
	return false
}

// Claimed reports whether a container in this state belongs to a workspace.
func (s State) Claimed() bool { return s == StateSyncing || s == StateRunning }

// Live reports whether the container counts against capacity and pools.
func (s State) Live() bool { return s != StateStopped && s != StateFailed }

// HealthStatus is a health verdict.
type HealthStatus string

// Health verdicts.
const (
	HealthUnknown   HealthStatus = "unknown"
	HealthHealthy   HealthStatus = "healthy"
	HealthUnhealthy HealthStatus = "unhealthy"
)

// Health is a container's last verdict and what led to it.
type Health struct {
	Status              HealthStatus      `json:"status"`
	LastCheck           time.Time         `json:"lastCheck,omitzero"`
	Checks              map[string]string `json:"checks,omitempty"`
	ConsecutiveFailures int               `json:"consecutiveFailures"`
}

// Container is the orchestrator's view of one IDE instance.
type Container struct {
	ID      string `json:"id"`
	Profile string `json:"profile"`
	State   State  `json:"state"`
	// Workspace is set once claimed (or when created cold for a workspace).
	Workspace *Workspace `json:"workspace,omitempty"`
	UserID    string     `json:"userId,omitempty"`
	// Generation counts claims of this container; it is 0 while warm.
	Generation int64 `json:"generation"`
	// PreWarmed is true when the container was claimed from the pool.
	PreWarmed    bool              `json:"preWarmed"`
	CreatedAt    time.Time         `json:"createdAt"`
	ReadyAt      time.Time         `json:"readyAt,omitzero"`
	ClaimedAt    time.Time         `json:"claimedAt,omitzero"`
	StoppedAt    time.Time         `json:"stoppedAt,omitzero"`
	LastActivity time.Time         `json:"lastActivity,omitzero"`
	Health       Health            `json:"health"`
	Endpoints    map[string]string `json:"endpoints,omitempty"`
	Node         string            `json:"node,omitempty"`
	// StopReason says why it stopped: manual, inactivity, unhealthy,
	// max-age, capacity, failed, excess.
	StopReason string `json:"stopReason,omitempty"`
	// Message is a human explanation of a failure.
	Message string `json:"message,omitempty"`
	// IdleExempt containers are never idle-stopped (an exam).
	IdleExempt bool `json:"idleExempt,omitempty"`
}

// Stop reasons.
const (
	ReasonManual     = "manual"
	ReasonInactivity = "inactivity"
	ReasonUnhealthy  = "unhealthy"
	ReasonMaxAge     = "max-age"
	ReasonCapacity   = "capacity"
	ReasonFailed     = "failed"
	ReasonExcess     = "excess"
	ReasonOrphan     = "orphan"
)

// ReasonNeverFits is the reason (Error.Details["reason"]) of a capacity
// refusal that waiting cannot cure: no node is large enough for the
// profile. Such a start is refused at once, never queued.
const ReasonNeverFits = "never-fits"

// NeverFits reports whether err is a refusal for a profile no node can
// ever hold.
func NeverFits(err error) bool {
	var ie *Error
	if !errors.As(err, &ie) || ie.Code != ECapacity {
		return false
	}
	r, _ := ie.Details["reason"].(string)
	return r == ReasonNeverFits
}

// NewID returns a fresh container id: 12 characters of [a-z0-9] from
// crypto/rand (the original used Math.random).
func NewID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 12)
	rand.Read(b) // never fails (crypto/rand documents it)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	// A leading letter keeps it a valid DNS label and service name.
	b[0] = alphabet[int(b[0])%26]
	return string(b)
}

// ValidID reports whether s has the shape of a container id; the router and
// API refuse anything else before looking it up.
func ValidID(s string) bool {
	if len(s) < 4 || len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Labels are the runtime-side record of a container: the source of truth
// after a restart. No secret ever goes into a label.
const (
	// LabelManaged marks everything idepool created; its value is the
	// deployment name, so two idepools on one engine leave each other alone.
	LabelManaged    = "idepool.managed"
	LabelID         = "idepool.id"
	LabelProfile    = "idepool.profile"
	LabelCreated    = "idepool.created"     // RFC 3339 (UTC, nanoseconds)
	LabelTokenHash  = "idepool.token-hash"  // hex SHA-256 of the agent token (the token is never stored)
	LabelBucket     = "idepool.s3.bucket"   // set once claimed
	LabelPrefix     = "idepool.s3.prefix"   // normalised
	LabelRegion     = "idepool.s3.region"   //
	LabelBucketID   = "idepool.s3.bucketid" // the original's s3BucketId
	LabelUser       = "idepool.user"
	LabelGeneration = "idepool.generation" // claim generation, decimal
	LabelClaimed    = "idepool.claimed"    // RFC 3339
	LabelPreWarmed  = "idepool.prewarmed"  // "true" when claimed from the pool
	LabelIdleExempt = "idepool.idle-exempt"
)

// IsRuntimeLabel reports whether k is one of the labels a Runtime sets
// itself at creation (LabelManaged, LabelID, LabelProfile, LabelCreated):
// a caller cannot set or change them.
func IsRuntimeLabel(k string) bool {
	switch k {
	case LabelManaged, LabelID, LabelProfile, LabelCreated:
		return true
	}
	return false
}

// WorkspaceFromLabels returns the workspace recorded in labels, if any.
func WorkspaceFromLabels(l map[string]string) (Workspace, bool) {
	if l[LabelBucket] == "" {
		return Workspace{}, false
	}
	return Workspace{Bucket: l[LabelBucket], Prefix: l[LabelPrefix], Region: l[LabelRegion], BucketID: l[LabelBucketID]}, true
}

// ClaimLabels returns the labels that record a claim of a container for w.
func ClaimLabels(w Workspace, user string, generation int64, preWarmed bool, at time.Time) map[string]string {
	return map[string]string{
		LabelBucket:     w.Bucket,
		LabelPrefix:     NormalizePrefix(w.Prefix),
		LabelRegion:     w.Region,
		LabelBucketID:   w.BucketID,
		LabelUser:       user,
		LabelGeneration: strconv.FormatInt(generation, 10),
		LabelClaimed:    at.UTC().Format(time.RFC3339Nano),
		LabelPreWarmed:  strconv.FormatBool(preWarmed),
	}
}
