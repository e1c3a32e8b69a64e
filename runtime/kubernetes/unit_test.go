package kubernetes

import (
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodStatus(t *testing.T) {
	ide := func(s corev1.ContainerState) []corev1.ContainerStatus {
		return []corev1.ContainerStatus{{Name: ContainerName, State: s}}
	}
	now := metav1.Now()
	for _, c := range []struct {
		name string
		pod  corev1.Pod
		want idepool.RuntimeStatus
		msg  string
	}{
		{"new", corev1.Pod{}, idepool.StatusPending, "not scheduled yet"},
		{"unschedulable", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/1 nodes are available: 1 Insufficient cpu."}}}},
			idepool.StatusPending, "Insufficient cpu"},
		{"creating", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: ide(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}})}},
			idepool.StatusPending, ""},
		{"image never pulled", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: ide(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: "no image"}})}},
			idepool.StatusFailed, "ErrImageNeverPull"},
		{"pull backoff", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: ide(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}})}},
			idepool.StatusPending, "ImagePullBackOff"},
		{"running", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning,
			ContainerStatuses: ide(corev1.ContainerState{Running: &corev1.ContainerStateRunning{}})}}, idepool.StatusRunning, ""},
		{"running, terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: corev1.PodStatus{Phase: corev1.PodRunning,
			ContainerStatuses: ide(corev1.ContainerState{Running: &corev1.ContainerStateRunning{}})}}, idepool.StatusRunning, "terminating"},
		{"running phase, no status", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, idepool.StatusPending, "no container status"},
		{"killed", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed,
			ContainerStatuses: ide(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error"}})}},
			idepool.StatusFailed, "code 137"},
		{"evicted", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "low on memory"}}, idepool.StatusFailed, "Evicted"},
		{"done", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded,
			ContainerStatuses: ide(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}})}}, idepool.StatusExited, ""},
		{"unknown", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodUnknown}}, idepool.StatusFailed, "unknown"},
		{"future phase", corev1.Pod{Status: corev1.PodStatus{Phase: "Hibernating"}}, idepool.StatusFailed, "Hibernating"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, msg := podStatus(&c.pod)
			if st != c.want || !strings.Contains(msg, c.msg) || (c.msg == "" && msg != "") {
				t.Errorf("podStatus = %q, %q; want %q, containing %q", st, msg, c.want, c.msg)
			}
		})
	}
}

func TestPlacement(t *testing.T) {
	aff, tols, err := placement([]string{"node.labels.ide==true", "node.labels.zone!=b", "node.hostname!=n1", "toleration:ide=yes:NoSchedule", "toleration:gpu"}, []string{"n2"})
	if err != nil {
		t.Fatal(err)
	}
	term := aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0]
	if len(term.MatchExpressions) != 2 || term.MatchExpressions[0].Key != "ide" || term.MatchExpressions[0].Operator != corev1.NodeSelectorOpIn ||
		term.MatchExpressions[1].Operator != corev1.NodeSelectorOpNotIn {
		t.Errorf("expressions %+v", term.MatchExpressions)
	}
	if len(term.MatchFields) != 2 || term.MatchFields[0].Values[0] != "n1" || term.MatchFields[1].Values[0] != "n2" {
		t.Errorf("fields %+v", term.MatchFields)
	}
	if len(tols) != 2 || tols[0].Key != "ide" || tols[0].Value != "yes" || tols[0].Effect != corev1.TaintEffectNoSchedule ||
		tols[1].Key != "gpu" || tols[1].Operator != corev1.TolerationOpExists {
		t.Errorf("tolerations %+v", tols)
	}
	for _, bad := range []string{"node.role==manager", "engine.labels.x==y", "nonsense", "toleration:k:Never", "toleration:"} {
		if _, _, err := placement([]string{bad}, nil); idepool.ErrorCode(err) != idepool.EInvalid {
			t.Errorf("placement(%q): err %v, want EInvalid", bad, err)
		}
	}
	if aff, _, _ := placement(nil, nil); aff != nil {
		t.Errorf("no constraints: affinity %+v", aff)
	}
}

func TestPodSpec(t *testing.T) {
	o := Options{Deployment: "dep", StopGracePeriod: 40 * time.Second, ImagePullPolicy: corev1.PullIfNotPresent, AllowedPeers: []string{"idepool"}}
	p := idepool.Profile{Name: "py", Image: "img:1", CPULimit: 2, CPUReservation: 0.5, MemoryLimit: 1 << 30, Routes: idepool.DefaultRoutes(),
		Env: map[string]string{"PRICE": "$(HOME) costs $5", IdepoolAllowed: "evil"}}
	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	pod, err := o.podSpec("ns", idepool.ContainerSpec{ID: "abcd1234", Profile: p, Labels: map[string]string{
		idepool.LabelManaged: "forged", "idepool.s3.prefix": "users/a b/", "x": ""}}, created)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "idepool-abcd1234" || pod.Labels[idepool.LabelManaged] != "dep" || pod.Labels[idepool.LabelID] != "abcd1234" {
		t.Errorf("meta %+v", pod.ObjectMeta)
	}
	want := map[string]string{
		AnnotationPrefix + idepool.LabelManaged: "dep", AnnotationPrefix + idepool.LabelID: "abcd1234",
		AnnotationPrefix + idepool.LabelProfile: "py", AnnotationPrefix + idepool.LabelCreated: "2026-01-02T03:04:05.000000006Z",
		AnnotationPrefix + "idepool.s3.prefix": "users/a b/",
	}
	if len(pod.Annotations) != len(want) {
		t.Errorf("annotations %v, want %v", pod.Annotations, want)
	}
	for k, v := range want {
		if pod.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, pod.Annotations[k], v)
		}
	}
	c := pod.Spec.Containers[0]
	if c.Resources.Requests.Cpu().MilliValue() != 500 || c.Resources.Limits.Cpu().MilliValue() != 2000 ||
		c.Resources.Requests.Memory().Value() != 1<<30 || c.Resources.Limits.Memory().Value() != 1<<30 {
		t.Errorf("resources %+v", c.Resources)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["PRICE"] != "$$(HOME) costs $$5" || env[EnvAllowedPeers] != "idepool" || env[idepool.EnvAgentID] != "abcd1234" || env["IDEPOOL_PORT_CODE"] == "" {
		t.Errorf("env %v", env)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || *pod.Spec.TerminationGracePeriodSeconds != 40 || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("spec %+v", pod.Spec)
	}
	if _, err := o.podSpec("ns", idepool.ContainerSpec{ID: "abcd1234", Profile: p, Labels: map[string]string{"bad key!": "v"}}, created); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Errorf("invalid label key: %v", err)
	}
}

// IdepoolAllowed is a profile's attempt to set the relays' peers itself.
const IdepoolAllowed = EnvAllowedPeers
