// Package memnet is an in-memory network for tests that run an HTTP server
// inside a testing/synctest bubble.
//
// A goroutine blocked on a real socket is not "durably blocked", so a bubble
// with one never advances its fake clock; net.Pipe is built on channels and
// is. A Listener hands out net.Pipe pairs: the server end to Accept, the
// client end to DialContext.
package memnet

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
)

// Listener is a net.Listener whose connections are in-memory pipes.
type Listener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

var _ net.Listener = (*Listener)(nil)

// Listen returns an open Listener.
func Listen() *Listener {
	return &Listener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept waits for the next DialContext.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and DialContext; open connections stay open.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is a placeholder address.
func (l *Listener) Addr() net.Addr { return addr{} }

// DialContext connects to the Listener whatever network and address say.
func (l *Listener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
	client.Close()
	server.Close()
	return nil, &net.OpError{Op: "dial", Net: "memnet", Err: net.ErrClosed}
}

type addr struct{}

func (addr) Network() string { return "memnet" }
func (addr) String() string  { return "memnet" }

// Server is an http.Server on a Listener, with a client that reaches it.
type Server struct {
	// URL is a base URL for requests ("http://memnet"); any host works.
	URL    string
	Client *http.Client
	ln     *Listener
	srv    *http.Server
}

// Dial opens a raw connection to the server, for tests that speak HTTP by
// hand.
func (s *Server) Dial(ctx context.Context) (net.Conn, error) {
	return s.ln.DialContext(ctx, "memnet", "memnet")
}

// NewServer serves h until tb's cleanup, which closes the server and the
// client's idle connections (so a bubble's goroutines all end).
func NewServer(tb testing.TB, h http.Handler) *Server {
	ln := Listen()
	tr := &http.Transport{DialContext: ln.DialContext}
	s := &Server{URL: (&url.URL{Scheme: "http", Host: "memnet"}).String(),
		Client: &http.Client{Transport: tr}, ln: ln, srv: &http.Server{Handler: h}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		s.srv.Close()
		tr.CloseIdleConnections()
		<-done
	})
	return s
}
