package swarm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/runtimetest"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// testImage is the placeholder program of testdata/, built FROM scratch.
const testImage = "idepool-swarmtest:placeholder"

// engine is one test's view of the real engine: a client and an overlay
// network, with the test image built.
type engine struct {
	c       *client.Client
	network string
}

func newEngine(t testing.TB) *engine {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the swarm runtime's tests need a real Docker engine")
	}
	c := swarmtest.Require(t)
	swarmtest.GoImage(t, testImage, "./runtime/swarm/testdata/placeholder")
	return &engine{c: c, network: swarmtest.Network(t, c, "idepool-swtest")}
}

func testProfile() idepool.Profile {
	return idepool.Profile{
		Name:        "swtest",
		Image:       testImage,
		CPULimit:    0.1,
		MemoryLimit: 32 << 20,
		Routes:      idepool.DefaultRoutes(),
	}
}

// runtime opens a runtime of deployment dep and removes everything of dep
// when the test ends (a safety net behind the tests' own Removes).
func (e *engine) runtime(t testing.TB, dep string, mod ...func(*Options)) *Runtime {
	t.Helper()
	o := Options{Docker: e.c, Deployment: dep, Network: e.network, StopGracePeriod: 2 * time.Second, ResyncInterval: 2 * time.Second}
	for _, m := range mod {
		m(&o)
	}
	rt, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := swarmtest.RemoveDeployment(ctx, e.c, dep); err != nil {
			t.Errorf("cleanup of deployment %s: %v", dep, err)
		}
	})
	return rt
}

func newDeployment() string { return "swtest-" + idepool.NewID()[:8] }

// kill SIGKILLs the container of the newest running task of id, as a crash.
func (e *engine) kill(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cid := e.taskContainer(t, ctx, id)
	if _, err := e.c.ContainerKill(ctx, cid, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("kill container %s of %s: %v", cid, id, err)
	}
}

func (e *engine) taskContainer(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	if c := e.runningContainer(t, id); c != "" {
		return c
	}
	t.Fatalf("%s has no running task container", id)
	return ""
}

// runningContainer returns the container of id's newest running task, or "".
func (e *engine) runningContainer(t *testing.T, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tl, err := e.c.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", ServiceName(id))})
	if err != nil {
		t.Fatalf("tasks of %s: %v", id, err)
	}
	for _, tk := range slices.Backward(byAge(tl.Items)) {
		if tk.Status.State == swarm.TaskStateRunning && tk.Status.ContainerStatus != nil && tk.Status.ContainerStatus.ContainerID != "" {
			return tk.Status.ContainerStatus.ContainerID
		}
	}
	return ""
}

// lossyDocker is the real engine whose next ServiceCreate, once armed,
// creates the service and then reports an error, as when the answer is
// lost on the way back: the partial state a later Remove must clean.
type lossyDocker struct {
	Docker
	armed atomic.Bool
}

func (d *lossyDocker) ServiceCreate(ctx context.Context, o client.ServiceCreateOptions) (client.ServiceCreateResult, error) {
	res, err := d.Docker.ServiceCreate(ctx, o)
	if err == nil && d.armed.CompareAndSwap(true, false) {
		return client.ServiceCreateResult{}, errors.New("connection reset by peer (injected after the service was created)")
	}
	return res, err
}

func TestConformance(t *testing.T) {
	e := newEngine(t)
	var mu sync.Mutex
	lossy := map[idepool.Runtime]*lossyDocker{}
	open := func(t *testing.T, dep string) idepool.Runtime {
		d := &lossyDocker{Docker: e.c}
		rt := e.runtime(t, dep, func(o *Options) { o.Docker = d })
		mu.Lock()
		lossy[rt] = d
		mu.Unlock()
		return rt
	}
	runtimetest.Run(t,
		func(t *testing.T) idepool.Runtime { return open(t, newDeployment()) },
		runtimetest.WithProfile(testProfile()),
		runtimetest.WithTimeoutScale(4),
		runtimetest.WithConcurrency(4),
		runtimetest.WithDeployment(func(rt idepool.Runtime) string { return rt.(*Runtime).Deployment() }),
		runtimetest.WithKill(func(t *testing.T, rt idepool.Runtime, id string) { e.kill(t, id) }),
		runtimetest.WithFailNextCreate(func(t *testing.T, rt idepool.Runtime) {
			mu.Lock()
			defer mu.Unlock()
			lossy[rt].armed.Store(true)
		}),
		runtimetest.WithReopen(func(t *testing.T, old idepool.Runtime) idepool.Runtime {
			return open(t, old.(*Runtime).Deployment())
		}),
		runtimetest.WithOtherDeployment(func(t *testing.T, rt idepool.Runtime) idepool.Runtime { return open(t, newDeployment()) }),
		runtimetest.WithReadEnv(func(t *testing.T, rt idepool.Runtime, inst idepool.Instance) map[string]string {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			res, err := e.c.ContainerInspect(ctx, e.taskContainer(t, ctx, inst.ID), client.ContainerInspectOptions{})
			if err != nil {
				t.Fatalf("inspect container of %s: %v", inst.ID, err)
			}
			return envMap(res.Container.Config.Env)
		}),
	)
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		for i := range len(kv) {
			if kv[i] == '=' {
				m[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	return m
}

// waitStatus polls Inspect until want or the deadline.
func waitStatus(t *testing.T, rt *Runtime, id string, want idepool.RuntimeStatus) idepool.Instance {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		in, err := rt.Inspect(t.Context(), id)
		if err == nil && in.Status == want {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not %s within a minute: %+v, %v", id, want, in, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func create(t *testing.T, rt *Runtime, p idepool.Profile, labels map[string]string) idepool.Instance {
	t.Helper()
	id := idepool.NewID()
	in, err := rt.Create(t.Context(), idepool.ContainerSpec{ID: id, Profile: p, Labels: labels,
		Env: map[string]string{idepool.EnvAgentToken: "tok", "EXTRA": "x"}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Remove(ctx, id); err != nil {
			t.Errorf("Remove(%s): %v", id, err)
		}
	})
	return in
}

// SetLabels is a service update of the labels only: the task keeps
// running, the same task (and container) as before.
func TestSetLabelsKeepsTask(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment())
	in := create(t, rt, testProfile(), map[string]string{"a": "1"})
	waitStatus(t, rt, in.ID, idepool.StatusRunning)
	tasks := func() []string {
		tl, err := e.c.TaskList(t.Context(), client.TaskListOptions{Filters: make(client.Filters).Add("service", ServiceName(in.ID))})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, tk := range tl.Items {
			ids = append(ids, tk.ID+"/"+string(tk.Status.State))
		}
		slices.Sort(ids)
		return ids
	}
	before := tasks()
	cid := e.taskContainer(t, t.Context(), in.ID)
	for i := range 3 {
		if err := rt.SetLabels(t.Context(), in.ID, map[string]string{"a": "", "b": string(rune('0' + i))}); err != nil {
			t.Fatalf("SetLabels: %v", err)
		}
	}
	// Give Swarm the time it would take to roll a task, had it wanted to.
	time.Sleep(2 * time.Second)
	after := tasks()
	if !slices.Equal(before, after) {
		t.Errorf("tasks changed by SetLabels: before %v, after %v", before, after)
	}
	if got := e.taskContainer(t, t.Context(), in.ID); got != cid {
		t.Errorf("task container changed from %s to %s", cid, got)
	}
	got := waitStatus(t, rt, in.ID, idepool.StatusRunning)
	if _, ok := got.Labels["a"]; ok || got.Labels["b"] != "2" || got.Labels[idepool.LabelID] != in.ID {
		t.Errorf("labels after SetLabels: %v", got.Labels)
	}
}

// The service is what the issue asks for: limits, reservations, restart
// policy, logs, network with alias, no published ports, env without
// secrets, Traefik labels when the router is Traefik.
func TestServiceShape(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment(), func(o *Options) {
		o.Router = RouterTraefik
		o.Traefik.ForwardAuthURL = "http://idepool:3001/_auth/forward"
	})
	p := testProfile()
	p.CPUReservation = 0.05
	p.Constraints = []string{"node.role==manager"}
	in := create(t, rt, p, nil)
	res, err := e.c.ServiceInspect(t.Context(), ServiceName(in.ID), client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Service.Spec
	tt := s.TaskTemplate
	if *s.Mode.Replicated.Replicas != 1 || tt.ContainerSpec.Image != testImage {
		t.Errorf("mode %+v image %s", s.Mode, tt.ContainerSpec.Image)
	}
	if tt.Resources.Limits.NanoCPUs != 1e8 || tt.Resources.Limits.MemoryBytes != 32<<20 ||
		tt.Resources.Reservations.NanoCPUs != 5e7 || tt.Resources.Reservations.MemoryBytes != 32<<20 {
		t.Errorf("resources %+v %+v", tt.Resources.Limits, tt.Resources.Reservations)
	}
	if tt.RestartPolicy.Condition != swarm.RestartPolicyConditionNone {
		t.Errorf("restart policy %+v", tt.RestartPolicy)
	}
	if tt.LogDriver.Name != "json-file" || tt.LogDriver.Options["max-size"] != "10m" || tt.LogDriver.Options["max-file"] != "5" {
		t.Errorf("log driver %+v", tt.LogDriver)
	}
	if len(tt.Networks) != 1 || !slices.Equal(tt.Networks[0].Aliases, []string{ServiceName(in.ID)}) {
		t.Errorf("networks %+v", tt.Networks)
	}
	if s.EndpointSpec == nil || len(s.EndpointSpec.Ports) != 0 || s.EndpointSpec.Mode != swarm.ResolutionModeDNSRR {
		t.Errorf("endpoint spec %+v", s.EndpointSpec)
	}
	if !slices.Equal(tt.Placement.Constraints, p.Constraints) {
		t.Errorf("placement %+v", tt.Placement)
	}
	if s.Labels["traefik.enable"] != "true" || s.Labels["traefik.swarm.network"] != e.network {
		t.Errorf("traefik labels missing: %v", s.Labels)
	}
	if _, ok := in.Labels["traefik.enable"]; ok {
		t.Errorf("Instance.Labels carries traefik labels: %v", in.Labels)
	}
	env := envMap(tt.ContainerSpec.Env)
	if env["IDEPOOL_PORT_CODE"] != "8080" || env[idepool.EnvWorkspaceDir] != WorkspaceDir || env[idepool.EnvStateDir] != StateDir ||
		env["EXTRA"] != "x" || env[idepool.EnvAgentID] != in.ID {
		t.Errorf("env %v", env)
	}
	if in.Endpoints["code"] != ServiceName(in.ID)+":8080" {
		t.Errorf("endpoints %v", in.Endpoints)
	}
}

// A dead task is seen within seconds through the events (not the list).
func TestEventsSeeDeath(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment(), func(o *Options) { o.ResyncInterval = time.Hour })
	in := create(t, rt, testProfile(), nil)
	waitStatus(t, rt, in.ID, idepool.StatusRunning)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := rt.Events(ctx)
	time.Sleep(200 * time.Millisecond) // let the stream subscribe
	start := time.Now()
	e.kill(t, in.ID)
	timeout := time.After(time.Minute)
	for {
		select {
		case ev := <-ch:
			if ev.ID == in.ID && ev.Status == idepool.StatusFailed {
				t.Logf("death seen %v after the kill", time.Since(start).Round(time.Millisecond))
				got, err := rt.Inspect(t.Context(), in.ID)
				if err != nil || got.Message == "" {
					t.Errorf("Inspect after death: %+v, %v; want a message", got, err)
				}
				return
			}
		case <-timeout:
			t.Fatal("no failed event within a minute of the kill")
		}
	}
}

// With restarts enabled, a killed task is restarted: the container is
// pending (with the reason) and then running, never terminal, until the
// attempts are used up.
func TestRestartPolicy(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment(), func(o *Options) {
		o.RestartMaxAttempts = 1
		o.RestartDelay = 500 * time.Millisecond
	})
	in := create(t, rt, testProfile(), nil)
	waitStatus(t, rt, in.ID, idepool.StatusRunning)
	first := e.taskContainer(t, t.Context(), in.ID)
	e.kill(t, in.ID)
	var sawRestart bool
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := rt.Inspect(t.Context(), in.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Terminal() {
			t.Fatalf("reported %s although Swarm restarts it: %+v", got.Status, got)
		}
		if got.Status == idepool.StatusPending && strings.Contains(got.Message, "restarting after") {
			sawRestart = true
		}
		if got.Status == idepool.StatusRunning && e.runningContainer(t, in.ID) != first && e.runningContainer(t, in.ID) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not restarted within a minute: %+v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("restart seen as pending with its reason: %v", sawRestart)
	e.kill(t, in.ID)
	got := waitStatus(t, rt, in.ID, idepool.StatusFailed)
	if got.Message == "" {
		t.Errorf("failed without a message: %+v", got)
	}
}

// Services without our labels, or of another deployment, are never
// listed, inspected, changed or removed.
func TestForeignServiceUntouched(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment())
	id := idepool.NewID()
	replicas := uint64(0)
	res, err := e.c.ServiceCreate(t.Context(), client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: ServiceName(id), Labels: map[string]string{"other": "yes"}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: testImage}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.c.ServiceRemove(context.Background(), res.ID, client.ServiceRemoveOptions{}) })
	if _, err := rt.Inspect(t.Context(), id); !idepool.IsNotFound(err) {
		t.Errorf("Inspect of a foreign service: %v", err)
	}
	if err := rt.SetLabels(t.Context(), id, map[string]string{"x": "y"}); !idepool.IsNotFound(err) {
		t.Errorf("SetLabels of a foreign service: %v", err)
	}
	if err := rt.Remove(t.Context(), id); err != nil {
		t.Errorf("Remove of a foreign service: %v", err)
	}
	if _, err := rt.Create(t.Context(), idepool.ContainerSpec{ID: id, Profile: testProfile()}); idepool.ErrorCode(err) != idepool.EExists {
		t.Errorf("Create over a foreign service's name: %v, want %s", err, idepool.EExists)
	}
	got, err := e.c.ServiceInspect(t.Context(), res.ID, client.ServiceInspectOptions{})
	if err != nil || !maps.Equal(got.Service.Spec.Labels, map[string]string{"other": "yes"}) {
		t.Errorf("foreign service changed: %+v, %v", got.Service.Spec.Labels, err)
	}
	if l, err := rt.List(t.Context()); err != nil || len(l) != 0 {
		t.Errorf("List: %v, %v", l, err)
	}
}

// Nodes reports this node with its capacity and counts our reservation.
func TestNodes(t *testing.T) {
	e := newEngine(t)
	rt := e.runtime(t, newDeployment())
	before, err := rt.Nodes(t.Context())
	if err != nil || len(before) == 0 {
		t.Fatalf("Nodes: %v, %v", before, err)
	}
	if n := before[0]; !n.Ready || n.NanoCPUs <= 0 || n.MemoryBytes <= 0 || n.Name == "" {
		t.Errorf("node %+v", n)
	}
	in := create(t, rt, testProfile(), nil)
	waitStatus(t, rt, in.ID, idepool.StatusRunning)
	after, err := rt.Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var b, a int64
	for _, n := range before {
		b += n.ReservedMemoryBytes
	}
	for _, n := range after {
		a += n.ReservedMemoryBytes
	}
	// Other tests on this engine may come and go: only a lower bound holds.
	if a < testProfile().MemoryLimit {
		t.Errorf("reserved memory %d after creating a container reserving %d (before: %d)", a, testProfile().MemoryLimit, b)
	}
}

// removingDocker is the real engine that, once armed, removes a service
// right after a ServiceList answered: the window in which a list's task
// query names a service that no longer exists.
type removingDocker struct {
	Docker
	remove atomic.Pointer[string] // the service to remove after the next ServiceList
}

func (d *removingDocker) ServiceList(ctx context.Context, o client.ServiceListOptions) (client.ServiceListResult, error) {
	res, err := d.Docker.ServiceList(ctx, o)
	if id := d.remove.Swap(nil); err == nil && id != nil {
		if _, rerr := d.Docker.ServiceRemove(ctx, *id, client.ServiceRemoveOptions{}); rerr != nil {
			return res, fmt.Errorf("injected remove of %s: %w", *id, rerr)
		}
	}
	return res, err
}

// A service removed between List's service list and its task query is
// left out of the list; the others are listed as before (the engine
// refuses a task query that names a removed service: before, List failed,
// and with it every reconcile while a class's containers were stopped).
func TestListWhileServiceRemoved(t *testing.T) {
	e := newEngine(t)
	d := &removingDocker{Docker: e.c}
	rt := e.runtime(t, newDeployment(), func(o *Options) { o.Docker = d })
	keep := create(t, rt, testProfile(), nil)
	lost, err := rt.Create(t.Context(), idepool.ContainerSpec{ID: idepool.NewID(), Profile: testProfile()})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	svc := ServiceName(lost.ID)
	d.remove.Store(&svc)
	l, err := rt.List(t.Context())
	if err != nil {
		t.Fatalf("List with %s removed during it: %v", svc, err)
	}
	if d.remove.Load() != nil {
		t.Fatal("the service was not removed during List: the test tested nothing")
	}
	var ids []string
	for _, in := range l {
		ids = append(ids, in.ID)
	}
	if !slices.Equal(ids, []string{keep.ID}) {
		t.Errorf("List = %v, want only %s (%s was removed during the list)", ids, keep.ID, lost.ID)
	}
}
