package idepool

import "time"

// StartRequest asks for a container for a workspace (POST /api/containers/start).
type StartRequest struct {
	Workspace Workspace
	// Profile defaults to DefaultProfile.
	Profile string
	UserID  string
	// Credentials for the workspace; zero means the orchestrator's own.
	Credentials Credentials
	// VNCPassword is passed to the agent in the assignment (never stored).
	VNCPassword string
	// IdleExempt asks that the container never be idle-stopped.
	IdleExempt bool
	// WaitsReady: the caller waits until the container is ready (the
	// API's ?wait=ready), so the pool may give it a container it is
	// already creating rather than create one for it. A caller that does
	// not wait is answered with its own container at once.
	WaitsReady bool
}

// ClaimKind says how a start was served.
type ClaimKind string

// Claim kinds.
const (
	ClaimWarm    ClaimKind = "warm"    // taken from the pool
	ClaimCold    ClaimKind = "cold"    // created for this start
	ClaimReused  ClaimKind = "reused"  // the workspace already had a live container
	ClaimRefused ClaimKind = "refused" // refused (capacity, limits)
)

// Claim is the answer to a start.
type Claim struct {
	Container Container
	Kind      ClaimKind
}

// PoolStatus is one profile's pool at a moment.
type PoolStatus struct {
	Profile  string `json:"profile"`
	Target   int    `json:"target"`
	Warm     int    `json:"warm"`
	Starting int    `json:"starting"`
	Claimed  int    `json:"claimed"`
	Failed   int    `json:"failed"`
	// BackoffUntil is set while failed creates hold refills back.
	BackoffUntil time.Time `json:"backoffUntil,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
	// NodesLackingImage are the nodes where a container of the profile was
	// rejected for want of its image: new ones are kept off them until
	// RetryAt (the image may have been loaded since).
	NodesLackingImage []NodeImageProblem `json:"nodesLackingImage,omitempty"`
}

// NodeImageProblem is a node on which a profile's image was missing.
type NodeImageProblem struct {
	Node    string    `json:"node"`
	Error   string    `json:"error"`
	Since   time.Time `json:"since"`
	RetryAt time.Time `json:"retryAt"`
}

// ContainerFilter selects containers for a listing.
type ContainerFilter struct {
	// States to include; empty means all live states.
	States  []State
	Profile string
	Limit   int
	Offset  int
}
