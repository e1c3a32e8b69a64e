package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// retryDial dials a container again when the connection is refused, its
// address is unreachable or its name unknown, for up to budget: a
// container that has just started can be ready (its agent dialled home and
// its routes answered locally) a moment before this host can reach it,
// e.g. while Swarm's overlay network tells the other nodes where a new task
// lives. Nothing of the request has been sent when a dial fails, so any
// method may be retried. Other errors, and a dial that used up its own
// timeout, are returned at once.
type retryDial struct {
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	budget time.Duration
}

func (d retryDial) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	deadline := time.Now().Add(d.budget)
	wait := 25 * time.Millisecond
	for {
		c, err := d.dial(ctx, network, addr)
		if err == nil || !retryable(err) || time.Now().Add(wait).After(deadline) {
			return c, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 400*time.Millisecond)
	}
}

// retryable: the peer is not there yet (refused, unreachable, or its name
// not known yet: Swarm's DNS on this node learns a new task's name by
// gossip, a moment after the task runs), as opposed to a timeout or a
// cancelled request.
func retryable(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}
