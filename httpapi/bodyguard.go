package httpapi

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// Defaults of the request body guard.
const (
	defaultBodyTimeout = 30 * time.Second
	defaultBodiesPerIP = 128
)

// guardBody bounds what a request body can hold, on every route (API,
// router, dashboard): net/http has no deadline for bodies (only for headers
// unless ReadTimeout, which would also cut websockets, event streams and
// long uploads through the router).
//
//   - Reading a body must make progress: each read gets BodyTimeout, so a
//     stalled body is cut while a slow upload that keeps sending goes on.
//     The deadline goes once the body is read to its end, so long answers
//     (?wait=ready) are not cut.
//   - A refusal (any 4xx/5xx) while the body is unread closes the
//     connection at once. Without this, Go reads up to 256 KiB of the unread
//     body before and after writing the answer, so a client without a key
//     could hold a connection by stalling its body.
//   - One client address may have at most BodiesPerClient bodies being
//     read at once; more are answered 429 and closed.
func (s *Server) guardBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		gb := &guardedBody{src: r.Body, rc: rc, timeout: s.o.BodyTimeout, counter: &s.bodies, client: clientAddr(r.RemoteAddr)}
		defer gb.handlerDone()
		// Covers a handler that never reads its body, and Go's discarding
		// of it afterwards.
		_ = rc.SetReadDeadline(time.Now().Add(s.o.BodyTimeout))
		r2 := r.WithContext(r.Context())
		r2.Body = gb
		next.ServeHTTP(&guardWriter{ResponseWriter: w, body: gb}, r2)
	})
}

// guardedBody is a request body whose reads carry a deadline and count
// against its client's bound. The count starts at the first read, so a
// request refused before it reads its body (no API key) takes no place.
type guardedBody struct {
	src     io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	counter *bodyCounter
	client  string

	mu       sync.Mutex
	counted  bool
	eof      bool // read to its end
	done     bool // the handler returned: the connection may serve another request
	abandons bool // abandoned: reads fail
}

func (b *guardedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if !b.done && !b.eof {
		if !b.counted {
			if !b.counter.acquire(b.client) {
				b.mu.Unlock()
				return 0, &idepool.Error{Code: idepool.ELimitExceeded,
					Message: "too many unfinished request bodies from this address; finish or close the others first",
					Details: map[string]any{"limit": b.counter.max}}
			}
			b.counted = true
		}
		if !b.abandons {
			_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
		}
	}
	b.mu.Unlock()
	n, err := b.src.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		if !b.eof && !b.done {
			b.eof = true
			// Go reads on in the background to notice a client that goes
			// away; a deadline there would cancel the request.
			_ = b.rc.SetReadDeadline(time.Time{})
			b.releaseLocked()
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *guardedBody) Close() error { return b.src.Close() }

func (b *guardedBody) releaseLocked() {
	if b.counted {
		b.counter.release(b.client)
		b.counted = false
	}
}

func (b *guardedBody) handlerDone() {
	b.mu.Lock()
	b.done = true
	b.releaseLocked()
	b.mu.Unlock()
}

// unread reports whether the body was not read to its end.
func (b *guardedBody) unread() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.eof
}

// abandon makes the answer the connection's last and stops waiting for the
// rest of the body: Go would otherwise drain it, before writing the answer
// (Connection: close prevents that) and after (when it closes the body; the
// past deadline makes that read fail at once).
func (b *guardedBody) abandon(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.abandons = true
		_ = b.rc.SetReadDeadline(time.Unix(1, 0))
	}
}

// guardWriter abandons an unread body when the answer is a refusal.
type guardWriter struct {
	http.ResponseWriter
	body    *guardedBody
	written bool
}

func (g *guardWriter) WriteHeader(code int) {
	if !g.written {
		g.written = true
		if code >= 400 && g.body.unread() {
			g.body.abandon(g.ResponseWriter)
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *guardWriter) Write(b []byte) (int, error) {
	g.written = true
	return g.ResponseWriter.Write(b)
}

func (g *guardWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// Flush and Hijack are direct too, for code that type-asserts.
func (g *guardWriter) Flush() { http.NewResponseController(g.ResponseWriter).Flush() }

func (g *guardWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(g.ResponseWriter).Hijack()
	if err == nil {
		// The connection is the hijacker's now, with no body deadline.
		_ = c.SetReadDeadline(time.Time{})
	}
	return c, brw, err
}

// clientAddr is the peer's IP address (the port dropped).
func clientAddr(remote string) string {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().String()
	}
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// bodyCounter counts the bodies being read per client address. Entries go
// when they reach zero, so memory follows the clients in flight.
type bodyCounter struct {
	max int // <= 0: no limit
	mu  sync.Mutex
	n   map[string]int
}

func (c *bodyCounter) acquire(addr string) bool {
	if c.max <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[addr] >= c.max {
		return false
	}
	c.n[addr]++
	return true
}

func (c *bodyCounter) release(addr string) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[addr] <= 1 {
		delete(c.n, addr)
		return
	}
	c.n[addr]--
}
