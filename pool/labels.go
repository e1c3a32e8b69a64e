package pool

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// labelWriter writes containers' runtime labels behind the answers that
// changed them. A claim's durable record is its agent's (the agent persists
// its assignment before it acknowledges it); the labels are the second
// record, the one Recover reads, and on Swarm each write is a service
// update of 50–100 ms that no answer should wait for. Writes for one
// container are coalesced (the newest value of each label wins) and never
// run concurrently; a few run at once across containers.
type labelWriter struct {
	rt      labelSetter
	log     *slog.Logger
	timeout time.Duration
	// hold is a fault point (Options.HoldLabelWrites): nothing is written,
	// as if the orchestrator crashed right after its answers.
	hold bool

	mu       sync.Mutex
	pending  map[string]map[string]string // container id → labels to write
	order    []string                     // ids with pending labels, oldest first, not in flight
	inflight map[string]bool
	changed  chan struct{} // closed and replaced at every change (waiters)
	wake     chan struct{}
	workers  sync.WaitGroup
}

// labelSetter is the part of the runtime the writer uses.
type labelSetter interface {
	SetLabels(ctx context.Context, id string, labels map[string]string) error
}

// labelWorkers bounds the writes in flight: the engine serialises service
// updates anyway, and a burst must not become hundreds of goroutines.
const labelWorkers = 4

func newLabelWriter(rt labelSetter, log *slog.Logger, timeout time.Duration, hold bool) *labelWriter {
	return &labelWriter{rt: rt, log: log, timeout: timeout, hold: hold,
		pending: map[string]map[string]string{}, inflight: map[string]bool{},
		changed: make(chan struct{}), wake: make(chan struct{}, labelWorkers)}
}

// start runs the workers until ctx ends (close drains them first).
func (w *labelWriter) start(ctx context.Context) {
	for range labelWorkers {
		w.workers.Add(1)
		go func() {
			defer w.workers.Done()
			w.work(ctx)
		}()
	}
}

// queue merges labels into id's pending write ("" deletes a label, as
// SetLabels does).
func (w *labelWriter) queue(id string, labels map[string]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pending[id]
	if p == nil {
		p = make(map[string]string, len(labels))
		w.pending[id] = p
		if !w.inflight[id] {
			w.order = append(w.order, id)
		}
	}
	maps.Copy(p, labels)
	if w.hold {
		w.log.Warn("label write held (fault point HoldLabelWrites)", "container", id)
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest pending write that is not in flight.
func (w *labelWriter) next() (string, map[string]string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hold || len(w.order) == 0 {
		return "", nil, false
	}
	id := w.order[0]
	w.order = w.order[1:]
	labels := w.pending[id]
	delete(w.pending, id)
	w.inflight[id] = true
	return id, labels, true
}

// done ends id's write. A failed one is merged back under what came since
// and stays in flight until its worker's retry (release), so no other
// worker retries it at once.
func (w *labelWriter) done(id string, labels map[string]string, failed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if failed {
		maps.Copy(labels, w.pending[id])
		w.pending[id] = labels
		w.signalLocked()
		return
	}
	w.releaseLocked(id)
}

// release lets a failed write be taken again.
func (w *labelWriter) release(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked(id)
}

func (w *labelWriter) releaseLocked(id string) {
	delete(w.inflight, id)
	if _, more := w.pending[id]; more {
		w.order = append(w.order, id)
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	w.signalLocked()
}

func (w *labelWriter) signalLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *labelWriter) work(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		id, labels, ok := w.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, w.timeout)
		err := w.rt.SetLabels(wctx, id, labels)
		cancel()
		switch {
		case err == nil:
			w.done(id, labels, false)
		case idepool.ErrorCode(err) == idepool.ENotFound:
			// Removed meanwhile: nothing left to record.
			w.done(id, labels, false)
		case ctx.Err() != nil:
			w.done(id, labels, true)
			return
		default:
			w.log.Warn("recording labels failed; retrying", "container", id, "err", err)
			w.done(id, labels, true)
			retry.Reset(time.Second)
			select {
			case <-ctx.Done():
				return
			case <-retry.C:
			}
			w.release(id)
		}
	}
}

// wait returns once nothing is pending or in flight, or ctx ends.
func (w *labelWriter) wait(ctx context.Context) error {
	for {
		w.mu.Lock()
		idle := len(w.pending) == 0 && len(w.inflight) == 0
		ch := w.changed
		w.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pendingFor returns a copy of id's labels not yet written (tests, and
// reads that must see the newest record).
func (w *labelWriter) pendingFor(id string) map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.pending[id])
}
