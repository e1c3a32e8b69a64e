package swarm

import (
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/moby/moby/api/types/swarm"
)

func TestTaskStatus(t *testing.T) {
	want := map[swarm.TaskState]idepool.RuntimeStatus{
		swarm.TaskStateNew: idepool.StatusPending, swarm.TaskStateAllocated: idepool.StatusPending,
		swarm.TaskStatePending: idepool.StatusPending, swarm.TaskStateAssigned: idepool.StatusPending,
		swarm.TaskStateAccepted: idepool.StatusPending, swarm.TaskStatePreparing: idepool.StatusPending,
		swarm.TaskStateReady: idepool.StatusPending, swarm.TaskStateStarting: idepool.StatusPending,
		swarm.TaskStateRunning:  idepool.StatusRunning,
		swarm.TaskStateComplete: idepool.StatusExited, swarm.TaskStateShutdown: idepool.StatusExited,
		swarm.TaskStateFailed: idepool.StatusFailed, swarm.TaskStateRejected: idepool.StatusFailed,
		swarm.TaskStateOrphaned: idepool.StatusFailed, swarm.TaskStateRemove: idepool.StatusFailed,
	}
	for s, w := range want {
		if got, ok := taskStatus(s); got != w || !ok {
			t.Errorf("taskStatus(%s) = %s, %v; want %s", s, got, ok, w)
		}
	}
	if got, ok := taskStatus("paused-by-martians"); got != idepool.StatusFailed || ok {
		t.Errorf("unknown state: %s, %v", got, ok)
	}
}

func TestStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	task := func(id string, age int, st swarm.TaskState, errMsg string, exit int) swarm.Task {
		tk := swarm.Task{ID: id, NodeID: "node-" + id, Status: swarm.TaskStatus{State: st, Err: errMsg}}
		tk.CreatedAt = t0.Add(time.Duration(age) * time.Second)
		if exit >= 0 {
			tk.Status.ContainerStatus = &swarm.ContainerStatus{ExitCode: exit}
		}
		return tk
	}
	tests := []struct {
		name     string
		tasks    []swarm.Task
		want     idepool.RuntimeStatus
		node     string
		msgSub   string
		wantNoMs bool
		restart  *swarm.RestartPolicy
	}{
		{"no task yet", nil, idepool.StatusPending, "", "no task", false, nil},
		{"preparing", []swarm.Task{task("a", 0, swarm.TaskStatePreparing, "", -1)}, idepool.StatusPending, "node-a", "", true, nil},
		{"running", []swarm.Task{task("a", 0, swarm.TaskStateRunning, "", -1)}, idepool.StatusRunning, "node-a", "", true, nil},
		{"rejected", []swarm.Task{task("a", 0, swarm.TaskStateRejected, "No such image: x", -1)}, idepool.StatusFailed, "node-a", "No such image", false, nil},
		{"killed", []swarm.Task{task("a", 0, swarm.TaskStateFailed, "task: non-zero exit (137)", 137)}, idepool.StatusFailed, "node-a", "137", false, nil},
		{"complete", []swarm.Task{task("a", 0, swarm.TaskStateComplete, "", 0)}, idepool.StatusExited, "node-a", "", true, nil},
		{"shutdown with error code", []swarm.Task{task("a", 0, swarm.TaskStateShutdown, "", 143)}, idepool.StatusFailed, "node-a", "exit code 143", false, nil},
		// The newest task counts, whatever order the engine lists them in.
		{"restarted, newest running", []swarm.Task{
			task("b", 10, swarm.TaskStateRunning, "", -1), task("a", 0, swarm.TaskStateFailed, "boom", 1)},
			idepool.StatusRunning, "node-b", "", true, nil},
		{"restart waiting", []swarm.Task{
			task("a", 0, swarm.TaskStateFailed, "task: non-zero exit (137)", 137), task("b", 10, swarm.TaskStateReady, "", -1)},
			idepool.StatusPending, "node-b", "restarting after task failed", false, nil},
		{"newest failed after an old run", []swarm.Task{
			task("a", 0, swarm.TaskStateShutdown, "", 0), task("b", 10, swarm.TaskStateOrphaned, "node down", -1)},
			idepool.StatusFailed, "node-b", "node down", false, nil},
		// The failure seen before Swarm's orchestrator acted on it (desired
		// state still running): with attempts left, a restart is coming.
		{"failed, restart coming", []swarm.Task{desired(task("a", 0, swarm.TaskStateFailed, "task: non-zero exit (137)", 137), swarm.TaskStateRunning)},
			idepool.StatusPending, "node-a", "restarting after task failed", false, onFailure(1)},
		{"failed, unlimited restarts", []swarm.Task{desired(task("a", 0, swarm.TaskStateRejected, "No such image: x", -1), swarm.TaskStateRunning)},
			idepool.StatusPending, "node-a", "No such image", false, onFailure(0)},
		{"failed, attempts used up", []swarm.Task{
			desired(task("a", 0, swarm.TaskStateFailed, "boom", 1), swarm.TaskStateShutdown),
			desired(task("b", 10, swarm.TaskStateFailed, "boom again", 1), swarm.TaskStateRunning)},
			idepool.StatusFailed, "node-b", "boom again", false, onFailure(1)},
		{"failed, orchestrator gave up", []swarm.Task{desired(task("a", 0, swarm.TaskStateFailed, "boom", 1), swarm.TaskStateShutdown)},
			idepool.StatusFailed, "node-a", "boom", false, onFailure(3)},
		{"failed, no restarts", []swarm.Task{desired(task("a", 0, swarm.TaskStateFailed, "boom", 1), swarm.TaskStateRunning)},
			idepool.StatusFailed, "node-a", "boom", false, &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone}},
		{"orphaned, restarts on", []swarm.Task{desired(task("a", 0, swarm.TaskStateOrphaned, "node down", -1), swarm.TaskStateRunning)},
			idepool.StatusFailed, "node-a", "node down", false, onFailure(0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, node, msg := status(tc.tasks, tc.restart)
			if got != tc.want || node != tc.node {
				t.Errorf("status = %s on %q, want %s on %q (msg %q)", got, node, tc.want, tc.node, msg)
			}
			if tc.wantNoMs && msg != "" {
				t.Errorf("message %q, want none", msg)
			}
			if !tc.wantNoMs && !contains(msg, tc.msgSub) {
				t.Errorf("message %q, want it to mention %q", msg, tc.msgSub)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func desired(t swarm.Task, s swarm.TaskState) swarm.Task {
	t.DesiredState = s
	return t
}

func onFailure(attempts uint64) *swarm.RestartPolicy {
	return &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionOnFailure, MaxAttempts: &attempts}
}
