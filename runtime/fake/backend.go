package fake

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// Backend is the world fake containers live in, like a Docker engine: it
// outlives Runtime values, so a new Runtime over the same Backend sees the
// containers of its deployment (a restart), and Runtimes of different
// deployments share it without seeing each other's containers. Ids are
// unique across the whole Backend, as Swarm service names are.
//
// Latencies and crashes run on time.AfterFunc: tests put the fake in a
// testing/synctest bubble to make them exact and instant.
type Backend struct {
	mu         sync.Mutex
	containers map[string]*container
	subs       map[*subscriber]struct{}
	dropped    int
}

// NewBackend returns an empty backend.
func NewBackend() *Backend {
	return &Backend{containers: map[string]*container{}, subs: map[*subscriber]struct{}{}}
}

// Kill makes a container of any deployment fail as if killed from outside.
func (b *Backend) Kill(id string) error { return b.end("", id, idepool.StatusFailed, "killed") }

// SetEndpoints gives a container its addresses after Create, as a runtime
// that learns them later does (a Kubernetes pod's IP).
func (b *Backend) SetEndpoints(id string, endpoints map[string]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.containers[id]
	if !ok {
		return idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	c.endpoints = maps.Clone(endpoints)
	return nil
}

// Len returns how many containers exist, of every deployment and status.
func (b *Backend) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.containers)
}

// Dropped returns how many events were dropped because a subscriber's
// buffer was full.
func (b *Backend) Dropped() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// container is one fake container. Its fields are guarded by Backend.mu.
type container struct {
	id, deployment string
	status         idepool.RuntimeStatus
	labels         map[string]string
	env            map[string]string
	endpoints      map[string]string
	created        time.Time
	node           string
	message        string
	timers         []*time.Timer
}

func (c *container) instance() idepool.Instance {
	return idepool.Instance{
		ID:        c.id,
		Status:    c.status,
		Labels:    maps.Clone(c.labels),
		Endpoints: maps.Clone(c.endpoints),
		CreatedAt: c.created,
		Node:      c.node,
		Message:   c.message,
	}
}

// schedule runs f under the backend's lock after d, unless the container
// was removed (or replaced by another of the same id) meanwhile.
// The caller holds b.mu.
func (c *container) schedule(b *Backend, d time.Duration, f func()) {
	c.timers = append(c.timers, time.AfterFunc(d, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.containers[c.id] != c {
			return
		}
		f()
	}))
}

// scheduleCrash makes a running container fail after d (d < 0: at once;
// 0: never). The caller holds b.mu.
func (c *container) scheduleCrash(b *Backend, d time.Duration) {
	if d == 0 {
		return
	}
	c.schedule(b, max(d, 0), func() {
		if c.status.Terminal() {
			return
		}
		c.status = idepool.StatusFailed
		c.message = "crashed"
		b.emitLocked(c, false)
	})
}

func (c *container) stopTimers() {
	for _, t := range c.timers {
		t.Stop()
	}
	c.timers = nil
}

// end moves a container of deployment dep ("" for any) to a terminal
// status, unless it is terminal already.
func (b *Backend) end(dep, id string, status idepool.RuntimeStatus, msg string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.containers[id]
	if !ok || dep != "" && c.deployment != dep {
		return idepool.Errorf(idepool.ENotFound, "fake: container %s not found", id)
	}
	if c.status.Terminal() {
		return nil
	}
	c.stopTimers()
	c.status = status
	c.message = msg
	b.emitLocked(c, false)
	return nil
}

func (b *Backend) env(dep, id string) (map[string]string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.containers[id]
	if !ok || c.deployment != dep {
		return nil, false
	}
	return maps.Clone(c.env), true
}

// sleep waits d, or until ctx ends.
func (b *Backend) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	done := make(chan struct{})
	t := time.AfterFunc(d, func() { close(done) })
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type subscriber struct {
	deployment string
	ch         chan idepool.RuntimeEvent
}

// subscribe registers a subscriber until ctx ends; then its channel closes.
func (b *Backend) subscribe(ctx context.Context, dep string, buffer int) <-chan idepool.RuntimeEvent {
	s := &subscriber{deployment: dep, ch: make(chan idepool.RuntimeEvent, buffer)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	context.AfterFunc(ctx, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, s)
		close(s.ch)
	})
	return s.ch
}

// emitLocked sends c's event to the subscribers of its deployment without
// blocking. The caller holds b.mu, which also keeps channels from closing
// during the send.
func (b *Backend) emitLocked(c *container, removed bool) {
	ev := idepool.RuntimeEvent{ID: c.id, Status: c.status, Removed: removed}
	for s := range b.subs {
		if s.deployment != c.deployment {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			b.dropped++
		}
	}
}
