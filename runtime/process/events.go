package process

import (
	"context"
	"sync"

	idepool "github.com/idepool/idepool"
)

// fanout hands each event to every subscriber without ever blocking: a
// subscriber whose buffer is full misses it (events are hints; consumers
// also List).
type fanout struct {
	mu     sync.Mutex
	subs   map[chan idepool.RuntimeEvent]struct{}
	closed bool
}

const eventBuffer = 256

func newFanout() *fanout {
	return &fanout{subs: map[chan idepool.RuntimeEvent]struct{}{}}
}

func (f *fanout) subscribe(ctx context.Context) <-chan idepool.RuntimeEvent {
	ch := make(chan idepool.RuntimeEvent, eventBuffer)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		close(ch)
		return ch
	}
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	context.AfterFunc(ctx, func() { f.drop(ch) })
	return ch
}

func (f *fanout) drop(ch chan idepool.RuntimeEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.subs[ch]; ok {
		delete(f.subs, ch)
		close(ch)
	}
}

func (f *fanout) emit(e idepool.RuntimeEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// close ends every stream.
func (f *fanout) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for ch := range f.subs {
		delete(f.subs, ch)
		close(ch)
	}
}
