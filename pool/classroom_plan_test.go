package pool

import (
	"reflect"
	"testing"
	"time"
)

func TestPlanQueueAndPressure(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		s    Snapshot
		want []CreateAction
	}{
		{"while starts wait only their creates are made: the refill follows",
			Snapshot{Now: t0, Profiles: []ProfileSnapshot{{Profile: "p", Target: 2, Queued: 5, Headroom: -1}}},
			[]CreateAction{{Profile: "p", N: 5, ForQueue: 5}}},
		{"creates in flight serve the queue first",
			Snapshot{Now: t0, Profiles: []ProfileSnapshot{{Profile: "p", Target: 2, Queued: 5, InFlight: 4, Headroom: -1}}},
			[]CreateAction{{Profile: "p", N: 1, ForQueue: 1}}},
		{"warm containers serve the queue; nothing is created while they cover it",
			Snapshot{Now: t0, Profiles: []ProfileSnapshot{{Profile: "p", Target: 4, Queued: 2, InFlight: 2, Headroom: -1}}},
			nil},
		{"another pool's refill does not wait for this pool's queue",
			Snapshot{Now: t0, Profiles: []ProfileSnapshot{
				{Profile: "p", Target: 10, Queued: 5, Headroom: -1},
				{Profile: "q", Target: 4, Headroom: -1}}},
			[]CreateAction{{Profile: "p", N: 5, ForQueue: 5}, {Profile: "q", N: 4}}},
		{"the queue served, the refill goes on",
			Snapshot{Now: t0, Profiles: []ProfileSnapshot{{Profile: "p", Target: 3, Queued: 0, InFlight: 1, Headroom: -1}}},
			[]CreateAction{{Profile: "p", N: 2}}},
		{"headroom caps, queue first",
			Snapshot{Now: t0, Profiles: []ProfileSnapshot{{Profile: "p", Target: 10, Queued: 5, Headroom: 3}}},
			[]CreateAction{{Profile: "p", N: 3, ForQueue: 3}}},
		{"pressure: only creates for waiting starts, other pools wait",
			Snapshot{Now: t0, Pressure: true, Profiles: []ProfileSnapshot{
				{Profile: "p", Target: 10, Queued: 5, Headroom: -1},
				{Profile: "q", Target: 4, Headroom: -1}}},
			[]CreateAction{{Profile: "p", N: 5, ForQueue: 5}}},
		{"backoff holds queue creates too",
			Snapshot{Now: t0, Profiles: []ProfileSnapshot{{Profile: "p", Target: 0, Queued: 5, Headroom: -1,
				Backoff: Backoff{Failures: 1, NextCreate: t0.Add(time.Second)}}}},
			nil},
	} {
		got := Plan(c.s).Creates
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: creates %+v, want %+v", c.name, got, c.want)
		}
	}
}
