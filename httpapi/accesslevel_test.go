package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// slowHealth answers slowly.
type slowHealth struct{ fakeHealth }

// Health answers after SlowRequest of the bubble's fake time.
func (h slowHealth) Health(ctx context.Context) HealthReport {
	time.Sleep(SlowRequest)
	return h.fakeHealth.Health(ctx)
}

// accessLines returns the access log's records as path → level.
func accessLines(t *testing.T, logs string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec struct {
			Msg, Level, Path string
		}
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "http" {
			out[rec.Path] = rec.Level
		}
	}
	return out
}

// TestAccessLogLevels: what went well is logged at DEBUG, a client's
// mistake (4xx) at INFO, a server error (5xx) and a slow request at WARN.
func TestAccessLogLevels(t *testing.T) {
	h := newHarness(t, nil)
	h.do(t, call{method: "GET", path: "/api/health", noAuth: true})
	h.do(t, call{method: "GET", path: "/api/containers"})
	h.do(t, call{method: "GET", path: "/api/containers/nosuch0000x1"})
	h.do(t, call{method: "GET", path: "/api/pool", noAuth: true})
	got := accessLines(t, h.logs.String())
	for path, want := range map[string]string{
		"/api/health": "DEBUG", "/api/containers": "DEBUG", "/api/containers/nosuch0000x1": "INFO", "/api/pool": "INFO",
	} {
		if got[path] != want {
			t.Errorf("%s logged at %q, want %s (all: %v)", path, got[path], want, got)
		}
	}

	synctest.Test(t, func(t *testing.T) {
		slow := newHarness(t, func(o *Options) {
			o.Clock = idepool.SystemClock{} // the bubble's
			o.Health = slowHealth{fakeHealth{HealthReport{Runtime: "fake", Connected: true}}}
		})
		slow.do(t, call{method: "GET", path: "/api/health", noAuth: true})
		if got := accessLines(t, slow.logs.String())["/api/health"]; got != "WARN" {
			t.Errorf("slow request logged at %q, want WARN", got)
		}
	})

	fail := newHarness(t, nil)
	fail.orch.startErr = errFake("boom")
	fail.do(t, call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"my-bucket"}`})
	if got := accessLines(t, fail.logs.String())["/api/containers/start"]; got != "WARN" {
		t.Errorf("500 logged at %q, want WARN", got)
	}
}
