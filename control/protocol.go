// Package control is the agent control channel: the wire protocol spoken
// between an in-container agent and the orchestrator, and the server-side
// Hub that accepts agent connections.
//
// The agent dials the orchestrator (never the reverse) with a websocket at
// Path, authenticated by its per-container token ("Authorization: Bearer
// <token>" and HeaderContainer, checked before the upgrade; 401 otherwise,
// with HeaderRefused when the orchestrator does not know the agent).
// Messages are JSON text frames, one Message each, {"v":1,"type":...}:
//
//	agent → server
//	  hello      generation, workspace (if assigned), ready, processes, lastActivity
//	  ready      every route answers locally
//	  heartbeat  every 5 s: generation, ready, lastActivity, processes, sync
//	  ack        id and generation of an assign; error if refused (of a
//	             confirm-deletions: count, error if none were held)
//	  synced     generation, workspace, sync (error if the initial pull failed);
//	             re-sent after a reconnect and on a repeated assign
//	  flushed    id of the flush (none when the agent flushed on its own, at
//	             shutdown), generation, workspace, sync; error if it failed
//	  sync       event (conflict, error, limit), message, sync
//	server → agent
//	  assign     id, assignment (carries credentials: never logged)
//	  flush      id
//	  stop       flush, report flushed, exit
//	  confirm-deletions  id: apply the deletions the sync holds (answered
//	             by an ack with count, error if none are held)
//
// The server closes a connection silent for its heartbeat timeout, and the
// previous connection of a container when a new one authenticates.
package control

import (
	"time"

	"github.com/idepool/idepool"
)

// Version is the protocol version this package speaks. Every message carries
// it in "v"; a peer accepts messages of any version from 1 to its own, and
// ignores message types it does not know, so agents and orchestrators of
// neighbouring versions interoperate during upgrades.
const Version = 1

// Path is where the orchestrator serves the agent endpoint.
const Path = "/agent/v1/connect"

// HeaderContainer names the container id header the agent sends along with
// "Authorization: Bearer <token>".
const HeaderContainer = "X-Idepool-Container"

// HeaderRefused is set on the hub's 401 to an agent this orchestrator does
// not know (no such container, or not its token), with the value
// RefusedUnknownAgent: the agent then flushes its workspace and exits
// instead of retrying for ever. A 401 without it (from a proxy) is retried.
const HeaderRefused = "X-Idepool-Refused"

// RefusedUnknownAgent is HeaderRefused's value.
const RefusedUnknownAgent = "unknown-agent"

// DefaultReadLimit bounds one inbound message.
const DefaultReadLimit = 1 << 20

// Type is a message type.
type Type string

// Message types. agent→server: hello, ready, heartbeat, ack, synced,
// flushed, sync. server→agent: assign, flush, stop, confirm-deletions.
const (
	TypeHello     Type = "hello"
	TypeReady     Type = "ready"
	TypeHeartbeat Type = "heartbeat"
	TypeAck       Type = "ack"
	TypeSynced    Type = "synced"
	TypeFlushed   Type = "flushed"
	TypeSync      Type = "sync"
	TypeAssign    Type = "assign"
	TypeFlush     Type = "flush"
	TypeStop      Type = "stop"
	// TypeConfirmDeletions lets the deletions the agent's mass-deletion
	// guard holds go through.
	TypeConfirmDeletions Type = "confirm-deletions"
)

// Message is one frame in either direction. Which fields are set depends on
// Type; the report fields mirror idepool.AgentReport.
type Message struct {
	V    int  `json:"v"`
	Type Type `json:"type"`
	// ID is a request id: set by the server on assign and flush, echoed by
	// the agent on the matching ack and flushed.
	ID string `json:"id,omitempty"`

	// Assignment is set on assign. It carries credentials: never log it.
	Assignment *idepool.Assignment `json:"assignment,omitempty"`

	// Report fields (agent→server).
	Generation   int64                   `json:"generation,omitempty"`
	Workspace    *idepool.Workspace      `json:"workspace,omitempty"`
	Claim        *idepool.ClaimRecord    `json:"claim,omitempty"`
	Ready        bool                    `json:"ready,omitempty"`
	LastActivity time.Time               `json:"lastActivity,omitzero"`
	Processes    []idepool.ProcessStatus `json:"processes,omitempty"`
	Sync         *idepool.SyncStats      `json:"sync,omitempty"`
	Event        string                  `json:"event,omitempty"`
	Message      string                  `json:"message,omitempty"`
	// Error is set on an ack that refuses an assignment, a flushed whose
	// flush failed, or a sync error.
	Error string `json:"error,omitempty"`
	// Count is set on the ack of confirm-deletions: how many were held.
	Count int `json:"count,omitempty"`
}

// reportKinds maps the inbound message types that become an AgentReport.
var reportKinds = map[Type]idepool.AgentReportKind{
	TypeHello:     idepool.AgentHello,
	TypeReady:     idepool.AgentReady,
	TypeHeartbeat: idepool.AgentHeartbeat,
	TypeSynced:    idepool.AgentSynced,
	TypeFlushed:   idepool.AgentFlushed,
	TypeSync:      idepool.AgentSyncEvent,
}

// Report converts an inbound message into the report the orchestrator
// consumes. The container id comes from the authenticated connection, never
// from the message. ok is false for types that are not reports (ack).
func (m *Message) Report(containerID string, at time.Time) (r idepool.AgentReport, ok bool) {
	kind, ok := reportKinds[m.Type]
	if !ok {
		return idepool.AgentReport{}, false
	}
	return idepool.AgentReport{
		ContainerID:  containerID,
		Kind:         kind,
		Time:         at,
		Generation:   m.Generation,
		Workspace:    m.Workspace,
		Claim:        m.Claim,
		Ready:        m.Ready,
		LastActivity: m.LastActivity,
		Processes:    m.Processes,
		Sync:         m.Sync,
		Event:        m.Event,
		Message:      m.Message,
		Error:        m.Error,
	}, true
}

// FromReport builds an agent→server message of type t from a report (the
// agent uses it to forward what its Syncer reports).
func FromReport(t Type, r idepool.AgentReport) Message {
	return Message{
		V:            Version,
		Type:         t,
		Generation:   r.Generation,
		Workspace:    r.Workspace,
		Claim:        r.Claim,
		Ready:        r.Ready,
		LastActivity: r.LastActivity,
		Processes:    r.Processes,
		Sync:         r.Sync,
		Event:        r.Event,
		Message:      r.Message,
		Error:        r.Error,
	}
}
