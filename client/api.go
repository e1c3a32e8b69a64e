package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/apiwire"
)

// StartRequest asks for a container for a workspace.
type StartRequest struct {
	Bucket   string
	Prefix   string
	Region   string
	BucketID string
	// Profile defaults to the server's "default".
	Profile string
	UserID  string
	// Credentials for the workspace; empty means the server's own.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	VNCPassword     string
	IdleExempt      bool
	// Wait asks the server to answer once the container runs (or
	// WaitTimeout passes: the answer is then 202 with Ready false).
	Wait        bool
	WaitTimeout time.Duration
}

// URLs are the original's URL fields of a start answer (the server's own
// type: one shape on both sides).
type URLs = apiwire.URLs

// StartResponse is the answer to a start. Its URLs carry one-time tokens.
type StartResponse struct {
	apiwire.StartResponse
	// HTTPStatus is 201 (new claim), 200 (reused) or 202 (waited, not ready).
	HTTPStatus int `json:"-"`
}

// Container is one container as GET answers show it (URLs without tokens):
// the server's own type.
type Container = apiwire.Container

// ListOptions select containers.
type ListOptions struct {
	// Status holds the original's statuses (running, starting, stopped,
	// failed) or our states; empty means every live container.
	Status []string
	// State holds exact states only (warm, syncing, ...).
	State   []string
	Profile string
	// Limit (default 50, at most 500) and Offset page through the list.
	Limit  int
	Offset int
}

// ContainerList is one page of a listing, with the true total.
type ContainerList struct {
	Containers []Container `json:"containers"`
	Total      int         `json:"total"`
	Limit      int         `json:"limit"`
	Offset     int         `json:"offset"`
}

// StopResponse is the answer to a stop.
type StopResponse struct {
	Message   string    `json:"message"`
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	StoppedAt time.Time `json:"stoppedAt"`
	Reason    string    `json:"reason"`
}

// Health is GET /api/health. A degraded server answers 503 with this body;
// Health returns it without an error (Status "degraded").
type Health struct {
	Status    string `json:"status"`
	Timestamp string `json:"timestamp"`
	Version   string `json:"version"`
	Runtime   struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		Error     string `json:"error,omitempty"`
	} `json:"runtime"`
	Resources struct {
		CPU struct {
			Cores        float64 `json:"cores"`
			UsagePercent float64 `json:"usagePercent"`
		} `json:"cpu"`
		Memory     Usage `json:"memory"`
		Disk       Usage `json:"disk"`
		Containers struct {
			Running int `json:"running"`
			Total   int `json:"total"`
		} `json:"containers"`
	} `json:"resources"`
	Pools []idepool.PoolStatus `json:"pools"`
}

// Usage is a memory or disk figure in bytes.
type Usage struct {
	Total        int64   `json:"total"`
	Used         int64   `json:"used"`
	Available    int64   `json:"available"`
	UsagePercent float64 `json:"usagePercent"`
}

// ProfileInfo is one profile as GET /api/profiles shows it.
type ProfileInfo struct {
	Name        string          `json:"name"`
	Routes      []idepool.Route `json:"routes"`
	CPULimit    float64         `json:"cpuLimit"`
	MemoryLimit int64           `json:"memoryLimit"`
	PoolTarget  int             `json:"poolTarget"`
	IdleTimeout float64         `json:"idleTimeoutSeconds,omitempty"`
}

// Start claims a container for a workspace. With req.Wait the call lasts
// until the container runs or req.WaitTimeout (server default 60 s) passes.
func (c *Client) Start(ctx context.Context, req StartRequest) (StartResponse, error) {
	body := map[string]any{"s3Bucket": req.Bucket}
	for k, v := range map[string]string{
		"s3Prefix": req.Prefix, "s3Region": req.Region, "s3BucketId": req.BucketID, "profile": req.Profile,
		"userId": req.UserID, "awsAccessKeyId": req.AccessKeyID, "awsSecretAccessKey": req.SecretAccessKey,
		"awsSessionToken": req.SessionToken, "vncPassword": req.VNCPassword,
	} {
		if v != "" {
			body[k] = v
		}
	}
	if req.IdleExempt {
		body["idleExempt"] = true
	}
	q := url.Values{}
	var extra time.Duration
	if req.Wait {
		q.Set("wait", "ready")
		extra = 60 * time.Second
		if req.WaitTimeout > 0 {
			q.Set("timeout", req.WaitTimeout.String())
			extra = req.WaitTimeout
		}
	}
	var out StartResponse
	status, err := c.do(ctx, http.MethodPost, "/api/containers/start", q, body, &out, extra)
	out.HTTPStatus = status
	return out, err
}

// List returns one page of containers.
func (c *Client) List(ctx context.Context, o ListOptions) (ContainerList, error) {
	q := url.Values{}
	if len(o.Status) > 0 {
		q.Set("status", strings.Join(o.Status, ","))
	}
	if len(o.State) > 0 {
		q.Set("state", strings.Join(o.State, ","))
	}
	if o.Profile != "" {
		q.Set("profile", o.Profile)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Offset > 0 {
		q.Set("offset", strconv.Itoa(o.Offset))
	}
	var out ContainerList
	_, err := c.do(ctx, http.MethodGet, "/api/containers", q, nil, &out, 0)
	return out, err
}

// ListAll pages through every matching container (o.Limit is the page
// size; at most maxPages pages are read, so a growing list cannot loop
// forever).
func (c *Client) ListAll(ctx context.Context, o ListOptions) ([]Container, error) {
	const maxPages = 200
	if o.Limit <= 0 {
		o.Limit = 500
	}
	var all []Container
	for range maxPages {
		page, err := c.List(ctx, o)
		if err != nil {
			return all, err
		}
		all = append(all, page.Containers...)
		o.Offset += len(page.Containers)
		if len(page.Containers) == 0 || o.Offset >= page.Total {
			return all, nil
		}
	}
	return all, nil
}

// Get returns one container; an unknown id gives an *Error with status 404.
func (c *Client) Get(ctx context.Context, id string) (Container, error) {
	if err := checkID(id); err != nil {
		return Container{}, err
	}
	var out Container
	_, err := c.do(ctx, http.MethodGet, "/api/containers/"+id, nil, nil, &out, 0)
	return out, err
}

// Stop flushes and removes a container. It may take as long as the
// server's flush timeout, which the call allows on top of Timeout.
func (c *Client) Stop(ctx context.Context, id string) (StopResponse, error) {
	if err := checkID(id); err != nil {
		return StopResponse{}, err
	}
	var out StopResponse
	_, err := c.do(ctx, http.MethodDelete, "/api/containers/"+id, nil, nil, &out, 2*time.Minute)
	return out, err
}

// Pools returns every profile's pool.
func (c *Client) Pools(ctx context.Context) ([]idepool.PoolStatus, error) {
	var out struct {
		Pools []idepool.PoolStatus `json:"pools"`
	}
	_, err := c.do(ctx, http.MethodGet, "/api/pool", nil, nil, &out, 0)
	return out.Pools, err
}

// SetPoolTarget changes how many warm containers profile keeps.
func (c *Client) SetPoolTarget(ctx context.Context, profile string, n int) (idepool.PoolStatus, error) {
	var out idepool.PoolStatus
	if profile == "" || strings.ContainsAny(profile, "/?#") {
		return out, &Error{Status: http.StatusBadRequest, Code: idepool.EInvalid, Message: fmt.Sprintf("profile %q is not a profile name", profile)}
	}
	_, err := c.do(ctx, http.MethodPut, "/api/pool/"+url.PathEscape(profile), nil, map[string]int{"target": n}, &out, 0)
	return out, err
}

// Profiles lists the server's profiles.
func (c *Client) Profiles(ctx context.Context) ([]ProfileInfo, error) {
	var out struct {
		Profiles []ProfileInfo `json:"profiles"`
	}
	_, err := c.do(ctx, http.MethodGet, "/api/profiles", nil, nil, &out, 0)
	return out.Profiles, err
}

// Health returns the server's health. A degraded server's report (HTTP 503
// with a health body) comes back without an error.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var out Health
	res, b, err := c.roundTrip(ctx, http.MethodGet, "/api/health", nil, nil, 0)
	if err != nil {
		return out, err
	}
	ok := res.StatusCode == http.StatusOK || res.StatusCode == http.StatusServiceUnavailable
	if ok && json.Unmarshal(b, &out) == nil && out.Status != "" {
		return out, nil
	}
	if res.StatusCode >= 200 && res.StatusCode <= 299 {
		return out, fmt.Errorf("GET /api/health: the answer is not a health report")
	}
	return out, decodeError(res, b)
}

// checkID refuses what cannot be a container id before it goes in a path.
func checkID(id string) error {
	if !idepool.ValidID(id) {
		return &Error{Status: http.StatusNotFound, Code: idepool.ENotFound, Message: fmt.Sprintf("%q is not a container id", id)}
	}
	return nil
}
