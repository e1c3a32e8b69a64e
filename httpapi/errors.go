package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/idepool/idepool"
)

// ErrorBody is the error envelope, the original's shape.
type ErrorBody struct {
	Error     ErrorDetail `json:"error"`
	Timestamp string      `json:"timestamp"`
	Path      string      `json:"path"`
}

// ErrorDetail is the inside of the envelope.
type ErrorDetail struct {
	Code    idepool.Code   `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
	// RetryAfter and ResetTime repeat details.retryAfter and
	// details.resetTime of a 429 where the original's clients read them.
	RetryAfter *int64 `json:"retryAfter,omitempty"`
	ResetTime  string `json:"resetTime,omitempty"`
}

// timestamp formats t as JavaScript's toISOString does, like the original.
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// WriteError answers err in the API's envelope (for parts mounted
// elsewhere, such as the event stream).
func (s *Server) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	securityHeaders(w.Header())
	s.writeError(w, r, err)
}

// writeError answers err in the envelope. Non-idepool errors become a bare
// INTERNAL_ERROR; their text (which may hold internals) is only logged.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := idepool.ErrorCode(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		code = idepool.EClientClosed
	}
	status := code.HTTPStatus()
	msg := idepool.ErrorMessage(err)
	if code == idepool.EClientClosed {
		msg = "client closed the request"
	}
	if status >= 500 {
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("request_id", RequestID(r.Context())), slog.String("code", string(code)), slog.String("error", err.Error()))
	}
	if code == idepool.EUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="idepool"`)
	}
	d := ErrorDetail{Code: code, Message: msg, Details: idepool.ErrorDetails(err)}
	if code == idepool.ERateLimited {
		if n, ok := d.Details["retryAfter"].(int64); ok {
			d.RetryAfter = &n
		}
		d.ResetTime, _ = d.Details["resetTime"].(string)
	}
	s.writeJSON(w, status, ErrorBody{Error: d, Timestamp: timestamp(s.clock.Now()), Path: r.URL.Path})
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Our own types always marshal; this is a programming error.
		s.log.Error("encode response", slog.String("error", err.Error()))
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"INTERNAL_ERROR","message":"internal error"}}`)
	}
	writeJSONBody(w, status, b)
}

// writeJSONBody answers b, a JSON document, with its line end.
func writeJSONBody(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
