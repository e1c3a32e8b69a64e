package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugServer answers Go's runtime profiles on DEBUG_ADDR, for an operator
// on this host (config refuses any address but loopback: the profiles are
// not behind the API key). net/http/pprof also registers itself on
// http.DefaultServeMux, which nothing of idepool serves.
type debugServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenDebug is the stage that opens DEBUG_ADDR, when it is set.
func (b *builder) listenDebug(context.Context) (func(), error) {
	d, err := newDebugServer(b.s.cfg.DebugAddr, b.s.log)
	if d == nil || err != nil {
		return nil, err
	}
	b.s.debug = d
	return func() { d.ln.Close() }, nil
}

// newDebugServer listens on addr; nil when addr is "".
func newDebugServer(addr string, log *slog.Logger) (*debugServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("DEBUG_ADDR: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and every named profile: heap, goroutine, allocs, …
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No WriteTimeout: a CPU profile or a trace answers after its seconds.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return &debugServer{ln: ln, srv: srv}, nil
}

// Addr is where it listens.
func (d *debugServer) Addr() string { return d.ln.Addr().String() }

// serve answers until shutdown.
func (d *debugServer) serve() {
	if err := d.srv.Serve(d.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.srv.ErrorLog.Printf("debug listener: %v", err)
	}
}

// shutdown stops it; a profile still being taken is cut.
func (d *debugServer) shutdown(ctx context.Context) {
	if err := d.srv.Shutdown(ctx); err != nil {
		d.srv.Close()
	}
}
