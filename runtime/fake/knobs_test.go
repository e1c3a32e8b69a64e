package fake_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
)

// Knob tests run in testing/synctest bubbles: the fake uses time.Now and
// time.AfterFunc, whose time the bubble fakes, so latencies are exact and
// nothing sleeps for real.

func spec(id string) idepool.ContainerSpec {
	return idepool.ContainerSpec{
		ID:      id,
		Profile: idepool.Profile{Name: "p", Routes: idepool.DefaultRoutes()},
		Labels:  map[string]string{"caller": "x"},
		Env:     map[string]string{idepool.EnvAgentID: id},
	}
}

func mustCreate(t *testing.T, rt *fake.Runtime, id string) idepool.Instance {
	t.Helper()
	inst, err := rt.Create(context.Background(), spec(id))
	if err != nil {
		t.Fatalf("Create(%s): %v", id, err)
	}
	return inst
}

func status(t *testing.T, rt *fake.Runtime, id string) idepool.RuntimeStatus {
	t.Helper()
	inst, err := rt.Inspect(context.Background(), id)
	if err != nil {
		t.Fatalf("Inspect(%s): %v", id, err)
	}
	return inst.Status
}

// collect drains a subscription into a slice until cancel is called and the
// returned function is used to read it.
func collect(rt *fake.Runtime) (cancel func() []idepool.RuntimeEvent) {
	ctx, stop := context.WithCancel(context.Background())
	ch := rt.Events(ctx)
	var evs []idepool.RuntimeEvent
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			evs = append(evs, ev)
		}
	}()
	return func() []idepool.RuntimeEvent {
		stop()
		<-done
		return evs
	}
}

func TestCreateLatencyAndJitter(t *testing.T) {
	cfg := fake.Config{CreateLatency: 100 * time.Millisecond, CreateJitter: 50 * time.Millisecond, Seed: 7}
	run := func() []time.Duration {
		var out []time.Duration
		synctest.Test(t, func(t *testing.T) {
			rt := fake.New(cfg)
			for _, id := range []string{"aaaa", "bbbb", "cccc", "dddd"} {
				start := time.Now()
				inst := mustCreate(t, rt, id)
				d := time.Since(start)
				if d < cfg.CreateLatency || d >= cfg.CreateLatency+cfg.CreateJitter {
					t.Errorf("Create took %v, want in [%v, %v)", d, cfg.CreateLatency, cfg.CreateLatency+cfg.CreateJitter)
				}
				if !inst.CreatedAt.Equal(time.Now().UTC()) {
					t.Errorf("CreatedAt %v, want the time the container came to exist %v", inst.CreatedAt, time.Now())
				}
				out = append(out, d)
			}
		})
		return out
	}
	a, b := run(), run()
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different latencies: %v vs %v", a, b)
	}
	if slices.Min(a) == slices.Max(a) {
		t.Errorf("jitter did not vary latencies: %v", a)
	}
}

func TestStartLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := fake.New(fake.Config{StartLatency: time.Second})
		events := collect(rt)
		inst := mustCreate(t, rt, "abcd")
		if inst.Status != idepool.StatusPending {
			t.Fatalf("Create returned %s, want pending", inst.Status)
		}
		time.Sleep(time.Second - time.Nanosecond)
		synctest.Wait()
		if s := status(t, rt, "abcd"); s != idepool.StatusPending {
			t.Fatalf("status just before StartLatency: %s", s)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if s := status(t, rt, "abcd"); s != idepool.StatusRunning {
			t.Fatalf("status at StartLatency: %s", s)
		}
		want := []idepool.RuntimeEvent{{ID: "abcd", Status: idepool.StatusPending}, {ID: "abcd", Status: idepool.StatusRunning}}
		if got := events(); !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	})
}

func TestFailNextLeavesNothing(t *testing.T) {
	rt := fake.New(fake.Config{})
	rt.FailNext(2)
	for _, id := range []string{"aaaa", "bbbb"} {
		_, err := rt.Create(context.Background(), spec(id))
		if idepool.ErrorCode(err) != idepool.ERuntime {
			t.Fatalf("Create(%s): %v, want code %s", id, err, idepool.ERuntime)
		}
		if _, err := rt.Inspect(context.Background(), id); !idepool.IsNotFound(err) {
			t.Errorf("failed create left %s behind: %v", id, err)
		}
	}
	mustCreate(t, rt, "cccc")
	if rt.Backend().Len() != 1 || rt.Creates() != 3 || rt.CreateFailures() != 2 {
		t.Errorf("Len %d, Creates %d, CreateFailures %d; want 1, 3, 2", rt.Backend().Len(), rt.Creates(), rt.CreateFailures())
	}
}

func TestLeaveLeftoverOnFailure(t *testing.T) {
	ctx := context.Background()
	rt := fake.New(fake.Config{LeaveLeftoverOnFailure: true})
	rt.FailNext(1)
	if _, err := rt.Create(ctx, spec("left")); idepool.ErrorCode(err) != idepool.ERuntime {
		t.Fatalf("Create: %v, want code %s", err, idepool.ERuntime)
	}
	list, _ := rt.List(ctx)
	if len(list) != 1 || list[0].ID != "left" || list[0].Status != idepool.StatusFailed || list[0].Message == "" {
		t.Fatalf("List after a failed create with leftover: %+v", list)
	}
	if _, err := rt.Create(ctx, spec("left")); idepool.ErrorCode(err) != idepool.EExists {
		t.Errorf("Create over the leftover: %v, want code %s", err, idepool.EExists)
	}
	if err := rt.Remove(ctx, "left"); err != nil {
		t.Fatalf("Remove of the leftover: %v", err)
	}
	if n := rt.Backend().Len(); n != 0 {
		t.Errorf("%d containers left after Remove", n)
	}
}

func TestFailNextNeverReplacesExisting(t *testing.T) {
	ctx := context.Background()
	rt := fake.New(fake.Config{LeaveLeftoverOnFailure: true})
	mustCreate(t, rt, "keep")
	rt.FailNext(1)
	if _, err := rt.Create(ctx, spec("keep")); idepool.ErrorCode(err) != idepool.EExists {
		t.Fatalf("Create of an existing id: %v, want %s before any injected failure", err, idepool.EExists)
	}
	if s := status(t, rt, "keep"); s != idepool.StatusRunning {
		t.Errorf("existing container became %s", s)
	}
	if _, err := rt.Create(ctx, spec("next")); err == nil {
		t.Error("FailNext(1) was spent on the EExists refusal")
	}
}

func TestFailureRateIsSeeded(t *testing.T) {
	pattern := func(rate float64, seed uint64) []bool {
		rt := fake.New(fake.Config{FailureRate: rate, Seed: seed})
		out := make([]bool, 200)
		for i := range out {
			_, err := rt.Create(context.Background(), spec(idepool.NewID()))
			out[i] = err != nil
		}
		if got := rt.Backend().Len(); got != 200-rt.CreateFailures() {
			t.Errorf("%d containers exist after %d failures of 200", got, rt.CreateFailures())
		}
		return out
	}
	count := func(bs []bool) (n int) {
		for _, b := range bs {
			if b {
				n++
			}
		}
		return n
	}
	a, b := pattern(0.3, 42), pattern(0.3, 42)
	if !slices.Equal(a, b) {
		t.Error("same seed, different failure patterns")
	}
	if n := count(a); n == 0 || n == 200 {
		t.Errorf("rate 0.3 failed %d of 200", n)
	}
	if n := count(pattern(1, 1)); n != 200 {
		t.Errorf("rate 1 failed %d of 200", n)
	}
	if n := count(pattern(0, 1)); n != 0 {
		t.Errorf("rate 0 failed %d of 200", n)
	}
}

func TestCrashAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := fake.New(fake.Config{StartLatency: 10 * time.Millisecond, CrashAfter: time.Second})
		events := collect(rt)
		mustCreate(t, rt, "crash")
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if s := status(t, rt, "crash"); s != idepool.StatusRunning {
			t.Fatalf("status after StartLatency: %s", s)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		inst, _ := rt.Inspect(context.Background(), "crash")
		if inst.Status != idepool.StatusFailed || inst.Message != "crashed" {
			t.Fatalf("after CrashAfter: %s %q, want failed \"crashed\"", inst.Status, inst.Message)
		}
		got := events()
		if len(got) != 3 || got[2] != (idepool.RuntimeEvent{ID: "crash", Status: idepool.StatusFailed}) {
			t.Errorf("events %v, want pending, running, failed", got)
		}
	})
}

func TestCrashNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := fake.New(fake.Config{})
		rt.CrashNext(1)
		mustCreate(t, rt, "first")
		mustCreate(t, rt, "second")
		synctest.Wait()
		if s := status(t, rt, "first"); s != idepool.StatusFailed {
			t.Errorf("first: %s, want failed", s)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if s := status(t, rt, "second"); s != idepool.StatusRunning {
			t.Errorf("second: %s, want running", s)
		}
	})
}

func TestKillAndExit(t *testing.T) {
	ctx := context.Background()
	be := fake.NewBackend()
	rt := fake.New(fake.Config{Backend: be})
	other := fake.New(fake.Config{Backend: be, Deployment: "other"})
	mustCreate(t, rt, "kill")
	mustCreate(t, rt, "exit")
	mustCreate(t, other, "theirs")
	if err := rt.Kill("kill"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Exit("exit"); err != nil {
		t.Fatal(err)
	}
	if s := status(t, rt, "kill"); s != idepool.StatusFailed {
		t.Errorf("killed: %s", s)
	}
	if s := status(t, rt, "exit"); s != idepool.StatusExited {
		t.Errorf("exited: %s", s)
	}
	if err := rt.Kill("exit"); err != nil || status(t, rt, "exit") != idepool.StatusExited {
		t.Errorf("Kill of an exited container: %v, status %s; want nil and unchanged", err, status(t, rt, "exit"))
	}
	if err := rt.Kill("nope"); !idepool.IsNotFound(err) {
		t.Errorf("Kill unknown: %v", err)
	}
	if err := rt.Kill("theirs"); !idepool.IsNotFound(err) {
		t.Errorf("Kill of another deployment's container through the runtime: %v", err)
	}
	if err := be.Kill("theirs"); err != nil {
		t.Errorf("Backend.Kill of any deployment: %v", err)
	}
	if inst, _ := other.Inspect(ctx, "theirs"); inst.Status != idepool.StatusFailed {
		t.Errorf("theirs after Backend.Kill: %s", inst.Status)
	}
}

func TestEventsFanOutAndDrop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := fake.New(fake.Config{EventBuffer: 1})
		ctx, cancel := context.WithCancel(context.Background())
		a, b := rt.Events(ctx), rt.Events(ctx)
		all := collect(rt) // a draining subscriber loses nothing
		for _, id := range []string{"aaaa", "bbbb", "cccc"} {
			mustCreate(t, rt, id) // must not block on the full subscribers
			synctest.Wait()
		}
		cancel()
		for name, ch := range map[string]<-chan idepool.RuntimeEvent{"a": a, "b": b} {
			var got []idepool.RuntimeEvent
			for ev := range ch {
				got = append(got, ev)
			}
			if len(got) != 1 || got[0].ID != "aaaa" {
				t.Errorf("subscriber %s with buffer 1 got %v, want only the first event", name, got)
			}
		}
		if n := len(all()); n != 3 {
			t.Errorf("draining subscriber got %d events, want 3", n)
		}
		if d := rt.Backend().Dropped(); d != 4 {
			t.Errorf("Dropped() = %d, want 4", d)
		}
	})
}

func TestCreateContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := fake.New(fake.Config{CreateLatency: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := rt.Create(ctx, spec("slow")); idepool.ErrorCode(err) != idepool.ETimeout {
			t.Errorf("Create past its deadline: %v, want code %s", err, idepool.ETimeout)
		}
		ctx, cancel = context.WithCancel(context.Background())
		cancel()
		if _, err := rt.Create(ctx, spec("slow")); idepool.ErrorCode(err) != idepool.EClientClosed {
			t.Errorf("Create with a cancelled context: %v, want code %s", err, idepool.EClientClosed)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := rt.Backend().Len(); n != 0 {
			t.Errorf("%d containers after cancelled creates", n)
		}
	})
}

func TestRemoveStopsTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := fake.New(fake.Config{StartLatency: time.Second, CrashAfter: time.Second})
		mustCreate(t, rt, "gone")
		events := collect(rt)
		if err := rt.Remove(context.Background(), "gone"); err != nil {
			t.Fatal(err)
		}
		// The same id again: the first container's timers must not touch it.
		mustCreate(t, rt, "gone")
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if s := status(t, rt, "gone"); s != idepool.StatusRunning {
			t.Errorf("second container: %s, want running (its own crash is due at 2s)", s)
		}
		want := []idepool.RuntimeEvent{
			{ID: "gone", Status: idepool.StatusPending, Removed: true},
			{ID: "gone", Status: idepool.StatusPending},
			{ID: "gone", Status: idepool.StatusRunning},
		}
		if got := events(); !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	})
}

func TestRemoveKnobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		rt := fake.New(fake.Config{RemoveLatency: time.Second})
		mustCreate(t, rt, "rm00")
		rt.FailRemoveNext(1)
		if err := rt.Remove(ctx, "rm00"); idepool.ErrorCode(err) != idepool.ERuntime {
			t.Fatalf("injected Remove failure: %v", err)
		}
		if s := status(t, rt, "rm00"); s != idepool.StatusRunning {
			t.Errorf("after a failed Remove: %s", s)
		}
		start := time.Now()
		if err := rt.Remove(ctx, "rm00"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Remove took %v, want RemoveLatency", d)
		}
		if rt.Removes() != 2 {
			t.Errorf("Removes() = %d, want 2", rt.Removes())
		}
	})
}

// Creation time, StartLatency and CrashAfter all read the bubble's clock.
func TestFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := fake.New(fake.Config{StartLatency: time.Minute, CrashAfter: time.Hour})
		t0 := time.Now()
		inst := mustCreate(t, rt, "clk0")
		if !inst.CreatedAt.Equal(t0) || inst.Labels[idepool.LabelCreated] != t0.UTC().Format(time.RFC3339) {
			t.Errorf("CreatedAt %v, label %q; want the bubble's time %v", inst.CreatedAt, inst.Labels[idepool.LabelCreated], t0)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if s := status(t, rt, "clk0"); s != idepool.StatusRunning {
			t.Errorf("after StartLatency: %s", s)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if s := status(t, rt, "clk0"); s != idepool.StatusFailed {
			t.Errorf("after CrashAfter: %s", s)
		}
	})
}

func TestRestartOverSharedBackend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		first := fake.New(fake.Config{StartLatency: time.Second})
		mustCreate(t, first, "live")
		second := fake.New(fake.Config{Backend: first.Backend()})
		events := collect(second)
		got, err := second.Recover(ctx)
		if err != nil || len(got) != 1 || got[0].ID != "live" || got[0].Status != idepool.StatusPending {
			t.Fatalf("Recover: %+v, %v", got, err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if evs := events(); !slices.Equal(evs, []idepool.RuntimeEvent{{ID: "live", Status: idepool.StatusRunning}}) {
			t.Errorf("the new runtime's events: %v, want live running", evs)
		}
	})
}

func TestEndpointsAndSpecChecks(t *testing.T) {
	ctx := context.Background()
	rt := fake.New(fake.Config{Endpoints: func(s idepool.ContainerSpec) map[string]string {
		return map[string]string{"code": "127.0.0.1:1234"}
	}})
	if inst := mustCreate(t, rt, "ep00"); inst.Endpoints["code"] != "127.0.0.1:1234" || len(inst.Endpoints) != 1 {
		t.Errorf("endpoints %v, want the Endpoints knob's", inst.Endpoints)
	}
	if inst := mustCreate(t, fake.New(fake.Config{}), "ep01"); inst.Endpoints["vnc"] != "ep01.fake:6080" || inst.Node != "fake" {
		t.Errorf("default endpoints %v node %q", inst.Endpoints, inst.Node)
	}
	if _, err := rt.Create(ctx, spec("Not An ID")); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Errorf("Create with an invalid id: %v", err)
	}
	s := spec("noprofile")
	s.Profile = idepool.Profile{}
	if _, err := rt.Create(ctx, s); idepool.ErrorCode(err) != idepool.EInvalid {
		t.Errorf("Create without a profile: %v", err)
	}
}

func TestBeforeCreate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		rt := fake.New(fake.Config{BeforeCreate: func(ctx context.Context, s idepool.ContainerSpec) error {
			if s.ID == "refused" {
				return idepool.Errorf(idepool.ECapacity, "no room")
			}
			select {
			case <-gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}})
		if _, err := rt.Create(context.Background(), spec("refused")); idepool.ErrorCode(err) != idepool.ECapacity {
			t.Errorf("Create refused by BeforeCreate: %v, want its code kept", err)
		}
		done := make(chan error)
		go func() { _, err := rt.Create(context.Background(), spec("held")); done <- err }()
		synctest.Wait()
		if _, err := rt.Inspect(context.Background(), "held"); !idepool.IsNotFound(err) {
			t.Errorf("a held create already exists: %v", err)
		}
		close(gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if rt.Creates() != 2 || rt.CreateFailures() != 1 || rt.Backend().Len() != 1 {
			t.Errorf("Creates %d, CreateFailures %d, Len %d; want 2, 1, 1", rt.Creates(), rt.CreateFailures(), rt.Backend().Len())
		}
	})
}

// TestConcurrentChaos mixes every operation from many goroutines, for the
// race detector; at the end everything is removed and nothing is left.
func TestConcurrentChaos(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		be := fake.NewBackend()
		rt := fake.New(fake.Config{Backend: be, Seed: 3, CreateLatency: time.Millisecond, CreateJitter: time.Millisecond,
			StartLatency: 5 * time.Millisecond, CrashAfter: 50 * time.Millisecond, FailureRate: 0.1, LeaveLeftoverOnFailure: true})
		other := fake.New(fake.Config{Backend: be, Deployment: "other"})
		var wg sync.WaitGroup
		ids := []string{"c000", "c001", "c002", "c003", "c004", "c005", "c006", "c007"}
		for g := range 16 {
			wg.Go(func() {
				sub, cancel := context.WithCancel(ctx)
				defer cancel()
				events := rt.Events(sub)
				for i := range 100 {
					id := ids[(g+i)%len(ids)]
					switch i % 7 {
					case 0, 1:
						_, _ = rt.Create(ctx, spec(id))
					case 2:
						_ = rt.Remove(ctx, id)
					case 3:
						_ = rt.SetLabels(ctx, id, map[string]string{"g": "x"})
					case 4:
						_ = rt.Kill(id)
					case 5:
						_, _ = rt.List(ctx)
						_, _ = other.Create(ctx, spec("o"+id))
					case 6:
						_, _ = rt.Inspect(ctx, id)
						_ = other.Remove(ctx, "o"+id)
					}
					select {
					case <-events:
					default:
					}
				}
			})
		}
		wg.Wait()
		for _, id := range ids {
			if err := rt.Remove(ctx, id); err != nil {
				t.Fatal(err)
			}
			if err := other.Remove(ctx, "o"+id); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if n := be.Len(); n != 0 {
			t.Errorf("%d containers left", n)
		}
	})
}

func BenchmarkCreateRemove(b *testing.B) {
	rt := fake.New(fake.Config{})
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := spec(idepool.NewID())
			if _, err := rt.Create(ctx, s); err != nil {
				b.Error(err)
				return
			}
			if err := rt.Remove(ctx, s.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
