package events

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// DefaultHeartbeat is how often an idle SSE stream sends a comment line,
// so proxies keep it open and clients notice a dead server.
const DefaultHeartbeat = 15 * time.Second

// HandlerOptions configure the SSE handler.
type HandlerOptions struct {
	// Heartbeat is the interval of ": heartbeat" comments (default 15 s).
	Heartbeat time.Duration
	// Error answers a bad request (the HTTP API's error envelope); nil
	// writes a plain-text 400/503.
	Error func(w http.ResponseWriter, r *http.Request, err error)
	// Retry is the reconnection delay suggested to clients (default 3 s).
	Retry time.Duration
}

// Handler returns the SSE endpoint for GET /api/events.
//
// Resume: the Last-Event-ID header (sent by EventSource on reconnect), else
// the ?after= query parameter, else only live events. Filters: ?type= (comma
// separated, repeatable; a trailing * matches a prefix, "container.*") and
// ?container=<id>. The EventLagged marker is always sent. The stream ends
// with the request's context or when the Bus closes.
func (b *Bus) Handler(o HandlerOptions) http.Handler {
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Retry <= 0 {
		o.Retry = 3 * time.Second
	}
	if o.Error == nil {
		o.Error = writeError
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			o.Error(w, r, idepool.Errorf(idepool.EMethodNotAllowed, "method %s not allowed", r.Method))
			return
		}
		f, after, err := parseStreamRequest(r, b.LastID())
		if err != nil {
			o.Error(w, r, err)
			return
		}
		ch, err := b.Subscribe(r.Context(), after)
		if err != nil {
			if err == ErrClosed {
				err = idepool.Errorf(idepool.EUnavailable, "shutting down")
			}
			o.Error(w, r, err)
			return
		}
		rc := http.NewResponseController(w)
		// The server's WriteTimeout must not cut a long-lived stream.
		_ = rc.SetWriteDeadline(time.Time{})
		h := w.Header()
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		if _, err := w.Write([]byte("retry: " + strconv.FormatInt(o.Retry.Milliseconds(), 10) + "\n\n")); err != nil {
			return
		}
		_ = rc.Flush()

		tick := time.NewTicker(o.Heartbeat)
		defer tick.Stop()
		var buf []byte
		for {
			select {
			case e, ok := <-ch:
				if !ok {
					return
				}
				buf = buf[:0]
				if f.match(e) {
					buf = appendEvent(buf, e)
				}
				// Write what is already queued with one flush.
			drain:
				for len(buf) < 64<<10 {
					select {
					case e, ok = <-ch:
						if !ok {
							break drain
						}
						if f.match(e) {
							buf = appendEvent(buf, e)
						}
					default:
						break drain
					}
				}
				if len(buf) > 0 {
					if _, err := w.Write(buf); err != nil {
						return
					}
					if err := rc.Flush(); err != nil {
						return
					}
				}
				if !ok {
					return
				}
			case <-tick.C:
				if _, err := w.Write([]byte(": heartbeat\n\n")); err != nil {
					return
				}
				if err := rc.Flush(); err != nil {
					return
				}
			case <-r.Context().Done():
				return
			}
		}
	})
}

// writeError answers err in the API's error envelope
// ({"error":{"code","message"},"timestamp","path"}) when no Error is given.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadRequest
	switch idepool.ErrorCode(err) {
	case idepool.EUnavailable:
		status = http.StatusServiceUnavailable
	case idepool.EMethodNotAllowed:
		status = http.StatusMethodNotAllowed
	}
	body, _ := json.Marshal(map[string]any{
		"error":     map[string]any{"code": idepool.ErrorCode(err), "message": idepool.ErrorMessage(err)},
		"timestamp": time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		"path":      r.URL.Path,
	})
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// filter selects the events a stream shows.
type filter struct {
	types     []string // exact, or prefix when ending in *
	container string
}

func (f filter) match(e idepool.Event) bool {
	if e.Type == EventLagged {
		return true
	}
	if f.container != "" && e.ContainerID != f.container {
		return false
	}
	if len(f.types) == 0 {
		return true
	}
	for _, t := range f.types {
		if p, ok := strings.CutSuffix(t, "*"); ok {
			if strings.HasPrefix(string(e.Type), p) {
				return true
			}
		} else if string(e.Type) == t {
			return true
		}
	}
	return false
}

// parseStreamRequest reads the resume point and filters. Without
// Last-Event-ID or ?after, a stream starts with live events (after last).
func parseStreamRequest(r *http.Request, last uint64) (filter, uint64, error) {
	q := r.URL.Query()
	var f filter
	for _, v := range q["type"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				if len(t) > 64 {
					return f, 0, idepool.Errorf(idepool.EInvalid, "type: too long")
				}
				f.types = append(f.types, t)
			}
		}
	}
	if len(f.types) > 32 {
		return f, 0, idepool.Errorf(idepool.EInvalid, "type: at most 32 values")
	}
	if c := q.Get("container"); c != "" {
		if !idepool.ValidID(c) {
			return f, 0, idepool.Errorf(idepool.EInvalid, "container %q is not a container id", c)
		}
		f.container = c
	}
	after := last
	src, raw := "", ""
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		src, raw = "Last-Event-ID", v
	} else if v := q.Get("after"); v != "" {
		src, raw = "after", v
	}
	if raw != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return f, 0, idepool.Errorf(idepool.EInvalid, "%s %q: want an event id (a non-negative integer)", src, raw)
		}
		after = n
	}
	return f, after, nil
}

// appendEvent writes one SSE message. JSON never holds a raw newline, so
// one data line suffices.
func appendEvent(buf []byte, e idepool.Event) []byte {
	data, err := json.Marshal(e)
	if err != nil {
		// Data holds something JSON cannot encode; keep the stream valid.
		e.Data = map[string]any{"error": "unencodable data"}
		data, _ = json.Marshal(e)
	}
	if e.ID > 0 {
		buf = append(buf, "id: "...)
		buf = strconv.AppendUint(buf, e.ID, 10)
		buf = append(buf, '\n')
	}
	buf = append(buf, "event: "...)
	buf = append(buf, e.Type...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	buf = append(buf, "\n\n"...)
	return buf
}
