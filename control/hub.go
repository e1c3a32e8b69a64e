package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idepool/idepool"
)

// Verifier checks an agent's credentials (implemented by pool.Manager).
type Verifier interface {
	VerifyAgent(id, token string) bool
}

// Observer consumes what agents report (implemented by pool.Manager). It is
// called in message order per container, from a goroutine of that
// connection other than its reader, so it may call Hub.Assign or Hub.Flush
// for the same agent (e.g. re-send an assignment on hello). It should not
// block for long: while it does, that agent's reports queue up.
type Observer interface {
	AgentReport(r idepool.AgentReport)
}

// Options configure a Hub.
type Options struct {
	Verifier Verifier
	Observer Observer
	Logger   *slog.Logger
	Clock    idepool.Clock
	// HeartbeatTimeout closes a connection that sent nothing for this long
	// (default 15 s; agents send heartbeats every 5 s).
	HeartbeatTimeout time.Duration
	// ReadLimit bounds one inbound message (default DefaultReadLimit).
	ReadLimit int64
	// WriteTimeout bounds one outbound message (default 10 s).
	WriteTimeout time.Duration
}

// Hub accepts agent connections (one per container) and sends them
// requests. It is safe for concurrent use.
type Hub struct {
	verifier  Verifier
	observer  Observer
	log       *slog.Logger
	clock     idepool.Clock
	timeout   time.Duration
	readLimit int64
	wtimeout  time.Duration

	seq atomic.Uint64

	mu        sync.Mutex
	conns     map[string]*conn
	closed    bool
	sweeping  bool
	stopSweep chan struct{}
	wg        sync.WaitGroup // ServeHTTP calls that registered a connection, and the sweeper
}

var _ http.Handler = (*Hub)(nil)

// NewHub returns a Hub; zero options get defaults. A nil Verifier refuses
// every agent; a nil Observer drops reports.
func NewHub(o Options) *Hub {
	h := &Hub{
		verifier:  o.Verifier,
		observer:  o.Observer,
		log:       o.Logger,
		clock:     o.Clock,
		timeout:   o.HeartbeatTimeout,
		readLimit: o.ReadLimit,
		wtimeout:  o.WriteTimeout,
		conns:     map[string]*conn{},
		stopSweep: make(chan struct{}),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.clock == nil {
		h.clock = idepool.SystemClock{}
	}
	if h.timeout <= 0 {
		h.timeout = 15 * time.Second
	}
	if h.readLimit <= 0 {
		h.readLimit = DefaultReadLimit
	}
	if h.wtimeout <= 0 {
		h.wtimeout = 10 * time.Second
	}
	return h
}

// conn is one authenticated agent connection.
type conn struct {
	id       string
	ws       *websocket.Conn
	lastSeen atomic.Int64 // hub clock, UnixNano
	done     chan struct{}

	mu      sync.Mutex
	pending map[string]chan Message

	reports    chan idepool.AgentReport // to the observer, in order
	dispatched chan struct{}            // closed when every report was delivered
}

func (c *conn) addPending(id string, ch chan Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return false
	default:
	}
	c.pending[id] = ch
	return true
}

func (c *conn) removePending(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *conn) resolve(m Message) {
	if m.ID == "" {
		return
	}
	c.mu.Lock()
	ch := c.pending[m.ID]
	delete(c.pending, m.ID)
	c.mu.Unlock()
	if ch != nil {
		ch <- m // buffered 1, and each id is resolved at most once
	}
}

// ServeHTTP is the agent websocket endpoint. The agent is authenticated
// before the upgrade: a missing or wrong token gets 401.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	id := r.Header.Get(HeaderContainer)
	token, hasToken := bearer(r.Header.Get("Authorization"))
	if !idepool.ValidID(id) || !hasToken || h.verifier == nil || !h.verifier.VerifyAgent(id, token) {
		logID := id
		if !idepool.ValidID(id) {
			logID = "(invalid)"
		}
		h.log.Warn("agent authentication failed", "container", logID, "remote", r.RemoteAddr)
		if idepool.ValidID(id) && hasToken && h.verifier != nil {
			// A well-formed agent this orchestrator does not know (its
			// container was removed, or never recorded): say so, so it
			// exits instead of reconnecting for ever.
			w.Header().Set(HeaderRefused, RefusedUnknownAgent)
		}
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if h.isClosed() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		h.log.Warn("agent websocket upgrade failed", "container", id, "err", err)
		return
	}
	ws.SetReadLimit(h.readLimit)
	c := &conn{id: id, ws: ws, done: make(chan struct{}), pending: map[string]chan Message{},
		reports: make(chan idepool.AgentReport, 64), dispatched: make(chan struct{})}
	c.lastSeen.Store(h.clock.Now().UnixNano())

	old, ok := h.register(c)
	if !ok {
		ws.Close(websocket.StatusGoingAway, "shutting down")
		return
	}
	defer h.wg.Done()
	if old != nil {
		h.log.Info("agent reconnected; closing its previous connection", "container", id)
		// Close waits for the peer's close frame; do not hold up the new connection.
		go old.ws.Close(websocket.StatusPolicyViolation, "replaced by a new connection")
	}
	h.log.Debug("agent connected", "container", id, "remote", r.RemoteAddr)
	go h.dispatch(c)
	h.readLoop(c)
}

// register makes c the connection of its container and returns the one it
// replaced. ok is false once the hub is closed.
func (h *Hub) register(c *conn) (old *conn, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	old = h.conns[c.id]
	h.conns[c.id] = c
	h.wg.Add(1)
	if !h.sweeping {
		h.sweeping = true
		h.wg.Add(1)
		go h.sweepLoop()
	}
	return old, true
}

// unregister removes c if it is still its container's connection.
func (h *Hub) unregister(c *conn) (current bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[c.id] != c {
		return false
	}
	delete(h.conns, c.id)
	return true
}

func (h *Hub) readLoop(c *conn) {
	reason := "closed"
	defer func() {
		c.ws.CloseNow()
		c.mu.Lock()
		close(c.done)
		c.mu.Unlock()
		// A replaced connection is not a disconnection: its successor
		// already said hello.
		if h.unregister(c) {
			h.log.Debug("agent disconnected", "container", c.id, "reason", reason)
			c.reports <- idepool.AgentReport{ContainerID: c.id, Kind: idepool.AgentGone, Time: h.clock.Now(), Message: reason}
		}
		close(c.reports)
		<-c.dispatched
	}()
	ctx := context.Background()
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			reason = closeReason(err)
			return
		}
		now := h.clock.Now()
		c.lastSeen.Store(now.UnixNano())
		if typ != websocket.MessageText {
			reason = "binary message"
			c.ws.Close(websocket.StatusUnsupportedData, "text frames only")
			return
		}
		var m Message
		if err := json.Unmarshal(data, &m); err != nil {
			reason = "malformed message"
			h.log.Warn("agent sent a malformed message", "container", c.id, "err", err)
			c.ws.Close(websocket.StatusInvalidFramePayloadData, "malformed message")
			return
		}
		if m.V < 1 || m.V > Version {
			reason = "unsupported protocol version"
			h.log.Warn("agent speaks an unsupported protocol version", "container", c.id, "version", m.V)
			c.ws.Close(websocket.StatusPolicyViolation, "unsupported protocol version "+strconv.Itoa(m.V))
			return
		}
		switch m.Type {
		case TypeAck, TypeFlushed:
			c.resolve(m)
		}
		if r, ok := m.Report(c.id, now); ok {
			c.reports <- r
		} else if m.Type != TypeAck {
			h.log.Debug("agent sent an unknown message type", "container", c.id, "type", m.Type)
		}
	}
}

func closeReason(err error) string {
	if s := websocket.CloseStatus(err); s != -1 {
		return "closed by agent: " + s.String()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "connection lost"
}

// dispatch delivers a connection's reports to the observer, in order.
func (h *Hub) dispatch(c *conn) {
	defer close(c.dispatched)
	for r := range c.reports {
		if h.observer != nil {
			h.observer.AgentReport(r)
		}
	}
}

// sweepLoop closes connections that fell silent.
func (h *Hub) sweepLoop() {
	defer h.wg.Done()
	t := time.NewTicker(max(h.timeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-h.stopSweep:
			return
		case <-t.C:
			h.sweep()
		}
	}
}

// sweep closes every connection silent for longer than the heartbeat
// timeout by the hub's clock (tests call it directly with a fake clock).
func (h *Hub) sweep() {
	deadline := h.clock.Now().Add(-h.timeout).UnixNano()
	var stale []*conn
	h.mu.Lock()
	for _, c := range h.conns {
		if c.lastSeen.Load() < deadline {
			stale = append(stale, c)
		}
	}
	h.mu.Unlock()
	for _, c := range stale {
		h.log.Warn("agent heartbeat timeout; closing its connection", "container", c.id, "timeout", h.timeout)
		// The peer is presumed dead: no close handshake.
		c.ws.CloseNow()
	}
}

func (h *Hub) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

func (h *Hub) conn(id string) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[id]
}

// Connected reports whether the container's agent has a live connection.
func (h *Hub) Connected(id string) bool { return h.conn(id) != nil }

// Assign sends an assignment to the container's agent and waits for its
// acknowledgement (bounded by ctx). An agent that is not connected, or that
// disconnects before answering, gives EAgentUnavailable; ctx ending gives
// ETimeout; an agent that refuses the assignment gives EConflict.
func (h *Hub) Assign(ctx context.Context, id string, a idepool.Assignment) error {
	resp, err := h.request(ctx, id, Message{Type: TypeAssign, Assignment: &a, Generation: a.Generation})
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return idepool.WrapError(idepool.EConflict, errors.New(resp.Error), "agent of container %s refused assignment generation %d", id, a.Generation)
	}
	if resp.Generation != a.Generation {
		return idepool.Errorf(idepool.EConflict, "agent of container %s acknowledged generation %d, not %d", id, resp.Generation, a.Generation)
	}
	return nil
}

// Flush asks the container's agent to push every pending change and waits
// for its flushed report (bounded by ctx). Errors as for Assign; a flush
// that failed in the agent gives EStopFailed.
func (h *Hub) Flush(ctx context.Context, id string) error {
	resp, err := h.request(ctx, id, Message{Type: TypeFlush})
	if err != nil {
		return err
	}
	if resp.Error != "" {
		return idepool.WrapError(idepool.EStopFailed, errors.New(resp.Error), "agent of container %s could not flush its workspace", id)
	}
	return nil
}

// ConfirmDeletions tells the container's agent to apply the deletions its
// sync holds back (a mass deletion) and returns how many. None held gives
// EConflict; other errors as for Assign.
func (h *Hub) ConfirmDeletions(ctx context.Context, id string) (int, error) {
	resp, err := h.request(ctx, id, Message{Type: TypeConfirmDeletions})
	if err != nil {
		return 0, err
	}
	if resp.Error != "" {
		return 0, idepool.WrapError(idepool.EConflict, errors.New(resp.Error), "container %s", id)
	}
	return resp.Count, nil
}

// Stop tells the container's agent to flush and exit. It does not wait for
// the flush (the agent reports flushed, then disconnects).
func (h *Hub) Stop(ctx context.Context, id string) error {
	c := h.conn(id)
	if c == nil {
		return notConnected(id)
	}
	if err := h.write(ctx, c, Message{V: Version, Type: TypeStop}); err != nil {
		return idepool.WrapError(idepool.EAgentUnavailable, err, "could not reach the agent of container %s", id)
	}
	return nil
}

func notConnected(id string) error {
	return idepool.Errorf(idepool.EAgentUnavailable, "the agent of container %s is not connected", id)
}

// request sends m with a fresh request id and waits for the answer carrying
// that id.
func (h *Hub) request(ctx context.Context, id string, m Message) (Message, error) {
	c := h.conn(id)
	if c == nil {
		return Message{}, notConnected(id)
	}
	m.V = Version
	m.ID = strconv.FormatUint(h.seq.Add(1), 36)
	ch := make(chan Message, 1)
	if !c.addPending(m.ID, ch) {
		return Message{}, notConnected(id)
	}
	defer c.removePending(m.ID)
	if err := h.write(ctx, c, m); err != nil {
		if ctx.Err() != nil {
			return Message{}, idepool.WrapError(idepool.ETimeout, err, "sending %s to the agent of container %s", m.Type, id)
		}
		return Message{}, idepool.WrapError(idepool.EAgentUnavailable, err, "could not reach the agent of container %s", id)
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-c.done:
		return Message{}, idepool.Errorf(idepool.EAgentUnavailable, "the agent of container %s disconnected before answering %s", id, m.Type)
	case <-ctx.Done():
		return Message{}, idepool.WrapError(idepool.ETimeout, ctx.Err(), "the agent of container %s did not answer %s in time", id, m.Type)
	}
}

func (h *Hub) write(ctx context.Context, c *conn, m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Not the caller's ctx: websocket.Conn closes the whole connection when
	// a write's context ends mid-write, and a caller giving up must not cost
	// the agent its connection. Writes are small; WriteTimeout bounds them.
	wctx, cancel := context.WithTimeout(context.Background(), h.wtimeout)
	defer cancel()
	// websocket.Conn serializes concurrent writers itself.
	return c.ws.Write(wctx, websocket.MessageText, b)
}

// Close closes every connection (with a going-away status) and waits for
// their goroutines, bounded by ctx. New connections are refused afterwards.
func (h *Hub) Close(ctx context.Context) error {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.stopSweep)
	}
	conns := make([]*conn, 0, len(h.conns))
	for _, c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		go c.ws.Close(websocket.StatusGoingAway, "orchestrator shutting down")
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			c.ws.CloseNow()
		}
		<-done
		return ctx.Err()
	}
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(h string) (string, bool) {
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	t := strings.TrimSpace(h[len(p):])
	return t, t != ""
}
