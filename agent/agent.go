// Package agent is idepool's in-container agent (`idepool agent`): it dials
// the orchestrator's control channel, reports readiness, heartbeats and
// activity, takes its workspace assignment and runs the workspace Syncer,
// and supervises the container's workload processes (as PID 1 if need be).
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/agent/placeholder"
	"github.com/idepool/idepool/control"
	"github.com/idepool/idepool/internal/peerset"
)

// Run runs the agent until ctx ends (the caller cancels it on SIGTERM or
// SIGINT) or the orchestrator sends stop. On the way out it stops the
// workloads, flushes the workspace (bounded by FlushTimeout) and reports
// flushed if connected. It returns an error only if it could not start.
func Run(ctx context.Context, cfg Config) error {
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	wsURL, _ := controlURL(cfg.URL)
	st, err := loadState(cfg.StateDir)
	if err != nil {
		return err
	}
	a := &agent{
		cfg:     cfg,
		log:     cfg.Logger.With("container", cfg.ContainerID),
		url:     wsURL,
		st:      st,
		syncGen: -1,
		readyCh: make(chan struct{}),
		stopReq: make(chan struct{}),
	}
	if len(a.cfg.AllowedPeers) > 0 {
		a.cfg.workRoutes, err = internalRoutes(a.cfg.Routes)
		if err != nil {
			return err
		}
		a.cfg.workHost = "127.0.0.1"
	}
	a.sup = newSupervisor(&a.cfg)
	return a.run(ctx)
}

type agent struct {
	cfg Config
	log *slog.Logger
	url string
	sup *supervisor

	ready    atomic.Bool
	readyCh  chan struct{} // closed once every route answers
	activity atomic.Int64  // UnixNano of the newest activity the placeholder saw

	stopReq  chan struct{} // closed on a stop message, or when orphaned
	stopOnce sync.Once
	orphaned atomic.Pointer[string] // why the agent gave up on its orchestrator

	mu      sync.Mutex
	st      savedState // the current assignment (persisted)
	syncGen int64      // generation whose Syncer this process started (-1: none)
	synced  bool       // syncGen's initial pull is done
	syncer  Syncer
	sess    *session
	// undelivered: sync events raised while disconnected (bounded).
	undelivered []control.Message

	syncMu sync.Mutex // serializes Syncer Start, Flush and Stop
	saveMu sync.Mutex // serializes persist
	wg     sync.WaitGroup
}

func (a *agent) run(ctx context.Context) error {
	// The connection outlives ctx so the final flush can still be reported.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	workCtx, stopWork := context.WithCancel(runCtx)
	defer stopWork()

	var servers []*http.Server
	var relays []*relay
	closeAll := func() {
		for _, s := range servers {
			s.Close()
		}
		for _, r := range relays {
			r.close()
		}
	}
	workRoutes, workHost := a.cfg.Routes, a.cfg.ListenHost
	if a.cfg.workRoutes != nil {
		workRoutes, workHost = a.cfg.workRoutes, a.cfg.workHost
		peers := peerset.New(peerset.Options{Names: a.cfg.AllowedPeers, Resolver: a.cfg.Resolver, Logger: a.log})
		for i, r := range a.cfg.Routes {
			rl, err := startRelay(r.Name, net.JoinHostPort(a.cfg.ListenHost, strconv.Itoa(r.Port)),
				net.JoinHostPort(workHost, strconv.Itoa(workRoutes[i].Port)), peers.Allowed, a.log)
			if err != nil {
				closeAll()
				return err
			}
			relays = append(relays, rl)
		}
		a.log.Info("route ports relayed; only allowed peers may connect", "peers", a.cfg.AllowedPeers)
	}
	var ph *placeholder.Handler
	if len(a.cfg.Workloads) > 0 {
		a.sup.start(workCtx)
	} else {
		ph = placeholder.New(a.cfg.WorkspaceDir, placeholder.Options{
			OnActivity: func() { a.activity.Store(time.Now().UnixNano()) },
			Logger:     a.log,
		})
		for _, r := range workRoutes {
			ln, err := net.Listen("tcp", net.JoinHostPort(workHost, strconv.Itoa(r.Port)))
			if err != nil {
				closeAll()
				return fmt.Errorf("agent: placeholder for route %s: %w", r.Name, err)
			}
			srv := &http.Server{Handler: ph, ReadHeaderTimeout: 10 * time.Second}
			servers = append(servers, srv)
			go srv.Serve(ln)
		}
	}

	a.wg.Add(2)
	go func() { defer a.wg.Done(); a.awaitReady(workCtx) }()
	go func() { defer a.wg.Done(); a.connectLoop(runCtx) }()

	select {
	case <-ctx.Done():
		a.log.Info("agent shutting down")
	case <-a.stopReq:
		if why := a.orphaned.Load(); why != nil {
			a.log.Warn("orphaned: flushing the workspace and exiting", "why", *why)
		} else {
			a.log.Info("orchestrator asked the agent to stop")
		}
	}
	// Workloads first, so what they save on SIGTERM is in the flush.
	stopWork()
	a.sup.wait()
	closeAll()
	if ph != nil {
		ph.Close()
	}
	fctx, cancel := context.WithTimeout(runCtx, a.cfg.FlushTimeout)
	err := a.flush(fctx)
	a.send(runCtx, a.flushedMessage("", err))
	a.syncMu.Lock()
	a.mu.Lock()
	sy := a.syncer
	a.mu.Unlock()
	if sy != nil {
		if err := sy.Stop(fctx); err != nil {
			a.log.Warn("syncer stop failed", "err", err)
		}
	}
	a.syncMu.Unlock()
	cancel()
	cancelRun()
	a.wg.Wait()
	return nil
}

// lastActivity is the newest of what the placeholder saw and cfg.Activity.
func (a *agent) lastActivity() time.Time {
	var t time.Time
	if n := a.activity.Load(); n != 0 {
		t = time.Unix(0, n)
	}
	if a.cfg.Activity != nil {
		if u := a.cfg.Activity(); u.After(t) {
			t = u
		}
	}
	return t
}

// awaitReady probes every route until each answers HTTP, then marks the
// agent ready (once; the session sends "ready").
func (a *agent) awaitReady(ctx context.Context) {
	host := "127.0.0.1"
	if h := a.cfg.ListenHost; h != "" && h != "0.0.0.0" && h != "::" {
		host = h
	}
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// Any answer counts, a redirect included.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	for _, r := range a.cfg.Routes {
		p := r.HealthPath
		if p == "" {
			p = "/"
		}
		u := "http://" + net.JoinHostPort(host, strconv.Itoa(r.Port)) + p
		delay := 10 * time.Millisecond
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				a.log.Error("bad readiness URL", "route", r.Name, "err", err)
				return
			}
			req.Header.Set(idepool.ProbeHeader, "1")
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				break
			}
			if !sleep(ctx, delay) {
				return
			}
			delay = min(delay*2, time.Second)
		}
	}
	a.log.Info("every route answers; ready")
	a.ready.Store(true)
	close(a.readyCh)
}

// connectLoop keeps a control connection up until ctx ends, reconnecting
// with capped exponential backoff and jitter. An orchestrator that refuses
// the agent, or one out of reach for OrphanTimeout, orphans it: the agent
// then stops (flushing first) rather than wait for ever.
func (a *agent) connectLoop(ctx context.Context) {
	attempt := 0
	lastUp := time.Now() // the last moment the orchestrator was reachable
	for ctx.Err() == nil {
		start := time.Now()
		connected, err := a.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			lastUp = time.Now()
		}
		if errors.Is(err, errRefused) {
			a.orphan("the orchestrator does not know this container (its record is gone or the token is not its)")
			return
		}
		if down := time.Since(lastUp); down >= a.cfg.OrphanTimeout {
			a.orphan(fmt.Sprintf("the orchestrator has been unreachable for %v (last error: %v)", down.Round(time.Second), err))
			return
		}
		// Only a connection that lasted resets the backoff: one dropped at
		// once (a hub shutting down, a flapping proxy) must not cause a storm.
		if connected && time.Since(start) > 10*time.Second {
			attempt = 0
		}
		d := backoff(attempt, 100*time.Millisecond, a.cfg.ReconnectMax)
		attempt++
		a.log.Info("control connection down; reconnecting", "err", err, "in", d)
		if !sleep(ctx, d) {
			return
		}
	}
}

// errRefused: the orchestrator said it does not know this agent.
var errRefused = errors.New("the orchestrator refused the agent: unknown container or token")

// orphan stops the agent the way a stop message does (workloads, flush,
// exit), saying why.
func (a *agent) orphan(why string) {
	a.orphaned.CompareAndSwap(nil, &why)
	a.stopOnce.Do(func() { close(a.stopReq) })
}

// backoff is base·2^attempt capped at max, with the upper half jittered.
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// session is one control connection.
type session struct {
	ws *websocket.Conn
}

// session dials, says hello and serves one connection until it breaks.
func (a *agent) session(ctx context.Context) (connected bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ws, resp, err := websocket.Dial(dctx, a.url, &websocket.DialOptions{
		HTTPHeader: http.Header{
			"Authorization":         {"Bearer " + a.cfg.Token},
			control.HeaderContainer: {a.cfg.ContainerID},
		},
		CompressionMode: websocket.CompressionDisabled,
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			if resp.Header.Get(control.HeaderRefused) == control.RefusedUnknownAgent {
				return false, errRefused
			}
			return false, errors.New("the orchestrator refused the agent token (401)")
		}
		return false, err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(control.DefaultReadLimit)
	s := &session{ws: ws}

	hello := a.helloMessage()
	if err := a.write(ctx, s, hello); err != nil {
		return false, err
	}
	a.mu.Lock()
	a.sess = s
	resend := a.synced
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.sess == s {
			a.sess = nil
		}
		a.mu.Unlock()
	}()
	a.log.Info("connected to the orchestrator", "ready", hello.Ready, "generation", hello.Generation)
	if resend {
		// The orchestrator may have restarted: tell it the pull is done.
		_ = a.write(ctx, s, a.syncedMessage(nil))
	}
	a.deliverKept(ctx, s)

	sctx, scancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.heartbeats(sctx, s, hello.Ready) }()
	defer func() { scancel(); wg.Wait() }()

	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return true, err
		}
		if typ != websocket.MessageText {
			continue
		}
		var m control.Message
		if err := json.Unmarshal(data, &m); err != nil {
			a.log.Warn("malformed message from the orchestrator", "err", err)
			continue
		}
		a.handle(ctx, s, m)
	}
}

// heartbeats sends "ready" when the agent becomes ready (unless the hello
// said so already) and a heartbeat every interval.
func (a *agent) heartbeats(ctx context.Context, s *session, helloReady bool) {
	readyCh := a.readyCh
	if helloReady {
		readyCh = nil
	}
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-readyCh:
			readyCh = nil
			_ = a.write(ctx, s, control.Message{V: control.Version, Type: control.TypeReady, Ready: true})
		case <-t.C:
			_ = a.write(ctx, s, a.heartbeatMessage())
		}
	}
}

func (a *agent) handle(ctx context.Context, s *session, m control.Message) {
	switch m.Type {
	case control.TypeAssign:
		a.assign(ctx, s, m)
	case control.TypeFlush:
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			fctx, cancel := context.WithTimeout(ctx, a.cfg.FlushTimeout)
			defer cancel()
			err := a.flush(fctx)
			a.send(ctx, a.flushedMessage(m.ID, err))
		}()
	case control.TypeStop:
		a.stopOnce.Do(func() { close(a.stopReq) })
	case control.TypeConfirmDeletions:
		a.mu.Lock()
		sy := a.syncer
		a.mu.Unlock()
		ack := control.Message{Type: control.TypeAck, ID: m.ID}
		if sy != nil {
			ack.Count = sy.ConfirmDeletions()
		}
		if ack.Count == 0 {
			ack.Error = "no deletions are held"
		} else {
			a.log.Info("held deletions confirmed", "count", ack.Count)
		}
		_ = a.write(ctx, s, ack)
	default:
		a.log.Debug("ignoring unknown message type", "type", m.Type)
	}
}

// assign records an assignment, acknowledges it at once, then starts the
// Syncer in the background.
func (a *agent) assign(ctx context.Context, s *session, m control.Message) {
	ack := control.Message{V: control.Version, Type: control.TypeAck, ID: m.ID, Generation: m.Generation}
	if m.Assignment == nil {
		ack.Error = "assign without an assignment"
		_ = a.write(ctx, s, ack)
		return
	}
	asg := *m.Assignment
	ack.Generation = asg.Generation
	a.mu.Lock()
	switch {
	case asg.Generation < a.st.Generation:
		ack.Error = fmt.Sprintf("stale assignment: generation %d, already at %d", asg.Generation, a.st.Generation)
		a.mu.Unlock()
		_ = a.write(ctx, s, ack)
		return
	case asg.Generation == a.syncGen:
		// A repeat (the orchestrator retried or restarted): acknowledge,
		// and say again that the pull is done if it is.
		synced := a.synced
		a.mu.Unlock()
		_ = a.write(ctx, s, ack)
		if synced {
			_ = a.write(ctx, s, a.syncedMessage(nil))
		}
		return
	}
	prev := a.st
	a.st = stateOf(asg)
	a.mu.Unlock()
	// Persisted before the ack: the ack is what the orchestrator answers
	// the claim on, before its runtime labels record it, so this file is
	// the claim's record until they do. A failed write refuses the
	// assignment (the orchestrator takes another container).
	if err := a.persist(); err != nil {
		a.mu.Lock()
		if a.st.Generation == asg.Generation {
			a.st = prev
		}
		a.mu.Unlock()
		ack.Error = "cannot record the assignment: " + err.Error()
		_ = a.write(ctx, s, ack)
		return
	}
	a.mu.Lock()
	a.syncGen = asg.Generation
	a.synced = false
	a.mu.Unlock()
	a.log.Info("assigned", "generation", asg.Generation, "bucket", asg.Workspace.Bucket, "prefix", asg.Workspace.Prefix)
	_ = a.write(ctx, s, ack)

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.startSync(ctx, asg)
	}()
}

// persist writes the current assignment (minus secrets) to StateDir.
// Concurrent calls are serialised and each writes the newest state.
func (a *agent) persist() error {
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	a.mu.Lock()
	st := a.st
	a.mu.Unlock()
	if err := saveState(a.cfg.StateDir, st); err != nil {
		a.log.Error("could not persist the assignment", "generation", st.Generation, "err", err)
		return err
	}
	return nil
}

// startSync replaces any running Syncer with one for asg and reports synced
// once its initial pull is done.
func (a *agent) startSync(ctx context.Context, asg idepool.Assignment) {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	old := a.syncer
	a.syncer = nil
	current := a.syncGen == asg.Generation
	a.mu.Unlock()
	if old != nil {
		sctx, cancel := context.WithTimeout(ctx, a.cfg.FlushTimeout)
		if err := old.Flush(sctx); err != nil {
			a.log.Warn("flushing the previous assignment failed", "err", err)
		}
		if err := old.Stop(sctx); err != nil {
			a.log.Warn("stopping the previous syncer failed", "err", err)
		}
		cancel()
	}
	if !current {
		return // superseded while waiting
	}
	var err error
	var sy Syncer
	if a.cfg.NewSyncer != nil {
		sy = a.cfg.NewSyncer(a.cfg.WorkspaceDir, a.cfg.StateDir, a.log)
		err = sy.Start(ctx, asg, a.forward)
		if err != nil {
			a.log.Error("initial workspace pull failed", "generation", asg.Generation, "err", err)
			sctx, cancel := context.WithTimeout(ctx, a.cfg.FlushTimeout)
			_ = sy.Stop(sctx)
			cancel()
			sy = nil
		}
	}
	a.mu.Lock()
	if a.syncGen != asg.Generation {
		a.mu.Unlock()
		if sy != nil {
			_ = sy.Stop(ctx)
		}
		return
	}
	a.syncer = sy
	a.synced = err == nil
	a.mu.Unlock()
	a.send(ctx, a.syncedMessage(err))
}

// flush pushes what the Syncer holds; without one there is nothing to do.
func (a *agent) flush(ctx context.Context) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	sy := a.syncer
	a.mu.Unlock()
	if sy == nil {
		return nil
	}
	return sy.Flush(ctx)
}

// forward relays what the Syncer reports.
func (a *agent) forward(r idepool.AgentReport) {
	t := control.TypeSync
	switch r.Kind {
	case idepool.AgentSynced:
		t = control.TypeSynced
	case idepool.AgentFlushed:
		t = control.TypeFlushed
	}
	if !r.LastActivity.IsZero() {
		// The Syncer sees workspace writes: user activity.
		n := r.LastActivity.UnixNano()
		for {
			cur := a.activity.Load()
			if n <= cur || a.activity.CompareAndSwap(cur, n) {
				break
			}
		}
	}
	m := control.FromReport(t, r)
	if m.Generation == 0 {
		a.mu.Lock()
		m.Generation = a.st.Generation
		a.mu.Unlock()
	}
	a.send(context.Background(), m)
}

// send writes m on the current connection, if any. Reports are not queued
// (the next hello and heartbeat carry the state), except sync events: a
// conflict or a remote reset seen while the orchestrator was away (a
// store replaced while it restarted) is told once it is back.
func (a *agent) send(ctx context.Context, m control.Message) {
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	if s == nil {
		if a.keep(m) {
			return
		}
		a.log.Debug("not connected; dropping report", "type", m.Type)
		return
	}
	if err := a.write(ctx, s, m); err != nil {
		a.keep(m)
	}
}

// maxUndelivered bounds the sync events kept while disconnected.
const maxUndelivered = 64

// keep queues a sync event for the next connection; false if m is not one.
func (a *agent) keep(m control.Message) bool {
	if m.Type != control.TypeSync || m.Event == "" || m.Event == "stats" {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.undelivered) == maxUndelivered {
		a.undelivered = a.undelivered[1:] // the oldest goes
	}
	a.undelivered = append(a.undelivered, m)
	return true
}

// deliverKept sends the sync events kept while disconnected.
func (a *agent) deliverKept(ctx context.Context, s *session) {
	a.mu.Lock()
	kept := a.undelivered
	a.undelivered = nil
	a.mu.Unlock()
	for i, m := range kept {
		if err := a.write(ctx, s, m); err != nil {
			for _, r := range kept[i:] {
				a.keep(r)
			}
			return
		}
	}
}

func (a *agent) write(ctx context.Context, s *session, m control.Message) error {
	m.V = control.Version
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.ws.Write(ctx, websocket.MessageText, b); err != nil {
		a.log.Debug("write to the orchestrator failed", "type", m.Type, "err", err)
		return err
	}
	return nil
}

// assigned returns the current generation and workspace (nil if none).
func (a *agent) assigned() (int64, *idepool.Workspace) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Workspace.IsZero() {
		return a.st.Generation, nil
	}
	w := a.st.Workspace
	return a.st.Generation, &w
}

func (a *agent) syncStats() *idepool.SyncStats {
	a.mu.Lock()
	sy := a.syncer
	a.mu.Unlock()
	if sy == nil {
		return nil
	}
	st := sy.Stats()
	return &st
}

func (a *agent) helloMessage() control.Message {
	gen, ws := a.assigned()
	a.mu.Lock()
	claim := a.st.claim()
	a.mu.Unlock()
	return control.Message{Type: control.TypeHello, Generation: gen, Workspace: ws, Claim: claim, Ready: a.ready.Load(),
		LastActivity: a.lastActivity(), Processes: a.sup.statuses()}
}

func (a *agent) heartbeatMessage() control.Message {
	gen, _ := a.assigned()
	return control.Message{Type: control.TypeHeartbeat, Generation: gen, Ready: a.ready.Load(),
		LastActivity: a.lastActivity(), Processes: a.sup.statuses(), Sync: a.syncStats()}
}

func (a *agent) syncedMessage(err error) control.Message {
	gen, ws := a.assigned()
	m := control.Message{Type: control.TypeSynced, Generation: gen, Workspace: ws, Sync: a.syncStats()}
	if err != nil {
		m.Error = err.Error()
	}
	return m
}

func (a *agent) flushedMessage(id string, err error) control.Message {
	gen, ws := a.assigned()
	m := control.Message{Type: control.TypeFlushed, ID: id, Generation: gen, Workspace: ws, Sync: a.syncStats()}
	if err != nil {
		m.Error = err.Error()
	}
	return m
}
