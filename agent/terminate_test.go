package agent

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// TestStoppedWorkloadTerminated: a frozen (SIGSTOPped) workload ends on
// SIGTERM at shutdown, not by SIGKILL after the whole grace.
func TestStoppedWorkloadTerminated(t *testing.T) {
	cfg := Config{Workloads: []idepool.Workload{{Name: "a", Command: []string{"sleep", "600"}}}}
	cfg.withDefaults()
	cfg.KillGrace = 30 * time.Second // only a hang guard: the fix ends it at once
	s := newSupervisor(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	s.start(ctx)
	for s.statuses()[0].State != StateRunning {
		time.Sleep(time.Millisecond)
	}
	pid := s.statuses()[0].PID
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cancel()
	s.wait()
	if st := s.statuses()[0]; st.State != StateExited || st.Message != "signal: terminated" || alive(pid) {
		t.Fatalf("after stop: %+v alive=%v, want ended by SIGTERM", st, alive(pid))
	}
}
