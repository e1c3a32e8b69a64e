package kubernetes

import (
	"fmt"
	"strings"

	"github.com/idepool/idepool"
	corev1 "k8s.io/api/core/v1"
)

// neverStarts are the reasons a container waits that no retry cures: the
// Pod would stay pending forever, so it is reported failed (as Swarm
// rejects a task whose image is missing).
var neverStarts = map[string]bool{
	"ErrImageNeverPull":          true,
	"InvalidImageName":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"RunContainerError":          true,
}

// podStatus maps a Pod onto the runtime statuses, with a message in the
// cluster's words when it is not simply running. Every phase is listed, so
// a new one shows up as failed with a message rather than as running.
func podStatus(p *corev1.Pod) (idepool.RuntimeStatus, string) {
	cs := containerStatus(p)
	switch p.Status.Phase {
	case corev1.PodPending, "":
		if cs != nil && cs.State.Waiting != nil {
			w := cs.State.Waiting
			if neverStarts[w.Reason] {
				return idepool.StatusFailed, fmt.Sprintf("container %s: %s", w.Reason, w.Message)
			}
			if w.Reason != "" && w.Reason != "ContainerCreating" {
				return idepool.StatusPending, fmt.Sprintf("container waiting: %s %s", w.Reason, w.Message)
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				return idepool.StatusPending, fmt.Sprintf("not scheduled (%s): %s", c.Reason, c.Message)
			}
		}
		if p.Spec.NodeName == "" {
			return idepool.StatusPending, "not scheduled yet"
		}
		return idepool.StatusPending, ""
	case corev1.PodRunning:
		// The phase says the sandbox and the container started; the
		// container's own state says whether it runs now.
		switch {
		case cs == nil:
			return idepool.StatusPending, "no container status yet"
		case cs.State.Running != nil:
			return idepool.StatusRunning, terminating(p)
		case cs.State.Terminated != nil:
			return terminated(cs.State.Terminated)
		default:
			return idepool.StatusPending, "container not running yet"
		}
	case corev1.PodSucceeded:
		if cs != nil && cs.State.Terminated != nil {
			return terminated(cs.State.Terminated)
		}
		return idepool.StatusExited, ""
	case corev1.PodFailed:
		msg := strings.TrimSpace(p.Status.Reason + " " + p.Status.Message)
		if cs != nil && cs.State.Terminated != nil {
			if _, m := terminated(cs.State.Terminated); m != "" {
				msg = strings.TrimSpace(msg + " " + m)
			}
		}
		if msg == "" {
			msg = "pod failed"
		}
		return idepool.StatusFailed, msg
	case corev1.PodUnknown:
		return idepool.StatusFailed, "pod state unknown (its node stopped reporting)"
	}
	return idepool.StatusFailed, fmt.Sprintf("unknown pod phase %q", p.Status.Phase)
}

func terminated(t *corev1.ContainerStateTerminated) (idepool.RuntimeStatus, string) {
	if t.ExitCode == 0 {
		return idepool.StatusExited, ""
	}
	msg := fmt.Sprintf("container exited with code %d", t.ExitCode)
	if t.Reason != "" {
		msg += " (" + t.Reason + ")"
	}
	if t.Signal != 0 {
		msg += fmt.Sprintf(", signal %d", t.Signal)
	}
	return idepool.StatusFailed, msg
}

func terminating(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	return ""
}

func containerStatus(p *corev1.Pod) *corev1.ContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == ContainerName {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}
