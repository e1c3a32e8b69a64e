package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// Classroom is the orchestrator's side of the classroom minute (issue 8):
// the admission queue, scheduled pools, pre-assignment and replaced
// containers. *pool.Manager implements it through a thin adapter in package
// server (the types below mirror pool's field for field, so each converts
// with a plain conversion). Options.Classroom, or else an Orchestrator that
// implements it, serves the routes; without one they answer 503.
type Classroom interface {
	// StartOrQueue starts like Orchestrator.Start, or returns the ticket
	// of a start that waits in the admission queue.
	StartOrQueue(ctx context.Context, req idepool.StartRequest) (idepool.Claim, *QueueTicket, error)
	Ticket(id string) (QueueTicket, error)
	// WaitTicket waits until the queued start is served (its claim) or
	// refused, or ctx ends.
	WaitTicket(ctx context.Context, id string) (idepool.Claim, error)
	Schedules(profile string) ([]ScheduleWindow, error)
	SetSchedules(ctx context.Context, profile string, ws []ScheduleWindow) error
	Prepare(ctx context.Context, req PrepareRequest) ([]PrepareResult, error)
	// ReplacedBy names the container that replaced id (health replaced it
	// in place).
	ReplacedBy(id string) (string, bool)
}

// QueueTicket mirrors pool.Ticket.
type QueueTicket struct {
	ID          string
	Profile     string
	Workspace   idepool.Workspace
	State       string // queued, assigned, failed, cancelled
	Position    int
	Estimate    time.Duration
	EnqueuedAt  time.Time
	Deadline    time.Time
	ContainerID string
	Code        idepool.Code
	Error       string
}

// ScheduleWindow mirrors pool.Window (and config.Schedule).
type ScheduleWindow struct {
	Days     []string `json:"days,omitempty"`
	Start    string   `json:"start"`
	End      string   `json:"end"`
	Timezone string   `json:"timezone,omitempty"`
	Target   int      `json:"target"`
}

// PrepareRequest mirrors pool.PrepareRequest.
type PrepareRequest struct {
	Profile     string
	Workspaces  []idepool.Workspace
	Credentials idepool.Credentials
	ExpiresAt   time.Time
}

// PrepareResult mirrors pool.PrepareResult.
type PrepareResult struct {
	Workspace   idepool.Workspace
	Status      string
	ContainerID string
	State       idepool.State
	Kind        idepool.ClaimKind
	Code        idepool.Code
	Error       string
}

// Limits of the classroom routes.
const (
	maxSchedules   = 50
	maxPrepare     = 1000
	maxPrepareSecs = 24 * 3600
)

func (s *Server) classroom() (Classroom, error) {
	if s.o.Classroom != nil {
		return s.o.Classroom, nil
	}
	if c, ok := s.o.Orchestrator.(Classroom); ok {
		return c, nil
	}
	return nil, idepool.Errorf(idepool.EUnavailable, "the admission queue, schedules and pre-assignment are not available here")
}

// startOrQueue serves a start (sc.req), filling sc.claim: with a Classroom
// a start that has to wait is queued (sc.queued); with sc.wait it first
// waits up to sc.timeout to be served.
func (s *Server) startOrQueue(r *http.Request, sc *startCall) error {
	cl, err := s.classroom()
	if err != nil {
		return s.startOnly(r, sc)
	}
	sc.claim, sc.queued, err = cl.StartOrQueue(r.Context(), sc.req)
	if err != nil || sc.queued == nil || !sc.wait {
		return err
	}
	return s.waitQueued(r, cl, sc)
}

// startOnly serves a start without a Classroom (no queue).
//
//go:noinline
func (s *Server) startOnly(r *http.Request, sc *startCall) error {
	var err error
	sc.claim, err = s.o.Orchestrator.Start(r.Context(), sc.req)
	return err
}

// waitQueued waits for a queued start (sc.queued) to be served: sc.claim,
// or still queued at the timeout (sc.queued, its state then).
//
//go:noinline
func (s *Server) waitQueued(r *http.Request, cl Classroom, sc *startCall) error {
	ctx, cancel := context.WithTimeout(r.Context(), sc.timeout)
	claim, err := cl.WaitTicket(ctx, sc.queued.ID)
	cancel()
	switch {
	case err == nil:
		sc.claim, sc.queued = claim, nil
		return nil
	case r.Context().Err() != nil:
		return r.Context().Err()
	case errors.Is(err, context.DeadlineExceeded) || idepool.ErrorCode(err) == idepool.ETimeout:
		now, terr := cl.Ticket(sc.queued.ID)
		if terr != nil {
			return terr
		}
		sc.claim, sc.queued = idepool.Claim{}, &now
		return nil
	default:
		return err
	}
}

// ticketBody is a queued start (202) and GET /api/queue/{ticket}.
type ticketBody struct {
	Ticket          string     `json:"ticket"`
	Status          string     `json:"status"`
	Profile         string     `json:"profile"`
	S3Bucket        string     `json:"s3Bucket"`
	S3Prefix        string     `json:"s3Prefix,omitempty"`
	Position        int        `json:"position"`
	EstimateSeconds float64    `json:"estimateSeconds"`
	EnqueuedAt      time.Time  `json:"enqueuedAt"`
	Deadline        time.Time  `json:"deadline"`
	StatusURL       string     `json:"statusUrl"`
	ContainerID     string     `json:"containerId,omitempty"`
	ContainerURL    string     `json:"containerUrl,omitempty"`
	Error           *errorInfo `json:"error,omitempty"`
	Message         string     `json:"message"`
}

type errorInfo struct {
	Code    idepool.Code `json:"code"`
	Message string       `json:"message"`
}

func ticketBodyOf(t QueueTicket) ticketBody {
	b := ticketBody{Ticket: t.ID, Status: t.State, Profile: t.Profile, S3Bucket: t.Workspace.Bucket, S3Prefix: t.Workspace.Prefix,
		Position: t.Position, EstimateSeconds: t.Estimate.Seconds(), EnqueuedAt: t.EnqueuedAt, Deadline: t.Deadline,
		StatusURL: "/api/queue/" + t.ID}
	switch t.State {
	case "queued":
		b.Message = fmt.Sprintf("No container is free: the start waits in the queue at position %d (about %s). Poll %s (?wait=ready waits).",
			t.Position, t.Estimate.Round(time.Second), b.StatusURL)
	case "assigned":
		b.ContainerID = t.ContainerID
		b.ContainerURL = "/api/containers/" + t.ContainerID
		b.Message = "Container assigned; POST /api/containers/start again for its URLs (answers 200, reused)"
	default:
		b.Error = &errorInfo{Code: t.Code, Message: t.Error}
		b.Message = "The queued start ended without a container: " + t.Error
	}
	return b
}

// writeQueued answers a start that waits: 202 with where to poll.
func (s *Server) writeQueued(w http.ResponseWriter, t QueueTicket) error {
	b := ticketBodyOf(t)
	w.Header().Set("Location", b.StatusURL)
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(t.Estimate.Seconds()+0.5))))
	s.writeJSON(w, http.StatusAccepted, b)
	return nil
}

func validTicketID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	return !strings.ContainsFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	})
}

// handleQueueTicket answers a queued start's state; ?wait=ready waits (up
// to timeout) until it is served or refused.
func (s *Server) handleQueueTicket(w http.ResponseWriter, r *http.Request) error {
	cl, err := s.classroom()
	if err != nil {
		return err
	}
	id := r.PathValue("ticket")
	if !validTicketID(id) {
		return idepool.Errorf(idepool.ENotFound, "ticket %q not found", truncate(id, 64))
	}
	wait, timeout, err := s.waitOptions(r)
	if err != nil {
		return err
	}
	t, err := cl.Ticket(id)
	if err != nil {
		return err
	}
	if wait && t.State == "queued" {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		_, werr := cl.WaitTicket(ctx, id)
		cancel()
		if r.Context().Err() != nil {
			return r.Context().Err()
		}
		if werr != nil && idepool.ErrorCode(werr) == idepool.ENotFound {
			return werr
		}
		if t, err = cl.Ticket(id); err != nil {
			return err
		}
	}
	s.writeJSON(w, http.StatusOK, ticketBodyOf(t))
	return nil
}

type schedulesBody struct {
	Profile   string           `json:"profile"`
	Schedules []ScheduleWindow `json:"schedules"`
}

func (s *Server) handleGetSchedules(w http.ResponseWriter, r *http.Request) error {
	cl, err := s.classroom()
	if err != nil {
		return err
	}
	name := r.PathValue("profile")
	if _, ok := s.profile(name); !ok {
		return s.unknownProfile(name)
	}
	ws, err := cl.Schedules(name)
	if err != nil {
		return err
	}
	if ws == nil {
		ws = []ScheduleWindow{}
	}
	s.writeJSON(w, http.StatusOK, schedulesBody{Profile: name, Schedules: ws})
	return nil
}

// handleSetSchedules replaces a profile's schedule windows (in memory; the
// profiles file is the lasting record).
func (s *Server) handleSetSchedules(w http.ResponseWriter, r *http.Request) error {
	cl, err := s.classroom()
	if err != nil {
		return err
	}
	name := r.PathValue("profile")
	var b struct {
		Schedules *[]ScheduleWindow `json:"schedules"`
	}
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	if _, ok := s.profile(name); !ok {
		return s.unknownProfile(name)
	}
	if b.Schedules == nil {
		return &idepool.Error{Code: idepool.EInvalid, Message: "field schedules is required (an empty list clears them)",
			Details: map[string]any{"field": "schedules"}}
	}
	ws := *b.Schedules
	if len(ws) > maxSchedules {
		return &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("field schedules: at most %d windows", maxSchedules),
			Details: map[string]any{"field": "schedules"}}
	}
	for i, x := range ws {
		if x.Target < 0 || x.Target > maxPoolTarget {
			return &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("schedules[%d].target: want 0 to %d", i, maxPoolTarget),
				Details: map[string]any{"field": fmt.Sprintf("schedules[%d].target", i)}}
		}
	}
	if err := cl.SetSchedules(r.Context(), name, ws); err != nil {
		return err
	}
	if ws, err = cl.Schedules(name); err != nil {
		return err
	}
	if ws == nil {
		ws = []ScheduleWindow{}
	}
	s.writeJSON(w, http.StatusOK, schedulesBody{Profile: name, Schedules: ws})
	return nil
}

type prepareWorkspace struct {
	S3Bucket   string `json:"s3Bucket"`
	S3Prefix   string `json:"s3Prefix"`
	S3Region   string `json:"s3Region"`
	S3BucketID string `json:"s3BucketId"`
}

type prepareResultBody struct {
	S3Bucket    string            `json:"s3Bucket"`
	S3Prefix    string            `json:"s3Prefix,omitempty"`
	Status      string            `json:"status"`
	ContainerID string            `json:"containerId,omitempty"`
	State       idepool.State     `json:"state,omitempty"`
	Claim       idepool.ClaimKind `json:"claim,omitempty"`
	Error       *errorInfo        `json:"error,omitempty"`
}

// handlePrepare binds containers to workspaces ahead of their starts (a
// class about to begin); their agents pull the files at once.
func (s *Server) handlePrepare(w http.ResponseWriter, r *http.Request) error {
	cl, err := s.classroom()
	if err != nil {
		return err
	}
	var b struct {
		Profile            string             `json:"profile"`
		Workspaces         []prepareWorkspace `json:"workspaces"`
		ExpiresInSeconds   *float64           `json:"expiresInSeconds"`
		ExpiresAt          *time.Time         `json:"expiresAt"`
		AWSAccessKeyID     string             `json:"awsAccessKeyId"`
		AWSSecretAccessKey string             `json:"awsSecretAccessKey"`
		AWSSessionToken    string             `json:"awsSessionToken"`
	}
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	invalid := func(field, format string, a ...any) error {
		return &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf(format, a...), Details: map[string]any{"field": field}}
	}
	if b.Profile != "" {
		if _, ok := s.profile(b.Profile); !ok {
			return s.unknownProfile(b.Profile)
		}
	}
	if len(b.Workspaces) == 0 || len(b.Workspaces) > maxPrepare {
		return invalid("workspaces", "field workspaces: give 1 to %d workspaces", maxPrepare)
	}
	now := s.clock.Now()
	var exp time.Time
	switch {
	case b.ExpiresAt != nil && b.ExpiresInSeconds != nil:
		return invalid("expiresAt", "give expiresAt or expiresInSeconds, not both")
	case b.ExpiresAt != nil:
		exp = *b.ExpiresAt
	case b.ExpiresInSeconds != nil:
		secs := *b.ExpiresInSeconds
		if secs != secs || secs <= 0 || secs > maxPrepareSecs {
			return invalid("expiresInSeconds", "field expiresInSeconds: want above 0 and at most %d", maxPrepareSecs)
		}
		exp = now.Add(time.Duration(secs * float64(time.Second)))
	default:
		return invalid("expiresInSeconds", "field expiresInSeconds (or expiresAt) is required")
	}
	if !exp.After(now) || exp.Sub(now) > maxPrepareSecs*time.Second {
		return invalid("expiresAt", "the expiry must be in the future and at most 24 h away")
	}
	if (b.AWSAccessKeyID == "") != (b.AWSSecretAccessKey == "") {
		return invalid("awsAccessKeyId", "awsAccessKeyId and awsSecretAccessKey go together: give both or neither")
	}
	for _, f := range []struct{ name, v string }{{"awsAccessKeyId", b.AWSAccessKeyID}, {"awsSecretAccessKey", b.AWSSecretAccessKey},
		{"awsSessionToken", b.AWSSessionToken}} {
		if len(f.v) > 4096 || strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return invalid(f.name, "field %s: too long or with control characters", f.name)
		}
	}
	req := PrepareRequest{Profile: b.Profile, ExpiresAt: exp,
		Credentials: idepool.Credentials{AccessKeyID: b.AWSAccessKeyID, SecretAccessKey: b.AWSSecretAccessKey, SessionToken: b.AWSSessionToken}}
	for _, x := range b.Workspaces {
		// Invalid workspaces are reported per item by the orchestrator.
		req.Workspaces = append(req.Workspaces, idepool.Workspace{Bucket: x.S3Bucket, Prefix: x.S3Prefix, Region: x.S3Region, BucketID: x.S3BucketID})
	}
	res, err := cl.Prepare(r.Context(), req)
	if err != nil {
		return err
	}
	out := make([]prepareResultBody, 0, len(res))
	counts := map[string]int{}
	for _, x := range res {
		rb := prepareResultBody{S3Bucket: x.Workspace.Bucket, S3Prefix: x.Workspace.Prefix, Status: x.Status,
			ContainerID: x.ContainerID, State: x.State, Claim: x.Kind}
		if x.Code != "" {
			rb.Error = &errorInfo{Code: x.Code, Message: x.Error}
		}
		counts[x.Status]++
		out = append(out, rb)
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"results": out, "expiresAt": exp.UTC(),
		"prepared": counts["prepared"], "existing": counts["existing"], "failed": counts["failed"]})
	return nil
}

// replacedBy names the replacement of a container, if any.
func (s *Server) replacedBy(id string) string {
	cl, err := s.classroom()
	if err != nil {
		return ""
	}
	n, _ := cl.ReplacedBy(id)
	return n
}
