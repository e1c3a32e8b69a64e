package httpapi

import (
	"context"
	"net/http"
	"testing"

	"github.com/idepool/idepool"
)

// ConfirmDeletions makes fakeOrch a SyncControl: a known container has 3
// deletions held.
func (o *fakeOrch) ConfirmDeletions(_ context.Context, id string) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.containers[id]; !ok {
		return 0, idepool.Errorf(idepool.ENotFound, "container %q not found", id)
	}
	return 3, nil
}

// noneHeld is a SyncControl with nothing held anywhere.
type noneHeld struct{}

func (noneHeld) ConfirmDeletions(context.Context, string) (int, error) {
	return 0, idepool.Errorf(idepool.EConflict, "no deletions are held")
}

func TestConfirmDeletions(t *testing.T) {
	h := newHarness(t, nil)
	h.orch.mu.Lock()
	h.orch.containers["held0001"] = idepool.Container{ID: "held0001", Profile: "default", State: idepool.StateRunning}
	h.orch.mu.Unlock()
	for _, tc := range []struct {
		name string
		c    call
		code int
		err  idepool.Code
	}{
		{"held", call{method: "POST", path: "/api/containers/held0001/sync/confirm-deletions"}, 200, ""},
		{"alias, empty object", call{method: "POST", path: "/containers/held0001/sync/confirm-deletions", body: `{}`}, 200, ""},
		{"unknown", call{method: "POST", path: "/api/containers/zzzz9999/sync/confirm-deletions"}, 404, idepool.ENotFound},
		{"not an id", call{method: "POST", path: "/api/containers/..%2F/sync/confirm-deletions"}, 404, idepool.ENotFound},
		{"bad JSON", call{method: "POST", path: "/api/containers/held0001/sync/confirm-deletions", body: `{"x":`}, 400, idepool.EInvalid},
		{"not JSON", call{method: "POST", path: "/api/containers/held0001/sync/confirm-deletions", body: `x`, header: map[string]string{"Content-Type": "text/plain"}}, 415, idepool.EUnsupportedMedia},
		{"no key", call{method: "POST", path: "/api/containers/held0001/sync/confirm-deletions", noAuth: true}, 401, ""},
		{"wrong method", call{method: "GET", path: "/api/containers/held0001/sync/confirm-deletions"}, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, m := h.do(t, tc.c)
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			if tc.code == 200 && (m["id"] != "held0001" || m["confirmed"] != float64(3)) {
				t.Fatalf("answer %v", m)
			}
			if tc.code >= 400 {
				if ct := w.Header().Get("Content-Type"); ct != "application/json" && ct != "application/json; charset=utf-8" {
					t.Fatalf("error answered as %q, not the envelope", ct)
				}
				if tc.err != "" {
					if e, _ := m["error"].(map[string]any); e == nil || e["code"] != string(tc.err) {
						t.Fatalf("envelope %v, want code %s", m, tc.err)
					}
				}
			}
		})
	}
	conflict := newHarness(t, func(o *Options) { o.Sync = noneHeld{} })
	w, _ := conflict.do(t, call{method: "POST", path: "/api/containers/held0001/sync/confirm-deletions"})
	if w.Code != http.StatusConflict {
		t.Fatalf("nothing held: %d %s", w.Code, w.Body)
	}
}
