package server

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/idepool/idepool"
)

func TestReachGate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A port nothing listens on: one just closed.
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := gone.Addr().String()
	gone.Close()

	gate := reachGate([]idepool.Profile{
		{Name: "ide", Routes: []idepool.Route{{Name: "code", Port: 8080}, {Name: "web", Port: 3000}}},
		{Name: "batch"}, // no routes: nothing to reach
	})
	for _, c := range []struct {
		name string
		c    idepool.Container
		ok   bool
	}{
		{"first route listening", idepool.Container{ID: "a", Profile: "ide", Endpoints: map[string]string{"code": ln.Addr().String(), "web": closed}}, true},
		{"first route not listening", idepool.Container{ID: "b", Profile: "ide", Endpoints: map[string]string{"code": closed, "web": ln.Addr().String()}}, false},
		{"no endpoint for the first route", idepool.Container{ID: "c", Profile: "ide", Endpoints: map[string]string{"web": ln.Addr().String()}}, false},
		{"a profile without routes", idepool.Container{ID: "d", Profile: "batch"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := gate(t.Context(), c.c)
			if (err == nil) != c.ok {
				t.Errorf("gate: %v, want passing %v", err, c.ok)
			}
		})
	}
}

func TestAllGates(t *testing.T) {
	if allGates(nil, nil) != nil {
		t.Error("no gates: want nil (the pool then checks nothing)")
	}
	var calls []string
	gate := func(name string, err error) func(context.Context, idepool.Container) error {
		return func(context.Context, idepool.Container) error {
			calls = append(calls, name)
			return err
		}
	}
	no := errors.New("not routed")
	if err := allGates(gate("reach", nil), nil, gate("traefik", nil))(t.Context(), idepool.Container{}); err != nil || len(calls) != 2 {
		t.Errorf("both pass: %v after %v", err, calls)
	}
	calls = nil
	if err := allGates(gate("reach", no), gate("traefik", nil))(t.Context(), idepool.Container{}); !errors.Is(err, no) || len(calls) != 1 {
		t.Errorf("the first fails: %v after %v, want it alone asked", err, calls)
	}
}
