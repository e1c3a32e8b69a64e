package dashboard

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// handleStream is the live view's SSE stream:
//
//	event: snapshot   the whole view (pools, charts, containers, resources)
//	event: log        one idepool.Event, with its id (for Last-Event-ID)
//	event: signout    the session ended; the page goes to the sign-in form
//
// A snapshot follows events promptly (coalesced) and comes at least every
// SnapshotEvery, so ages and charts move even when nothing happens.
func (d *Dashboard) handleStream(w http.ResponseWriter, r *http.Request, s *session) {
	select {
	case <-d.closing:
		writeJSONError(w, http.StatusServiceUnavailable, "shutting down")
		return
	default:
	}
	if !d.acquireStream() {
		writeJSONError(w, http.StatusServiceUnavailable, "too many live views open")
		return
	}
	defer d.releaseStream()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	var evs <-chan idepool.Event
	if d.o.Events != nil {
		after := d.o.Events.LastID()
		raw := r.Header.Get("Last-Event-ID")
		if raw == "" {
			raw = r.URL.Query().Get("after")
		}
		if raw != "" {
			if n, err := strconv.ParseUint(strings.TrimSpace(raw), 10, 64); err == nil {
				after = n
			}
		}
		ch, err := d.o.Events.Subscribe(ctx, after)
		if err != nil {
			d.log.Warn("dashboard: no event log for a live view", "error", err.Error())
		} else {
			evs = ch
		}
	}

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a long-lived stream
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var buf []byte
	send := func() bool {
		if len(buf) == 0 {
			return true
		}
		_, err := w.Write(buf)
		buf = buf[:0]
		return err == nil && rc.Flush() == nil
	}
	snap := func() {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		buf = appendSSE(buf, "", "snapshot", d.snapshot(sctx))
		scancel()
	}
	buf = append(buf, "retry: 3000\n\n"...)
	snap()
	if !send() {
		return
	}
	last := d.clock.Now()
	dirty := false
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.closing:
			return
		case e, ok := <-evs:
			if !ok {
				evs = nil // the bus closed: keep refreshing without a log
				continue
			}
			buf = appendSSE(buf, strconv.FormatUint(e.ID, 10), "log", e)
			dirty = true
			// Write what is queued with one flush.
		drain:
			for len(buf) < 64<<10 {
				select {
				case e, ok = <-evs:
					if !ok {
						evs = nil
						break drain
					}
					buf = appendSSE(buf, strconv.FormatUint(e.ID, 10), "log", e)
				default:
					break drain
				}
			}
			if !send() {
				return
			}
		case <-tick.C:
			if !d.sessions.valid(s) {
				buf = append(buf, "event: signout\ndata: {}\n\n"...)
				send()
				return
			}
			now := d.clock.Now()
			if dirty || now.Sub(last) >= d.o.SnapshotEvery || now.Before(last) {
				snap()
				if !send() {
					return
				}
				last, dirty = now, false
			}
		}
	}
}

// appendSSE writes one message; JSON holds no raw newline, so one data
// line suffices.
func appendSSE(buf []byte, id, event string, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		data = []byte(`{"error":"unencodable"}`)
	}
	if id != "" && id != "0" {
		buf = append(buf, "id: "...)
		buf = append(buf, id...)
		buf = append(buf, '\n')
	}
	buf = append(buf, "event: "...)
	buf = append(buf, event...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}

func (d *Dashboard) acquireStream() bool {
	d.streamsMu.Lock()
	defer d.streamsMu.Unlock()
	if d.streams >= d.o.MaxStreams {
		return false
	}
	d.streams++
	return true
}

func (d *Dashboard) releaseStream() {
	d.streamsMu.Lock()
	d.streams--
	d.streamsMu.Unlock()
}
