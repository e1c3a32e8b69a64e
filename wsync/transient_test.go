package wsync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/idepool/idepool"
)

type statusErr int

func (e statusErr) Error() string       { return fmt.Sprintf("status %d", int(e)) }
func (e statusErr) HTTPStatusCode() int { return int(e) }

func TestTransient(t *testing.T) {
	dns := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "idepool-s3", IsNotFound: true}}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"the store's name unknown", fmt.Errorf("%w: %w", ErrList, dns), true},
		{"no answer (status 0)", statusErr(0), true},
		{"503", statusErr(http.StatusServiceUnavailable), true},
		{"500", statusErr(http.StatusInternalServerError), true},
		{"429", statusErr(http.StatusTooManyRequests), true},
		{"408", statusErr(http.StatusRequestTimeout), true},
		{"403: credentials or permissions", statusErr(http.StatusForbidden), false},
		{"400", statusErr(http.StatusBadRequest), false},
		{"no bucket", errors.Join(ErrNoBucket, statusErr(http.StatusNotFound)), false},
		{"cancelled", context.Canceled, false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("%s: transient = %v, want %v", c.name, got, c.want)
		}
	}
}

// listGate answers the store's listings with status until failures is
// used up, proxying everything else (and the listings after) to the real
// S3 server; lists counts the listings asked for.
func listGate(t *testing.T, endpoint string, status int, failures int64) (string, *atomic.Int64) {
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	var lists atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2" {
			if n := lists.Add(1); n <= failures {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(status)
				fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected</Message></Error>`,
					map[int]string{http.StatusServiceUnavailable: "ServiceUnavailable", http.StatusForbidden: "AccessDenied"}[status])
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &lists
}

// A listing that fails while the store is unavailable (more failures than
// the S3 client's own attempts) is tried again: the initial pull completes.
func TestInitialPullOutlastsAnUnavailableStore(t *testing.T) {
	e := newEnv(t, "users/bob/")
	e.putRemote("notes.txt", []byte("kept"))
	endpoint, lists := listGate(t, e.srv.Endpoint, http.StatusServiceUnavailable, 4)
	a := e.assignment()
	a.S3Endpoint = endpoint
	s := NewAgentSyncer(e.dir, e.state, nil, testOptions())
	if err := s.Start(e.ctx(), a, func(idepool.AgentReport) {}); err != nil {
		t.Fatalf("Start: %v (after %d listings)", err, lists.Load())
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	if got, ok := e.local("notes.txt"); !ok || string(got) != "kept" {
		t.Fatalf("notes.txt not pulled: %q", got)
	}
	if n := lists.Load(); n < 5 {
		t.Fatalf("%d listings: the injected failures were not all met", n)
	}
}

// A listing the store refuses fails the initial pull at once: no retries
// (beyond none: the S3 client does not repeat a 403 either).
func TestInitialPullFailsAtOnceWhenRefused(t *testing.T) {
	e := newEnv(t, "users/eve/")
	endpoint, lists := listGate(t, e.srv.Endpoint, http.StatusForbidden, 1<<30)
	a := e.assignment()
	a.S3Endpoint = endpoint
	s := NewAgentSyncer(e.dir, e.state, nil, testOptions())
	if err := s.Start(e.ctx(), a, func(idepool.AgentReport) {}); err == nil {
		t.Fatal("Start succeeded against a store that refuses every listing")
	}
	if n := lists.Load(); n != 1 {
		t.Fatalf("%d listings, want 1: a refusal is not tried again", n)
	}
}
