package kubernetes

import (
	"context"
	"fmt"

	"github.com/idepool/idepool"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Nodes returns every node's allocatable resources and what the Pods placed
// on it request, as the scheduler counts them. The requests of every
// namespace's Pods count; a service account that may not list Pods outside
// its namespace (the chart's default Role) sees only its own namespace's,
// and admission then trusts the scheduler to leave what does not fit
// pending (the message says why).
func (r *Runtime) Nodes(ctx context.Context) ([]idepool.NodeResources, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	nl, err := r.c.Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, kubeError(err, "list nodes")
	}
	pods, err := r.placedPods(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]idepool.NodeResources, 0, len(nl.Items))
	index := map[string]int{}
	for i := range nl.Items {
		n := &nl.Items[i]
		index[n.Name] = len(out)
		out = append(out, idepool.NodeResources{
			Name:        n.Name,
			NanoCPUs:    n.Status.Allocatable.Cpu().MilliValue() * 1e6,
			MemoryBytes: n.Status.Allocatable.Memory().Value(),
			Ready:       nodeReady(n) && !n.Spec.Unschedulable,
		})
	}
	for i := range pods {
		p := &pods[i]
		j, ok := index[p.Spec.NodeName]
		if !ok || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		cpu, mem := podRequests(p)
		out[j].ReservedNanoCPUs += cpu
		out[j].ReservedMemoryBytes += mem
	}
	return out, nil
}

// placedPods lists the Pods bound to a node and not finished, in every
// namespace if allowed, else in the runtime's.
func (r *Runtime) placedPods(ctx context.Context) ([]corev1.Pod, error) {
	opts := metav1.ListOptions{FieldSelector: fields.AndSelectors(
		fields.OneTermNotEqualSelector("spec.nodeName", ""),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed)),
	).String()}
	if scope := r.podsScope.Load(); scope == nil {
		pl, err := r.c.Pods(metav1.NamespaceAll).List(ctx, opts)
		if err == nil {
			return pl.Items, nil
		}
		if !apierrors.IsForbidden(err) {
			return nil, kubeError(err, "list pods of every namespace")
		}
		r.log.Info("may not list pods outside the namespace: admission counts only this namespace's requests", "err", err)
		r.podsScope.Store(&r.ns)
	}
	pl, err := r.c.Pods(r.ns).List(ctx, opts)
	if err != nil {
		return nil, kubeError(err, "list pods")
	}
	return pl.Items, nil
}

// podRequests is what the scheduler reserves for a Pod: the sum of its
// containers' requests or the largest init container's, whichever is more,
// plus the runtime class's overhead.
func podRequests(p *corev1.Pod) (nanoCPUs, memory int64) {
	var cpu, mem int64
	for _, c := range p.Spec.Containers {
		cpu += c.Resources.Requests.Cpu().MilliValue()
		mem += c.Resources.Requests.Memory().Value()
	}
	for _, c := range p.Spec.InitContainers {
		cpu = max(cpu, c.Resources.Requests.Cpu().MilliValue())
		mem = max(mem, c.Resources.Requests.Memory().Value())
	}
	if p.Spec.Overhead != nil {
		cpu += p.Spec.Overhead.Cpu().MilliValue()
		mem += p.Spec.Overhead.Memory().Value()
	}
	return cpu * 1e6, mem
}

// NodeStates returns what the cluster says of every node: one API call.
func (r *Runtime) NodeStates(ctx context.Context) ([]idepool.NodeState, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	nl, err := r.c.Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, kubeError(err, "list nodes")
	}
	out := make([]idepool.NodeState, 0, len(nl.Items))
	for i := range nl.Items {
		out = append(out, nodeState(&nl.Items[i]))
	}
	return out, nil
}

// nodeState maps a node onto idepool's view of it. Down: its Ready
// condition is Unknown (the node controller stopped hearing from its
// kubelet) or False (the kubelet says it cannot run pods). Drained:
// cordoned (unschedulable), which is how a drain starts.
func nodeState(n *corev1.Node) idepool.NodeState {
	s := idepool.NodeState{Name: n.Name, Drained: n.Spec.Unschedulable}
	ready := nodeCondition(n, corev1.NodeReady)
	switch {
	case ready == nil:
		s.Message = "no Ready condition yet"
	case ready.Status != corev1.ConditionTrue:
		s.Down = true
		s.Message = fmt.Sprintf("Ready=%s: %s %s", ready.Status, ready.Reason, ready.Message)
	}
	return s
}

func nodeReady(n *corev1.Node) bool {
	c := nodeCondition(n, corev1.NodeReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

func nodeCondition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}
