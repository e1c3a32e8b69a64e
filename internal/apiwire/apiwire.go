// Package apiwire holds JSON shapes of the REST API that both its server
// (httpapi) and its Go client (client) use, so the two cannot drift apart.
// The OpenAPI document (httpapi/openapi.json) describes them.
package apiwire

import (
	"time"

	"github.com/idepool/idepool"
)

// URLs are the original's URL field names of a container's routes.
type URLs struct {
	VNC        string `json:"vnc,omitempty"`
	CodeServer string `json:"codeServer,omitempty"`
	WebServer  string `json:"webServer,omitempty"`
	Terminal   string `json:"terminal,omitempty"`
}

// StartResponse is the answer to a start. Its URLs carry one-time tokens.
type StartResponse struct {
	ID          string            `json:"id"`
	ServiceName string            `json:"serviceName"`
	Status      string            `json:"status"`
	State       idepool.State     `json:"state"`
	Ready       bool              `json:"ready"`
	URLs        URLs              `json:"urls"`
	Routes      map[string]string `json:"routes"`
	Message     string            `json:"message"`
	IsPreWarmed bool              `json:"isPreWarmed"`
	IsReused    bool              `json:"isReused"`
	Claim       idepool.ClaimKind `json:"claim"`
	Profile     string            `json:"profile"`
	S3Bucket    string            `json:"s3Bucket"`
	S3Prefix    string            `json:"s3Prefix,omitempty"`
	Generation  int64             `json:"generation"`
	CreatedAt   time.Time         `json:"createdAt"`
}

// Container is a container in GET answers: the original's detail fields
// plus ours. Its URLs carry no token.
type Container struct {
	ID             string             `json:"id"`
	ServiceName    string             `json:"serviceName"`
	Status         string             `json:"status"`
	State          idepool.State      `json:"state"`
	Profile        string             `json:"profile"`
	URLs           URLs               `json:"urls"`
	Routes         map[string]string  `json:"routes"`
	S3Bucket       string             `json:"s3Bucket"`
	Workspace      *idepool.Workspace `json:"workspace,omitempty"`
	UserID         string             `json:"userId,omitempty"`
	Generation     int64              `json:"generation"`
	CreatedAt      time.Time          `json:"createdAt"`
	StartedAt      *time.Time         `json:"startedAt"`
	StoppedAt      *time.Time         `json:"stoppedAt"`
	LastActivity   *time.Time         `json:"lastActivity"`
	Uptime         int64              `json:"uptime"`
	ShutdownReason string             `json:"shutdownReason,omitempty"`
	Message        string             `json:"message,omitempty"`
	ResourceLimits ResourceLimits     `json:"resourceLimits"`
	Health         Health             `json:"health"`
	IsPreWarmed    bool               `json:"isPreWarmed"`
	IdleExempt     bool               `json:"idleExempt"`
	Node           string             `json:"node,omitempty"`
	// ReplacedBy names the container that replaced this one in place.
	ReplacedBy string `json:"replacedBy,omitempty"`
}

// ResourceLimits are a container's profile's limits.
type ResourceLimits struct {
	CPULimit    float64 `json:"cpuLimit"`
	MemoryLimit int64   `json:"memoryLimit"`
}

// Health is a container's last health verdict.
type Health struct {
	Status              idepool.HealthStatus `json:"status"`
	LastCheck           *time.Time           `json:"lastCheck"`
	Checks              map[string]string    `json:"checks"`
	ConsecutiveFailures int                  `json:"consecutiveFailures"`
}
