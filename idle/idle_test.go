package idle

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func TestDecide(t *testing.T) {
	profiles := map[string]idepool.Profile{
		"default": {Name: "default", IdleTimeout: 10 * time.Minute, MaxAge: time.Hour},
		"forever": {Name: "forever"},
	}
	ws := &idepool.Workspace{Bucket: "b"}
	claimed := func(id string, s idepool.State, claimedAt, active time.Time) idepool.Container {
		return idepool.Container{ID: id, Profile: "default", State: s, Workspace: ws, CreatedAt: t0.Add(-2 * time.Hour),
			ClaimedAt: claimedAt, LastActivity: active}
	}
	now := t0
	tests := []struct {
		name string
		c    idepool.Container
		pol  Policy
		want string // reason, "" for none
		next time.Time
	}{
		{"idle past the timeout", claimed("a", idepool.StateRunning, t0.Add(-time.Hour), t0.Add(-11*time.Minute)), Policy{}, idepool.ReasonInactivity, time.Time{}},
		{"exactly at the timeout", claimed("a", idepool.StateRunning, t0.Add(-time.Hour), t0.Add(-10*time.Minute)), Policy{}, idepool.ReasonInactivity, time.Time{}},
		{"active recently", claimed("a", idepool.StateRunning, t0.Add(-time.Hour), t0.Add(-time.Minute)), Policy{}, "", t0.Add(9 * time.Minute)},
		{"syncing counts as claimed", claimed("a", idepool.StateSyncing, t0.Add(-time.Hour), time.Time{}), Policy{}, idepool.ReasonInactivity, time.Time{}},
		{"claim is activity", claimed("a", idepool.StateRunning, t0.Add(-2*time.Minute), t0.Add(-time.Hour)), Policy{}, "", t0.Add(8 * time.Minute)},
		{"exempt", func() idepool.Container {
			c := claimed("a", idepool.StateRunning, t0.Add(-time.Hour), t0.Add(-time.Hour))
			c.IdleExempt = true
			return c
		}(), Policy{}, "", time.Time{}},
		{"profile without timeout", func() idepool.Container {
			c := claimed("a", idepool.StateRunning, t0.Add(-time.Hour), t0.Add(-time.Hour))
			c.Profile = "forever"
			return c
		}(), Policy{}, "", time.Time{}},
		{"unknown profile uses the default", func() idepool.Container {
			c := claimed("a", idepool.StateRunning, t0.Add(-time.Hour), t0.Add(-time.Hour))
			c.Profile = "gone"
			return c
		}(), Policy{DefaultIdleTimeout: 30 * time.Minute}, idepool.ReasonInactivity, time.Time{}},
		{"starting cold container left to the pool", claimed("a", idepool.StateStarting, t0.Add(-time.Hour), time.Time{}), Policy{}, "", time.Time{}},
		{"stopping left alone", claimed("a", idepool.StateStopping, t0.Add(-time.Hour), time.Time{}), Policy{}, "", time.Time{}},
		{"warm never idle, young", idepool.Container{ID: "w", Profile: "default", State: idepool.StateWarm, CreatedAt: t0.Add(-59 * time.Minute)}, Policy{}, "", t0.Add(time.Minute)},
		{"warm past max age", idepool.Container{ID: "w", Profile: "default", State: idepool.StateWarm, CreatedAt: t0.Add(-61 * time.Minute)}, Policy{}, idepool.ReasonMaxAge, time.Time{}},
		{"max age left to the pool", idepool.Container{ID: "w", Profile: "default", State: idepool.StateWarm, CreatedAt: t0.Add(-61 * time.Minute)}, Policy{SkipMaxAge: true}, "", time.Time{}},
		{"warm without max age", idepool.Container{ID: "w", Profile: "forever", State: idepool.StateWarm, CreatedAt: t0.Add(-100 * time.Hour)}, Policy{}, "", time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, next := Decide(now, []idepool.Container{tc.c}, profiles, tc.pol)
			got := ""
			if len(ds) == 1 {
				got = ds[0].Reason
			} else if len(ds) > 1 {
				t.Fatalf("decisions %v", ds)
			}
			if got != tc.want || !next.Equal(tc.next) {
				t.Fatalf("got %q next %v, want %q next %v", got, next, tc.want, tc.next)
			}
		})
	}
}

func TestDecideOrder(t *testing.T) {
	p := map[string]idepool.Profile{"default": {Name: "default", IdleTimeout: time.Minute, MaxAge: time.Minute}}
	cs := []idepool.Container{
		{ID: "b", Profile: "default", State: idepool.StateRunning, LastActivity: t0.Add(-2 * time.Minute)},
		{ID: "a", Profile: "default", State: idepool.StateRunning, LastActivity: t0.Add(-2 * time.Minute)},
		{ID: "c", Profile: "default", State: idepool.StateWarm, CreatedAt: t0.Add(-5 * time.Minute)},
	}
	ds, _ := Decide(t0, cs, p, Policy{})
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	if fmt.Sprint(ids) != "[c a b]" {
		t.Fatalf("order = %v", ids)
	}
}

type fakePool struct {
	mu      sync.Mutex
	cs      map[string]idepool.Container
	stopped map[string]string
}

func (p *fakePool) List(_ context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []idepool.Container
	for _, c := range p.cs {
		if slices.Contains(f.States, c.State) {
			out = append(out, c)
		}
	}
	return out, len(out), nil
}

func (p *fakePool) Profiles() []idepool.Profile {
	return []idepool.Profile{{Name: "default", IdleTimeout: 10 * time.Minute, MaxAge: 30 * time.Minute}}
}

func (p *fakePool) Stop(_ context.Context, id, reason string) (idepool.Container, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cs[id]
	if !ok {
		return c, idepool.Errorf(idepool.ENotFound, "gone")
	}
	delete(p.cs, id)
	p.stopped[id] = reason
	return c, nil
}

func (p *fakePool) touch(id string) {
	p.mu.Lock()
	c := p.cs[id]
	c.LastActivity = time.Now()
	p.cs[id] = c
	p.mu.Unlock()
}

func (p *fakePool) stops() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.stopped)
}

// With fake time: activity keeps a container; silence stops it at its
// timeout; an exempt one stays; a warm one is recycled at its max age.
func TestReaperLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ws := &idepool.Workspace{Bucket: "b"}
		pool := &fakePool{stopped: map[string]string{}, cs: map[string]idepool.Container{
			"typing": {ID: "typing", Profile: "default", State: idepool.StateRunning, Workspace: ws, ClaimedAt: start},
			"closed": {ID: "closed", Profile: "default", State: idepool.StateRunning, Workspace: ws, ClaimedAt: start},
			"exam":   {ID: "exam", Profile: "default", State: idepool.StateRunning, Workspace: ws, ClaimedAt: start, IdleExempt: true},
			"warm":   {ID: "warm", Profile: "default", State: idepool.StateWarm, CreatedAt: start},
		}}
		r := New(Options{Pool: pool, Interval: time.Minute})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()

		for minute := 1; minute <= 35; minute++ {
			time.Sleep(time.Minute)
			pool.touch("typing") // a student typing every minute
			synctest.Wait()
			st := pool.stops()
			switch {
			case minute < 10 && len(st) > 0:
				t.Fatalf("minute %d: stopped %v", minute, st)
			case minute >= 10 && minute < 30 && !maps.Equal(st, map[string]string{"closed": idepool.ReasonInactivity}):
				t.Fatalf("minute %d: stopped %v", minute, st)
			case minute >= 30 && !maps.Equal(st, map[string]string{"closed": idepool.ReasonInactivity, "warm": idepool.ReasonMaxAge}):
				t.Fatalf("minute %d: stopped %v", minute, st)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// The loop wakes at the deadline, not only at its interval.
func TestReaperWakesAtDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		pool := &fakePool{stopped: map[string]string{}, cs: map[string]idepool.Container{
			"a": {ID: "a", Profile: "default", State: idepool.StateRunning, LastActivity: start.Add(-9*time.Minute - 50*time.Second)},
		}}
		r := New(Options{Pool: pool, Interval: time.Hour})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go r.Run(ctx)
		synctest.Wait()
		if len(pool.stops()) != 0 {
			t.Fatal("stopped too early")
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if pool.stops()["a"] != idepool.ReasonInactivity {
			t.Fatalf("not stopped at its deadline: %v", pool.stops())
		}
	})
}
