package swarm_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/e2etest"
	"github.com/idepool/idepool/internal/quantile"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// The figures, end to end through idepool running as a Swarm
// service:
//
//	IDEPOOL_E2E=1 go test -run '^$' -bench . -benchtime 1x -timeout 30m ./e2e/swarm/
//
// (a) cold start: POST start?wait=ready with an empty pool, against a plain
//     service create of the same image waited to running;
// (b) refill: pool target 0 → 20 until 20 are warm, against 20 plain
//     service creates in parallel waited to running;
// (c) warm claim: POST start → first byte of /code/<id>/ through each
//     router, p50 and p99 (IDEPOOL_BENCH_CLAIMS claims each, default 200).

// plainService creates a bare one-replica service of the IDE image on the
// stack's network with the same resources (the agent in it has no home to
// dial) and returns its id.
func (s *stack) plainService(b testing.TB) string {
	replicas := uint64(1)
	res, err := s.docker.ServiceCreate(context.Background(), client.ServiceCreateOptions{Spec: swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "plain-" + idepool.NewID(), Labels: map[string]string{idepool.LabelManaged: s.deployment}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: ideImage, Env: []string{
				// No orchestrator to dial (idepool would refuse an unknown
				// container, and a refused agent exits): the workloads run
				// as a bare service would, the agent waiting out its orphan
				// timeout.
				"IDEPOOL_AGENT_URL=http://127.0.0.1:9", "IDEPOOL_AGENT_TOKEN=x", "IDEPOOL_PORT_CODE=8080",
				// A valid id: without one it refuses ("not a container id"),
				// the agent would exit at once and the task restart.
				idepool.EnvAgentID + "=" + idepool.NewID(),
				idepool.EnvOrphanTimeout + "=1h"}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: s.network}},
			Resources: &swarm.ResourceRequirements{
				Limits:       &swarm.Limit{NanoCPUs: int64(ideCPULimit * 1e9), MemoryBytes: ideMemory},
				Reservations: &swarm.Resources{NanoCPUs: int64(ideCPUReservation * 1e9), MemoryBytes: ideMemory},
			},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}})
	if err != nil {
		b.Fatal(err)
	}
	return res.ID
}

// waitPlain waits until every listed service has a running task.
func (s *stack) waitPlain(b testing.TB, ids []string) {
	f := make(client.Filters)
	for _, id := range ids {
		f.Add("service", id)
	}
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		tl, err := s.docker.TaskList(context.Background(), client.TaskListOptions{Filters: f})
		if err != nil {
			b.Fatal(err)
		}
		running := map[string]bool{}
		for _, t := range tl.Items {
			if t.Status.State == swarm.TaskStateRunning {
				running[t.ServiceID] = true
			}
		}
		if len(running) == len(ids) {
			return
		}
	}
	b.Fatalf("plain services not running within 5 minutes")
}

func (s *stack) removePlain(ids []string) {
	for _, id := range ids {
		s.docker.ServiceRemove(context.Background(), id, client.ServiceRemoveOptions{})
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		n := 0
		for _, id := range ids {
			cl, _ := s.docker.ContainerList(context.Background(), client.ContainerListOptions{Filters: make(client.Filters).Add("label", "com.docker.swarm.service.id="+id)})
			n += len(cl.Items)
		}
		if n == 0 {
			return
		}
	}
}

// drain sets the pool to 0 and waits until no container service is left.
func (s *stack) drain(b testing.TB) {
	if _, err := s.api.SetPoolTarget(context.Background(), idepool.DefaultProfile, 0); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if len(s.services()) == 0 {
			break
		}
	}
	// Containers stop asynchronously after their services are removed.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		cl, _ := s.docker.ContainerList(context.Background(), client.ContainerListOptions{Filters: make(client.Filters).Add("label", idepool.LabelManaged+"="+s.deployment)})
		if len(cl.Items) == 0 {
			return
		}
	}
}

// timeline logs where a cold start's time went: idepool before the service
// existed, Swarm until the task ran, the agent and the pool until ready.
func (s *stack) timeline(b testing.TB, id string, start, done time.Time) {
	svc, err := s.docker.ServiceInspect(context.Background(), "idepool-"+id, client.ServiceInspectOptions{})
	if err != nil {
		return
	}
	tl, err := s.docker.TaskList(context.Background(), client.TaskListOptions{Filters: make(client.Filters).Add("service", svc.Service.ID)})
	if err != nil || len(tl.Items) != 1 || tl.Items[0].Status.State != swarm.TaskStateRunning {
		return
	}
	created, running := svc.Service.CreatedAt, tl.Items[0].Status.Timestamp
	b.Logf("cold start %s: POST→service created %v, →task running %v, →ready answer %v",
		id, created.Sub(start).Round(time.Millisecond), running.Sub(created).Round(time.Millisecond), done.Sub(running).Round(time.Millisecond))
}

func BenchmarkColdStart(b *testing.B) {
	s := newStack(b, stackOptions{poolTarget: 0})
	var ours, plain []time.Duration
	for i := 0; b.Loop(); i++ {
		runOurs := func() {
			start := time.Now()
			res, err := s.api.Start(context.Background(), idepoolclient.StartRequest{Bucket: bucket, Prefix: fmt.Sprintf("cold-%d", i), Wait: true, WaitTimeout: 2 * time.Minute})
			if err != nil || !res.Ready {
				b.Fatalf("cold start: %+v, %v", res, err)
			}
			done := time.Now()
			ours = append(ours, done.Sub(start))
			b.StopTimer()
			s.timeline(b, res.ID, start, done)
			if _, err := s.api.Stop(context.Background(), res.ID); err != nil {
				b.Fatal(err)
			}
			s.drain(b)
			b.StartTimer()
		}
		runPlain := func() {
			start := time.Now()
			id := s.plainService(b)
			s.waitPlain(b, []string{id})
			plain = append(plain, time.Since(start))
			b.StopTimer()
			s.removePlain([]string{id})
			b.StartTimer()
		}
		if i%2 == 0 {
			runOurs()
			runPlain()
		} else {
			runPlain()
			runOurs()
		}
	}
	ratio(b, "cold-start", ours, plain)
}

// refillTimeline logs when the last service was created and when the last
// task ran, relative to start (the rest, to warm, is the agents' start-up).
func (s *stack) refillTimeline(b testing.TB, start time.Time) {
	var lastCreated, lastRunning time.Time
	ids := make(client.Filters)
	for _, sv := range s.services() {
		if sv.CreatedAt.After(lastCreated) {
			lastCreated = sv.CreatedAt
		}
		ids.Add("service", sv.ID)
	}
	tl, err := s.docker.TaskList(context.Background(), client.TaskListOptions{Filters: ids})
	if err != nil {
		return
	}
	for _, t := range tl.Items {
		if t.Status.State == swarm.TaskStateRunning {
			if t.Status.Timestamp.After(lastRunning) {
				lastRunning = t.Status.Timestamp
			}
		}
	}
	b.Logf("refill: last service created after %v, last task running after %v, all warm after %v",
		lastCreated.Sub(start).Round(time.Millisecond), lastRunning.Sub(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

func BenchmarkRefill20(b *testing.B) {
	const n = 20
	s := newStack(b, stackOptions{poolTarget: 0})
	var ours, plain []time.Duration
	for i := 0; b.Loop(); i++ {
		runOurs := func() {
			start := time.Now()
			if _, err := s.api.SetPoolTarget(context.Background(), idepool.DefaultProfile, n); err != nil {
				b.Fatal(err)
			}
			s.waitPool(idepool.DefaultProfile, n, 5*time.Minute)
			ours = append(ours, time.Since(start))
			b.StopTimer()
			s.refillTimeline(b, start)
			s.drain(b)
			b.StartTimer()
		}
		runPlain := func() {
			start := time.Now()
			ids := make([]string, n)
			var wg sync.WaitGroup
			for i := range ids {
				wg.Go(func() { ids[i] = s.plainService(b) })
			}
			wg.Wait()
			s.waitPlain(b, ids)
			plain = append(plain, time.Since(start))
			b.StopTimer()
			s.removePlain(ids)
			b.StartTimer()
		}
		if i%2 == 0 {
			runOurs()
			runPlain()
		} else {
			runPlain()
			runOurs()
		}
	}
	ratio(b, "refill-20", ours, plain)
}

// BenchmarkWarmClaim (issue 18's first byte on one node): warm claims,
// each timed from POST /api/containers/start to the first byte of the
// IDE's /code/<id>/ answer, the routed URL followed with its one-time
// token as a browser does; alternately through the built-in router
// (idepool's own port) and through Traefik; the POST alone too. Claims go
// one at a time in waves of warmWave: the profile's maxContainers is the
// pool's size, so no refill runs beside a measured claim; between waves
// (untimed) the claimed containers are stopped and the pool refills.
// IDEPOOL_BENCH_CLAIMS claims per router (default 100: issue 18 asks
// for 200 on the cluster, where BenchmarkClusterClaimFirstByte takes
// them; here the same goal is checked at half the CI time). The metrics'
// names are those of e2e/cluster's BenchmarkClusterClaimFirstByte.
func BenchmarkWarmClaim(b *testing.B) {
	const warmWave = 20
	claims := 100
	if v, err := strconv.Atoi(os.Getenv("IDEPOOL_BENCH_CLAIMS")); err == nil && v > 0 {
		claims = v
	}
	s := newStack(b, stackOptions{poolTarget: warmWave, traefik: true, profile: fmt.Sprintf(`"maxContainers": %d`, warmWave)})
	routers := []struct{ name, base string }{{"builtin", s.apiURL}, {"traefik", s.traefikURL}}
	for b.Loop() {
		lat, posts := map[string][]time.Duration{}, map[string][]time.Duration{}
		notYet := map[string]int{} // claims a router did not route yet at the first try
		var filling time.Duration  // waiting for full pools, in all (one line: without -v Go keeps 10)
		waves := 0
		for done := 0; done < 2*claims; waves++ {
			b.StopTimer()
			t := time.Now()
			s.waitPool(idepool.DefaultProfile, warmWave, 5*time.Minute)
			filling += time.Since(t)
			b.StartTimer()
			var ids []string
			for k := 0; k < warmWave && done < 2*claims; k, done = k+1, done+1 {
				r := routers[done%2]
				start := time.Now()
				res, err := s.api.Start(context.Background(), idepoolclient.StartRequest{Bucket: bucket, Prefix: fmt.Sprintf("warm-%d", done)})
				if err != nil || !res.IsPreWarmed {
					b.Fatalf("claim %d: %+v, %v", done, res, err)
				}
				post := time.Since(start)
				ids = append(ids, res.ID)
				u := r.base + strings.TrimPrefix(res.URLs.CodeServer, s.apiURL)
				jar, _ := cookiejar.New(nil)
				sent := time.Now()
				status, body, ttfb, err := e2etest.HTTPGet(&http.Client{Jar: jar, Timeout: 30 * time.Second}, u, "")
				// A route not there yet (404: Traefik's refresh has not seen
				// the container) is asked again: that wait counts, and is
				// counted.
				for tries := 0; err == nil && status == http.StatusNotFound && tries < 300; tries++ {
					if tries == 0 {
						notYet[r.name]++
					}
					time.Sleep(20 * time.Millisecond)
					sent = time.Now()
					status, body, ttfb, err = e2etest.HTTPGet(&http.Client{Jar: jar, Timeout: 30 * time.Second}, u, "")
				}
				if err != nil || status != http.StatusOK {
					b.Fatalf("claim %d through %s: GET %s: %d %v\n%s", done, r.name, u, status, err, body)
				}
				lat[r.name] = append(lat[r.name], sent.Sub(start)+ttfb)
				posts[r.name] = append(posts[r.name], post)
			}
			b.StopTimer()
			var stops sync.WaitGroup
			for _, id := range ids {
				stops.Go(func() { s.api.Stop(context.Background(), id) })
			}
			stops.Wait()
			b.StartTimer()
		}
		q := quantile.Of // nearest rank: of 100, p99 is the 99th
		msOf := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		var all []time.Duration
		for _, r := range routers {
			l, p := lat[r.name], posts[r.name]
			all = append(all, p...)
			b.ReportMetric(msOf(q(l, 0.5)), "p50-ms-"+r.name)
			b.ReportMetric(msOf(q(l, 0.99)), "p99-ms-"+r.name)
			b.Logf("warm claim → first byte through %s: p50 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d; %d not routed at the first try); its POSTs: p50 %.1f ms, p99 %.1f ms",
				r.name, msOf(q(l, 0.5)), msOf(q(l, 0.99)), msOf(q(l, 1)), len(l), notYet[r.name], msOf(q(p, 0.5)), msOf(q(p, 0.99)))
		}
		b.ReportMetric(msOf(q(all, 0.5)), "p50-ms-post")
		b.ReportMetric(msOf(q(all, 0.99)), "p99-ms-post")
		b.Logf("the POST alone (both routers' claims): p50 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d; goal for claim → first byte: p99 < 100 ms on both routers); %d waves of %d, %.1f s waiting for full pools (untimed)",
			msOf(q(all, 0.5)), msOf(q(all, 0.99)), msOf(q(all, 1)), len(all), waves, warmWave, filling.Seconds())
	}
}

func ratio(b *testing.B, what string, ours, plain []time.Duration) {
	med := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	mo, mp := med(ours), med(plain)
	b.ReportMetric(mo.Seconds(), "s/idepool")
	b.ReportMetric(mp.Seconds(), "s/plain")
	b.ReportMetric(mo.Seconds()/mp.Seconds(), "ratio")
	b.Logf("%s: idepool %v, plain %v, ratio %.2f (medians of %d)", what, mo.Round(time.Millisecond), mp.Round(time.Millisecond), mo.Seconds()/mp.Seconds(), len(ours))
}
