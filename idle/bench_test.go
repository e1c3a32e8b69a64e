package idle

import (
	"fmt"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// BenchmarkDecide: one decision round over 5,000 containers.
func BenchmarkDecide(b *testing.B) {
	p := map[string]idepool.Profile{"default": {Name: "default", IdleTimeout: 10 * time.Minute, MaxAge: time.Hour}}
	cs := make([]idepool.Container, 5000)
	for i := range cs {
		cs[i] = idepool.Container{ID: fmt.Sprintf("c%05d", i), Profile: "default", State: idepool.StateRunning,
			LastActivity: t0.Add(-time.Duration(i) * time.Second)}
	}
	b.ReportAllocs()
	for b.Loop() {
		Decide(t0, cs, p, Policy{})
	}
	b.ReportMetric(float64(len(cs)), "containers/op")
}
