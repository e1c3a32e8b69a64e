package pool

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// With a RouteGate (Traefik), a ready container joins the pool only once
// the router routes it, so a claim never waits for the router's refresh.
func TestRouteGateHoldsWarmUntilRouted(t *testing.T) {
	synctest.Test(t, testRouteGateHoldsWarmUntilRouted)
}

func testRouteGateHoldsWarmUntilRouted(t *testing.T) {
	var routed atomic.Bool
	var probes atomic.Int32
	h := newHarness(t, setup{profiles: []idepool.Profile{testProfile(idepool.DefaultProfile, 2)},
		opts: func(o *Options) {
			o.RouteGate = func(ctx context.Context, c idepool.Container) error {
				probes.Add(1)
				if !routed.Load() {
					return errors.New("router answers 404")
				}
				return nil
			}
		}})
	h.reconcile()
	deadline := time.Now().Add(10 * time.Second)
	for probes.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p := h.pool(idepool.DefaultProfile); p.Warm != 0 || p.Starting != 2 {
		t.Fatalf("before routing: %+v, want 0 warm, 2 starting", p)
	}
	routed.Store(true)
	for time.Now().Before(deadline) {
		if p := h.pool(idepool.DefaultProfile); p.Warm == 2 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("after routing: %+v, want 2 warm", h.pool(idepool.DefaultProfile))
}
