package proxy

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// hijackCounter hands ReverseProxy a connection that counts websocket (any
// upgraded protocol) traffic in both directions and reports it to Touch.
type hijackCounter struct {
	http.ResponseWriter
	rt *Router
	id string
}

func (h *hijackCounter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *hijackCounter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &countingConn{Conn: c, rt: h.rt, id: h.id}, brw, nil
}

// countingConn counts reads (client → container) and writes (container →
// client). Touch is throttled per connection to TouchEvery.
type countingConn struct {
	net.Conn
	rt *Router
	id string

	mu        sync.Mutex
	lastTouch time.Time
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rt.stats.wsReads.Add(1)
		c.rt.stats.bytesIn.Add(int64(n))
		c.touch()
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.rt.stats.wsWrites.Add(1)
		c.rt.stats.bytesOut.Add(int64(n))
		c.touch()
	}
	return n, err
}

func (c *countingConn) touch() {
	if every := c.rt.o.TouchEvery; every > 0 {
		now := c.rt.clock.Now()
		c.mu.Lock()
		if !c.lastTouch.IsZero() && now.Sub(c.lastTouch) < every {
			c.mu.Unlock()
			return
		}
		c.lastTouch = now
		c.mu.Unlock()
	}
	c.rt.o.Backend.Touch(c.id)
}
