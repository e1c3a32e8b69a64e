//go:build linux

package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// TestReaperAsSubreaper runs the supervisor in reaping mode. The test
// process cannot be PID 1, but as a child subreaper it inherits orphans
// exactly as PID 1 does, so the reaper must both collect them and still
// hand the supervised workloads their own exit statuses.
func TestReaperAsSubreaper(t *testing.T) {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Skipf("cannot become a child subreaper: %v", errno)
	}
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0) })

	dir := t.TempDir()
	pidFile := filepath.Join(dir, "orphan.pid")
	cfg := Config{
		Workloads: []idepool.Workload{
			// The subshell exits at once, orphaning its sleep onto us.
			{Name: "parent", Command: []string{"sh", "-c", "(sleep 0.05 & echo $! > " + pidFile + "); exec sleep 600"}},
			{Name: "crasher", Command: []string{"sh", "-c", "exit 7"}},
		},
		Reap:       true,
		RestartMin: 5 * time.Millisecond,
		RestartMax: 20 * time.Millisecond,
		KillGrace:  5 * time.Second,
	}
	cfg.withDefaults()
	s := newSupervisor(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	s.start(ctx)
	defer func() { cancel(); s.wait() }()

	orphan, _ := strconv.Atoi(strings.TrimSpace(waitFile(t, pidFile)))
	deadline := time.Now().Add(60 * time.Second) // hang guard
	for {
		// A zombie keeps its /proc entry until reaped.
		if _, err := os.Stat("/proc/" + strconv.Itoa(orphan)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d was never reaped", orphan)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		st := s.statuses()
		c, _ := procByName(st, "crasher")
		p, _ := procByName(st, "parent")
		if c.Restarts >= 3 && p.State == StateRunning {
			if c.State == StateRestarting && c.Message != "exit status 7" {
				t.Fatalf("crasher status not dispatched: %+v", c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	parent, _ := procByName(s.statuses(), "parent")
	cancel()
	s.wait()
	if st, _ := procByName(s.statuses(), "parent"); st.State != StateExited || st.Message != "signal: terminated" {
		t.Fatalf("parent after stop: %+v", st)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(parent.PID)); !os.IsNotExist(err) {
		t.Fatalf("parent %d not reaped", parent.PID)
	}
}
