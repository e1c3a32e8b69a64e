package pool

import (
	"reflect"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

func TestMarkNodes(t *testing.T) {
	views := []ContainerView{{ID: "a", Node: "n1"}, {ID: "b", Node: "n2"}, {ID: "c"}, {ID: "d", Node: "n9", NodeDown: true},
		{ID: "e", Node: "n3"}, {ID: "f", Node: "n4"}}
	MarkNodes(views, []idepool.NodeState{{Name: "n1"}, {Name: "n2", Down: true}, {Name: "n3", Down: true, Drained: true},
		{Name: "n4", Drained: true}})
	type mark struct{ down, drained bool }
	got := map[string]mark{}
	for _, v := range views {
		got[v.ID] = mark{v.NodeDown, v.NodeDrained}
	}
	// n9 is not listed: not judged (the mark of an earlier round is
	// cleared too); a drained node that is down is lost, not drained.
	want := map[string]mark{"a": {}, "b": {down: true}, "c": {}, "d": {}, "e": {down: true}, "f": {drained: true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("marks = %v, want %v", got, want)
	}
}

func TestNodeRecheck(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	gone := ContainerView{ID: "c", State: idepool.StateRunning, Node: "n2", GoneAt: t0.Add(-time.Second)}
	with := func(v ContainerView, f func(*ContainerView)) ContainerView { f(&v); return v }
	for _, c := range []struct {
		name string
		v    ContainerView
		want time.Time
	}{
		{"agent gone on a node still up: look again soon", gone, t0.Add(time.Second)},
		{"agent connected: nothing to watch", with(gone, func(v *ContainerView) { v.AgentConnected = true; v.GoneAt = time.Time{} }), time.Time{}},
		{"never connected (no goneAt): the create timeout's business", with(gone, func(v *ContainerView) { v.GoneAt = time.Time{} }), time.Time{}},
		{"node already down: Judge acts, nothing to wait for", with(gone, func(v *ContainerView) { v.NodeDown = true }), time.Time{}},
		{"no node (one machine): nothing", with(gone, func(v *ContainerView) { v.Node = "" }), time.Time{}},
		{"stopping: nothing", with(gone, func(v *ContainerView) { v.Stopping = true }), time.Time{}},
		{"gone just under NodeWatch ago: still watched", with(gone, func(v *ContainerView) { v.GoneAt = t0.Add(-NodeWatch + time.Nanosecond) }), t0.Add(time.Second)},
		{"gone NodeWatch ago: the ticker's business", with(gone, func(v *ContainerView) { v.GoneAt = t0.Add(-NodeWatch) }), time.Time{}},
		{"failed: nothing", with(gone, func(v *ContainerView) { v.State = idepool.StateFailed }), time.Time{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := NodeRecheck([]ContainerView{c.v}, t0, time.Second); !got.Equal(c.want) {
				t.Errorf("NodeRecheck = %v, want %v", got, c.want)
			}
		})
	}
}

func TestAvoidNodes(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	problems := map[string]idepool.NodeImageProblem{
		"n3": {Node: "n3", Error: "No such image: x", RetryAt: t0.Add(time.Minute)},
		"n1": {Node: "n1", Error: "No such image: x", RetryAt: t0.Add(time.Second)},
		"n2": {Node: "n2", Error: "No such image: x", RetryAt: t0}, // retried from now on
	}
	if got, want := AvoidNodes(problems, t0), []string{"n1", "n3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("AvoidNodes = %v, want %v", got, want)
	}
	if got := AvoidNodes(problems, t0.Add(time.Hour)); got != nil {
		t.Errorf("AvoidNodes after every retry = %v, want none", got)
	}
	if got := ImageProblems(problems, t0); len(got) != 2 || got[0].Node != "n1" || got[1].Node != "n3" {
		t.Errorf("ImageProblems = %+v, want n1, n3", got)
	}
}

func TestImageMissing(t *testing.T) {
	for msg, want := range map[string]bool{
		"task rejected: No such image: idepool-ide:test":                    true,
		"task failed: No such image: idepool-ide:test@sha256:abc":           true,
		"task rejected: invalid mount config":                               false,
		"task failed: starting container failed: no such file or directory": false,
		"": false,
	} {
		if got := imageMissing(msg); got != want {
			t.Errorf("imageMissing(%q) = %v, want %v", msg, got, want)
		}
	}
}
