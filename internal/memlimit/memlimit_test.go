package memlimit

import (
	"context"
	"log/slog"
	"runtime/debug"
	"testing"
	"time"
)

func TestTarget(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name              string
		configured, inUse uint64
		want              uint64
	}{
		{"small: the configured limit", 96 * mib, 30 * mib, 96 * mib},
		{"a class of 400 (~70 MiB live): still the configured limit", 96 * mib, 70 * mib, 96 * mib},
		{"live near it: a quarter above live", 96 * mib, 84 * mib, 105 * mib},
		{"small live, no configured limit: the least margin", 0, 10 * mib, 26 * mib},
		{"large: a quarter above live", 96 * mib, 400 * mib, 500 * mib},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Target(c.configured, c.inUse); got != c.want {
				t.Errorf("Target(%d MiB, %d MiB) = %.1f MiB, want %d MiB", c.configured/mib, c.inUse/mib, float64(got)/mib, c.want/mib)
			}
		})
	}
}

// TestStartRunRestore: Start puts a limit in force that is at least what
// this process has live (the configured one is below it), a step keeps it
// there, and Run gives back the previous limit when it ends.
func TestStartRunRestore(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	const configured = 1 << 20 // below what any Go process holds live
	l := Start(configured, slog.New(slog.DiscardHandler))
	set := uint64(debug.SetMemoryLimit(-1))
	if set != l.Limit() || set <= configured || set < newSampler().inUse() {
		t.Errorf("limit in force %d bytes (Limit %d): want above configured %d and in use", set, l.Limit(), configured)
	}
	l.step()
	if got := uint64(debug.SetMemoryLimit(-1)); got < configured+minMargin {
		t.Errorf("after a step: limit %d, below configured plus the margin", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l.Run(ctx, time.Hour)
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("after Run: limit %d, want the previous %d", got, before)
	}
}

// TestTwoLimiters: two servers in one process (tests) start and end in
// either order; the limit before both is in force after both.
func TestTwoLimiters(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	log := slog.New(slog.DiscardHandler)
	for _, firstEnds := range []bool{true, false} {
		a := Start(1<<20, log)
		b := Start(1<<20, log)
		if firstEnds {
			a.Run(ctx, time.Hour)
			b.Run(ctx, time.Hour)
		} else {
			b.Run(ctx, time.Hour)
			a.Run(ctx, time.Hour)
		}
		if got := debug.SetMemoryLimit(-1); got != before {
			t.Errorf("first ends %v: limit %d after both, want %d", firstEnds, got, before)
		}
	}
}

func TestInUseCountsStacksAndLiveHeap(t *testing.T) {
	s := newSampler()
	if got := s.inUse(); got == 0 {
		t.Fatal("inUse read nothing")
	}
}
