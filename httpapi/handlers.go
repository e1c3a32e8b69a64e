package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/apiwire"
	"github.com/idepool/idepool/internal/htmlpage"
)

// Limits on request fields, so no field can be used to push huge values
// into labels, logs or assignments.
const (
	maxUserID      = 256
	maxBucketID    = 256
	maxVNCPassword = 256
	maxAccessKey   = 256
	maxSecretKey   = 1024
	maxSessionTok  = 4096
	maxPoolTarget  = 1000
	defaultLimit   = 50
	maxLimit       = 500
)

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) error {
	if htmlpage.WantsHTML(r) {
		// A person who opens the server's address: what runs here and where
		// to go, instead of JSON.
		htmlpage.Write(w, r, http.StatusOK, htmlpage.Page{
			Title: "idepool is running",
			Lines: []string{
				"This server hands out browser IDEs from a pool of ready containers. A course page or platform asks its API for one; each IDE opens at the link it gets back.",
				"Looking for your IDE? Open it from your course page.",
			},
			Links: []htmlpage.Link{
				{Text: "Dashboard (operators, with an API key)", Href: "/dashboard/"},
				{Text: "Health (JSON)", Href: "/api/health"},
				{Text: "API reference (OpenAPI)", Href: "/api/openapi.json"},
				{Text: "Metrics (Prometheus)", Href: "/metrics"},
			},
			Footer: "idepool " + s.o.Version,
		})
		return nil
	}
	s.writeJSON(w, http.StatusOK, map[string]string{"name": "idepool", "version": s.o.Version, "status": "running"})
	return nil
}

// healthBody is GET /api/health: the original's fields plus runtime and pools.
type healthBody struct {
	Status    string               `json:"status"`
	Timestamp string               `json:"timestamp"`
	Version   string               `json:"version"`
	Runtime   runtimeHealth        `json:"runtime"`
	Docker    dockerHealth         `json:"docker"`
	Resources Resources            `json:"resources"`
	Queue     queueBody            `json:"queue"`
	Pools     []idepool.PoolStatus `json:"pools"`
}

type runtimeHealth struct {
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
}

type dockerHealth struct {
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
}

// dockerFor keeps the original's docker{connected} truthful: only the
// runtimes that drive Docker report its reachability; the others say that
// Docker is not used (connected false, with why), and status stays "ok".
func dockerFor(rep HealthReport) dockerHealth {
	switch rep.Runtime {
	case "swarm", "docker":
		return dockerHealth{Connected: rep.Connected, Error: rep.Error}
	case "":
		return dockerHealth{Connected: rep.Connected, Error: rep.Error} // no reporter: nothing known
	}
	return dockerHealth{Error: "not used: the " + rep.Runtime + " runtime runs no Docker; see runtime"}
}

type queueBody struct {
	PreWarmed    int `json:"preWarmed"`
	WithS3Bucket int `json:"withS3Bucket"`
	TargetSize   int `json:"targetSize"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	rep := HealthReport{Connected: true}
	if s.o.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		rep = s.o.Health.Health(ctx)
		cancel()
	}
	if rep.Pools == nil {
		rep.Pools = s.o.Orchestrator.Pools()
	}
	if rep.Pools == nil {
		rep.Pools = []idepool.PoolStatus{}
	}
	b := healthBody{
		Status:    "ok",
		Timestamp: timestamp(s.clock.Now()),
		Version:   s.o.Version,
		Runtime:   runtimeHealth{Name: rep.Runtime, Connected: rep.Connected, Error: rep.Error},
		Docker:    dockerFor(rep),
		Resources: rep.Resources,
		Pools:     rep.Pools,
	}
	for _, p := range rep.Pools {
		b.Queue.PreWarmed += p.Warm
		b.Queue.WithS3Bucket += p.Claimed
		b.Queue.TargetSize += p.Target
	}
	if b.Resources.Containers.Total == 0 {
		for _, p := range rep.Pools {
			b.Resources.Containers.Running += p.Claimed
			b.Resources.Containers.Total += p.Warm + p.Starting + p.Claimed
		}
	}
	status := http.StatusOK
	if !rep.Connected {
		b.Status = "degraded"
		status = http.StatusServiceUnavailable
	}
	s.writeJSON(w, status, b)
	return nil
}

type profileBody struct {
	Name        string          `json:"name"`
	Routes      []idepool.Route `json:"routes"`
	CPULimit    float64         `json:"cpuLimit"`
	MemoryLimit int64           `json:"memoryLimit"`
	PoolTarget  int             `json:"poolTarget"`
	IdleTimeout float64         `json:"idleTimeoutSeconds,omitempty"`
}

func (s *Server) handleProfiles(w http.ResponseWriter, r *http.Request) error {
	out := []profileBody{}
	for _, p := range s.o.Orchestrator.Profiles() {
		out = append(out, profileBody{Name: p.Name, Routes: p.Routes, CPULimit: p.CPULimit, MemoryLimit: p.MemoryLimit,
			PoolTarget: p.PoolTarget, IdleTimeout: p.IdleTimeout.Seconds()})
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"profiles": out})
	return nil
}

// startBody is POST /api/containers/start: the original's fields plus ours.
type startBody struct {
	S3Bucket           string `json:"s3Bucket"`
	S3Region           string `json:"s3Region"`
	S3BucketID         string `json:"s3BucketId"`
	S3Prefix           string `json:"s3Prefix"`
	UserID             string `json:"userId"`
	AWSAccessKeyID     string `json:"awsAccessKeyId"`
	AWSSecretAccessKey string `json:"awsSecretAccessKey"`
	AWSSessionToken    string `json:"awsSessionToken"`
	VNCPassword        string `json:"vncPassword"`
	Profile            string `json:"profile"`
	IdleExempt         bool   `json:"idleExempt"`
}

// startRequest validates the body and turns it into a StartRequest.
func (s *Server) startRequest(b startBody) (idepool.StartRequest, error) {
	req := idepool.StartRequest{
		Workspace:   idepool.Workspace{Bucket: b.S3Bucket, Prefix: b.S3Prefix, Region: b.S3Region, BucketID: b.S3BucketID},
		Profile:     b.Profile,
		UserID:      b.UserID,
		Credentials: idepool.Credentials{AccessKeyID: b.AWSAccessKeyID, SecretAccessKey: b.AWSSecretAccessKey, SessionToken: b.AWSSessionToken},
		VNCPassword: b.VNCPassword,
		IdleExempt:  b.IdleExempt,
	}
	if err := req.Workspace.Validate(); err != nil {
		return req, err
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"userId", b.UserID, maxUserID}, {"s3BucketId", b.S3BucketID, maxBucketID}, {"vncPassword", b.VNCPassword, maxVNCPassword},
		{"awsAccessKeyId", b.AWSAccessKeyID, maxAccessKey}, {"awsSecretAccessKey", b.AWSSecretAccessKey, maxSecretKey},
		{"awsSessionToken", b.AWSSessionToken, maxSessionTok},
	} {
		if len(f.v) > f.max {
			return req, &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("field %s: at most %d characters", f.name, f.max),
				Details: map[string]any{"field": f.name}}
		}
		if strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return req, &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("field %s: control characters are not allowed", f.name),
				Details: map[string]any{"field": f.name}}
		}
	}
	if (b.AWSAccessKeyID == "") != (b.AWSSecretAccessKey == "") {
		return req, idepool.Errorf(idepool.EInvalid, "awsAccessKeyId and awsSecretAccessKey go together: give both or neither")
	}
	if b.AWSSessionToken != "" && b.AWSAccessKeyID == "" {
		return req, idepool.Errorf(idepool.EInvalid, "awsSessionToken needs awsAccessKeyId and awsSecretAccessKey")
	}
	if b.Profile != "" {
		if _, ok := s.profile(b.Profile); !ok {
			return req, s.unknownProfile(b.Profile)
		}
	}
	return req, nil
}

func (s *Server) profile(name string) (idepool.Profile, bool) {
	if p, ok := s.o.Orchestrator.Profile(name); ok {
		return p, true
	}
	return idepool.Profile{Name: name}, false
}

func (s *Server) unknownProfile(name string) error {
	names := []string{}
	for _, p := range s.o.Orchestrator.Profiles() {
		names = append(names, p.Name)
	}
	return &idepool.Error{Code: idepool.EUnknownProfile, Message: fmt.Sprintf("unknown profile %q", truncate(name, 64)),
		Details: map[string]any{"profiles": names}}
}

// waitOptions parses ?wait=ready&timeout=.
func (s *Server) waitOptions(r *http.Request) (bool, time.Duration, error) {
	q := r.URL.Query()
	wait := false
	switch v := q.Get("wait"); v {
	case "":
	case "ready", "true", "1":
		wait = true
	default:
		return false, 0, &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("wait=%q: the only value is \"ready\"", truncate(v, 32)),
			Details: map[string]any{"field": "wait"}}
	}
	timeout := s.o.DefaultWait
	if v := q.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			secs, err2 := strconv.ParseFloat(v, 64)
			if err2 != nil || secs != secs || secs <= 0 {
				return false, 0, &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("timeout=%q: want seconds or a duration such as 30s", truncate(v, 32)),
					Details: map[string]any{"field": "timeout"}}
			}
			if secs > s.o.MaxWait.Seconds() {
				secs = s.o.MaxWait.Seconds() + 1
			}
			d = time.Duration(secs * float64(time.Second))
		}
		if d <= 0 || d > s.o.MaxWait {
			return false, 0, &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("timeout must be above 0 and at most %s", s.o.MaxWait),
				Details: map[string]any{"field": "timeout", "max": s.o.MaxWait.Seconds()}}
		}
		timeout = d
	}
	return wait, timeout, nil
}

// toLegacyURLs fills the original's URL fields from the routes.
func toLegacyURLs(routes map[string]string) apiwire.URLs {
	u := apiwire.URLs{VNC: routes["vnc"], CodeServer: routes["code"], WebServer: routes["web"], Terminal: routes["terminal"]}
	if u.Terminal == "" {
		u.Terminal = u.CodeServer
	}
	return u
}

// startCall is one start on its way through handleStart. It lives on the
// heap and the steps below take it by pointer so that the frames on the
// stack while the claim runs stay small: a new connection's goroutine
// starts with a small stack, and every growth copies it (with values of
// Container, Claim and the answer in each frame, a claim used to double it
// twice).
type startCall struct {
	wait    bool
	timeout time.Duration
	req     idepool.StartRequest
	claim   idepool.Claim
	queued  *QueueTicket
	// timedOut: waited for ready until the timeout; the claim's container
	// is as it was then.
	timedOut bool
}

// startAttempts is how many containers a start that waits for ready may
// be given: one whose container fails before it was ever ready (its
// create refused, its task rejected, its agent never up) gets one more.
// Nothing of the user's ran in it (the answer, with the routes' tokens,
// was not given yet), so a new one is safe; a second failure is the
// answer.
const startAttempts = 2

// stoppedOnPurpose: a container being stopped or stopped (DELETE, an idle
// stop) rather than failed; a start that waited for it is not tried again.
func stoppedOnPurpose(st idepool.State) bool {
	return st == idepool.StateStopping || st == idepool.StateStopped
}

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.parseStart(w, r)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(sc.timeout)
	for attempt := 1; ; attempt++ {
		err := s.startOrQueue(r, sc)
		if err == nil && sc.queued == nil {
			err = s.awaitReady(r, sc)
		}
		if err == nil {
			break
		}
		left := time.Until(deadline)
		if !sc.wait || attempt >= startAttempts || idepool.ErrorCode(err) != idepool.EStartFailed ||
			sc.claim.Kind == idepool.ClaimReused || stoppedOnPurpose(sc.claim.Container.State) ||
			r.Context().Err() != nil || left <= 0 {
			return err
		}
		s.log.Warn("start: the new container failed before it was ready; trying another",
			"container", sc.claim.Container.ID, "attempt", attempt, "err", idepool.ErrorMessage(err))
		sc.timeout, sc.claim, sc.queued = left, idepool.Claim{}, nil
	}
	return s.answerStart(w, r, sc)
}

// parseStart reads and validates a start's query and body.
//
//go:noinline
func (s *Server) parseStart(w http.ResponseWriter, r *http.Request) (*startCall, error) {
	sc := &startCall{}
	var err error
	if sc.wait, sc.timeout, err = s.waitOptions(r); err != nil {
		return nil, err
	}
	data, err := s.readJSONBody(w, r)
	if err != nil {
		return nil, err
	}
	var b startBody
	if !decodeStartFast(data, &b) {
		b = startBody{}
		if err := decodeBytes(data, &b); err != nil {
			return nil, err
		}
	}
	if sc.req, err = s.startRequest(b); err != nil {
		return nil, err
	}
	sc.req.WaitsReady = sc.wait
	return sc, nil
}

// awaitReady waits, when the start asked (?wait=ready), until its claim's
// container is ready (sc.claim.Container, then running) or the timeout
// passes (sc.timedOut).
//
//go:noinline
func (s *Server) awaitReady(r *http.Request, sc *startCall) error {
	c := &sc.claim.Container
	if !sc.wait || c.State == idepool.StateRunning {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), sc.timeout)
	ready, err := s.o.Orchestrator.WaitReady(ctx, c.ID)
	cancel()
	switch {
	case err == nil:
		*c = ready
		return nil
	case r.Context().Err() != nil:
		return r.Context().Err()
	case errors.Is(err, context.DeadlineExceeded) || idepool.ErrorCode(err) == idepool.ETimeout:
		// Started but not ready in time: answer 202 with the URLs (their
		// tokens are only handed out here) so the client can poll.
		sc.timedOut = true
		if now, err := s.o.Orchestrator.Get(r.Context(), c.ID); err == nil {
			*c = now
		}
		return nil
	default:
		if ready.ID != "" {
			*c = ready // as it ended (failed, or stopped meanwhile)
		}
		return err
	}
}

// answerStart answers a queued start or the claim.
//
//go:noinline
func (s *Server) answerStart(w http.ResponseWriter, r *http.Request, sc *startCall) error {
	if sc.queued != nil {
		return s.writeQueued(w, *sc.queued)
	}
	claim, timeout, timedOut := sc.claim, sc.timeout, sc.timedOut
	c := claim.Container
	p, _ := s.profile(c.Profile)
	routes := map[string]string{}
	if s.o.URLs != nil {
		var err error
		if routes, err = s.o.URLs.RouteURLs(c, p); err != nil {
			return idepool.WrapError(idepool.EInternal, err, "could not make route URLs")
		}
	}
	resp := apiwire.StartResponse{
		ID: c.ID, ServiceName: serviceName(c.ID), Status: legacyStatus(c.State), State: c.State,
		Ready: c.State == idepool.StateRunning, URLs: toLegacyURLs(routes), Routes: routes,
		IsPreWarmed: c.PreWarmed || claim.Kind == idepool.ClaimWarm, IsReused: claim.Kind == idepool.ClaimReused,
		Claim: claim.Kind, Profile: c.Profile, Generation: c.Generation, CreatedAt: c.CreatedAt,
	}
	if c.Workspace != nil {
		resp.S3Bucket, resp.S3Prefix = c.Workspace.Bucket, c.Workspace.Prefix
	}
	status := http.StatusCreated
	switch {
	case timedOut:
		status = http.StatusAccepted
		resp.Message = fmt.Sprintf("Container started but not ready within %s; poll GET /api/containers/%s", timeout, c.ID)
	case claim.Kind == idepool.ClaimReused:
		status = http.StatusOK
		resp.Message = "Existing container reused for this workspace"
	case claim.Kind == idepool.ClaimWarm:
		// The original answered "running" for a warm claim.
		resp.Status = "running"
		resp.Message = "Container assigned from the pre-warmed pool"
	default:
		resp.Message = "Container is starting"
	}
	b, err := appendStartResponse(make([]byte, 0, 1024), &resp)
	if err != nil {
		s.writeJSON(w, status, resp) // encoding/json reports what it cannot encode
		return nil
	}
	writeJSONBody(w, status, b)
	return nil
}

func serviceName(id string) string { return "idepool-" + id }

// legacyStatus maps a state onto the original's four statuses.
func legacyStatus(st idepool.State) string {
	switch st {
	case idepool.StateWarm, idepool.StateRunning:
		return "running"
	case idepool.StateStopping, idepool.StateStopped:
		return "stopped"
	case idepool.StateFailed:
		return "failed"
	}
	return "starting"
}

// parseStatuses reads ?status= (comma-separated): the original's four
// statuses keep their meaning (starting = creating, starting or syncing;
// running = warm or running; stopped = stopping or stopped), and our other
// states (creating, warm, syncing, stopping) are accepted too. With exact
// set, every word is one of our states (?state=).
func parseStatuses(v string, exact bool) ([]idepool.State, error) {
	var out []idepool.State
	add := func(sts ...idepool.State) {
		for _, st := range sts {
			if !slices.Contains(out, st) {
				out = append(out, st)
			}
		}
	}
	for _, f := range strings.Split(v, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		legacy := false
		for _, st := range idepool.AllStates {
			if !exact && legacyStatus(st) == f {
				add(st)
				legacy = true
			}
		}
		if st := idepool.State(f); !legacy && st.Valid() {
			add(st)
			continue
		}
		if !legacy {
			accepted := []string{"running", "starting", "stopped", "failed"}
			for _, st := range idepool.AllStates {
				accepted = append(accepted, string(st))
			}
			field := "status"
			if exact {
				field, accepted = "state", accepted[4:]
			}
			return nil, &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("%s %q is not known", field, truncate(f, 32)),
				Details: map[string]any{"field": field, "accepted": accepted}}
		}
	}
	return out, nil
}

func intParam(q map[string][]string, name string, def, lo, hi int) (int, error) {
	vs := q[name]
	if len(vs) == 0 || vs[0] == "" {
		return def, nil
	}
	n, err := strconv.Atoi(vs[0])
	if err != nil || n < lo || n > hi {
		return 0, &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("%s=%q: want an integer from %d to %d", name, truncate(vs[0], 32), lo, hi),
			Details: map[string]any{"field": name}}
	}
	return n, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// containerBody is c as GET answers show it.
func (s *Server) containerBody(c idepool.Container) apiwire.Container {
	p, _ := s.profile(c.Profile)
	routes := map[string]string{}
	if s.o.URLs != nil && c.State.Claimed() {
		routes = s.o.URLs.BaseURLs(c, p)
	}
	started := c.ClaimedAt
	if started.IsZero() {
		started = c.ReadyAt
	}
	end := s.clock.Now()
	if !c.StoppedAt.IsZero() {
		end = c.StoppedAt
	}
	var uptime int64
	if !started.IsZero() && end.After(started) {
		uptime = int64(end.Sub(started).Seconds())
	}
	checks := c.Health.Checks
	if checks == nil {
		checks = map[string]string{}
	}
	hs := c.Health.Status
	if hs == "" {
		hs = idepool.HealthUnknown
	}
	b := apiwire.Container{
		ID: c.ID, ServiceName: serviceName(c.ID), Status: legacyStatus(c.State), State: c.State, Profile: c.Profile,
		URLs: toLegacyURLs(routes), Routes: routes, Workspace: c.Workspace, UserID: c.UserID, Generation: c.Generation,
		CreatedAt: c.CreatedAt, StartedAt: timePtr(started), StoppedAt: timePtr(c.StoppedAt), LastActivity: timePtr(c.LastActivity),
		Uptime: uptime, ShutdownReason: c.StopReason, Message: c.Message,
		ResourceLimits: apiwire.ResourceLimits{CPULimit: p.CPULimit, MemoryLimit: p.MemoryLimit},
		Health:         apiwire.Health{Status: hs, LastCheck: timePtr(c.Health.LastCheck), Checks: checks, ConsecutiveFailures: c.Health.ConsecutiveFailures},
		IsPreWarmed:    c.PreWarmed, IdleExempt: c.IdleExempt, Node: c.Node,
	}
	if c.Workspace != nil {
		b.S3Bucket = c.Workspace.Bucket
	}
	return b
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var f idepool.ContainerFilter
	var err error
	if f.States, err = parseStatuses(q.Get("status"), false); err != nil {
		return err
	}
	exact, err := parseStatuses(q.Get("state"), true)
	if err != nil {
		return err
	}
	for _, st := range exact {
		if !slices.Contains(f.States, st) {
			f.States = append(f.States, st)
		}
	}
	if p := q.Get("profile"); p != "" {
		if _, ok := s.profile(p); !ok {
			return s.unknownProfile(p)
		}
		f.Profile = p
	}
	if f.Limit, err = intParam(q, "limit", defaultLimit, 1, maxLimit); err != nil {
		return err
	}
	if f.Offset, err = intParam(q, "offset", 0, 0, 1<<30); err != nil {
		return err
	}
	cs, total, err := s.o.Orchestrator.List(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]apiwire.Container, 0, len(cs))
	for _, c := range cs {
		out = append(out, s.containerBody(c))
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"containers": out, "total": total, "limit": f.Limit, "offset": f.Offset})
	return nil
}

// pathID returns the {id} path value, or a 404 when it cannot be an id.
func pathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !idepool.ValidID(id) {
		return "", idepool.Errorf(idepool.ENotFound, "container %q not found", truncate(id, 64))
	}
	return id, nil
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	c, err := s.o.Orchestrator.Get(r.Context(), id)
	if err != nil {
		return err
	}
	b := s.containerBody(c)
	b.ReplacedBy = s.replacedBy(id)
	s.writeJSON(w, http.StatusOK, b)
	return nil
}

type stopResponse struct {
	Message   string    `json:"message"`
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	StoppedAt time.Time `json:"stoppedAt"`
	Reason    string    `json:"reason"`
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request, reason string) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	c, err := s.o.Orchestrator.Stop(r.Context(), id, reason)
	if err != nil {
		return err
	}
	at := c.StoppedAt
	if at.IsZero() {
		at = s.clock.Now()
	}
	s.writeJSON(w, http.StatusOK, stopResponse{Message: "Container stopped successfully", ID: id, Status: "stopped", StoppedAt: at, Reason: reason})
	return nil
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) error {
	return s.stop(w, r, idepool.ReasonManual)
}

// handleInactivity is the original's webhook, now behind an API key: an
// open one let anyone stop anyone's container.
func (s *Server) handleInactivity(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Reason string `json:"reason"`
	}
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	return s.stop(w, r, idepool.ReasonInactivity)
}

// handleConfirmDeletions lets a container's held mass deletion through.
func (s *Server) handleConfirmDeletions(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var b struct{}
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	sc := s.o.Sync
	if sc == nil {
		sc, _ = s.o.Orchestrator.(SyncControl)
	}
	if sc == nil {
		return idepool.Errorf(idepool.EUnavailable, "sync control is not available here")
	}
	n, err := sc.ConfirmDeletions(r.Context(), id)
	if err != nil {
		return err
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"id": id, "confirmed": n})
	return nil
}

func (s *Server) handlePools(w http.ResponseWriter, r *http.Request) error {
	ps := s.o.Orchestrator.Pools()
	if ps == nil {
		ps = []idepool.PoolStatus{}
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"pools": ps, "timestamp": timestamp(s.clock.Now())})
	return nil
}

func (s *Server) handleSetTarget(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("profile")
	var b struct {
		Target *int `json:"target"`
	}
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	if _, ok := s.profile(name); !ok {
		return s.unknownProfile(name)
	}
	if b.Target == nil {
		return &idepool.Error{Code: idepool.EInvalid, Message: "field target is required", Details: map[string]any{"field": "target"}}
	}
	if *b.Target < 0 || *b.Target > maxPoolTarget {
		return &idepool.Error{Code: idepool.EInvalid, Message: fmt.Sprintf("field target: want 0 to %d", maxPoolTarget),
			Details: map[string]any{"field": "target"}}
	}
	if err := s.o.Orchestrator.SetTarget(r.Context(), name, *b.Target); err != nil {
		return err
	}
	st := idepool.PoolStatus{Profile: name, Target: *b.Target}
	for _, p := range s.o.Orchestrator.Pools() {
		if p.Profile == name {
			st = p
		}
	}
	s.writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) error {
	if s.o.Events == nil {
		return idepool.Errorf(idepool.ERouteNotFound, "the event stream is not enabled")
	}
	s.o.Events.ServeHTTP(w, r)
	return nil
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	if s.o.Metrics == nil {
		return idepool.Errorf(idepool.ERouteNotFound, "metrics are not enabled")
	}
	s.o.Metrics.ServeHTTP(w, r)
	return nil
}
