package pool

import (
	"context"
	"time"
)

// With LocalLabels (the process runtime) a warm claim records itself in
// its labels before it answers, so its agent's ack need not be awaited:
// the delivery (which starts the agent's sync) waits behind the burst of
// claims instead, and a class of 200 gets its answers first.

// paceDeliveries starts queued deliveries once claims pause (PaceQuiet,
// at most PaceMax after the first queued). Deliveries still queued at
// Close are dropped: their containers keep their claim (labels) and
// pending assignment, which the next run delivers, as after a crash.
func (c *core) paceDeliveries() {
	defer c.pacer.Done()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	var by <-chan time.Time
	var batch []func(context.Context)
	for {
		select {
		case <-c.bgCtx.Done():
			// Each queued delivery holds a count of c.bg (deliverPaced).
			for range batch {
				c.bg.Done()
			}
			for {
				select {
				case <-c.deliveries:
					c.bg.Done()
				default:
					return
				}
			}
		case f := <-c.deliveries:
			batch = append(batch, f)
			quiet.Reset(c.opts.PaceQuiet)
			if by == nil {
				by = time.After(c.opts.PaceMax)
			}
			continue
		case <-quiet.C:
		case <-by:
		}
		by = nil
		for _, f := range batch {
			go func() {
				defer c.bg.Done()
				f(c.bgCtx)
			}()
		}
		batch = nil
	}
}

// deliverPaced queues a warm claim's delivery behind the burst of claims
// (paceDeliveries); with the queue full it starts at once.
func (c *core) deliverPaced(f func(context.Context)) {
	// Counted in c.bg from now on, like goBG: Close and tests wait for it.
	// Queued under c.mu, which Close takes before it stops the pacer: a
	// queued delivery is never missed by the pacer's final drain.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.bg.Add(1)
	select {
	case c.deliveries <- f:
	default:
		go func() {
			defer c.bg.Done()
			f(c.bgCtx)
		}()
	}
}
