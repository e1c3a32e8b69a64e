package pool

import (
	"testing"
	"time"
)

// The agent link's phases give exactly what Judge reads: connected, hello
// seen, when it went, and the adoption deadline (kept only until a hello).
func TestAgentLink(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	deadline := t0.Add(2 * time.Minute)
	type want struct {
		connected, hello bool
		goneAt, deadline time.Time
	}
	for _, c := range []struct {
		name  string
		steps func(l *agentLink)
		want  want
	}{
		{"new container: waiting, nothing set", func(l *agentLink) {}, want{}},
		{"recovered: waiting until the deadline", func(l *agentLink) { l.await(deadline) }, want{deadline: deadline}},
		{"hello clears the deadline", func(l *agentLink) { l.await(deadline); l.up(true) }, want{connected: true, hello: true}},
		{"gone after a hello", func(l *agentLink) { l.up(true); l.lost(t0) }, want{hello: true, goneAt: t0}},
		{"gone twice: the last time counts", func(l *agentLink) { l.up(true); l.lost(t0); l.lost(t0.Add(time.Second)) },
			want{hello: true, goneAt: t0.Add(time.Second)}},
		{"gone before any hello keeps the deadline", func(l *agentLink) { l.await(deadline); l.lost(t0) },
			want{goneAt: t0, deadline: deadline}},
		{"back after going: connected, no goneAt", func(l *agentLink) { l.await(deadline); l.lost(t0); l.up(true) },
			want{connected: true, hello: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var l agentLink
			c.steps(&l)
			got := want{l.connected(), l.helloSeen(), l.goneAt(), l.deadline}
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// The assignment's phases follow the two facts the claim path and the
// agents' feed track: still to acknowledge (pending), a delivery running.
func TestAssignPhase(t *testing.T) {
	type facts struct{ pending, delivering bool }
	for _, c := range []struct {
		name  string
		steps func(p *assignPhase)
		want  facts
	}{
		{"unclaimed: nothing", func(p *assignPhase) {}, facts{}},
		{"cold claim: pending until the agent is ready", func(p *assignPhase) { *p = assignPending }, facts{true, false}},
		{"ready: delivering", func(p *assignPhase) { *p = assignPending; p.startDelivery() }, facts{true, true}},
		{"acknowledged", func(p *assignPhase) { *p = assignDelivering; p.delivered(true) }, facts{}},
		{"delivery failed: pending again", func(p *assignPhase) { *p = assignDelivering; p.delivered(false) }, facts{true, false}},
		{"synced while delivering: acknowledged, delivery still running",
			func(p *assignPhase) { *p = assignDelivering; p.synced() }, facts{false, true}},
		{"synced, then the delivery fails: stays acknowledged",
			func(p *assignPhase) { *p = assignDelivering; p.synced(); p.delivered(false) }, facts{}},
		{"agent lost it mid-delivery: pending again once the delivery ends",
			func(p *assignPhase) { *p = assignDeliveringAcked; p.resend() }, facts{true, true}},
		{"agent lost it: pending", func(p *assignPhase) { p.resend() }, facts{true, false}},
		{"synced when pending", func(p *assignPhase) { *p = assignPending; p.synced() }, facts{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var p assignPhase
			c.steps(&p)
			if got := (facts{p.pending(), p.delivering()}); got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
