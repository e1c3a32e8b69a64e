package swarm

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// These benchmarks compare the runtime with plain service creates of the
// same image (what `docker service create` does), so the ratio is the
// runtime's own overhead. Run:
//
//	go test -run '^$' -bench . -benchtime 3x ./runtime/swarm/
//
// The orchestrator's end-to-end figures (agent ready, refill through the
// pool, claims through both routers) are in e2e/swarm.

// plainCreate creates a bare one-replica service of image and returns its
// id; the cleanup removes it.
func (e *engine) plainCreate(b testing.TB, image, dep string) string {
	replicas := uint64(1)
	res, err := e.c.ServiceCreate(context.Background(), client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "plain-" + idepool.NewID(), Labels: map[string]string{idepool.LabelManaged: dep}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: image, Env: []string{"IDEPOOL_PORT_CODE=8080"}},
			// The same network: `docker service create --network`.
			Networks: []swarm.NetworkAttachmentConfig{{Target: e.network}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}})
	if err != nil {
		b.Fatal(err)
	}
	return res.ID
}

// removePlain removes a plain service and waits until its containers are
// gone, so the next measurement does not share the machine with a teardown.
func (e *engine) removePlain(b testing.TB, serviceID string) {
	e.c.ServiceRemove(context.Background(), serviceID, client.ServiceRemoveOptions{})
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		cl, err := e.c.ContainerList(context.Background(), client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.swarm.service.id="+serviceID)})
		if err != nil {
			b.Fatal(err)
		}
		if len(cl.Items) == 0 {
			return
		}
	}
}

// waitPlainRunning polls the service's tasks until one runs.
func (e *engine) waitPlainRunning(b testing.TB, serviceID string) {
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		tl, err := e.c.TaskList(context.Background(), client.TaskListOptions{Filters: make(client.Filters).Add("service", serviceID)})
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range tl.Items {
			if t.Status.State == swarm.TaskStateRunning {
				return
			}
		}
	}
	b.Fatalf("plain service %s not running within 2 minutes", serviceID)
}

// waitRunning polls Inspect, as a consumer without events would, at the
// same period as waitPlainRunning.
func waitRunningQuiet(b testing.TB, rt *Runtime, id string) {
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		in, err := rt.Inspect(context.Background(), id)
		if err == nil && in.Status == idepool.StatusRunning {
			return
		}
		if err == nil && in.Status.Terminal() {
			b.Fatalf("%s became %s: %s", id, in.Status, in.Message)
		}
	}
	b.Fatalf("%s not running within 2 minutes", id)
}

// BenchmarkColdStart: Create → running against a plain service create →
// running, alternated so both see the same machine load.
func BenchmarkColdStart(b *testing.B) {
	e := newEngine(b)
	dep := newDeployment()
	rt := e.runtime(b, dep)
	var ours, plain []time.Duration
	i := 0
	for b.Loop() {
		runOurs := func() string {
			start := time.Now()
			id := idepool.NewID()
			if _, err := rt.Create(context.Background(), idepool.ContainerSpec{ID: id, Profile: testProfile()}); err != nil {
				b.Fatal(err)
			}
			waitRunningQuiet(b, rt, id)
			ours = append(ours, time.Since(start))
			return id
		}
		runPlain := func() string {
			start := time.Now()
			sid := e.plainCreate(b, testImage, dep)
			e.waitPlainRunning(b, sid)
			plain = append(plain, time.Since(start))
			return sid
		}
		// Alternate who goes first, so both see the same load.
		var id, sid string
		if i%2 == 0 {
			id, sid = runOurs(), runPlain()
		} else {
			sid, id = runPlain(), runOurs()
		}
		i++
		b.StopTimer()
		rt.Remove(context.Background(), id)
		e.removePlain(b, sid)
		b.StartTimer()
	}
	report(b, "create-to-running", ours, plain)
}

// BenchmarkRefill20: 20 parallel Creates until List reports them all
// running, against 20 parallel plain service creates until one task list
// shows them all running. One poller each, at the same period, so polling
// does not load the engine differently.
func BenchmarkRefill20(b *testing.B) {
	const n = 20
	e := newEngine(b)
	dep := newDeployment()
	rt := e.runtime(b, dep)
	var ours, plain []time.Duration
	i := 0
	for b.Loop() {
		var ids, sids []string
		runOurs := func() {
			start := time.Now()
			ids = make([]string, n)
			var wg sync.WaitGroup
			for i := range ids {
				ids[i] = idepool.NewID()
				wg.Go(func() {
					if _, err := rt.Create(context.Background(), idepool.ContainerSpec{ID: ids[i], Profile: testProfile()}); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
				l, err := rt.List(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				running := 0
				for _, in := range l {
					if in.Status == idepool.StatusRunning {
						running++
					}
				}
				if running == n {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d running after 3 minutes", running, n)
				}
			}
			ours = append(ours, time.Since(start))
		}
		runPlain := func() {
			start := time.Now()
			sids = make([]string, n)
			var wg sync.WaitGroup
			for i := range sids {
				wg.Go(func() { sids[i] = e.plainCreate(b, testImage, dep) })
			}
			wg.Wait()
			f := make(client.Filters)
			for _, sid := range sids {
				f.Add("service", sid)
			}
			for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
				tl, err := e.c.TaskList(context.Background(), client.TaskListOptions{Filters: f})
				if err != nil {
					b.Fatal(err)
				}
				running := map[string]bool{}
				for _, t := range tl.Items {
					if t.Status.State == swarm.TaskStateRunning {
						running[t.ServiceID] = true
					}
				}
				if len(running) == n {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d plain services running after 3 minutes", len(running), n)
				}
			}
			plain = append(plain, time.Since(start))
		}
		if i%2 == 0 {
			runOurs()
			runPlain()
		} else {
			runPlain()
			runOurs()
		}
		i++
		b.StopTimer()
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				rt.Remove(context.Background(), ids[i])
				e.removePlain(b, sids[i])
			})
		}
		wg.Wait()
		b.StartTimer()
	}
	report(b, "refill-20", ours, plain)
}

func report(b *testing.B, what string, ours, plain []time.Duration) {
	mo, mp := median(ours), median(plain)
	b.ReportMetric(mo.Seconds(), "s/"+what)
	b.ReportMetric(mp.Seconds(), "s/plain")
	b.ReportMetric(mo.Seconds()/mp.Seconds(), "ratio")
	b.Logf("%s: idepool median %v, plain median %v, ratio %.2f (n=%d)", what, mo.Round(time.Millisecond), mp.Round(time.Millisecond), mo.Seconds()/mp.Seconds(), len(ours))
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
