package idepool

import "time"

// EventType names what happened.
type EventType string

// Event types.
const (
	EventState     EventType = "container.state"   // a state change
	EventClaim     EventType = "container.claimed" // a claim (warm, cold or reused)
	EventRefused   EventType = "claim.refused"     // a start refused (capacity, limits)
	EventQueued    EventType = "claim.queued"      // a start waiting in the admission queue
	EventHealth    EventType = "container.health"  // a health verdict changed
	EventStopped   EventType = "container.stopped" // removed, with Reason
	EventSync      EventType = "sync.status"       // synced / flushed / progress
	EventConflict  EventType = "sync.conflict"     // a sync conflict kept both versions
	EventSyncError EventType = "sync.error"        // a sync error or limit hit
	// EventSyncRemoteReset: the workspace's store lost its identity marker
	// (emptied, or replaced by an empty one); nothing was deleted on disk
	// and the files are uploaded again.
	EventSyncRemoteReset EventType = "sync.remote_reset"
	// EventSyncDeletionsHeld: a sync pass would delete a large share of a
	// container's files; they stay on disk until confirmed (Data: count).
	EventSyncDeletionsHeld EventType = "sync.deletions_held"
	EventPool              EventType = "pool.target" // a pool target changed
	EventCreateFail        EventType = "container.create-failed"
	EventAgent             EventType = "agent.connection" // an agent connected or disconnected
	// EventSalvaged: a dead container's unsynced files were pushed before
	// its removal (Data: salvaged, uploaded, conflicts, failed), or could
	// not be reached (Reason "unreachable"; Data lastSync: later edits may
	// be lost).
	EventSalvaged EventType = "container.salvaged"
)

// Event is one structured happening, streamed at /api/events and kept in a
// bounded history. It never carries a secret.
type Event struct {
	// ID increases by one for each event of one orchestrator run (SSE id).
	ID          uint64         `json:"id"`
	Time        time.Time      `json:"time"`
	Type        EventType      `json:"type"`
	ContainerID string         `json:"containerId,omitempty"`
	Profile     string         `json:"profile,omitempty"`
	State       State          `json:"state,omitempty"`
	Reason      string         `json:"reason,omitempty"`
	Message     string         `json:"message,omitempty"`
	Data        map[string]any `json:"data,omitempty"`
}

// EventSink receives events. Publish must not block for long: sinks buffer.
type EventSink interface {
	Publish(Event)
}

// EventSinkFunc adapts a function to EventSink.
type EventSinkFunc func(Event)

// Publish calls f(e).
func (f EventSinkFunc) Publish(e Event) { f(e) }

// Clock is the time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
