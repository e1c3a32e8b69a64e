package idepool

import (
	"strings"
	"testing"
)

func TestIsRuntimeLabel(t *testing.T) {
	for k, want := range map[string]bool{
		LabelManaged: true, LabelID: true, LabelProfile: true, LabelCreated: true,
		LabelTokenHash: false, LabelBucket: false, LabelGeneration: false, "idepool.other": false, "": false,
	} {
		if got := IsRuntimeLabel(k); got != want {
			t.Errorf("IsRuntimeLabel(%q) = %v, want %v", k, got, want)
		}
	}
}

// TestReservedRouteName: a profile's route may not take a path idepool
// serves itself; the list is ReservedPaths, the one httpapi extends.
func TestReservedRouteName(t *testing.T) {
	for _, name := range []string{"api", "dashboard", "metrics", "agent", "events", "static"} {
		p := Profile{Name: "p", Routes: []Route{{Name: name, Port: 80}}}
		if err := p.Validate(); ErrorCode(err) != EInvalid || !strings.Contains(err.Error(), "is reserved") {
			t.Errorf("route %q: %v", name, err)
		}
	}
	if err := (Profile{Name: "p", Routes: DefaultRoutes()}).Validate(); err != nil {
		t.Errorf("default routes: %v", err)
	}
}
