package pool

import (
	"reflect"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	o := JudgeOptions{AdoptGrace: 2 * time.Minute, CreateTimeout: 5 * time.Minute}
	ago := func(d time.Duration) time.Time { return t0.Add(-d) }
	in := func(d time.Duration) time.Time { return t0.Add(d) }
	warm := ContainerView{ID: "c", Profile: "p", State: idepool.StateWarm, Created: true, StartedAt: ago(time.Minute),
		AgentConnected: true, HelloSeen: true}
	claimed := ContainerView{ID: "c", Profile: "p", State: idepool.StateRunning, Claimed: true, Created: true,
		StartedAt: ago(time.Hour), AgentConnected: true, HelloSeen: true}
	starting := ContainerView{ID: "c", Profile: "p", State: idepool.StateStarting, Created: true, StartedAt: ago(time.Minute)}
	with := func(v ContainerView, f func(*ContainerView)) ContainerView { f(&v); return v }
	stop := func(reason string, flush bool) *Verdict {
		return &Verdict{ID: "c", Kind: VerdictStop, Reason: reason, Flush: flush}
	}
	fail := func(msg, backoff string) *Verdict {
		return &Verdict{ID: "c", Kind: VerdictFail, Message: msg, Backoff: backoff}
	}
	lost := func(v *ContainerView) { v.Node, v.NodeDown, v.AgentConnected = "n2", true, false }
	const lostMsg = "node n2 lost (its engine reports it down and the agent is gone)"
	for _, c := range []struct {
		name string
		v    ContainerView
		want *Verdict // nil: nothing to decide
	}{
		{"healthy warm container: nothing", warm, nil},
		{"healthy claimed container: nothing", claimed, nil},
		{"a stopping container is never judged",
			with(claimed, func(v *ContainerView) {
				v.Stopping = true
				v.PreparedUntil = ago(time.Second)
				v.Doomed = ReasonDuplicate
			}), nil},

		// Prepared expiry.
		{"prepared, not yet expired: nothing",
			with(claimed, func(v *ContainerView) { v.PreparedUntil = in(time.Second) }), nil},
		{"prepared, expired this instant: stopped with a flush",
			with(claimed, func(v *ContainerView) { v.PreparedUntil = t0 }), stop(ReasonPrepareExpired, true)},
		{"prepared, expired, agent gone: stopped without a flush",
			with(claimed, func(v *ContainerView) { v.PreparedUntil = ago(time.Second); v.AgentConnected = false }),
			stop(ReasonPrepareExpired, false)},
		{"prepared, expired, its pull failed: never flushed",
			with(claimed, func(v *ContainerView) { v.PreparedUntil = ago(time.Second); v.NoFlush = true }),
			stop(ReasonPrepareExpired, false)},
		{"prepared, expired, already failed: left to the plan",
			with(claimed, func(v *ContainerView) { v.PreparedUntil = ago(time.Second); v.State = idepool.StateFailed }), nil},
		{"prepared expiry goes before doom",
			with(claimed, func(v *ContainerView) { v.PreparedUntil = ago(time.Second); v.Doomed = ReasonDuplicate }),
			stop(ReasonPrepareExpired, true)},

		// Doomed duplicates.
		{"doomed, agent connected: stopped with a flush",
			with(claimed, func(v *ContainerView) { v.Doomed = ReasonDuplicate; v.Recovered = true }), stop(ReasonDuplicate, true)},
		{"doomed, agent connected, pull failed: still flushed (the duplicate's rule)",
			with(claimed, func(v *ContainerView) { v.Doomed = ReasonDuplicate; v.NoFlush = true }), stop(ReasonDuplicate, true)},
		{"doomed, waiting for its agent before the deadline: nothing",
			with(claimed, func(v *ContainerView) {
				v.Doomed = ReasonDuplicate
				v.AgentConnected, v.HelloSeen, v.Recovered = false, false, true
				v.AdoptDeadline = in(time.Second)
			}), nil},
		{"doomed, waiting, at the deadline exactly: nothing yet",
			with(claimed, func(v *ContainerView) {
				v.Doomed = ReasonDuplicate
				v.AgentConnected, v.HelloSeen, v.Recovered = false, false, true
				v.AdoptDeadline = t0
			}), nil},
		{"doomed, agent never came: stopped without a flush",
			with(claimed, func(v *ContainerView) {
				v.Doomed = ReasonDuplicate
				v.AgentConnected, v.HelloSeen, v.Recovered = false, false, true
				v.AdoptDeadline = ago(time.Nanosecond)
			}), stop(ReasonDuplicate, false)},
		{"doomed and waiting hides the hello rule",
			with(claimed, func(v *ContainerView) {
				v.Doomed = ReasonDuplicate
				v.AgentConnected, v.HelloSeen, v.Recovered = false, false, true
				v.AdoptDeadline = in(time.Second)
				v.StartedAt = ago(time.Hour)
			}), nil},

		// Agent gone from a warm container.
		{"warm, agent gone less than the grace: nothing",
			with(warm, func(v *ContainerView) { v.AgentConnected = false; v.GoneAt = ago(o.AdoptGrace - time.Nanosecond) }), nil},
		{"warm, agent gone for the grace: failed",
			with(warm, func(v *ContainerView) { v.AgentConnected = false; v.GoneAt = ago(o.AdoptGrace) }),
			fail("agent gone for 2m0s", "")},
		{"warm, agent never connected (no goneAt): nothing",
			with(warm, func(v *ContainerView) { v.AgentConnected = false }), nil},
		{"claimed, agent gone long ago: not this rule",
			with(claimed, func(v *ContainerView) { v.AgentConnected = false; v.GoneAt = ago(time.Hour) }), nil},

		// Node lost (the engine says its node is down).
		{"claimed on a lost node, agent gone: replaced for its workspace",
			with(claimed, func(v *ContainerView) { lost(v); v.GoneAt = ago(time.Second) }),
			&Verdict{ID: "c", Kind: VerdictReplace, Reason: ReasonNodeLost, Message: lostMsg}},
		{"syncing on a lost node, agent gone: replaced",
			with(claimed, func(v *ContainerView) { lost(v); v.State = idepool.StateSyncing }),
			&Verdict{ID: "c", Kind: VerdictReplace, Reason: ReasonNodeLost, Message: lostMsg}},
		{"cold create on a lost node, never connected: replaced",
			with(starting, func(v *ContainerView) { lost(v); v.Claimed = true }),
			&Verdict{ID: "c", Kind: VerdictReplace, Reason: ReasonNodeLost, Message: lostMsg}},
		{"warm on a lost node, agent gone: failed at once (no grace), the pool refills",
			with(warm, func(v *ContainerView) { lost(v); v.GoneAt = ago(time.Millisecond) }), fail(lostMsg, "")},
		{"starting on a lost node (a ghost): failed at once, not counted against the pool",
			with(starting, func(v *ContainerView) { lost(v) }), fail(lostMsg, "")},
		{"claimed on a lost node whose agent still talks to us: kept",
			with(claimed, func(v *ContainerView) { v.Node, v.NodeDown = "n2", true }), nil},
		{"claimed, agent gone, node not (yet) down: nothing",
			with(claimed, func(v *ContainerView) { v.Node = "n2"; v.AgentConnected = false; v.GoneAt = ago(time.Minute) }), nil},
		{"runtime.Create still running, node lost: its create ends first",
			with(starting, func(v *ContainerView) { lost(v); v.Created = false }), nil},
		{"runtime.Create still running, node drained: its create ends first",
			with(starting, func(v *ContainerView) { v.Node, v.NodeDrained, v.Created = "n2", true, false }), nil},
		{"failed on a lost node: left to the plan",
			with(warm, func(v *ContainerView) { lost(v); v.State = idepool.StateFailed }), nil},
		{"stopping on a lost node: its stop runs",
			with(claimed, func(v *ContainerView) { lost(v); v.Stopping = true }), nil},
		{"doomed duplicate on a lost node: the duplicate's rule",
			with(claimed, func(v *ContainerView) {
				lost(v)
				v.Doomed = ReasonDuplicate
				v.AdoptDeadline = ago(time.Second)
			}), stop(ReasonDuplicate, false)},

		// Node drained (its tasks are being moved).
		{"claimed on a drained node, agent connected: replaced after a flush",
			with(claimed, func(v *ContainerView) { v.Node, v.NodeDrained = "n2", true }),
			&Verdict{ID: "c", Kind: VerdictReplace, Reason: ReasonNodeDrained, Message: "node n2 drained", Flush: true}},
		{"claimed on a drained node, agent gone (flushing on SIGTERM): replaced without our flush",
			with(claimed, func(v *ContainerView) { v.Node, v.NodeDrained, v.AgentConnected = "n2", true, false }),
			&Verdict{ID: "c", Kind: VerdictReplace, Reason: ReasonNodeDrained, Message: "node n2 drained"}},
		{"claimed on a drained node, its pull failed: never flushed",
			with(claimed, func(v *ContainerView) { v.Node, v.NodeDrained, v.NoFlush = "n2", true, true }),
			&Verdict{ID: "c", Kind: VerdictReplace, Reason: ReasonNodeDrained, Message: "node n2 drained"}},
		{"warm on a drained node: failed, the pool refills elsewhere",
			with(warm, func(v *ContainerView) { v.Node, v.NodeDrained = "n2", true }), fail("node n2 drained", "")},
		{"stopping on a drained node: its stop runs",
			with(claimed, func(v *ContainerView) { v.Node, v.NodeDrained, v.Stopping = "n2", true, true }), nil},

		// Adoption deadline.
		{"recovered, no hello, deadline ahead: nothing",
			with(claimed, func(v *ContainerView) {
				v.Recovered, v.HelloSeen, v.AgentConnected = true, false, false
				v.AdoptDeadline = in(time.Minute)
			}), nil},
		{"recovered, no hello, deadline passed: failed",
			with(claimed, func(v *ContainerView) {
				v.Recovered, v.HelloSeen, v.AgentConnected = true, false, false
				v.AdoptDeadline = ago(time.Nanosecond)
			}), fail("agent did not say hello within 2m0s of a restart", "")},
		{"recovered, said hello: nothing",
			with(claimed, func(v *ContainerView) { v.Recovered = true; v.AdoptDeadline = ago(time.Hour) }), nil},

		// Create timeout.
		{"starting within the timeout: nothing", starting, nil},
		{"starting past the timeout: failed, counted against the pool",
			with(starting, func(v *ContainerView) { v.StartedAt = ago(o.CreateTimeout) }),
			fail("not ready within 5m0s: its agent never connected", "not ready in time")},
		{"creating past the timeout: failed",
			with(starting, func(v *ContainerView) { v.State = idepool.StateCreating; v.StartedAt = ago(time.Hour) }),
			fail("not ready within 5m0s: its agent never connected", "not ready in time")},
		{"cold create past the timeout: failed, not counted against the pool",
			with(starting, func(v *ContainerView) { v.Claimed = true; v.StartedAt = ago(time.Hour) }),
			fail("not ready within 5m0s: its agent never connected", "")},
		{"past the timeout, agent went away: says when",
			with(starting, func(v *ContainerView) { v.StartedAt = ago(time.Hour); v.GoneAt = ago(90 * time.Second) }),
			fail("not ready within 5m0s: its agent's connection closed 1m30s ago", "not ready in time")},
		{"past the timeout, agent connected, IDE not answering",
			with(starting, func(v *ContainerView) { v.StartedAt = ago(time.Hour); v.AgentConnected, v.HelloSeen = true, true }),
			fail("not ready within 5m0s: its agent is connected, its workloads do not answer yet", "not ready in time")},
		{"cold create past the timeout, agent ready, assignment not acknowledged",
			with(starting, func(v *ContainerView) {
				v.Claimed, v.StartedAt = true, ago(time.Hour)
				v.AgentConnected, v.HelloSeen, v.AgentReady, v.AssignPending = true, true, true, true
			}),
			fail("not ready within 5m0s: its agent has not acknowledged the assignment", "")},
		{"runtime.Create still running: never timed out here",
			with(starting, func(v *ContainerView) { v.Created = false; v.StartedAt = ago(time.Hour) }), nil},
		{"syncing long after its start: not a create",
			with(claimed, func(v *ContainerView) { v.State = idepool.StateSyncing }), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Judge([]ContainerView{c.v}, t0, o)
			var want []Verdict
			if c.want != nil {
				want = []Verdict{*c.want}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Judge = %+v\nwant    %+v", got, want)
			}
		})
	}
}

func TestJudgeKeepsOrderAndIsPure(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	o := JudgeOptions{AdoptGrace: time.Minute, CreateTimeout: time.Minute}
	views := []ContainerView{
		{ID: "a", State: idepool.StateStarting, Created: true, StartedAt: t0.Add(-time.Hour)},
		{ID: "b", State: idepool.StateWarm, AgentConnected: true},
		{ID: "c", State: idepool.StateRunning, Claimed: true, PreparedUntil: t0, AgentConnected: true},
	}
	before := append([]ContainerView(nil), views...)
	got := Judge(views, t0, o)
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "c" {
		t.Fatalf("Judge = %+v, want verdicts on a then c", got)
	}
	if !reflect.DeepEqual(views, before) {
		t.Error("Judge changed its input")
	}
	if again := Judge(views, t0, o); !reflect.DeepEqual(again, got) {
		t.Errorf("Judge is not deterministic: %+v then %+v", got, again)
	}
}
