package health

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idepool/idepool/agent/placeholder"
)

// TestProbeIsNotActivity: a health probe of the built-in placeholder must
// not count as user activity, or idle containers would never be stopped.
func TestProbeIsNotActivity(t *testing.T) {
	var activity atomic.Int64
	ph := placeholder.New(t.TempDir(), placeholder.Options{OnActivity: func() { activity.Add(1) }})
	defer ph.Close()
	srv := httptest.NewServer(ph)
	defer srv.Close()
	ep := strings.TrimPrefix(srv.URL, "http://")

	p := NewHTTPProber(5 * time.Second)
	for _, path := range []string{"/", "/healthz", "/sub/"} {
		_ = p.Probe(context.Background(), ep, path) // "/sub/" answers 404: still an answer
	}
	if n := activity.Load(); n != 0 {
		t.Fatalf("health probes counted as %d user activities, want 0", n)
	}
}
