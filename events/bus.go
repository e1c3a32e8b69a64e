// Package events is idepool's event bus: it numbers every idepool.Event,
// keeps a bounded history, and fans events out to live subscribers (the SSE
// stream at GET /api/events, the dashboard) without ever blocking the
// publisher.
//
// Each subscriber reads the history ring through its own cursor. A slow
// subscriber therefore never stalls the publisher or other subscribers; if
// it falls so far behind that the ring overwrote events it had not read, it
// receives one EventLagged marker saying how many it missed and continues
// from the oldest event still kept.
package events

import (
	"context"
	"errors"
	"sync"

	"github.com/idepool/idepool"
)

// EventLagged is the type of the marker a subscriber receives in place of
// events it missed (it was too slow, or resumed after an ID the history no
// longer holds). Its ID is the last missed event's, so a resume after it
// does not ask for them again; Data["missed"] counts them.
const EventLagged idepool.EventType = "events.lagged"

// ErrClosed is returned by Subscribe on a closed Bus.
var ErrClosed = errors.New("events: bus closed")

// Defaults.
const (
	DefaultHistory        = 10000
	DefaultMaxSubscribers = 1000
)

// Options configure a Bus; zero values get defaults.
type Options struct {
	Clock idepool.Clock
	// History is how many events are kept for replay (default 10,000).
	History int
	// MaxSubscribers bounds concurrent subscriptions (default 1000);
	// Subscribe beyond it returns an EUnavailable error.
	MaxSubscribers int
	// Buffer is the capacity of each subscription's channel (default 64).
	Buffer int
}

// Bus implements idepool.EventSink. It is safe for concurrent use.
type Bus struct {
	clock   idepool.Clock
	maxSubs int
	buffer  int

	mu     sync.Mutex
	ring   []idepool.Event // ring[(first+i)%len] for i < n, IDs consecutive
	first  int
	n      int
	lastID uint64
	subs   map[*subscription]struct{}
	closed bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
}

var _ idepool.EventSink = (*Bus)(nil)

type subscription struct {
	wake chan struct{} // 1-buffered: "there is more to read"
}

// New returns an empty Bus.
func New(o Options) *Bus {
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.History <= 0 {
		o.History = DefaultHistory
	}
	if o.MaxSubscribers <= 0 {
		o.MaxSubscribers = DefaultMaxSubscribers
	}
	if o.Buffer <= 0 {
		o.Buffer = 64
	}
	return &Bus{
		clock: o.Clock, maxSubs: o.MaxSubscribers, buffer: o.Buffer,
		ring: make([]idepool.Event, o.History),
		subs: map[*subscription]struct{}{},
		done: make(chan struct{}),
	}
}

// Publish records e (see Record).
func (b *Bus) Publish(e idepool.Event) { b.Record(e) }

// Record gives e the next ID and, when it has none, the current time, keeps
// it in the history, wakes subscribers and returns it as stored. It never
// blocks on a subscriber.
func (b *Bus) Record(e idepool.Event) idepool.Event {
	if e.Time.IsZero() {
		e.Time = b.clock.Now()
	}
	b.mu.Lock()
	b.lastID++
	e.ID = b.lastID
	if b.n < len(b.ring) {
		b.ring[(b.first+b.n)%len(b.ring)] = e
		b.n++
	} else {
		b.ring[b.first] = e
		b.first = (b.first + 1) % len(b.ring)
	}
	for s := range b.subs {
		select {
		case s.wake <- struct{}{}:
		default: // already woken
		}
	}
	b.mu.Unlock()
	return e
}

// LastID returns the ID of the newest event (0 before the first).
func (b *Bus) LastID() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastID
}

// History returns up to limit kept events with ID > afterID, oldest first
// (limit <= 0: all of them).
func (b *Bus) History(afterID uint64, limit int) []idepool.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	evs, _ := b.readLocked(afterID, limit)
	return evs
}

// readLocked returns kept events after afterID (at most limit if > 0) and
// how many events after afterID are no longer kept. Caller holds b.mu.
func (b *Bus) readLocked(afterID uint64, limit int) ([]idepool.Event, uint64) {
	if b.n == 0 {
		return nil, 0
	}
	oldest := b.lastID - uint64(b.n) + 1
	var missed uint64
	if afterID+1 < oldest {
		missed = oldest - afterID - 1
		afterID = oldest - 1
	}
	if afterID >= b.lastID {
		return nil, missed
	}
	start := int(afterID + 1 - oldest)
	count := b.n - start
	if limit > 0 && count > limit {
		count = limit
	}
	out := make([]idepool.Event, count)
	for i := range count {
		out[i] = b.ring[(b.first+start+i)%len(b.ring)]
	}
	return out, missed
}

// Subscribe returns a channel of the kept events with ID > afterID, then of
// live ones, in ID order, until ctx ends or the Bus is closed (the channel
// is then closed). IDs restart at 1 with every orchestrator run: an afterID
// beyond the newest event (a client resuming across a restart) replays the
// whole history after an EventLagged marker.
func (b *Bus) Subscribe(ctx context.Context, afterID uint64) (<-chan idepool.Event, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if len(b.subs) >= b.maxSubs {
		b.mu.Unlock()
		return nil, idepool.Errorf(idepool.EUnavailable, "too many event subscribers (%d)", b.maxSubs)
	}
	s := &subscription{wake: make(chan struct{}, 1)}
	s.wake <- struct{}{} // read the history at once
	b.subs[s] = struct{}{}
	var reset bool
	if afterID > b.lastID {
		reset = true
	}
	b.wg.Add(1)
	b.mu.Unlock()

	out := make(chan idepool.Event, b.buffer)
	go b.pump(ctx, s, afterID, reset, out)
	return out, nil
}

// pump moves events from the ring to one subscriber at its own pace.
func (b *Bus) pump(ctx context.Context, s *subscription, cursor uint64, reset bool, out chan<- idepool.Event) {
	defer b.wg.Done()
	defer close(out)
	defer func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}()
	send := func(e idepool.Event) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
			return false
		case <-b.done:
			return false
		}
	}
	if reset {
		if !send(idepool.Event{Time: b.clock.Now(), Type: EventLagged, Message: "resumed after an unknown event id; replaying the history",
			Data: map[string]any{"missed": 0, "reset": true}}) {
			return
		}
		cursor = 0
	}
	const batch = 256
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		case <-b.done:
			return
		}
		for {
			b.mu.Lock()
			evs, missed := b.readLocked(cursor, batch)
			b.mu.Unlock()
			if missed > 0 {
				cursor += missed
				if !send(idepool.Event{ID: cursor, Time: b.clock.Now(), Type: EventLagged,
					Message: "events were missed: the subscriber fell behind the history",
					Data:    map[string]any{"missed": missed}}) {
					return
				}
			}
			for _, e := range evs {
				if !send(e) {
					return
				}
				cursor = e.ID
			}
			if len(evs) < batch {
				break
			}
		}
	}
}

// Close ends every subscription and refuses new ones; Publish still
// records. It waits for the subscriptions' goroutines.
func (b *Bus) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// Subscribers returns the number of live subscriptions.
func (b *Bus) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
