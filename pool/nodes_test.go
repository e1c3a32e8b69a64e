package pool

import (
	"reflect"
	"slices"
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

// TestMarkSilentNodes: a node is judged lost before its engine says so
// only when every agent on it that ever connected has been gone for the
// silence while an agent elsewhere answers.
func TestMarkSilentNodes(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	gone := func(d time.Duration) time.Time { return now.Add(-d) }
	view := func(id, node string, connected bool, goneFor time.Duration) ContainerView {
		v := ContainerView{ID: id, Node: node, State: idepool.StateRunning, AgentConnected: connected}
		if goneFor > 0 {
			v.GoneAt = gone(goneFor)
		}
		return v
	}
	drained := func(v ContainerView) ContainerView { v.NodeDrained = true; return v }
	tests := []struct {
		name   string
		views  []ContainerView
		silent []string // ids judged lost
	}{
		{"every agent on b gone long enough, a answers",
			[]ContainerView{view("a1", "a", true, 0), view("b1", "b", false, 6*time.Second), view("b2", "b", false, 5*time.Second)},
			[]string{"b1", "b2"}},
		{"one agent on b gone too briefly",
			[]ContainerView{view("a1", "a", true, 0), view("b1", "b", false, 6*time.Second), view("b2", "b", false, 2*time.Second)},
			nil},
		{"one agent on b still connected",
			[]ContainerView{view("a1", "a", true, 0), view("b1", "b", false, time.Minute), view("b2", "b", true, 0)},
			nil},
		{"every node silent: idepool's own network, not a node",
			[]ContainerView{view("a1", "a", false, time.Minute), view("b1", "b", false, time.Minute)},
			nil},
		{"one node only",
			[]ContainerView{view("b1", "b", false, time.Minute)},
			nil},
		{"b's container whose agent never connected does not count for or against",
			[]ContainerView{view("a1", "a", true, 0), view("b1", "b", false, time.Minute), view("b2", "b", false, 0)},
			[]string{"b1", "b2"}},
		{"b is drained: its agents leave on purpose",
			[]ContainerView{view("a1", "a", true, 0), drained(view("b1", "b", false, time.Minute))},
			nil},
		{"b has only never-connected agents (creating)",
			[]ContainerView{view("a1", "a", true, 0), view("b1", "b", false, 0)},
			nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			views := slices.Clone(tc.views)
			MarkSilentNodes(views, now, 5*time.Second)
			var got []string
			for _, v := range views {
				if v.NodeDown != v.NodeSilent {
					t.Errorf("%s: NodeDown %v, NodeSilent %v", v.ID, v.NodeDown, v.NodeSilent)
				}
				if v.NodeSilent {
					got = append(got, v.ID)
				}
			}
			if !slices.Equal(got, tc.silent) {
				t.Errorf("judged lost %v, want %v", got, tc.silent)
			}
		})
	}
	// Off: nothing is judged.
	views := []ContainerView{view("a1", "a", true, 0), view("b1", "b", false, time.Hour)}
	MarkSilentNodes(views, now, -1)
	if views[1].NodeDown {
		t.Error("silence off, yet a node was judged lost")
	}
}
