package swarm

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/idepool/idepool"
	"github.com/moby/moby/api/types/swarm"
)

// taskStatus maps one Swarm task state onto the runtime statuses. Every
// state is listed, so a new one shows up as failed with a message rather
// than being taken for running.
func taskStatus(s swarm.TaskState) (idepool.RuntimeStatus, bool) {
	switch s {
	case swarm.TaskStateNew, swarm.TaskStateAllocated, swarm.TaskStatePending, swarm.TaskStateAssigned,
		swarm.TaskStateAccepted, swarm.TaskStatePreparing, swarm.TaskStateReady, swarm.TaskStateStarting:
		return idepool.StatusPending, true
	case swarm.TaskStateRunning:
		return idepool.StatusRunning, true
	case swarm.TaskStateComplete, swarm.TaskStateShutdown:
		return idepool.StatusExited, true
	case swarm.TaskStateFailed, swarm.TaskStateRejected, swarm.TaskStateOrphaned, swarm.TaskStateRemove:
		return idepool.StatusFailed, true
	}
	return idepool.StatusFailed, false
}

// byAge sorts tasks oldest first: a restart makes a new task and the old
// ones stay as history, so the last one says what the container is now.
func byAge(tasks []swarm.Task) []swarm.Task {
	out := slices.Clone(tasks)
	slices.SortStableFunc(out, func(a, b swarm.Task) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Version.Index, b.Version.Index)
	})
	return out
}

// status derives a container's status, node id and message from its tasks
// and the service's restart policy. No task yet means pending: Swarm has
// accepted the service but not yet scheduled it.
func status(tasks []swarm.Task, restart *swarm.RestartPolicy) (st idepool.RuntimeStatus, nodeID, msg string) {
	if len(tasks) == 0 {
		return idepool.StatusPending, "", "no task scheduled yet"
	}
	sorted := byAge(tasks)
	t := sorted[len(sorted)-1]
	st, known := taskStatus(t.Status.State)
	if !known {
		return idepool.StatusFailed, t.NodeID, fmt.Sprintf("unknown task state %q", t.Status.State)
	}
	switch {
	case t.Status.Err != "":
		msg = fmt.Sprintf("task %s: %s", t.Status.State, t.Status.Err)
	case st != idepool.StatusRunning && t.Status.Message != "":
		msg = fmt.Sprintf("task %s: %s", t.Status.State, t.Status.Message)
	}
	if st == idepool.StatusPending && len(sorted) > 1 {
		// A restart after a failure: say why the previous task ended.
		if prev := sorted[len(sorted)-2]; prev.Status.Err != "" {
			msg = fmt.Sprintf("restarting after task %s: %s", prev.Status.State, prev.Status.Err)
		}
	}
	if st == idepool.StatusFailed && restartComing(sorted, restart) {
		// Swarm's orchestrator has not yet seen the failure (the task's
		// desired state is still running); when it does, it replaces the
		// task. Failed now would be final too early.
		return idepool.StatusPending, t.NodeID, "restarting after " + msg
	}
	if st == idepool.StatusExited && t.Status.ContainerStatus != nil && t.Status.ContainerStatus.ExitCode != 0 {
		// Shutdown with a non-zero exit code is a failure seen from outside.
		st = idepool.StatusFailed
		if msg == "" {
			msg = fmt.Sprintf("task %s with exit code %d", t.Status.State, t.Status.ContainerStatus.ExitCode)
		}
	}
	return st, t.NodeID, msg
}

// restartComing reports whether Swarm will restart the newest task, which
// failed: its desired state is still running (the orchestrator turns it to
// shutdown in the same step that creates the replacement, or that gives
// up), and the policy restarts failures with attempts left.
func restartComing(sorted []swarm.Task, rp *swarm.RestartPolicy) bool {
	t := sorted[len(sorted)-1]
	if t.DesiredState != swarm.TaskStateRunning || rp == nil {
		return false
	}
	if t.Status.State != swarm.TaskStateFailed && t.Status.State != swarm.TaskStateRejected {
		return false // orphaned or removed: the node or service is gone
	}
	if rp.Condition != swarm.RestartPolicyConditionOnFailure && rp.Condition != swarm.RestartPolicyConditionAny {
		return false
	}
	if rp.MaxAttempts == nil || *rp.MaxAttempts == 0 {
		return true // unlimited
	}
	failures := 0
	for _, o := range sorted {
		if o.Status.State == swarm.TaskStateFailed || o.Status.State == swarm.TaskStateRejected {
			failures++
		}
	}
	return uint64(failures) <= *rp.MaxAttempts
}
