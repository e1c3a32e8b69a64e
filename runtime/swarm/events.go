package swarm

import (
	"context"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// Events streams hints about this deployment's containers until ctx ends.
// Docker events (services created, updated or removed; task containers
// started or dead) wake it; each hint is checked with Inspect, again a
// little later (Swarm records a task's new state shortly after its
// container changes), and a full List every ResyncInterval (every second
// while something is pending) catches what events miss, such as a task
// rejected before it had a container. An event is sent when a status
// changes or a container disappears.
func (r *Runtime) Events(ctx context.Context) <-chan idepool.RuntimeEvent {
	out := make(chan idepool.RuntimeEvent, 64)
	hints := make(chan string, 256)
	go r.stream(ctx, hints)
	go r.watch(ctx, hints, out)
	return out
}

// followUps are when a container is checked again after a Docker event.
var followUps = []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond, time.Second, 3 * time.Second}

type check struct {
	id string
	at time.Time
}

func (r *Runtime) watch(ctx context.Context, hints <-chan string, out chan<- idepool.RuntimeEvent) {
	defer close(out)
	w := &watcher{r: r, known: map[string]idepool.RuntimeStatus{}, out: out}
	w.resync(ctx, false)
	var checks []check
	timer := time.NewTimer(w.nextResync())
	defer timer.Stop()
	nextList := time.Now().Add(w.nextResync())
	for {
		// Wake at the next list or the next follow-up check.
		next := nextList
		for _, c := range checks {
			if c.at.Before(next) {
				next = c.at
			}
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-ctx.Done():
			return
		case id := <-hints:
			if id == "" { // the Docker stream reconnected: events may be lost
				nextList = time.Now()
				continue
			}
			now := time.Now()
			for _, d := range followUps {
				checks = append(checks, check{id: id, at: now.Add(d)})
			}
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(nextList) {
			w.resync(ctx, true)
			nextList = time.Now().Add(w.nextResync())
		}
		due := map[string]bool{}
		kept := checks[:0]
		for _, c := range checks {
			if now.Before(c.at) {
				kept = append(kept, c)
			} else {
				due[c.id] = true
			}
		}
		checks = kept
		for id := range due {
			w.check(ctx, id)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// watcher keeps the last status sent for each container, so only changes
// are sent.
type watcher struct {
	r     *Runtime
	known map[string]idepool.RuntimeStatus
	out   chan<- idepool.RuntimeEvent
}

func (w *watcher) nextResync() time.Duration {
	for _, st := range w.known {
		if st == idepool.StatusPending {
			return min(time.Second, w.r.o.ResyncInterval)
		}
	}
	return w.r.o.ResyncInterval
}

func (w *watcher) send(ctx context.Context, ev idepool.RuntimeEvent) {
	select {
	case w.out <- ev:
	case <-ctx.Done():
	}
}

// resync lists everything and sends what changed since the last look
// (nothing on the first, which only learns the starting point).
func (w *watcher) resync(ctx context.Context, emit bool) {
	insts, err := w.r.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.r.log.Warn("events: list failed", "err", err)
		}
		return
	}
	seen := map[string]bool{}
	for _, in := range insts {
		seen[in.ID] = true
		if old, ok := w.known[in.ID]; !ok || old != in.Status {
			w.known[in.ID] = in.Status
			if emit {
				w.send(ctx, idepool.RuntimeEvent{ID: in.ID, Status: in.Status})
			}
		}
	}
	for id := range w.known {
		if !seen[id] {
			delete(w.known, id)
			if emit {
				w.send(ctx, idepool.RuntimeEvent{ID: id, Removed: true})
			}
		}
	}
}

// check inspects one container after a Docker event about it.
func (w *watcher) check(ctx context.Context, id string) {
	in, err := w.r.Inspect(ctx, id)
	switch {
	case idepool.IsNotFound(err):
		// Only containers this deployment had: a service event names
		// idepool-<id> of any deployment.
		if _, ok := w.known[id]; ok {
			delete(w.known, id)
			w.send(ctx, idepool.RuntimeEvent{ID: id, Removed: true})
		}
	case err != nil:
		// The next list retries.
	default:
		if old, ok := w.known[id]; !ok || old != in.Status {
			w.known[id] = in.Status
			w.send(ctx, idepool.RuntimeEvent{ID: id, Status: in.Status})
		}
	}
}

// stream reads Docker events until ctx ends, reconnecting with backoff, and
// passes on the container id each one concerns ("" after a reconnect).
func (r *Runtime) stream(ctx context.Context, hints chan<- string) {
	f := make(client.Filters).
		Add("type", string(events.ServiceEventType), string(events.ContainerEventType)).
		Add("event", "create", "update", "remove", "start", "die", "oom", "destroy")
	hint := func(id string) {
		select {
		case hints <- id:
		case <-ctx.Done():
		default: // full: the periodic list covers it
		}
	}
	for backoff, first := time.Second, true; ctx.Err() == nil; first = false {
		sctx, cancel := context.WithCancel(ctx)
		res := r.o.Docker.Events(sctx, client.EventsListOptions{Filters: f})
		if !first {
			hint("")
		}
		started := time.Now()
	read:
		for {
			select {
			case m := <-res.Messages:
				if id := r.eventID(m); id != "" {
					hint(id)
				}
			case err := <-res.Err:
				if ctx.Err() == nil {
					r.log.Warn("docker events stream ended; reconnecting", "err", err, "backoff", backoff)
				}
				break read
			case <-ctx.Done():
				break read
			}
		}
		cancel()
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// eventID returns the container id a Docker event is about, or "".
func (r *Runtime) eventID(m events.Message) string {
	a := m.Actor.Attributes
	switch m.Type {
	case events.ServiceEventType:
		// Service events carry only the name; Inspect checks the deployment.
		if id, ok := strings.CutPrefix(a["name"], servicePrefix); ok && idepool.ValidID(id) {
			return id
		}
	case events.ContainerEventType:
		// Task containers carry the container labels set in the spec.
		if a[idepool.LabelManaged] == r.o.Deployment && idepool.ValidID(a[idepool.LabelID]) {
			return a[idepool.LabelID]
		}
	}
	return ""
}
