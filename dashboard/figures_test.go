package dashboard

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
)

// TestIdleHostShowsZeroCPU: a host at 0 % of 2 cores is shown as such, not
// as "-% of 2" (a zero figure was dropped as unknown).
func TestIdleHostShowsZeroCPU(t *testing.T) { synctest.Test(t, testIdleHostShowsZeroCPU) }

func testIdleHostShowsZeroCPU(t *testing.T) {
	f := newFixtureWith(t, []string{testKey}, func(context.Context) []Resource {
		return []Resource{
			{Name: "host", Role: "process", CPUCores: 2, CPUPercent: 0, MemoryTotal: 8 << 30, MemoryUsed: 2 << 30},
			{Name: "lost", Role: "node"},
		}
	})
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
