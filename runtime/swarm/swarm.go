// Package swarm is the idepool Runtime on Docker Swarm: each container is a
// replicated service of one task named idepool-<id>, on the deployment's
// overlay network, with idepool's labels on the service as the record of
// truth. Status comes from the service's tasks, never from the service's
// existence.
//
// The package declares the few Docker Engine API calls it needs (Docker)
// and uses the real client behind them; its tests run against a real
// engine in Swarm mode.
package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/idepool/idepool"
	"github.com/idepool/idepool/traefik"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// Routers a deployment can use.
const (
	// RouterBuiltin: idepool's own proxy reaches containers by Endpoints.
	RouterBuiltin = "builtin"
	// RouterTraefik: services also carry Traefik labels (package traefik).
	RouterTraefik = "traefik"
)

// EndpointMode says what host Instance.Endpoints name.
type EndpointMode string

// Endpoint modes.
const (
	// EndpointServiceName: "idepool-<id>:<port>", resolved by Swarm's DNS
	// on the overlay network. Right for idepool running as a service on
	// that network.
	EndpointServiceName EndpointMode = "service"
	// EndpointTaskIP: "<task address on the network>:<port>", for a caller
	// that is on the network but does not use Swarm's DNS.
	EndpointTaskIP EndpointMode = "task-ip"
)

// Options configure a Runtime. Zero fields take the defaults listed.
type Options struct {
	// Docker is the engine client; nil makes one from the environment
	// (NewClient), which Close then closes.
	Docker Docker
	// Deployment is LabelManaged's value ("idepool").
	Deployment string
	// Network is the overlay network containers join (with their service
	// name as alias). Empty joins none, which only tests should do.
	Network string
	// Router is RouterBuiltin (default) or RouterTraefik.
	Router string
	// Traefik options for RouterTraefik; Network defaults to Network.
	Traefik traefik.Options
	// Endpoints is EndpointServiceName (default) or EndpointTaskIP.
	Endpoints EndpointMode
	// AllowedPeers are the DNS names of the only peers that may connect to
	// the containers' route ports (IDEPOOL_ALLOWED_PEERS: the agent relays
	// each route port and drops everyone else): idepool and Traefik.
	// DiscoverPeers, when AllowedPeers is empty, uses "tasks.<service>" of
	// every service on Network that is not an idepool container (idepool,
	// Traefik, whatever infrastructure the operator put there), looked up
	// again at most every 10 s when containers are created. Neither: no
	// relay, every peer on the network reaches the route ports.
	AllowedPeers  []string
	DiscoverPeers bool
	// StopGracePeriod between SIGTERM and SIGKILL on removal (10s).
	StopGracePeriod time.Duration
	// RestartMaxAttempts > 0 lets Swarm restart a failed task that many
	// times (restart condition on-failure), RestartDelay apart (5s),
	// counted within RestartWindow (0: the service's whole life). The
	// default 0 is condition none: a task that dies stays failed, the
	// runtime reports it failed (terminal, as the Runtime contract wants)
	// and the pool replaces it. A restarted task would come back with an
	// empty agent state and workspace, and while Swarm waits to restart it
	// the container is reported pending with the reason in Message.
	RestartMaxAttempts uint64
	RestartDelay       time.Duration
	RestartWindow      time.Duration
	// LogMaxSize and LogMaxFiles bound each container's json-file log
	// ("10m", 5).
	LogMaxSize  string
	LogMaxFiles int
	// ResyncInterval is how often Events lists everything as a safety net
	// for lost Docker events (5s; 1s while a container is pending).
	ResyncInterval time.Duration
	// CallTimeout bounds each Docker API call (30s).
	CallTimeout time.Duration
	Logger      *slog.Logger
	Clock       idepool.Clock
}

// Runtime is an idepool.Runtime on Docker Swarm.
type Runtime struct {
	o     Options
	log   *slog.Logger
	owned io.Closer // the client New made, if any

	nodesMu sync.Mutex
	nodes   map[string]string // node id → host name

	peersMu sync.Mutex
	peers   []string  // discovered AllowedPeers
	peersAt time.Time // when they were discovered

	// labelLocks serialise SetLabels per container (striped by id), so
	// concurrent calls of one process do not race on the service version.
	labelLocks [32]sync.Mutex
}

var _ idepool.Runtime = (*Runtime)(nil)

// New returns a Runtime. It does not contact the engine; Ping does.
func New(o Options) (*Runtime, error) {
	if o.Deployment == "" {
		o.Deployment = "idepool"
	}
	switch o.Router {
	case "":
		o.Router = RouterBuiltin
	case RouterBuiltin, RouterTraefik:
	default:
		return nil, fmt.Errorf("swarm runtime: unknown router %q (want %s or %s)", o.Router, RouterBuiltin, RouterTraefik)
	}
	if o.Traefik.Network == "" {
		o.Traefik.Network = o.Network
	}
	if o.Router == RouterTraefik && o.Traefik.ForwardAuthURL == "" {
		// Fail closed: without ForwardAuth every route would be public.
		return nil, errors.New("swarm runtime: router traefik needs Traefik.ForwardAuthURL (idepool's /_auth/forward as Traefik reaches it)")
	}
	switch o.Endpoints {
	case "":
		o.Endpoints = EndpointServiceName
	case EndpointServiceName, EndpointTaskIP:
	default:
		return nil, fmt.Errorf("swarm runtime: unknown endpoint mode %q", o.Endpoints)
	}
	if o.StopGracePeriod <= 0 {
		o.StopGracePeriod = 10 * time.Second
	}
	if o.RestartDelay <= 0 {
		o.RestartDelay = 5 * time.Second
	}
	if o.LogMaxSize == "" {
		o.LogMaxSize = "10m"
	}
	if o.LogMaxFiles <= 0 {
		o.LogMaxFiles = 5
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = 5 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	var owned io.Closer
	if o.Docker == nil {
		c, err := NewClient()
		if err != nil {
			return nil, fmt.Errorf("swarm runtime: %w", err)
		}
		o.Docker, owned = c, c
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Runtime{o: o, log: log.With("runtime", "swarm"), nodes: map[string]string{}, owned: owned}, nil
}

// Close closes the Docker client if New made it. Containers keep running.
func (r *Runtime) Close() error {
	if r.owned != nil {
		return r.owned.Close()
	}
	return nil
}

// Name returns "swarm".
func (r *Runtime) Name() string { return "swarm" }

// Capabilities: the Swarm scheduler holds reservations across nodes;
// containers live on their own overlay network.
func (r *Runtime) Capabilities() idepool.Capabilities {
	c := idepool.Capabilities{Reservations: true, Nodes: r.Nodes, NodeStates: r.NodeStates, PeerNames: r.PeerNames, Salvage: r.Salvage}
	if r.o.Network != "" {
		c.NetworkSubnets = r.NetworkSubnets
	}
	return c
}

// Deployment returns LabelManaged's value for this runtime.
func (r *Runtime) Deployment() string { return r.o.Deployment }

// Ping checks that the engine answers and is a Swarm manager.
func (r *Runtime) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	res, err := r.o.Docker.Ping(ctx, client.PingOptions{})
	if err != nil {
		return dockerError(err, "ping docker")
	}
	if res.SwarmStatus != nil {
		if res.SwarmStatus.NodeState != swarm.LocalNodeStateActive {
			return idepool.Errorf(idepool.EMisconfigured, "docker is not in Swarm mode (node state %q); run docker swarm init", res.SwarmStatus.NodeState)
		}
		if !res.SwarmStatus.ControlAvailable {
			return idepool.Errorf(idepool.EMisconfigured, "this docker node is not a Swarm manager")
		}
	}
	return nil
}

// Create makes the service idepool-<id> and returns at once (pending).
func (r *Runtime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	if err := idepool.CheckImageSpec(spec); err != nil {
		return idepool.Instance{}, err
	}
	created := r.o.Clock.Now()
	o := r.o
	if len(o.AllowedPeers) == 0 && o.DiscoverPeers {
		var err error
		if o.AllowedPeers, err = r.discoverPeers(ctx); err != nil {
			return idepool.Instance{}, err
		}
	}
	ss, err := o.serviceSpec(spec, created)
	if err != nil {
		return idepool.Instance{}, idepool.WrapError(idepool.EStartFailed, err, "container %s: service spec", spec.ID)
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	res, err := r.o.Docker.ServiceCreate(cctx, client.ServiceCreateOptions{Spec: ss})
	if err != nil {
		if cerrdefs.IsConflict(err) || strings.Contains(err.Error(), "name conflicts with an existing object") {
			return idepool.Instance{}, idepool.WrapError(idepool.EExists, err, "container %s already exists", spec.ID)
		}
		return idepool.Instance{}, dockerError(err, "create service %s", ss.Name)
	}
	for _, w := range res.Warnings {
		r.log.Debug("service create warning", "container", spec.ID, "warning", w)
	}
	r.log.Debug("service created", "container", spec.ID, "service", res.ID, "image", spec.Profile.Image)
	return idepool.Instance{
		ID:        spec.ID,
		Status:    idepool.StatusPending,
		Labels:    ownLabels(ss.Labels),
		Endpoints: r.endpoints(ss, nil),
		CreatedAt: created.UTC(),
	}, nil
}

// Remove deletes the service and waits until its task's containers are
// gone. Unknown ids and services of other deployments give nil, untouched.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if !idepool.ValidID(id) {
		return nil
	}
	svc, err := r.service(ctx, id)
	switch {
	case idepool.IsNotFound(err):
		// Already removed; its containers may still be stopping.
		return r.waitGone(ctx, id, "")
	case err != nil:
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	_, err = r.o.Docker.ServiceRemove(cctx, svc.ID, client.ServiceRemoveOptions{})
	cancel()
	if err != nil && !cerrdefs.IsNotFound(err) {
		return dockerError(err, "remove service %s", svc.Spec.Name)
	}
	r.log.Debug("service removed", "container", id, "service", svc.ID)
	return r.waitGone(ctx, id, svc.ID)
}

// waitGone polls until no task of the service and no container of id is
// left (Swarm stops them asynchronously after the service is deleted).
func (r *Runtime) waitGone(ctx context.Context, id, serviceID string) error {
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		left, err := r.leftovers(ctx, id, serviceID)
		if err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return idepool.WrapError(idepool.ETimeout, ctx.Err(), "container %s: service removed, %d task container(s) still stopping", id, left)
		case <-time.After(delay):
		}
	}
}

func (r *Runtime) leftovers(ctx context.Context, id, serviceID string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	n := 0
	if serviceID != "" {
		tl, err := r.o.Docker.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", serviceID)})
		if err != nil && !cerrdefs.IsNotFound(err) {
			return 0, dockerError(err, "list tasks of %s", ServiceName(id))
		}
		var down map[string]bool
		for _, t := range tl.Items {
			if t.ServiceID != serviceID || taskDone(t.Status.State) {
				continue
			}
			if down == nil {
				if down, err = r.downNodes(ctx); err != nil {
					return 0, err
				}
			}
			// A task on a lost node stays "running" in Swarm's record
			// until the node returns, and then its container exits by
			// itself (its service is gone): waiting for it would hold the
			// removal until the node comes back.
			if !down[t.NodeID] {
				n++
			}
		}
	}
	// Containers on this node: a task record can vanish before its
	// container has stopped.
	cl, err := r.o.Docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).
		Add("label", idepool.LabelManaged+"="+r.o.Deployment, idepool.LabelID+"="+id)})
	if err != nil {
		return 0, dockerError(err, "list containers of %s", ServiceName(id))
	}
	for _, c := range cl.Items {
		if c.State == "running" || c.State == "removing" || c.State == "restarting" || c.State == "paused" || c.State == "created" {
			n++
		}
	}
	return n, nil
}

// downNodes returns the ids of the nodes Swarm lost.
func (r *Runtime) downNodes(ctx context.Context) (map[string]bool, error) {
	nl, err := r.o.Docker.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return nil, dockerError(err, "list nodes")
	}
	down := map[string]bool{}
	for _, n := range nl.Items {
		if nodeDown(n.Status.State) {
			down[n.ID] = true
		}
	}
	return down, nil
}

// taskDone reports whether a task's container can no longer be running.
func taskDone(s swarm.TaskState) bool {
	switch s {
	case swarm.TaskStateComplete, swarm.TaskStateShutdown, swarm.TaskStateFailed, swarm.TaskStateRejected, swarm.TaskStateOrphaned:
		return true
	}
	return false
}

// Inspect returns one container; ENotFound when no service of this
// deployment has that id.
func (r *Runtime) Inspect(ctx context.Context, id string) (idepool.Instance, error) {
	svc, err := r.service(ctx, id)
	if err != nil {
		return idepool.Instance{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	tl, err := r.o.Docker.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", svc.ID)})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return idepool.Instance{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
		}
		return idepool.Instance{}, dockerError(err, "list tasks of %s", svc.Spec.Name)
	}
	var tasks []swarm.Task
	for _, t := range tl.Items {
		if t.ServiceID == svc.ID {
			tasks = append(tasks, t)
		}
	}
	return r.instance(ctx, svc, tasks), nil
}

// service returns the service of id if it belongs to this deployment.
func (r *Runtime) service(ctx context.Context, id string) (swarm.Service, error) {
	notFound := idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	if !idepool.ValidID(id) {
		return swarm.Service{}, notFound
	}
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	res, err := r.o.Docker.ServiceInspect(ctx, ServiceName(id), client.ServiceInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return swarm.Service{}, notFound
		}
		return swarm.Service{}, dockerError(err, "inspect service %s", ServiceName(id))
	}
	svc := res.Service
	// Services of other deployments, or not ours at all, do not exist here.
	if svc.Spec.Name != ServiceName(id) || svc.Spec.Labels[idepool.LabelManaged] != r.o.Deployment {
		return swarm.Service{}, notFound
	}
	return svc, nil
}

// List returns every service of this deployment with its status.
func (r *Runtime) List(ctx context.Context) ([]idepool.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	sl, err := r.o.Docker.ServiceList(ctx, client.ServiceListOptions{
		Filters: make(client.Filters).Add("label", idepool.LabelManaged+"="+r.o.Deployment),
	})
	if err != nil {
		return nil, dockerError(err, "list services")
	}
	var svcs []swarm.Service
	for _, s := range sl.Items {
		// The label filter is the engine's; check again, and skip services
		// whose name is not ours (never touch what we did not make).
		if s.Spec.Labels[idepool.LabelManaged] == r.o.Deployment && strings.HasPrefix(s.Spec.Name, servicePrefix) {
			svcs = append(svcs, s)
		}
	}
	tasks := map[string][]swarm.Task{}
	gone := map[string]bool{}
	const chunk = 50 // ids per task query, to keep URLs short
	for i := 0; i < len(svcs); i += chunk {
		part := svcs[i:min(i+chunk, len(svcs))]
		f := make(client.Filters)
		for _, s := range part {
			f.Add("service", s.ID)
		}
		tl, err := r.o.Docker.TaskList(ctx, client.TaskListOptions{Filters: f})
		if cerrdefs.IsNotFound(err) {
			// A service of this part was removed after the service list
			// (the engine refuses the whole query for it): ask for each
			// service's tasks, and leave out the ones that are gone, as a
			// list a moment later would. Without this, every list during a
			// class's mass stop failed, and the pool refilled nothing.
			if err := r.tasksEach(ctx, part, tasks, gone); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, dockerError(err, "list tasks")
		}
		for _, t := range tl.Items {
			tasks[t.ServiceID] = append(tasks[t.ServiceID], t)
		}
	}
	out := make([]idepool.Instance, 0, len(svcs))
	for _, s := range svcs {
		if !gone[s.ID] {
			out = append(out, r.instance(ctx, s, tasks[s.ID]))
		}
	}
	return out, nil
}

// tasksEach lists each service's tasks into tasks, one query each, and
// marks in gone the services that no longer exist.
func (r *Runtime) tasksEach(ctx context.Context, svcs []swarm.Service, tasks map[string][]swarm.Task, gone map[string]bool) error {
	for _, s := range svcs {
		tl, err := r.o.Docker.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", s.ID)})
		switch {
		case cerrdefs.IsNotFound(err):
			gone[s.ID] = true
		case err != nil:
			return dockerError(err, "list tasks of %s", s.Spec.Name)
		default:
			tasks[s.ID] = append(tasks[s.ID], tl.Items...)
		}
	}
	return nil
}

// Recover lists the deployment's services: Swarm keeps them running while
// idepool is away, so there is nothing to re-attach.
func (r *Runtime) Recover(ctx context.Context) ([]idepool.Instance, error) {
	insts, err := r.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	r.log.Info("recovered services", "count", len(insts), "deployment", r.o.Deployment)
	return insts, nil
}

// SetLabels merges labels into the service's labels with a service update
// of Spec.Labels only: the task template is unchanged, so Swarm does not
// replace the task. The runtime's own labels and Traefik's cannot be set
// (EInvalid, nothing changed).
func (r *Runtime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	for k := range labels {
		if idepool.IsRuntimeLabel(k) || traefik.IsLabel(k) {
			return idepool.Errorf(idepool.EInvalid, "label %s belongs to the runtime and cannot be changed", k)
		}
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	mu := &r.labelLocks[h.Sum32()%uint32(len(r.labelLocks))]
	mu.Lock()
	defer mu.Unlock()
	var err error
	// Another process (or a Swarm status write) may bump the version
	// between inspect and update; retry a few times on that conflict.
	for attempt := 0; attempt < 5; attempt++ {
		var svc swarm.Service
		svc, err = r.service(ctx, id)
		if err != nil {
			return err
		}
		merged := maps.Clone(svc.Spec.Labels)
		if merged == nil {
			merged = map[string]string{}
		}
		for k, v := range labels {
			if v == "" {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		if maps.Equal(merged, svc.Spec.Labels) {
			return nil
		}
		spec := svc.Spec
		spec.Labels = merged
		cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
		_, err = r.o.Docker.ServiceUpdate(cctx, svc.ID, client.ServiceUpdateOptions{Version: svc.Version, Spec: spec})
		cancel()
		if err == nil {
			return nil
		}
		if cerrdefs.IsNotFound(err) {
			return idepool.Errorf(idepool.ENotFound, "container %s not found", id)
		}
		if !strings.Contains(err.Error(), "update out of sequence") {
			return dockerError(err, "update labels of %s", svc.Spec.Name)
		}
	}
	return dockerError(err, "update labels of %s", ServiceName(id))
}

// instance turns a service and its tasks into an Instance.
func (r *Runtime) instance(ctx context.Context, svc swarm.Service, tasks []swarm.Task) idepool.Instance {
	labels := ownLabels(svc.Spec.Labels)
	id := labels[idepool.LabelID]
	if id == "" {
		id = strings.TrimPrefix(svc.Spec.Name, servicePrefix)
	}
	st, nodeID, msg := status(tasks, svc.Spec.TaskTemplate.RestartPolicy)
	inst := idepool.Instance{
		ID:        id,
		Status:    st,
		Labels:    labels,
		Endpoints: r.endpoints(svc.Spec, tasks),
		CreatedAt: svc.CreatedAt.UTC(),
		Message:   msg,
	}
	if t, err := time.Parse(time.RFC3339Nano, labels[idepool.LabelCreated]); err == nil {
		inst.CreatedAt = t
	}
	if labels[idepool.LabelID] != id || labels[idepool.LabelProfile] == "" {
		inst.Status = idepool.StatusFailed
		inst.Message = "service " + svc.Spec.Name + " lacks idepool's id or profile label"
	}
	if nodeID != "" {
		inst.Node = r.nodeName(ctx, nodeID)
	}
	return inst
}

// ownLabels returns the labels without Traefik's (those are routing
// configuration derived from the profile, not the container's record).
func ownLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		if !traefik.IsLabel(k) {
			out[k] = v
		}
	}
	return out
}

// endpoints maps each route to where the orchestrator reaches it. The
// routes are read back from the service's own env (IDEPOOL_ROUTES), so a
// restarted idepool needs no profile to find them.
func (r *Runtime) endpoints(spec swarm.ServiceSpec, tasks []swarm.Task) map[string]string {
	routes := routesOf(spec)
	out := make(map[string]string, len(routes))
	host := spec.Name
	if r.o.Endpoints == EndpointTaskIP {
		host = r.taskIP(tasks)
		if host == "" {
			return out
		}
	}
	for _, rt := range routes {
		out[rt.Name] = net.JoinHostPort(host, strconv.Itoa(rt.Port))
	}
	return out
}

func routesOf(spec swarm.ServiceSpec) []idepool.Route {
	cs := spec.TaskTemplate.ContainerSpec
	if cs == nil {
		return nil
	}
	for _, e := range cs.Env {
		if v, ok := strings.CutPrefix(e, idepool.EnvRoutes+"="); ok {
			var routes []idepool.Route
			if json.Unmarshal([]byte(v), &routes) == nil {
				return routes
			}
		}
	}
	return nil
}

// taskIP returns the newest running task's address on the network.
func (r *Runtime) taskIP(tasks []swarm.Task) string {
	sorted := byAge(tasks)
	for _, t := range slices.Backward(sorted) {
		if t.Status.State != swarm.TaskStateRunning {
			continue
		}
		for _, na := range t.NetworksAttachments {
			if r.o.Network != "" && na.Network.Spec.Name != r.o.Network && na.Network.ID != r.o.Network {
				continue
			}
			if na.Network.Spec.Ingress {
				continue
			}
			for _, a := range na.Addresses {
				return a.Addr().String()
			}
		}
	}
	return ""
}

// nodeName returns a node's host name, listing the nodes again on a miss.
func (r *Runtime) nodeName(ctx context.Context, nodeID string) string {
	r.nodesMu.Lock()
	defer r.nodesMu.Unlock()
	if n, ok := r.nodes[nodeID]; ok {
		return n
	}
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	nl, err := r.o.Docker.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return nodeID
	}
	for _, n := range nl.Items {
		r.nodes[n.ID] = n.Description.Hostname
	}
	if n, ok := r.nodes[nodeID]; ok {
		return n
	}
	return nodeID
}

// dockerError wraps an engine error with idepool's code: unreachable engine
// (DOCKER_ERROR, 503) or a runtime error.
func dockerError(err error, format string, args ...any) error {
	if client.IsErrConnectionFailed(err) {
		return idepool.WrapError(idepool.ERuntimeUnreachable, err, "docker unreachable: "+format, args...)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return idepool.WrapError(idepool.ETimeout, err, format, args...)
	}
	return idepool.WrapError(idepool.ERuntime, err, format, args...)
}

// NetworkSubnets returns the subnets of the containers' network (its IPAM
// configuration): every container's address is in one of them.
func (r *Runtime) NetworkSubnets(ctx context.Context) ([]netip.Prefix, error) {
	if r.o.Network == "" {
		return nil, nil
	}
	// The Swarm's allocator gives a new overlay its subnet shortly after
	// the network is created (a stack deploy starts idepool right then):
	// until it has, the network has no IPAM config. Ask again, for at most
	// 10 s: a network that never gets one is misconfigured.
	ctx, cancel := context.WithTimeout(ctx, min(r.o.CallTimeout, 10*time.Second))
	defer cancel()
	wait := 50 * time.Millisecond
	for {
		res, err := r.o.Docker.NetworkInspect(ctx, r.o.Network, client.NetworkInspectOptions{})
		if err != nil {
			return nil, dockerError(err, "inspect network %s", r.o.Network)
		}
		var out []netip.Prefix
		for _, c := range res.Network.IPAM.Config {
			if c.Subnet.IsValid() {
				out = append(out, c.Subnet.Masked())
			}
		}
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, idepool.Errorf(idepool.EMisconfigured, "network %s has no IPAM subnet", r.o.Network)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// PeerNames returns the names of the peers allowed to reach the route
// ports (AllowedPeers, or the discovered ones).
func (r *Runtime) PeerNames(ctx context.Context) ([]string, error) {
	if len(r.o.AllowedPeers) > 0 || !r.o.DiscoverPeers {
		return slices.Clone(r.o.AllowedPeers), nil
	}
	return r.discoverPeers(ctx)
}

// discoverPeers lists the services on the network that are not idepool
// containers, at most every 10 s.
func (r *Runtime) discoverPeers(ctx context.Context) ([]string, error) {
	r.peersMu.Lock()
	defer r.peersMu.Unlock()
	now := r.o.Clock.Now()
	if r.peers != nil && now.Sub(r.peersAt) < 10*time.Second {
		return slices.Clone(r.peers), nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	nw, err := r.o.Docker.NetworkInspect(ctx, r.o.Network, client.NetworkInspectOptions{})
	if err != nil {
		return nil, dockerError(err, "inspect network %s", r.o.Network)
	}
	sl, err := r.o.Docker.ServiceList(ctx, client.ServiceListOptions{})
	if err != nil {
		return nil, dockerError(err, "list services")
	}
	var peers []string
	for _, s := range sl.Items {
		if _, ok := s.Spec.Labels[idepool.LabelManaged]; ok {
			continue // an IDE container (of any deployment)
		}
		for _, n := range s.Spec.TaskTemplate.Networks {
			if n.Target == nw.Network.ID || n.Target == nw.Network.Name {
				peers = append(peers, "tasks."+s.Spec.Name)
				break
			}
		}
	}
	slices.Sort(peers)
	if len(peers) == 0 {
		// Not even idepool itself (it runs elsewhere?): refuse to create
		// containers nobody could reach rather than open them to all.
		return nil, idepool.Errorf(idepool.EMisconfigured, "no service on network %s besides containers: nothing would be allowed to reach the route ports (set TRUSTED_PEERS)", r.o.Network)
	}
	r.peers, r.peersAt = peers, now
	return slices.Clone(peers), nil
}
