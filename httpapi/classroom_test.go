package httpapi

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// The fake orchestrator also plays the Classroom (methods here so that the
// other tests' harness serves the classroom routes too). It is stateless:
// buckets named queued-* are queued; ticket ids say their state (q1-
// queued, q2- assigned to warm0001, q3- refused).

var _ Classroom = (*fakeOrch)(nil)

func (f *fakeOrch) StartOrQueue(ctx context.Context, req idepool.StartRequest) (idepool.Claim, *QueueTicket, error) {
	if strings.HasPrefix(req.Workspace.Bucket, "queued-") {
		t, _ := f.Ticket("q1-" + req.Workspace.Bucket)
		return idepool.Claim{}, &t, nil
	}
	c, err := f.Start(ctx, req)
	return c, nil, err
}

func (f *fakeOrch) Ticket(id string) (QueueTicket, error) {
	t := QueueTicket{ID: id, Profile: "default", Workspace: idepool.Workspace{Bucket: "queued-bucket"},
		EnqueuedAt: f.now, Deadline: f.now.Add(10 * time.Minute)}
	switch {
	case strings.HasPrefix(id, "q1-"):
		t.State, t.Position, t.Estimate = "queued", 3, 4500*time.Millisecond
	case strings.HasPrefix(id, "q2-"):
		t.State, t.ContainerID = "assigned", "warm0001"
	case strings.HasPrefix(id, "q3-"):
		t.State, t.Code, t.Error = "failed", idepool.ECapacity, "no container became free within 10m0s in the admission queue"
	default:
		return QueueTicket{}, idepool.Errorf(idepool.ENotFound, "ticket %s not found", id)
	}
	return t, nil
}

func (f *fakeOrch) WaitTicket(ctx context.Context, id string) (idepool.Claim, error) {
	t, err := f.Ticket(id)
	switch {
	case err != nil:
		return idepool.Claim{}, err
	case t.State == "assigned":
		c, err := f.Get(ctx, t.ContainerID)
		return idepool.Claim{Container: c, Kind: "queued"}, err
	case t.State == "failed":
		return idepool.Claim{}, idepool.Errorf(t.Code, "%s", t.Error)
	}
	<-ctx.Done()
	return idepool.Claim{}, ctx.Err()
}

func (f *fakeOrch) Schedules(profile string) ([]ScheduleWindow, error) {
	if profile != "default" {
		return nil, nil
	}
	return []ScheduleWindow{{Days: []string{"Mon", "Wed"}, Start: "09:50", End: "11:30", Timezone: "Europe/Berlin", Target: 320}}, nil
}

func (f *fakeOrch) SetSchedules(ctx context.Context, profile string, ws []ScheduleWindow) error {
	for _, w := range ws {
		if w.Start == "" || w.End == "" {
			return idepool.Errorf(idepool.EInvalid, "schedule window: start and end are required")
		}
	}
	return nil
}

func (f *fakeOrch) Prepare(ctx context.Context, req PrepareRequest) ([]PrepareResult, error) {
	var out []PrepareResult
	for _, w := range req.Workspaces {
		if err := w.Validate(); err != nil {
			out = append(out, PrepareResult{Workspace: w, Status: "failed", Code: idepool.ErrorCode(err), Error: idepool.ErrorMessage(err)})
			continue
		}
		out = append(out, PrepareResult{Workspace: w, Status: "prepared", ContainerID: "prep-" + w.Bucket, State: idepool.StateSyncing, Kind: idepool.ClaimWarm})
	}
	return out, nil
}

func (f *fakeOrch) ReplacedBy(id string) (string, bool) {
	if id == "used0001" {
		return "", false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok && c.StopReason == "unhealthy" {
		return "repl" + id, true
	}
	return "", false
}

func TestQueuedStartAnswers202(t *testing.T) { synctest.Test(t, testQueuedStartAnswers202) }

func testQueuedStartAnswers202(t *testing.T) {
	h := newHarness(t, nil)
	w, m := h.do(t, call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"queued-bucket"}`})
	if w.Code != 202 || m["status"] != "queued" || m["position"] != float64(3) || m["estimateSeconds"] != 4.5 {
		t.Fatalf("queued start: %d %v", w.Code, m)
	}
	url := m["statusUrl"].(string)
	if url != "/api/queue/q1-queued-bucket" || w.Header().Get("Location") != url || w.Header().Get("Retry-After") != "5" {
		t.Fatalf("status url %q, headers %v", url, w.Header())
	}
	// ?wait=ready that runs out waits, then still answers 202.
	w, m = h.do(t, call{method: "POST", path: "/api/containers/start?wait=ready&timeout=0.01", body: `{"s3Bucket":"queued-bucket"}`})
	if w.Code != 202 || m["ticket"] != "q1-queued-bucket" {
		t.Fatalf("queued start with wait: %d %v", w.Code, m)
	}
	for _, c := range []struct {
		path   string
		code   int
		status string
	}{
		{"/api/queue/q1-abc", 200, "queued"},
		{"/queue/q2-abc", 200, "assigned"},
		{"/api/queue/q3-abc", 200, "failed"},
		{"/api/queue/q2-abc?wait=ready&timeout=1", 200, "assigned"},
		{"/api/queue/q1-abc?wait=ready&timeout=0.01", 200, "queued"},
		{"/api/queue/nope", 404, ""},
		{"/api/queue/BAD!", 404, ""},
	} {
		w, m := h.do(t, call{method: "GET", path: c.path})
		if w.Code != c.code || (c.status != "" && m["status"] != c.status) {
			t.Errorf("GET %s: %d %v", c.path, w.Code, m)
		}
	}
	_, m = h.do(t, call{method: "GET", path: "/api/queue/q2-abc"})
	if m["containerId"] != "warm0001" || m["containerUrl"] != "/api/containers/warm0001" {
		t.Fatalf("assigned ticket: %v", m)
	}
	_, m = h.do(t, call{method: "GET", path: "/api/queue/q3-abc"})
	if e, _ := m["error"].(map[string]any); e["code"] != string(idepool.ECapacity) {
		t.Fatalf("failed ticket: %v", m)
	}
}

func TestSchedulesRoutes(t *testing.T) {
	h := newHarness(t, nil)
	w, m := h.do(t, call{method: "GET", path: "/api/pool/default/schedules"})
	if w.Code != 200 || len(m["schedules"].([]any)) != 1 {
		t.Fatalf("GET schedules: %d %v", w.Code, m)
	}
	for _, c := range []struct {
		path, body string
		code       int
	}{
		{"/api/pool/default/schedules", `{"schedules":[{"days":["Mon"],"start":"09:50","end":"11:30","timezone":"Europe/Berlin","target":30}]}`, 200},
		{"/api/pool/default/schedules", `{"schedules":[]}`, 200},
		{"/api/pool/default/schedules", `{}`, 400},
		{"/api/pool/default/schedules", `{"schedules":[{"start":"","end":"11:30","target":1}]}`, 400},
		{"/api/pool/default/schedules", `{"schedules":[{"start":"09:00","end":"11:30","target":100000}]}`, 400},
		{"/api/pool/nope/schedules", `{"schedules":[]}`, 400},
	} {
		w, m := h.do(t, call{method: "PUT", path: c.path, body: c.body})
		if w.Code != c.code {
			t.Errorf("PUT %s %s: %d %v", c.path, c.body, w.Code, m)
		}
	}
	if w, _ := h.do(t, call{method: "GET", path: "/api/pool/nope/schedules"}); w.Code != 400 {
		t.Errorf("unknown profile: %d", w.Code)
	}
}

func TestPrepareRoute(t *testing.T) {
	h := newHarness(t, nil)
	w, m := h.do(t, call{method: "POST", path: "/api/workspaces/prepare",
		body: `{"profile":"default","expiresInSeconds":3600,"workspaces":[{"s3Bucket":"lab-1"},{"s3Bucket":"lab-2","s3Prefix":"a/b"},{"s3Bucket":"NO"}]}`})
	if w.Code != 200 || m["prepared"] != float64(2) || m["failed"] != float64(1) {
		t.Fatalf("prepare: %d %v", w.Code, m)
	}
	rs := m["results"].([]any)
	if r := rs[0].(map[string]any); r["containerId"] != "prep-lab-1" || r["status"] != "prepared" {
		t.Fatalf("result 0: %v", r)
	}
	if r := rs[2].(map[string]any); r["status"] != "failed" || r["error"].(map[string]any)["code"] != string(idepool.EInvalidBucket) {
		t.Fatalf("result 2: %v", r)
	}
	for _, body := range []string{
		`{"workspaces":[]}`,
		`{"workspaces":[{"s3Bucket":"lab-1"}]}`,
		`{"workspaces":[{"s3Bucket":"lab-1"}],"expiresInSeconds":0}`,
		`{"workspaces":[{"s3Bucket":"lab-1"}],"expiresInSeconds":100000}`,
		`{"workspaces":[{"s3Bucket":"lab-1"}],"expiresAt":"2020-01-01T00:00:00Z"}`,
		`{"workspaces":[{"s3Bucket":"lab-1"}],"expiresInSeconds":60,"expiresAt":"2030-01-01T00:00:00Z"}`,
		`{"workspaces":[{"s3Bucket":"lab-1"}],"expiresInSeconds":60,"awsAccessKeyId":"AKIA"}`,
		`{"workspaces":[{"s3Bucket":"lab-1"}],"expiresInSeconds":60,"profile":"nope"}`,
	} {
		if w, m := h.do(t, call{method: "POST", path: "/api/workspaces/prepare", body: body}); w.Code != 400 {
			t.Errorf("%s: %d %v", body, w.Code, m)
		}
	}
}

func TestReplacedByOnGet(t *testing.T) {
	h := newHarness(t, nil)
	h.orch.mu.Lock()
	h.orch.containers["sick0001"] = idepool.Container{ID: "sick0001", Profile: "default", State: idepool.StateStopped,
		StopReason: "unhealthy", CreatedAt: t0, StoppedAt: t0}
	h.orch.mu.Unlock()
	if _, m := h.do(t, call{method: "GET", path: "/api/containers/sick0001"}); m["replacedBy"] != "replsick0001" {
		t.Fatalf("replacedBy: %v", m["replacedBy"])
	}
	if _, m := h.do(t, call{method: "GET", path: "/api/containers/warm0001"}); m["replacedBy"] != nil {
		t.Fatalf("replacedBy on a live one: %v", m["replacedBy"])
	}
}

func TestClassroomUnavailableWithoutImplementation(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Orchestrator = plainOrch{o.Orchestrator} })
	for _, c := range []call{{method: "GET", path: "/api/queue/q1-x"}, {method: "GET", path: "/api/pool/default/schedules"},
		{method: "POST", path: "/api/workspaces/prepare", body: `{"workspaces":[{"s3Bucket":"lab-1"}],"expiresInSeconds":60}`}} {
		if w, _ := h.do(t, c); w.Code != 503 {
			t.Errorf("%s %s: %d", c.method, c.path, w.Code)
		}
	}
	// Starts work as before (no queue).
	if w, m := h.do(t, call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket"}`}); w.Code != 201 {
		t.Fatalf("start: %d %v", w.Code, m)
	}
}

// plainOrch hides the fake's Classroom methods.
type plainOrch struct{ Orchestrator }
