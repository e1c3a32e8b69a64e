package kubernetes

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/idepool/idepool"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// podSpec builds the Pod of a container. It is pure, so the shape of what
// goes to the API server is table-tested.
func (o *Options) podSpec(ns string, spec idepool.ContainerSpec, created time.Time) (*corev1.Pod, error) {
	p := spec.Profile
	record := map[string]string{}
	for k, v := range spec.Labels {
		if v != "" && !idepool.IsRuntimeLabel(k) {
			record[k] = v
		}
	}
	record[idepool.LabelManaged] = o.Deployment
	record[idepool.LabelID] = spec.ID
	record[idepool.LabelProfile] = p.Name
	record[idepool.LabelCreated] = created.UTC().Format(time.RFC3339Nano)
	ann := make(map[string]string, len(record))
	for k, v := range record {
		if err := validLabelKey(k); err != nil {
			return nil, err
		}
		ann[AnnotationPrefix+k] = v
	}

	env, err := containerEnv(spec)
	if err != nil {
		return nil, idepool.WrapError(idepool.EStartFailed, err, "container %s: environment", spec.ID)
	}
	if len(o.AllowedPeers) > 0 {
		// The runtime's, like the ports: a profile cannot open the relays.
		env = slices.DeleteFunc(env, func(e corev1.EnvVar) bool { return e.Name == EnvAllowedPeers })
		env = append(env, corev1.EnvVar{Name: EnvAllowedPeers, Value: strings.Join(o.AllowedPeers, ",")})
		slices.SortFunc(env, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	}

	var ports []corev1.ContainerPort
	for _, rt := range p.Routes {
		cp := corev1.ContainerPort{ContainerPort: int32(rt.Port), Protocol: corev1.ProtocolTCP}
		if len(validation.IsValidPortName(rt.Name)) == 0 {
			cp.Name = rt.Name
		}
		ports = append(ports, cp)
	}

	affinity, tolerations, err := placement(p.Constraints, spec.AvoidNodes)
	if err != nil {
		return nil, err
	}
	grace := int64(math.Ceil(o.StopGracePeriod.Seconds()))
	no, yes := false, true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      PodName(spec.ID),
			Namespace: ns,
			// Kubernetes labels select; the annotations are the record.
			Labels: map[string]string{
				idepool.LabelManaged:           o.Deployment,
				idepool.LabelID:                spec.ID,
				"app.kubernetes.io/managed-by": "idepool",
				"app.kubernetes.io/component":  "ide",
			},
			Annotations: ann,
		},
		Spec: corev1.PodSpec{
			Hostname:      PodName(spec.ID),
			RestartPolicy: corev1.RestartPolicyNever,
			// The IDE must not talk to the cluster's API as anyone.
			AutomountServiceAccountToken: &no,
			// Service links would put every service of the namespace in
			// the IDE's environment (idepool's own address among them).
			EnableServiceLinks: &no,
			// The sandbox's pause process becomes PID 1 and reaps the
			// workloads' orphans (Docker's --init on Swarm).
			ShareProcessNamespace:         &yes,
			TerminationGracePeriodSeconds: &grace,
			NodeSelector:                  maps.Clone(o.NodeSelector),
			Tolerations:                   append(slices.Clone(o.Tolerations), tolerations...),
			Affinity:                      affinity,
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           p.Image,
				ImagePullPolicy: o.ImagePullPolicy,
				Env:             env,
				Ports:           ports,
				Resources:       resources(p),
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no},
			}},
		},
	}
	return pod, nil
}

// resources: the reservations are the requests (what the scheduler
// places by), the limits are the limits.
func resources(p idepool.Profile) corev1.ResourceRequirements {
	var rr corev1.ResourceRequirements
	set := func(m *corev1.ResourceList, name corev1.ResourceName, q *resource.Quantity) {
		if q == nil {
			return
		}
		if *m == nil {
			*m = corev1.ResourceList{}
		}
		(*m)[name] = *q
	}
	set(&rr.Requests, corev1.ResourceCPU, milliCPU(p.EffectiveCPUReservation()))
	set(&rr.Requests, corev1.ResourceMemory, bytesQ(p.EffectiveMemoryReservation()))
	set(&rr.Limits, corev1.ResourceCPU, milliCPU(p.CPULimit))
	set(&rr.Limits, corev1.ResourceMemory, bytesQ(p.MemoryLimit))
	return rr
}

func milliCPU(cores float64) *resource.Quantity {
	if cores <= 0 {
		return nil
	}
	return resource.NewMilliQuantity(int64(math.Round(cores*1000)), resource.DecimalSI)
}

func bytesQ(b int64) *resource.Quantity {
	if b <= 0 {
		return nil
	}
	return resource.NewQuantity(b, resource.BinarySI)
}

// placement turns a profile's constraints and the nodes to avoid into node
// affinity and tolerations. Constraints keep Swarm's syntax where it has a
// meaning here, so one profile file serves both runtimes:
//
//	node.labels.KEY==VALUE    node.labels.KEY!=VALUE   (node labels)
//	node.hostname==NAME       node.hostname!=NAME      (node names)
//	toleration:KEY[=VALUE][:EFFECT]                    (a toleration; Kubernetes only)
//
// Anything else is refused (EInvalid) rather than ignored: a placement rule
// that silently does nothing would put IDEs where the operator said not to.
func placement(constraints, avoid []string) (*corev1.Affinity, []corev1.Toleration, error) {
	var exprs, fields []corev1.NodeSelectorRequirement
	var tols []corev1.Toleration
	for _, c := range constraints {
		if rest, ok := strings.CutPrefix(c, "toleration:"); ok {
			t, err := toleration(rest)
			if err != nil {
				return nil, nil, idepool.WrapError(idepool.EInvalid, err, "constraint %q", c)
			}
			tols = append(tols, t)
			continue
		}
		op := corev1.NodeSelectorOpIn
		lhs, rhs, ok := strings.Cut(c, "!=")
		if ok {
			op = corev1.NodeSelectorOpNotIn
		} else if lhs, rhs, ok = strings.Cut(c, "=="); !ok {
			return nil, nil, idepool.Errorf(idepool.EInvalid, "constraint %q: want node.labels.KEY==VALUE, node.labels.KEY!=VALUE, node.hostname==NAME or toleration:KEY[=VALUE][:EFFECT]", c)
		}
		lhs, rhs = strings.TrimSpace(lhs), strings.TrimSpace(rhs)
		switch {
		case lhs == "node.hostname" || lhs == "node.name":
			fields = append(fields, corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: op, Values: []string{rhs}})
		case strings.HasPrefix(lhs, "node.labels."):
			exprs = append(exprs, corev1.NodeSelectorRequirement{Key: strings.TrimPrefix(lhs, "node.labels."), Operator: op, Values: []string{rhs}})
		default:
			return nil, nil, idepool.Errorf(idepool.EInvalid, "constraint %q: %s has no meaning on Kubernetes (node.labels.KEY or node.hostname)", c, lhs)
		}
	}
	for _, n := range avoid {
		fields = append(fields, corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{n}})
	}
	if len(exprs) == 0 && len(fields) == 0 {
		return nil, tols, nil
	}
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: exprs, MatchFields: fields}},
		},
	}}, tols, nil
}

// toleration parses KEY[=VALUE][:EFFECT].
func toleration(s string) (corev1.Toleration, error) {
	t := corev1.Toleration{Operator: corev1.TolerationOpExists}
	if i := strings.LastIndex(s, ":"); i >= 0 {
		switch e := corev1.TaintEffect(s[i+1:]); e {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
			t.Effect = e
		default:
			return t, fmt.Errorf("unknown taint effect %q", e)
		}
		s = s[:i]
	}
	if k, v, ok := strings.Cut(s, "="); ok {
		t.Key, t.Value, t.Operator = k, v, corev1.TolerationOpEqual
	} else {
		t.Key = s
	}
	if t.Key == "" {
		return t, fmt.Errorf("no key")
	}
	return t, nil
}

// containerEnv is the container's environment, sorted: the profile's
// non-secret env, the caller's (agent token, URL, id), then what the
// runtime owns (route ports, routes and workloads as JSON, directories),
// which wins over both. The same as runtime/swarm's, as the agent expects.
func containerEnv(spec idepool.ContainerSpec) ([]corev1.EnvVar, error) {
	env, err := idepool.ContainerEnv(spec, WorkspaceDir, StateDir)
	if err != nil {
		return nil, err
	}
	out := make([]corev1.EnvVar, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		// Kubernetes expands $(NAME) in values and reads $$ as $: doubling
		// every $ keeps each value exactly as given.
		out = append(out, corev1.EnvVar{Name: k, Value: strings.ReplaceAll(env[k], "$", "$$")})
	}
	return out, nil
}

// PortEnv returns the variable that tells a route's workload its port:
// IDEPOOL_PORT_ plus the route name in upper case, '-' as '_'.
func PortEnv(route string) string { return idepool.RoutePortEnv(route) }
