package pool

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

// TestConcurrentStartsExactlyOnce: 1,000 concurrent starts for 300
// workspaces against a warm pool of 100, on a runtime with create latency,
// while the reconciler refills: every workspace ends with exactly one
// container, no container serves two workspaces, nothing leaks.
func TestConcurrentStartsExactlyOnce(t *testing.T) { synctest.Test(t, testConcurrentStartsExactlyOnce) }

func testConcurrentStartsExactlyOnce(t *testing.T) {
	const (
		starts     = 1000
		workspaces = 300
		poolSize   = 100
	)
	h := newHarness(t, setup{
		profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, poolSize)},
		fake:     fake.Config{CreateLatency: time.Millisecond, CreateJitter: 4 * time.Millisecond},
	})
	h.reconcile()
	if p := h.pool(idepool.DefaultProfile); p.Warm != poolSize {
		t.Fatalf("pool not filled: %+v", p)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error)
	go func() { runDone <- h.m.Run(runCtx) }()

	type result struct {
		ws    string
		claim idepool.Claim
		err   error
	}
	results := make([]result, starts)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range starts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws := fmt.Sprintf("ws-%03d", i%workspaces)
			<-gate
			c, err := h.m.Start(context.Background(), idepool.StartRequest{Workspace: idepool.Workspace{Bucket: ws}, UserID: ws})
			results[i] = result{ws, c, err}
		}()
	}
	close(gate)
	wg.Wait()
	stopRun()
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	h.m.bg.Wait() // cold assignments in flight

	byWS := map[string]string{}
	wsOf := map[string]string{}
	kinds := map[idepool.ClaimKind]int{}
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("start %s: %v", r.ws, r.err)
		}
		id := r.claim.Container.ID
		kinds[r.claim.Kind]++
		if prev, ok := byWS[r.ws]; ok && prev != id {
			t.Fatalf("workspace %s got two containers: %s and %s", r.ws, prev, id)
		}
		byWS[r.ws] = id
		if prev, ok := wsOf[id]; ok && prev != r.ws {
			t.Fatalf("container %s serves two workspaces: %s and %s", id, prev, r.ws)
		}
		wsOf[id] = r.ws
	}
	if len(byWS) != workspaces {
		t.Fatalf("%d workspaces served, want %d", len(byWS), workspaces)
	}
	if kinds[idepool.ClaimWarm]+kinds[idepool.ClaimCold] != workspaces || kinds[idepool.ClaimReused] != starts-workspaces {
		t.Fatalf("kinds %v", kinds)
	}
	if kinds[idepool.ClaimWarm] < poolSize {
		t.Fatalf("only %d warm claims from a pool of %d", kinds[idepool.ClaimWarm], poolSize)
	}
	t.Logf("claims: %v", kinds)
	// Every agent was assigned only its own workspace.
	for id, ws := range wsOf {
		for _, a := range h.agents.assignments(id) {
			if a.Workspace.Bucket != ws {
				t.Fatalf("container %s assigned %s, serves %s", id, a.Workspace.Bucket, ws)
			}
		}
	}
	// The manager's view: one live claimed container per workspace.
	claimed := map[string][]string{}
	all, _, err := h.m.List(context.Background(), idepool.ContainerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		if c.Workspace != nil {
			claimed[c.Workspace.Bucket] = append(claimed[c.Workspace.Bucket], c.ID)
		}
	}
	if len(claimed) != workspaces {
		t.Fatalf("manager has %d claimed workspaces", len(claimed))
	}
	for ws, ids := range claimed {
		if len(ids) != 1 || ids[0] != byWS[ws] {
			sort.Strings(ids)
			t.Fatalf("workspace %s: containers %v, start returned %s", ws, ids, byWS[ws])
		}
	}
	// The runtime's labels agree.
	insts, err := h.rt.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	labelWS := map[string]int{}
	for _, in := range insts {
		if b := in.Labels[idepool.LabelBucket]; b != "" {
			labelWS[b]++
			if byWS[b] != in.ID {
				t.Fatalf("runtime labels %s with %s; the start returned %s", in.ID, b, byWS[b])
			}
		}
	}
	if len(labelWS) != workspaces {
		t.Fatalf("runtime records %d claimed workspaces", len(labelWS))
	}
	h.checkNoLeak()
}

// BenchmarkClaim measures warm claims against a big pool (fake runtime,
// fake agents): the orchestrator's own cost of a claim.
func BenchmarkClaim(b *testing.B) {
	const batch = 2000
	h := newHarness(b, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}})
	ctx := context.Background()
	refill := func() {
		b.StopTimer()
		if err := h.m.SetTarget(ctx, idepool.DefaultProfile, batch); err != nil {
			b.Fatal(err)
		}
		h.reconcile()
		b.StartTimer()
	}
	refill()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%batch == 0 {
			refill()
		}
		c, err := h.m.Start(ctx, idepool.StartRequest{Workspace: idepool.Workspace{Bucket: fmt.Sprintf("bench-%d", i)}})
		if err != nil || c.Kind != idepool.ClaimWarm {
			b.Fatalf("claim %d: %+v %v", i, c.Kind, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/claim")
}

// BenchmarkClaimParallel is BenchmarkClaim with concurrent claimers.
func BenchmarkClaimParallel(b *testing.B) {
	h := newHarness(b, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 0)}})
	ctx := context.Background()
	if err := h.m.SetTarget(ctx, idepool.DefaultProfile, b.N+64); err != nil {
		b.Fatal(err)
	}
	h.reconcile()
	var mu sync.Mutex
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			i := n
			mu.Unlock()
			c, err := h.m.Start(ctx, idepool.StartRequest{Workspace: idepool.Workspace{Bucket: fmt.Sprintf("bench-%d", i)}})
			if err != nil || c.Kind != idepool.ClaimWarm {
				b.Errorf("claim %d: %v %v", i, c.Kind, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/claim")
}
