package pool

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// recordingSetter records SetLabels calls; a call for a blocked id waits
// for release, and failing ids fail once.
type recordingSetter struct {
	mu      sync.Mutex
	calls   []map[string]string
	ids     []string
	block   chan struct{}
	blockID string
	failing map[string]bool
}

func (r *recordingSetter) SetLabels(ctx context.Context, id string, l map[string]string) error {
	r.mu.Lock()
	r.calls = append(r.calls, maps.Clone(l))
	r.ids = append(r.ids, id)
	block := r.block
	wait := id == r.blockID
	fail := r.failing[id]
	delete(r.failing, id)
	r.mu.Unlock()
	if wait {
		<-block
	}
	switch {
	case fail:
		return errors.New("engine busy")
	case id == "gone":
		return idepool.Errorf(idepool.ENotFound, "container gone not found")
	}
	return nil
}

// TestLabelWriterCoalesces: labels queued for a container while its write
// is in flight become one more write with the newest value of each label;
// a failed write is retried with what came since; a removed container's
// write is dropped.
func TestLabelWriterCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := &recordingSetter{block: make(chan struct{}), blockID: "a", failing: map[string]bool{"b": true}}
		w := newLabelWriter(rs, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute, false)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w.start(ctx)
		w.queue("a", map[string]string{"x": "1"})
		synctest.Wait() // a's first write is in flight, blocked
		w.queue("a", map[string]string{"x": "2", "y": "1"})
		w.queue("a", map[string]string{"y": "", "z": "3"})
		w.queue("b", map[string]string{"k": "1"})
		synctest.Wait()
		w.queue("b", map[string]string{"k": "2"}) // while b's failed write waits for its retry
		w.queue("gone", map[string]string{"k": "1"})
		close(rs.block)
		if err := w.wait(ctx); err != nil {
			t.Fatal(err)
		}
		got := map[string][]map[string]string{}
		for i, id := range rs.ids {
			got[id] = append(got[id], rs.calls[i])
		}
		want := map[string][]map[string]string{
			"a":    {{"x": "1"}, {"x": "2", "y": "", "z": "3"}},
			"b":    {{"k": "1"}, {"k": "2"}},
			"gone": {{"k": "1"}},
		}
		for id, calls := range want {
			if len(got[id]) != len(calls) {
				t.Fatalf("%s: writes %v, want %v", id, got[id], calls)
			}
			for i := range calls {
				if !maps.Equal(got[id][i], calls[i]) {
					t.Fatalf("%s write %d: %v, want %v", id, i, got[id][i], calls[i])
				}
			}
		}
	})
}

// TestLabelWriterHold: the fault point writes nothing and Close does not
// wait for it.
func TestLabelWriterHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rs := &recordingSetter{}
		w := newLabelWriter(rs, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute, true)
		ctx, cancel := context.WithCancel(context.Background())
		w.start(ctx)
		w.queue("a", map[string]string{"x": "1"})
		synctest.Wait()
		if len(rs.calls) != 0 || w.pendingFor("a")["x"] != "1" {
			t.Fatalf("calls %v, pending %v", rs.calls, w.pendingFor("a"))
		}
		cancel()
		w.workers.Wait()
	})
}
