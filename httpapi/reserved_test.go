package httpapi

import (
	"slices"
	"strings"
	"testing"

	"github.com/idepool/idepool"
)

func TestReservedRouteNames(t *testing.T) {
	got := ReservedRouteNames()
	for _, n := range []string{"api", "containers", "health", "pool", "profiles", "openapi.json", "events", "dashboard", "metrics", "agent", "_auth"} {
		if !slices.Contains(got, n) {
			t.Errorf("%s not reserved: %v", n, got)
		}
	}
	if slices.Contains(got, "") || slices.Contains(got, "{$}") || !slices.IsSorted(got) {
		t.Errorf("reserved %v", got)
	}
}

func TestCheckRouteNames(t *testing.T) {
	prof := func(name string, routes ...string) idepool.Profile {
		p := idepool.Profile{Name: name}
		for i, r := range routes {
			p.Routes = append(p.Routes, idepool.Route{Name: r, Port: 8000 + i})
		}
		return p
	}
	cases := []struct {
		name     string
		profiles []idepool.Profile
		clashes  []string
	}{
		{"defaults", []idepool.Profile{prof("default", "code", "vnc", "web")}, nil},
		{"terminal and lab", []idepool.Profile{prof("default", "code"), prof("ds", "lab", "terminal")}, nil},
		{"containers", []idepool.Profile{prof("default", "code", "containers")}, []string{`"containers"`}},
		{"several", []idepool.Profile{prof("a", "health", "pool"), prof("b", "events", "code")}, []string{`profile a: route "health"`, `profile a: route "pool"`, `profile b: route "events"`}},
		{"profiles and dashboard", []idepool.Profile{prof("a", "profiles", "dashboard")}, []string{`"profiles"`, `"dashboard"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRouteNames(tc.profiles)
			if (err == nil) != (len(tc.clashes) == 0) {
				t.Fatalf("err = %v", err)
			}
			for _, c := range tc.clashes {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("error lacks %s: %v", c, err)
				}
			}
			if err != nil && idepool.ErrorCode(err) != idepool.EMisconfigured {
				t.Errorf("code %s", idepool.ErrorCode(err))
			}
		})
	}
}
