package events

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSSEBadRequestsInEnvelope: without an Error option, bad parameters
// are still answered in the API's JSON envelope, never text/plain.
func TestSSEBadRequestsInEnvelope(t *testing.T) {
	b := New(Options{})
	defer b.Close()
	h := b.Handler(HandlerOptions{})
	for _, c := range []struct {
		target, lastID string
		status         int
	}{
		{"/api/events?after=x", "", 400},
		{"/api/events?type=" + strings.Repeat("t", 65), "", 400},
		{"/api/events?container=not%20an%20id", "", 400},
		{"/api/events", "yesterday", 400},
	} {
		req := httptest.NewRequest(http.MethodGet, c.target, nil)
		if c.lastID != "" {
			req.Header.Set("Last-Event-ID", c.lastID)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var env struct {
			Error struct{ Code, Message string } `json:"error"`
			Path  string                         `json:"path"`
		}
		err := json.Unmarshal(w.Body.Bytes(), &env)
		if w.Code != c.status || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") || err != nil ||
			env.Error.Code == "" || env.Error.Message == "" || env.Path != "/api/events" {
			t.Errorf("%s (Last-Event-ID %q): %d %s %s", c.target, c.lastID, w.Code, w.Header().Get("Content-Type"), w.Body.String())
		}
	}
}
