package swarm

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/traefik"
	"github.com/moby/moby/api/types/swarm"
)

// Paths inside every IDE container (the images agree on them).
const (
	WorkspaceDir = "/workspace"
	StateDir     = "/var/lib/idepool-agent"
)

// EnvAllowedPeers tells the agent which peers (DNS names) may connect to
// the route ports (agent.EnvAllowedPeers; not imported, the runtime does
// not depend on the agent).
const EnvAllowedPeers = "IDEPOOL_ALLOWED_PEERS"

// ServiceName returns the Swarm service name of container id.
func ServiceName(id string) string { return servicePrefix + id }

const servicePrefix = "idepool-"

// serviceSpec builds the Swarm service spec of a container. It is pure, so
// the shape of what goes to the engine is table-tested.
func (o *Options) serviceSpec(spec idepool.ContainerSpec, created time.Time) (swarm.ServiceSpec, error) {
	p := spec.Profile
	name := ServiceName(spec.ID)

	labels := map[string]string{}
	if o.Router == RouterTraefik {
		maps.Copy(labels, traefik.Labels(spec.ID, p, o.Traefik))
	}
	for k, v := range spec.Labels {
		if v != "" && !idepool.IsRuntimeLabel(k) {
			labels[k] = v
		}
	}
	labels[idepool.LabelManaged] = o.Deployment
	labels[idepool.LabelID] = spec.ID
	labels[idepool.LabelProfile] = p.Name
	labels[idepool.LabelCreated] = created.UTC().Format(time.RFC3339Nano)

	env, err := containerEnv(spec)
	if err != nil {
		return swarm.ServiceSpec{}, err
	}
	if len(o.AllowedPeers) > 0 {
		// The runtime's, like the ports: a profile cannot open the relays.
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, EnvAllowedPeers+"=") })
		env = append(env, EnvAllowedPeers+"="+strings.Join(o.AllowedPeers, ","))
		slices.Sort(env)
	}

	replicas := uint64(1)
	grace := o.StopGracePeriod
	delay := o.RestartDelay
	attempts := o.RestartMaxAttempts
	window := o.RestartWindow
	init := true
	s := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image: p.Image,
				// The container's own labels never change (a change would
				// replace the task); they only let events be matched.
				Labels: map[string]string{
					idepool.LabelManaged: o.Deployment,
					idepool.LabelID:      spec.ID,
				},
				Hostname:        name,
				Env:             env,
				StopGracePeriod: &grace,
				// The agent is PID 1 in images without an init; Docker's
				// init reaps zombies of the workloads it starts.
				Init: &init,
			},
			Resources: &swarm.ResourceRequirements{
				Limits: &swarm.Limit{
					NanoCPUs:    nanoCPUs(p.CPULimit),
					MemoryBytes: p.MemoryLimit,
				},
				Reservations: &swarm.Resources{
					NanoCPUs:    nanoCPUs(p.EffectiveCPUReservation()),
					MemoryBytes: p.EffectiveMemoryReservation(),
				},
			},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone},
			LogDriver: &swarm.Driver{
				Name:    "json-file",
				Options: map[string]string{"max-size": o.LogMaxSize, "max-file": strconv.Itoa(o.LogMaxFiles)},
			},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		// DNS round robin: the service name resolves straight to the one
		// task's address. No virtual IP means no IPVS entry that would cut
		// idle websockets, and nothing to publish (no published ports).
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
	if attempts > 0 {
		s.TaskTemplate.RestartPolicy = &swarm.RestartPolicy{
			Condition:   swarm.RestartPolicyConditionOnFailure,
			Delay:       &delay,
			MaxAttempts: &attempts,
			Window:      &window,
		}
	}
	constraints := slices.Clone(p.Constraints)
	for _, n := range spec.AvoidNodes {
		// A node that lacks the image (or another the pool avoids): Swarm
		// would keep choosing it, since it places by resources only.
		constraints = append(constraints, "node.hostname!="+n)
	}
	if len(constraints) > 0 {
		s.TaskTemplate.Placement = &swarm.Placement{Constraints: constraints}
	}
	if o.Network != "" {
		s.TaskTemplate.Networks = []swarm.NetworkAttachmentConfig{{Target: o.Network, Aliases: []string{name}}}
	}
	return s, nil
}

// containerEnv is the container's environment, sorted: the profile's
// non-secret env, the caller's (agent token, URL, id), then what the
// runtime owns (route ports, routes and workloads as JSON, directories),
// which wins over both.
func containerEnv(spec idepool.ContainerSpec) ([]string, error) {
	env, err := idepool.ContainerEnv(spec, WorkspaceDir, StateDir)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out, nil
}

// PortEnv returns the variable that tells a route's workload its port:
// IDEPOOL_PORT_ plus the route name in upper case, '-' as '_'.
func PortEnv(route string) string { return idepool.RoutePortEnv(route) }

func nanoCPUs(cores float64) int64 {
	if cores <= 0 {
		return 0
	}
	return int64(math.Round(cores * 1e9))
}
