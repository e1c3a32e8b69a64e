//go:build linux

package process

import (
	"context"
	"testing"
	"time"
)

// BenchmarkCreateRemove measures one container's life: Create (spawn the
// agent) and Remove (SIGTERM, wait, delete), with the test binary as agent.
func BenchmarkCreateRemove(b *testing.B) {
	exe := testExe(b)
	r, err := New(Options{DataDir: b.TempDir(), AgentCommand: []string{exe}, Deployment: "bench",
		ExtraEnv: childExtraEnv(), StopGrace: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	var create, remove time.Duration
	for b.Loop() {
		spec := testSpec(nil, nil)
		t0 := time.Now()
		if _, err := r.Create(ctx, spec); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := r.Remove(ctx, spec.ID); err != nil {
			b.Fatal(err)
		}
		create += t1.Sub(t0)
		remove += time.Since(t1)
	}
	b.ReportMetric(float64(create.Microseconds())/float64(b.N)/1000, "ms/create")
	b.ReportMetric(float64(remove.Microseconds())/float64(b.N)/1000, "ms/remove")
}
