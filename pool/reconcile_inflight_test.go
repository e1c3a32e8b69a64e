package pool

import (
	"testing"

	"github.com/idepool/idepool"
)

func TestInFlight(t *testing.T) {
	for _, c := range []struct {
		name    string
		perNode int
		nodes   []idepool.NodeState
		want    int
	}{
		{"no nodes told (one engine, the process runtime)", 8, nil, 8},
		{"one node", 8, []idepool.NodeState{{Name: "a"}}, 8},
		{"three nodes", 8, []idepool.NodeState{{Name: "a"}, {Name: "b"}, {Name: "c"}}, 24},
		{"a down node counts not", 8, []idepool.NodeState{{Name: "a"}, {Name: "b", Down: true}, {Name: "c"}}, 16},
		{"a drained node counts not", 8, []idepool.NodeState{{Name: "a"}, {Name: "b", Drained: true}}, 8},
		{"every node lost: still one node's worth", 8, []idepool.NodeState{{Name: "a", Down: true}}, 8},
		{"per node 0 is taken as 1", 0, []idepool.NodeState{{Name: "a"}, {Name: "b"}}, 2},
	} {
		if got := inFlight(c.perNode, c.nodes); got != c.want {
			t.Errorf("%s: inFlight(%d, …) = %d, want %d", c.name, c.perNode, got, c.want)
		}
	}
}
