package pool

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/quantile"
	"github.com/idepool/idepool/runtime/fake"
)

// burstConfig is the classroom minute: Starts starts spread evenly over
// Within, against a warm pool of Pool and capacity for Capacity live
// containers. A container's agent is ready Ready ± Jitter after its
// create (the time on Swarm from service create to a running task whose
// agent dialled home; 1.5 s until the Swarm benchmarks give a figure);
// the create call itself takes Call.
type burstConfig struct {
	Starts, Pool, Capacity int
	Within                 time.Duration
	Ready, Jitter, Call    time.Duration
	Queue                  bool
	Seed                   uint64
}

func defaultBurst(queue bool) burstConfig {
	return burstConfig{Starts: 300, Pool: 50, Capacity: 320, Within: 5 * time.Second,
		Ready: 1500 * time.Millisecond, Jitter: 500 * time.Millisecond, Call: 50 * time.Millisecond, Queue: queue, Seed: 1}
}

type burstResult struct {
	errors   int
	codes    map[idepool.Code]int
	kinds    map[idepool.ClaimKind]int
	ready    []time.Duration // time to ready (running) of each successful start
	queued   int
	fifoBad  int // queued starts served before one that arrived earlier
	elapsed  time.Duration
	refusals int
}

func (r burstResult) pct(q float64) time.Duration { return quantile.Of(r.ready, q) }

func (r burstResult) String() string {
	return fmt.Sprintf("errors %d %v, kinds %v, queued %d, fifo violations %d, time to ready p50 %s p95 %s p99 %s max %s, all done in %s",
		r.errors, r.codes, r.kinds, r.queued, r.fifoBad, r.pct(0.50), r.pct(0.95), r.pct(0.99), r.pct(1), r.elapsed)
}

// runBurst plays the scenario in whatever time the caller runs it: a
// synctest bubble's fake time (TestBurstQueue) or real time (BenchmarkBurst).
func runBurst(tb testing.TB, cfg burstConfig) burstResult {
	rnd := mrand.New(mrand.NewPCG(cfg.Seed, 99))
	var rndMu sync.Mutex
	delay := func() time.Duration {
		rndMu.Lock()
		defer rndMu.Unlock()
		return cfg.Ready - cfg.Jitter + time.Duration(rnd.Int64N(int64(2*cfg.Jitter)+1))
	}
	s := setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, cfg.Pool)},
		fake: fake.Config{CreateLatency: cfg.Call, Seed: cfg.Seed}}
	sl := withSlots(&s, cfg.Capacity, func(o *Options) {
		hr := o.Runtime.(*slotRuntime).Runtime.(*helloRuntime)
		o.Runtime.(*slotRuntime).Runtime = &delayedHello{Runtime: hr.Runtime, agents: hr.agents, delay: delay}
		o.Queue = QueueOptions{Enabled: cfg.Queue, Timeout: 10 * time.Minute}
		o.CreateConcurrency = 16
		o.ReconcileInterval = time.Second
		o.DefaultCreateDuration = cfg.Ready
	})
	h := newHarness(tb, s)
	h.reconcile()
	for h.pool(idepool.DefaultProfile).Warm < cfg.Pool {
		time.Sleep(10 * time.Millisecond) // the pool warming up (virtual in synctest)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error)
	go func() { runDone <- h.m.Run(runCtx) }()

	type one struct {
		err     error
		kind    idepool.ClaimKind
		ready   time.Duration
		seq     uint64 // arrival in the queue, 0 if not queued
		claimed time.Time
	}
	out := make([]one, cfg.Starts)
	began := time.Now()
	var wg sync.WaitGroup
	for i := range cfg.Starts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(cfg.Within * time.Duration(i) / time.Duration(cfg.Starts))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			t0 := time.Now()
			req := idepool.StartRequest{Workspace: idepool.Workspace{Bucket: fmt.Sprintf("student-%03d", i)}, UserID: fmt.Sprintf("u%d", i),
				WaitsReady: true} // as a class's client does (?wait=ready): it waits below
			c, tk, err := h.m.StartOrQueue(ctx, req)
			if err == nil && tk != nil {
				h.m.mu.Lock()
				out[i].seq = h.m.tickets[tk.ID].seq
				h.m.mu.Unlock()
				c, err = h.m.WaitTicket(ctx, tk.ID)
			}
			if err != nil {
				out[i].err = err
				return
			}
			ready, err := h.m.WaitReady(ctx, c.Container.ID)
			if err != nil {
				out[i].err = err
				return
			}
			out[i].kind, out[i].ready, out[i].claimed = c.Kind, time.Since(t0), ready.ClaimedAt
		}()
	}
	wg.Wait()
	res := burstResult{codes: map[idepool.Code]int{}, kinds: map[idepool.ClaimKind]int{}, elapsed: time.Since(began)}
	var queued []one
	for _, o := range out {
		if o.err != nil {
			res.errors++
			res.codes[idepool.ErrorCode(o.err)]++
			continue
		}
		res.kinds[o.kind]++
		res.ready = append(res.ready, o.ready)
		if o.seq > 0 {
			queued = append(queued, o)
		}
	}
	res.queued = len(queued)
	sort.Slice(queued, func(i, j int) bool { return queued[i].seq < queued[j].seq })
	for i := 1; i < len(queued); i++ {
		if queued[i].claimed.Before(queued[i-1].claimed) {
			res.fifoBad++
		}
	}
	time.Sleep(2 * cfg.Ready) // let refills in flight say hello before shutting down
	stopRun()
	if err := <-runDone; err != nil {
		tb.Fatalf("Run: %v", err)
	}
	h.m.bg.Wait()
	h.checkNoLeak()
	res.refusals = sl.refused(idepool.ClaimCold) + sl.refused(idepool.ClaimWarm)
	return res
}

// TestBurstQueue plays the classroom minute in virtual time (synctest):
// with the queue, every start is served and queued ones in arrival order;
// without it, starts are refused once refills have taken the capacity.
func TestBurstQueue(t *testing.T) {
	var on, off burstResult
	synctest.Test(t, func(t *testing.T) { on = runBurst(t, defaultBurst(true)) })
	synctest.Test(t, func(t *testing.T) { off = runBurst(t, defaultBurst(false)) })
	t.Logf("queue on:  %s", on)
	t.Logf("queue off: %s", off)
	if on.errors != 0 {
		t.Fatalf("queue on: %d errors %v", on.errors, on.codes)
	}
	if on.queued == 0 {
		t.Fatalf("queue on: nothing was queued; the scenario does not test the queue")
	}
	if on.fifoBad != 0 {
		t.Fatalf("queue on: %d queued starts served out of order", on.fifoBad)
	}
	if len(on.ready) != 300 {
		t.Fatalf("queue on: %d ready", len(on.ready))
	}
	if off.errors == 0 {
		t.Logf("queue off had no errors either (capacity sufficed)")
	}
}

// BenchmarkBurst is the same scenario in real time; one iteration is one
// classroom minute (about 10 s). Run with -bench Burst -benchtime 1x.
func BenchmarkBurst(b *testing.B) {
	for _, queue := range []bool{true, false} {
		b.Run(fmt.Sprintf("queue=%v", queue), func(b *testing.B) {
			var r burstResult
			for range b.N {
				r = runBurst(b, defaultBurst(queue))
			}
			b.ReportMetric(float64(r.errors), "errors")
			b.ReportMetric(float64(r.queued), "queued")
			b.ReportMetric(float64(r.fifoBad), "fifo-violations")
			b.ReportMetric(r.pct(0.50).Seconds(), "p50-s")
			b.ReportMetric(r.pct(0.95).Seconds(), "p95-s")
			b.ReportMetric(r.pct(0.99).Seconds(), "p99-s")
			b.Logf("queue=%v: %s", queue, r)
		})
	}
}
