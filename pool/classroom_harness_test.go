package pool

import (
	"context"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// slots is an Admitter that admits up to cap live containers, counted by
// the runtime wrapper slotRuntime (a slot is taken at Admit, given back
// when the create fails or the container is removed).
type slots struct {
	mu       sync.Mutex
	cap      int
	used     int
	ids      map[string]bool
	refusals map[idepool.ClaimKind]int
}

func newSlots(n int) *slots {
	return &slots{cap: n, ids: map[string]bool{}, refusals: map[idepool.ClaimKind]int{}}
}

func (s *slots) Admit(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used >= s.cap {
		s.refusals[kind]++
		return &idepool.Error{Code: idepool.ECapacity, Message: "no room", Details: map[string]any{"cap": s.cap}}
	}
	s.used++
	return nil
}

func (s *slots) Headroom(p idepool.Profile) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.cap-s.used, 0)
}

func (s *slots) refused(kind idepool.ClaimKind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusals[kind]
}

// slotRuntime keeps slots' count right.
type slotRuntime struct {
	idepool.Runtime
	s *slots
}

func (r *slotRuntime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	inst, err := r.Runtime.Create(ctx, spec)
	r.s.mu.Lock()
	if err != nil {
		r.s.used--
	} else {
		r.s.ids[spec.ID] = true
	}
	r.s.mu.Unlock()
	return inst, err
}

func (r *slotRuntime) Remove(ctx context.Context, id string) error {
	err := r.Runtime.Remove(ctx, id)
	if err == nil {
		r.s.mu.Lock()
		if r.s.ids[id] {
			delete(r.s.ids, id)
			r.s.used--
		}
		r.s.mu.Unlock()
	}
	return err
}

// delayedHello is a runtime whose agents say hello (ready) a while after
// their container was created: the time an image takes to start and its
// agent to dial home. Inside testing/synctest the delay is virtual.
type delayedHello struct {
	idepool.Runtime // the bare fake
	agents          *fakeAgents
	delay           func() time.Duration
}

func (r *delayedHello) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	inst, err := r.Runtime.Create(ctx, spec)
	if err == nil {
		time.AfterFunc(r.delay(), func() { r.agents.started(spec) })
	}
	return inst, err
}

// withSlots wires a slot admitter of n into a harness setup; it wraps the
// runtime the harness made.
func withSlots(s *setup, n int, more func(*Options)) *slots {
	sl := newSlots(n)
	s.admitter = sl
	s.opts = func(o *Options) {
		o.Runtime = &slotRuntime{Runtime: o.Runtime, s: sl}
		if more != nil {
			more(o)
		}
	}
	return sl
}
