package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// Prober checks that a workload answers at endpoint (host:port) and path.
type Prober interface {
	Probe(ctx context.Context, endpoint, path string) error
}

// HTTPProber probes with an HTTP GET straight to the workload's endpoint,
// not through a router: any HTTP answer — even 404 or 500 — proves the
// workload is there, while a refused connection or a timeout does not. (The
// original accepted any answer through Traefik, whose own 404 for a dead
// backend then counted as healthy.)
type HTTPProber struct {
	client *http.Client
}

var _ Prober = (*HTTPProber)(nil)

// NewHTTPProber returns a prober whose probes each end within timeout.
func NewHTTPProber(timeout time.Duration) *HTTPProber {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	tr := &http.Transport{
		Proxy:                  nil, // never through an HTTP proxy: the workload must answer
		DialContext:            (&net.Dialer{Timeout: timeout}).DialContext,
		DisableKeepAlives:      true, // probes are rare; do not hold a connection per container
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &HTTPProber{client: &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// A redirect is an answer; following it could leave the container.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Probe implements Prober.
func (p *HTTPProber) Probe(ctx context.Context, endpoint, path string) error {
	if endpoint == "" {
		return errors.New("no endpoint")
	}
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	url := endpoint + path
	if !strings.Contains(endpoint, "://") {
		url = "http://" + url
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", endpoint, err)
	}
	req.Header.Set("User-Agent", "idepool-health")
	// A probe is not user activity: without this mark the built-in
	// placeholder counted every probe as a user request, so its agent
	// reported fresh activity each round and no idle container was ever
	// stopped for inactivity.
	req.Header.Set(idepool.ProbeHeader, "1")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
	return nil
}

// describe turns a probe error into a short check result for Health.Checks.
func describe(err error) string {
	if err == nil {
		return "ok"
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	case strings.Contains(err.Error(), "no endpoint"):
		return "no endpoint"
	}
	return "error"
}

// Heartbeats gives the time of each container's newest agent message.
type Heartbeats interface {
	// LastHeartbeat returns when the agent of id last spoke; ok is false
	// when it never did (since this orchestrator started).
	LastHeartbeat(id string) (last time.Time, ok bool)
}

// Observer consumes agent reports (control.Observer).
type Observer interface {
	AgentReport(r idepool.AgentReport)
}

// Tee returns an Observer passing each report to every observer, in order
// (the pool first, then the heartbeat tracker).
func Tee(obs ...Observer) Observer { return tee(obs) }

type tee []Observer

func (t tee) AgentReport(r idepool.AgentReport) {
	for _, o := range t {
		if o != nil {
			o.AgentReport(r)
		}
	}
}

// HeartbeatTracker records when each agent last spoke, by the
// orchestrator's clock (the agent's may be skewed). It implements
// Heartbeats and Observer.
type HeartbeatTracker struct {
	clock idepool.Clock
	mu    sync.Mutex
	last  map[string]time.Time
}

var (
	_ Heartbeats = (*HeartbeatTracker)(nil)
	_ Observer   = (*HeartbeatTracker)(nil)
)

// NewHeartbeatTracker returns an empty tracker.
func NewHeartbeatTracker(clock idepool.Clock) *HeartbeatTracker {
	if clock == nil {
		clock = idepool.SystemClock{}
	}
	return &HeartbeatTracker{clock: clock, last: map[string]time.Time{}}
}

// AgentReport records any message but "gone" as a sign of life; after
// "gone" the last time stays, so the agent turns stale unless it comes back.
func (h *HeartbeatTracker) AgentReport(r idepool.AgentReport) {
	if r.Kind == idepool.AgentGone || r.ContainerID == "" {
		return
	}
	now := h.clock.Now()
	h.mu.Lock()
	h.last[r.ContainerID] = now
	h.mu.Unlock()
}

// LastHeartbeat implements Heartbeats.
func (h *HeartbeatTracker) LastHeartbeat(id string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.last[id]
	return t, ok
}

// Retain forgets every container not in live (the Monitor calls it).
func (h *HeartbeatTracker) Retain(live map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.last {
		if !live[id] {
			delete(h.last, id)
		}
	}
}
