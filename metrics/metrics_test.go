package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idepool/idepool"
)

type lister []idepool.Container

func (l lister) List(context.Context, idepool.ContainerFilter) ([]idepool.Container, int, error) {
	return l, len(l), nil
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustContain(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("scrape lacks %q", l)
		}
	}
}

func TestScrape(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	pools := []idepool.PoolStatus{{Profile: "default", Target: 3, Warm: 2, Starting: 1, Claimed: 4}}
	m := New(Options{
		Pools:      func() []idepool.PoolStatus { return pools },
		Containers: lister{{ID: "a", Profile: "default", State: idepool.StateWarm}, {ID: "b", Profile: "default", State: idepool.StateRunning}, {ID: "c", Profile: "default", State: idepool.StateRunning}},
		Capacity:   func() (float64, float64) { return 95, 12.5 },
	})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	body := scrape(t, srv.URL)
	mustContain(t, body,
		`idepool_pool_target{profile="default"} 3`,
		`idepool_pool_warm{profile="default"} 2`,
		`idepool_pool_starting{profile="default"} 1`,
		`idepool_pool_claimed{profile="default"} 4`,
		`idepool_pool_backoff{profile="default"} 0`,
		`idepool_containers{profile="default",state="running"} 2`,
		`idepool_containers{profile="default",state="warm"} 1`,
		`idepool_containers{profile="default",state="failed"} 0`,
		`idepool_capacity_memory_ratio 0.95`,
		`idepool_capacity_cpu_ratio 0.125`,
		`idepool_build_info{goversion="`+goruntime.Version()+`",runtime="",version="dev"} 1`,
		`idepool_sync_bytes_total{direction="up"} 0`,
	)

	pub := func(e idepool.Event) { m.Publish(e) }
	pub(idepool.Event{Time: t0, Type: idepool.EventState, ContainerID: "w", Profile: "default", State: idepool.StateCreating})
	pub(idepool.Event{Time: t0.Add(1500 * time.Millisecond), Type: idepool.EventState, ContainerID: "w", Profile: "default", State: idepool.StateWarm})
	pub(idepool.Event{Type: idepool.EventClaim, ContainerID: "w", Profile: "default", Data: map[string]any{"kind": "warm"}})
	pub(idepool.Event{Type: idepool.EventClaim, ContainerID: "w", Profile: "default", Data: map[string]any{"kind": "reused"}})
	pub(idepool.Event{Type: idepool.EventRefused, Profile: "default", Reason: idepool.ReasonCapacity})
	pub(idepool.Event{Type: idepool.EventSync, ContainerID: "w", Data: map[string]any{"bytesUp": int64(100), "bytesDown": int64(1000)}})
	pub(idepool.Event{Type: idepool.EventSync, ContainerID: "w", Data: map[string]any{"bytesUp": int64(150), "bytesDown": int64(1000)}})
	pub(idepool.Event{Type: idepool.EventConflict, ContainerID: "w", Data: map[string]any{"bytesUp": float64(170)}}) // after JSON
	pub(idepool.Event{Type: idepool.EventSync, ContainerID: "w", Data: map[string]any{"bytesUp": int64(30)}})        // a new assignment
	pub(idepool.Event{Type: idepool.EventSyncError, ContainerID: "w", Reason: "flush"})
	pub(idepool.Event{Type: idepool.EventHealth, ContainerID: "w", Profile: "default", Data: map[string]any{"status": "unhealthy"}})
	pub(idepool.Event{Type: idepool.EventHealth, ContainerID: "w", Profile: "default", Data: map[string]any{"status": "healthy"}})
	pub(idepool.Event{Type: idepool.EventStopped, ContainerID: "w", Profile: "default", Reason: idepool.ReasonInactivity})
	pub(idepool.Event{Type: idepool.EventStopped, ContainerID: "x", Profile: "default", Reason: "whatever a client wrote"})
	pub(idepool.Event{Type: idepool.EventCreateFail, ContainerID: "y", Profile: "default"})
	m.ObserveClaim(idepool.ClaimWarm, 3*time.Millisecond)
	m.ObserveRuntimeCreate("default", 200*time.Millisecond)
	pools[0].Warm = 1

	body = scrape(t, srv.URL)
	mustContain(t, body,
		`idepool_pool_warm{profile="default"} 1`,
		`idepool_claims_total{kind="warm",profile="default"} 1`,
		`idepool_claims_total{kind="reused",profile="default"} 1`,
		`idepool_claims_total{kind="refused",profile="default"} 1`,
		`idepool_create_duration_seconds_count{profile="default"} 1`,
		`idepool_create_duration_seconds_sum{profile="default"} 1.5`,
		`idepool_create_duration_seconds_bucket{profile="default",le="2.5"} 1`,
		`idepool_create_duration_seconds_bucket{profile="default",le="1"} 0`,
		`idepool_claim_duration_seconds_bucket{kind="warm",le="0.005"} 1`,
		`idepool_claim_duration_seconds_bucket{kind="warm",le="0.0025"} 0`,
		`idepool_runtime_create_duration_seconds_count{profile="default"} 1`,
		`idepool_sync_bytes_total{direction="up"} 200`, // 100 + 50 + 20 + 30
		`idepool_sync_bytes_total{direction="down"} 1000`,
		`idepool_sync_conflicts_total 1`,
		`idepool_sync_errors_total 1`,
		`idepool_health_failures_total{profile="default"} 1`,
		`idepool_stops_total{profile="default",reason="inactivity"} 1`,
		`idepool_stops_total{profile="default",reason="other"} 1`,
		`idepool_create_failures_total{profile="default"} 1`,
		`idepool_events_total{type="container.claimed"} 2`,
	)
	if strings.Contains(body, "go_goroutines") {
		t.Error("runtime collectors registered without Options.Process")
	}
	if n := testutil.CollectAndCount(m.claims); n != 3 {
		t.Errorf("claims series = %d, want 3", n)
	}
	if problems, err := testutil.GatherAndLint(m.Registry()); err != nil || len(problems) > 0 {
		t.Errorf("lint problems: %v %v", problems, err)
	}
}

func TestTrackingForgetsStopped(t *testing.T) {
	m := New(Options{})
	m.Publish(idepool.Event{Type: idepool.EventState, ContainerID: "a", State: idepool.StateCreating, Time: time.Unix(1, 0)})
	m.Publish(idepool.Event{Type: idepool.EventSync, ContainerID: "a", Data: map[string]any{"bytesUp": int64(5)}})
	m.Publish(idepool.Event{Type: idepool.EventStopped, ContainerID: "a", Reason: idepool.ReasonFailed})
	if len(m.creating) != 0 || len(m.synced) != 0 {
		t.Fatalf("still tracked: %v %v", m.creating, m.synced)
	}
}
