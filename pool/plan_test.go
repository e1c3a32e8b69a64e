package pool

import (
	"reflect"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

func TestBackoffDelay(t *testing.T) {
	for _, c := range []struct {
		failures int
		want     time.Duration
	}{
		{-1, 0}, {0, 0}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second},
		{8, 128 * time.Second}, {9, 256 * time.Second}, {10, 5 * time.Minute}, {64, 5 * time.Minute}, {1 << 30, 5 * time.Minute},
	} {
		if got := BackoffDelay(c.failures); got != c.want {
			t.Errorf("BackoffDelay(%d) = %v, want %v", c.failures, got, c.want)
		}
	}
}

func TestPlan(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	w := func(id string, ageMin int) WarmInfo {
		return WarmInfo{ID: id, CreatedAt: t0.Add(-time.Duration(ageMin) * time.Minute)}
	}
	rm := func(id, reason string) RemoveAction { return RemoveAction{ID: id, Profile: "p", Reason: reason} }
	cr := func(n int) []CreateAction { return []CreateAction{{Profile: "p", N: n}} }
	for _, c := range []struct {
		name string
		p    ProfileSnapshot
		want Actions
	}{
		{name: "empty pool fills to target",
			p:    ProfileSnapshot{Target: 5, Headroom: -1},
			want: Actions{Creates: cr(5)}},
		{name: "at target does nothing",
			p:    ProfileSnapshot{Target: 2, Headroom: -1, Warm: []WarmInfo{w("a", 1), w("b", 2)}},
			want: Actions{}},
		{name: "in-flight creates count toward the target",
			p:    ProfileSnapshot{Target: 5, Headroom: -1, Warm: []WarmInfo{w("a", 1)}, InFlight: 3},
			want: Actions{Creates: cr(1)}},
		{name: "in flight at target: no overshoot",
			p:    ProfileSnapshot{Target: 3, Headroom: -1, InFlight: 3},
			want: Actions{}},
		{name: "claimed containers do not count",
			p:    ProfileSnapshot{Target: 2, Headroom: -1, Claimed: 40},
			want: Actions{Creates: cr(2)}},
		{name: "target drop removes oldest warm first",
			p:    ProfileSnapshot{Target: 1, Headroom: -1, Warm: []WarmInfo{w("young", 1), w("old", 9), w("mid", 5)}},
			want: Actions{Removes: []RemoveAction{rm("old", idepool.ReasonExcess), rm("mid", idepool.ReasonExcess)}}},
		{name: "target zero removes all warm",
			p:    ProfileSnapshot{Target: 0, Headroom: -1, Warm: []WarmInfo{w("a", 1), w("b", 2)}},
			want: Actions{Removes: []RemoveAction{rm("b", idepool.ReasonExcess), rm("a", idepool.ReasonExcess)}}},
		{name: "creates in flight do not push ready warm out",
			p:    ProfileSnapshot{Target: 2, Headroom: -1, Warm: []WarmInfo{w("a", 1), w("b", 2)}, InFlight: 1},
			want: Actions{}},
		{name: "more in flight than target: warm at target kept, nothing created",
			p:    ProfileSnapshot{Target: 1, Headroom: -1, Warm: []WarmInfo{w("a", 1)}, InFlight: 3},
			want: Actions{}},
		{name: "target drop with creates in flight removes warm beyond target",
			p:    ProfileSnapshot{Target: 1, Headroom: -1, Warm: []WarmInfo{w("a", 1), w("b", 2), w("c", 3)}, InFlight: 2},
			want: Actions{Removes: []RemoveAction{rm("c", idepool.ReasonExcess), rm("b", idepool.ReasonExcess)}}},
		{name: "failed removed first and replaced",
			p:    ProfileSnapshot{Target: 2, Headroom: -1, Warm: []WarmInfo{w("a", 1)}, Failed: []string{"z", "f"}},
			want: Actions{Removes: []RemoveAction{rm("f", idepool.ReasonFailed), rm("z", idepool.ReasonFailed)}, Creates: cr(1)}},
		{name: "equal ages break ties by id",
			p:    ProfileSnapshot{Target: 1, Headroom: -1, Warm: []WarmInfo{w("b", 3), w("a", 3)}},
			want: Actions{Removes: []RemoveAction{rm("a", idepool.ReasonExcess)}}},
		{name: "max age recycles old warm and replaces them",
			p: ProfileSnapshot{Target: 3, Headroom: -1, MaxAge: 60 * time.Minute,
				Warm: []WarmInfo{w("old", 61), w("edge", 60), w("new", 10)}},
			want: Actions{Removes: []RemoveAction{rm("old", idepool.ReasonMaxAge), rm("edge", idepool.ReasonMaxAge)},
				Creates: cr(2), WakeAt: t0.Add(50 * time.Minute)}},
		{name: "max age sets the wake-up at the next expiry",
			p:    ProfileSnapshot{Target: 2, Headroom: -1, MaxAge: time.Hour, Warm: []WarmInfo{w("a", 30), w("b", 20)}},
			want: Actions{WakeAt: t0.Add(30 * time.Minute)}},
		{name: "backoff holds creates and wakes at its end",
			p:    ProfileSnapshot{Target: 4, Headroom: -1, Backoff: Backoff{Failures: 3, NextCreate: t0.Add(4 * time.Second)}},
			want: Actions{WakeAt: t0.Add(4 * time.Second)}},
		{name: "backoff over creates again",
			p:    ProfileSnapshot{Target: 4, Headroom: -1, Backoff: Backoff{Failures: 3, NextCreate: t0}},
			want: Actions{Creates: cr(4)}},
		{name: "backoff does not hold removals",
			p: ProfileSnapshot{Target: 4, Headroom: -1, Failed: []string{"f"},
				Backoff: Backoff{Failures: 1, NextCreate: t0.Add(time.Second)}},
			want: Actions{Removes: []RemoveAction{rm("f", idepool.ReasonFailed)}, WakeAt: t0.Add(time.Second)}},
		{name: "backoff without need sets no wake-up",
			p:    ProfileSnapshot{Target: 1, Headroom: -1, Warm: []WarmInfo{w("a", 1)}, Backoff: Backoff{Failures: 2, NextCreate: t0.Add(time.Minute)}},
			want: Actions{}},
		{name: "headroom caps creates",
			p:    ProfileSnapshot{Target: 10, Headroom: 3},
			want: Actions{Creates: cr(3)}},
		{name: "no headroom no creates",
			p:    ProfileSnapshot{Target: 10, Headroom: 0},
			want: Actions{}},
		{name: "negative target treated as zero",
			p:    ProfileSnapshot{Target: -3, Headroom: -1, Warm: []WarmInfo{w("a", 1)}},
			want: Actions{Removes: []RemoveAction{rm("a", idepool.ReasonExcess)}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.p.Profile = "p"
			got := Plan(Snapshot{Now: t0, Profiles: []ProfileSnapshot{c.p}})
			if !reflect.DeepEqual(norm(got), norm(c.want)) {
				t.Errorf("Plan:\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestPlanSeveralProfilesFailedFirst(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	got := Plan(Snapshot{Now: t0, Profiles: []ProfileSnapshot{
		{Profile: "a", Target: 0, Headroom: -1, Warm: []WarmInfo{{ID: "a1", CreatedAt: t0}}},
		{Profile: "b", Target: 2, Headroom: -1, Failed: []string{"b9"}},
	}})
	want := Actions{
		Removes: []RemoveAction{{ID: "b9", Profile: "b", Reason: idepool.ReasonFailed}, {ID: "a1", Profile: "a", Reason: idepool.ReasonExcess}},
		Creates: []CreateAction{{Profile: "b", N: 2}},
	}
	if !reflect.DeepEqual(norm(got), norm(want)) {
		t.Errorf("Plan:\n got %+v\nwant %+v", got, want)
	}
}

func TestPlanIsPure(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	warm := []WarmInfo{{ID: "b", CreatedAt: t0}, {ID: "a", CreatedAt: t0.Add(-time.Hour)}}
	failed := []string{"z", "y"}
	s := Snapshot{Now: t0, Profiles: []ProfileSnapshot{{Profile: "p", Target: 0, Headroom: -1, Warm: warm, Failed: failed}}}
	first := Plan(s)
	if warm[0].ID != "b" || failed[0] != "z" {
		t.Fatal("Plan changed its input")
	}
	if again := Plan(s); !reflect.DeepEqual(first, again) {
		t.Fatalf("same snapshot, different actions: %+v vs %+v", first, again)
	}
}

// norm makes nil and empty slices compare equal.
func norm(a Actions) Actions {
	if len(a.Creates) == 0 {
		a.Creates = nil
	}
	if len(a.Removes) == 0 {
		a.Removes = nil
	}
	return a
}
