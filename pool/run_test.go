package pool

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

// TestRunReactsToClaimsEventsAndBackoff runs the real loop in a synctest
// bubble: time is fake, so the ticker, latencies and backoff are exact.
func TestRunReactsToClaimsEventsAndBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, setup{
			profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 4)},
			fake:     fake.Config{CreateLatency: 200 * time.Millisecond, StartLatency: time.Second},
			opts:     func(o *Options) { o.ReconcileInterval = time.Hour }, // only wake-ups
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- h.m.Run(ctx) }()
		defer func() {
			cancel()
			<-done
		}()
		time.Sleep(time.Second) // the creates' latency, in fake time
		synctest.Wait()
		if p := h.pool(idepool.DefaultProfile); p.Warm != 4 {
			t.Fatalf("after start: %+v", p)
		}
		// A claim wakes the loop: the pool refills without a tick.
		c := h.start("run-claim")
		synctest.Wait()
		time.Sleep(time.Second) // the create's latency, in fake time
		synctest.Wait()
		if p := h.pool(idepool.DefaultProfile); p.Warm != 4 || p.Claimed != 1 {
			t.Fatalf("after claim: %+v", p)
		}
		// A runtime event (the claimed container died) wakes it too.
		if err := h.rt.Kill(c.Container.ID); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, _ := h.m.Get(context.Background(), c.Container.ID); got.State != idepool.StateStopped {
			t.Fatalf("dead container: %s", got.State)
		}
		// Creates fail: the loop backs off and wakes itself when the
		// backoff ends, then fills the pool once the runtime heals.
		h.rt.FailNext(1 << 30)
		if err := h.m.SetTarget(context.Background(), idepool.DefaultProfile, 6); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // the create's latency
		synctest.Wait()
		first := h.rt.CreateFailures()
		if first == 0 {
			t.Fatal("no create attempted")
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		rounds := h.rt.CreateFailures()
		if rounds <= first || rounds > first+6*2 { // 1+2+4+8+16 s: about 5 more rounds of ≤2 creates
			t.Fatalf("failures: %d then %d", first, rounds)
		}
		h.rt.FailNext(0)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if p := h.pool(idepool.DefaultProfile); p.Warm != 6 || !p.BackoffUntil.IsZero() {
			t.Fatalf("after healing: %+v", p)
		}
		h.checkNoLeak()
	})
}

// gateRuntime holds Create until released.
type gateRuntime struct {
	idepool.Runtime
	entered chan string
	release chan struct{}
}

func (g *gateRuntime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	g.entered <- spec.ID
	<-g.release
	return g.Runtime.Create(ctx, spec)
}

func TestStopWhileCreatingLeavesNothing(t *testing.T) {
	synctest.Test(t, testStopWhileCreatingLeavesNothing)
}

func testStopWhileCreatingLeavesNothing(t *testing.T) {
	var g *gateRuntime
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}, opts: func(o *Options) {
		g = &gateRuntime{Runtime: o.Runtime, entered: make(chan string, 1), release: make(chan struct{})}
		o.Runtime = g
	}})
	var wg sync.WaitGroup
	var startErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, startErr = h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "racy"}})
	}()
	id := <-g.entered
	if c, ok := h.m.Lookup(id); !ok || c.State != idepool.StateCreating {
		t.Fatalf("during create: %+v %v", c, ok)
	}
	if _, err := h.m.Stop(context.Background(), id, idepool.ReasonManual); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	wg.Wait()
	if idepool.ErrorCode(startErr) != idepool.EStartFailed {
		t.Fatalf("start: %v", startErr)
	}
	if ids := h.runtimeIDs(); len(ids) != 0 {
		t.Fatalf("leaked %v", ids)
	}
	h.checkNoLeak()
}

func TestConcurrentStartsForOneWorkspaceShareOneCreate(t *testing.T) {
	synctest.Test(t, testConcurrentStartsForOneWorkspaceShareOneCreate)
}

func testConcurrentStartsForOneWorkspaceShareOneCreate(t *testing.T) {
	var g *gateRuntime
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}, opts: func(o *Options) {
		g = &gateRuntime{Runtime: o.Runtime, entered: make(chan string, 1), release: make(chan struct{})}
		o.Runtime = g
	}})
	const n = 50
	claims := make([]idepool.Claim, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			claims[i], errs[i] = h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "one"}})
		}()
	}
	<-g.entered // one create is under way; everyone else waits for it
	close(g.release)
	wg.Wait()
	kinds := map[idepool.ClaimKind]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if claims[i].Container.ID != claims[0].Container.ID {
			t.Fatalf("two containers: %s, %s", claims[i].Container.ID, claims[0].Container.ID)
		}
		kinds[claims[i].Kind]++
	}
	if kinds[idepool.ClaimCold] != 1 || kinds[idepool.ClaimReused] != n-1 || h.rt.Creates() != 1 {
		t.Fatalf("kinds %v, creates %d", kinds, h.rt.Creates())
	}
}
