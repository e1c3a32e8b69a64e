package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestRetryDial(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	unreachable := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
	unknown := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "idepool-x", IsNotFound: true}}
	dnsDown := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "idepool-x", IsTemporary: true}}
	other := errors.New("tls: bad certificate")
	for _, c := range []struct {
		name      string
		errs      []error // one per attempt; past the end: success
		budget    time.Duration
		wantCalls int
		wantErr   error
	}{
		{"succeeds at once", nil, time.Second, 1, nil},
		{"refused, then there", []error{refused, refused}, time.Second, 3, nil},
		{"unreachable, then there", []error{unreachable}, time.Second, 2, nil},
		{"name not known yet, then there", []error{unknown, unknown}, time.Second, 3, nil},
		{"other errors are not retried", []error{other}, time.Second, 1, other},
		{"a failing resolver is not retried", []error{dnsDown}, time.Second, 1, dnsDown},
		{"gives up within the budget", []error{refused, refused, refused, refused, refused, refused, refused, refused}, 100 * time.Millisecond, 3, refused},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			d := retryDial{budget: c.budget, dial: func(context.Context, string, string) (net.Conn, error) {
				calls++
				if calls <= len(c.errs) {
					return nil, c.errs[calls-1]
				}
				a, b := net.Pipe()
				b.Close()
				return a, nil
			}}
			conn, err := d.DialContext(t.Context(), "tcp", "10.0.0.1:8080")
			if conn != nil {
				conn.Close()
			}
			if !errors.Is(err, c.wantErr) || calls != c.wantCalls {
				t.Errorf("err %v after %d dials, want %v after %d", err, calls, c.wantErr, c.wantCalls)
			}
		})
	}
}

func TestRetryDialStopsWithTheRequest(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	refused := os.NewSyscallError("connect", syscall.ECONNREFUSED)
	calls := 0
	d := retryDial{budget: time.Hour, dial: func(context.Context, string, string) (net.Conn, error) {
		calls++
		cancel() // the client leaves during the first dial
		return nil, refused
	}}
	if _, err := d.DialContext(ctx, "tcp", "10.0.0.1:8080"); !errors.Is(err, syscall.ECONNREFUSED) || calls != 1 {
		t.Errorf("err %v after %d dials, want the refusal after 1", err, calls)
	}
}
