package dashboard

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool/events"
)

// TestIdleHostShowsZeroCPU: a host at 0 % of 2 cores is shown as such, not
// as "-% of 2" (a zero figure was dropped as unknown).
func TestIdleHostShowsZeroCPU(t *testing.T) {
	f := &fixture{orch: newFakeOrch(), clock: &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}, bus: events.New(events.Options{})}
	t.Cleanup(func() { f.bus.Close() })
	f.d = New(Options{Orchestrator: f.orch, CheckKey: KeyChecker([]string{testKey}), Events: f.bus, Clock: f.clock,
		SessionTTL: time.Hour, SnapshotEvery: 100 * time.Millisecond, Version: "test",
		Resources: func(context.Context) []Resource {
			return []Resource{
				{Name: "host", Role: "process", CPUCores: 2, CPUPercent: 0, MemoryTotal: 8 << 30, MemoryUsed: 2 << 30},
				{Name: "lost", Role: "node"},
			}
		}})
	f.srv = httptest.NewServer(f.d)
	t.Cleanup(f.srv.Close)
	_, c := f.login(t, testKey)
	if c == nil {
		t.Fatal("no session")
	}
	_, page := f.do(t, "GET", "/dashboard/", c, nil, nil)
	if !strings.Contains(page, "0% of 2 cores") || strings.Contains(page, "-% of") {
		t.Errorf("page's CPU figure: want \"0%% of 2 cores\"\n%s", cpuCells(page))
	}
	_, state := f.do(t, "GET", "/dashboard/state", c, nil, nil)
	if !strings.Contains(state, `"cpuPercent":0`) {
		t.Errorf("state drops a zero CPU figure: %s", state)
	}
}

func cpuCells(page string) string {
	var out []string
	for _, l := range strings.Split(page, "\n") {
		if strings.Contains(l, `class="cpu"`) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}
