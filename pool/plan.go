// Package pool keeps the warm pools of IDE containers and serves claims.
//
// It has two halves. The decisions are pure and table-tested, and know
// nothing of runtimes: Plan turns a snapshot of every pool into the actions
// that bring them to their targets (create n, remove these ids, wake up at
// t); Judge (judge.go) turns views of the containers into verdicts (stop
// this prepared one, fail that one whose agent is gone). Manager carries
// them out. It is a few parts on one state (state.go: the in-memory view of
// every container and its one lock, changed through named transitions):
// the claimer serves claims exactly once (Start, claim.go), the queue and
// the preparer bind containers to waiting and coming starts, the
// reconciler rebuilds the view from runtime labels (Recover) and observes,
// judges, plans and acts (ReconcileOnce, Run), the agent feed follows the
// agents' reports, and the stopper flushes and removes.
//
// A claim, top to bottom: Manager.Start → claimer.startOrQueue → register
// (findLocked: the workspace's container, or a warm one taken and bound
// under one hold of the lock: state.take, state.bind) → claim → finishWarm
// → completeWarm (the agent's assignment, paced; the claim's labels in the
// runtime).
//
// For the classroom minute (300 starts at 10:00): a start that finds no warm
// container and no capacity waits in a FIFO admission queue per profile
// (queue.go; the next container to become warm goes to the head of the
// queue before the pool); EffectiveTarget (target.go, pure) raises a pool
// ahead of scheduled windows and follows demand between adaptive bounds;
// Prepare binds containers to workspaces before their starts; Replace swaps
// an unhealthy claimed container for a new one on the same workspace.
package pool

import (
	"sort"
	"time"

	"github.com/idepool/idepool"
)

// Backoff timing of failed creates: the delay doubles from BackoffBase up to
// BackoffMax. The caller adds jitter.
const (
	BackoffBase = time.Second
	BackoffMax  = 5 * time.Minute
)

// BackoffDelay is how long to hold refills back after the given number of
// consecutive failed creates (0 → no delay).
func BackoffDelay(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	if failures > 20 { // 2^20 s is far past the cap; avoid overflow
		return BackoffMax
	}
	d := BackoffBase << (failures - 1)
	if d > BackoffMax {
		return BackoffMax
	}
	return d
}

// Backoff is a pool's state after failed creates.
type Backoff struct {
	// Failures counts consecutive failed creates; a container that becomes
	// ready resets it.
	Failures int
	// NextCreate is the earliest time a create may be attempted.
	NextCreate time.Time
}

// WarmInfo is one warm container as the planner sees it.
type WarmInfo struct {
	ID        string
	CreatedAt time.Time
}

// ProfileSnapshot is one pool at a moment.
type ProfileSnapshot struct {
	Profile string
	// Target is how many warm containers to keep.
	Target int
	// MaxAge recycles warm containers older than this; zero means never.
	MaxAge time.Duration
	// Warm containers, in any order.
	Warm []WarmInfo
	// InFlight counts unclaimed containers being created or started: they
	// will be warm soon, so they count toward the target.
	InFlight int
	// Failed ids are removed.
	Failed []string
	// Claimed counts containers bound to a workspace (information only).
	Claimed int
	// Headroom is how many more containers capacity admits; -1 means no
	// limit.
	Headroom int
	Backoff  Backoff
	// Queued counts starts waiting in the admission queue: each needs a
	// container to become warm, on top of Target.
	Queued int
}

// Snapshot is every pool at one moment.
type Snapshot struct {
	Now      time.Time
	Profiles []ProfileSnapshot
	// Pressure: capacity refused a create for a waiting start. Then only
	// creates for waiting starts are planned; warm refills wait.
	Pressure bool
}

// CreateAction asks for N new warm containers of a profile.
type CreateAction struct {
	Profile string
	N       int
	// ForQueue of the N serve waiting starts (admission is asked for them
	// as for a cold start, before refills).
	ForQueue int
}

// RemoveAction asks to remove one container.
type RemoveAction struct {
	ID      string
	Profile string
	Reason  string // idepool.ReasonFailed, ReasonExcess, ReasonMaxAge
}

// Actions is what a plan asks the executor to do.
type Actions struct {
	Creates []CreateAction
	// Removes lists failed containers first, then expired and excess warm
	// ones, oldest first.
	Removes []RemoveAction
	// WakeAt is when the plan should run again even if nothing happens
	// (end of a backoff, a warm container reaching its maximum age); zero
	// means no need.
	WakeAt time.Time
}

// Plan turns a snapshot into actions. It is pure: same snapshot, same
// actions.
func Plan(s Snapshot) Actions {
	var a Actions
	wake := func(t time.Time) {
		if !t.IsZero() && (a.WakeAt.IsZero() || t.Before(a.WakeAt)) {
			a.WakeAt = t
		}
	}
	// Failed containers of every pool go first: they hold capacity.
	for _, p := range s.Profiles {
		failed := append([]string(nil), p.Failed...)
		sort.Strings(failed)
		for _, id := range failed {
			a.Removes = append(a.Removes, RemoveAction{ID: id, Profile: p.Profile, Reason: idepool.ReasonFailed})
		}
	}
	for _, p := range s.Profiles {
		warm := append([]WarmInfo(nil), p.Warm...)
		sort.Slice(warm, func(i, j int) bool {
			if !warm[i].CreatedAt.Equal(warm[j].CreatedAt) {
				return warm[i].CreatedAt.Before(warm[j].CreatedAt)
			}
			return warm[i].ID < warm[j].ID
		})
		// Expired warm containers are recycled: removed here, replaced by
		// the creates below.
		kept := warm[:0:0]
		for _, w := range warm {
			if p.MaxAge > 0 && !s.Now.Before(w.CreatedAt.Add(p.MaxAge)) {
				a.Removes = append(a.Removes, RemoveAction{ID: w.ID, Profile: p.Profile, Reason: idepool.ReasonMaxAge})
				continue
			}
			kept = append(kept, w)
		}
		queued := max(p.Queued, 0)
		target := max(p.Target, 0) + queued
		inFlight := max(p.InFlight, 0)
		// Too many: remove the oldest warm ones. Creates in flight do not
		// push ready containers out (they may never become ready); if they
		// make the pool too big, they go once warm.
		excess := len(kept) - target
		for excess > 0 && len(kept) > 0 {
			a.Removes = append(a.Removes, RemoveAction{ID: kept[0].ID, Profile: p.Profile, Reason: idepool.ReasonExcess})
			kept = kept[1:]
			excess--
		}
		if p.MaxAge > 0 {
			for _, w := range kept {
				wake(w.CreatedAt.Add(p.MaxAge))
			}
		}
		need := target - len(kept) - inFlight
		if need <= 0 {
			continue
		}
		forQueue := min(max(queued-len(kept)-inFlight, 0), need)
		if s.Pressure || queued > 0 {
			// While starts wait, every create serves one of them: the
			// engines start containers at a bounded rate, and refills made
			// beside the waiting starts' creates only delay those. The
			// refill follows once the queue is served.
			need = forQueue
		}
		if s.Now.Before(p.Backoff.NextCreate) {
			wake(p.Backoff.NextCreate)
			continue
		}
		if p.Headroom >= 0 && need > p.Headroom {
			need = p.Headroom
		}
		forQueue = min(forQueue, need)
		if need > 0 {
			a.Creates = append(a.Creates, CreateAction{Profile: p.Profile, N: need, ForQueue: forQueue})
		}
	}
	return a
}
