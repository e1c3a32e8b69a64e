package httpapi

import (
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// SlowRequest is the duration past which a request is logged at WARN,
// unless it is a stream (websocket, Server-Sent Events) or a long poll
// (?wait=), which are long by design.
const SlowRequest = 5 * time.Second

// accessLevel is the access log's level for one request: DEBUG for what
// went well (a busy server answers thousands), INFO for the client's
// mistakes (4xx), WARN for the server's (5xx) and for slow requests.
func accessLevel(r *http.Request, w http.ResponseWriter, status int, d time.Duration) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelWarn
	case d >= SlowRequest && !longByDesign(r, w, status):
		return slog.LevelWarn
	case status >= 400:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func longByDesign(r *http.Request, w http.ResponseWriter, status int) bool {
	return status == http.StatusSwitchingProtocols || r.URL.Query().Has("wait") ||
		strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream")
}
