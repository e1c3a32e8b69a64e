package capacity

import (
	"context"
	"time"

	"github.com/idepool/idepool"
)

// Pool is what shedding needs of the pool (implemented by pool.Manager).
type Pool interface {
	List(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error)
	Stop(ctx context.Context, id, reason string) (idepool.Container, error)
}

// ShedOnce gives up one warm container (the oldest, reason capacity) when
// Pressure is active, and returns its id ("" when nothing was stopped).
// One at a time, so that each step is measured before the next: a warm
// container uses little, and the pressure may come from elsewhere.
func (a *Admitter) ShedOnce(ctx context.Context, p Pool) (string, error) {
	if !a.Pressure().Active {
		return "", nil
	}
	warm, _, err := p.List(ctx, idepool.ContainerFilter{States: []idepool.State{idepool.StateWarm}, Limit: 1})
	if err != nil {
		return "", err
	}
	if len(warm) == 0 {
		return "", nil
	}
	c := warm[0] // List orders by creation time: the oldest
	if _, err := p.Stop(ctx, c.ID, idepool.ReasonCapacity); err != nil && !idepool.IsNotFound(err) {
		return "", err
	}
	a.log.Info("warm container given up under pressure", "container", c.ID, "profile", c.Profile)
	// The next decision must see the freed capacity.
	a.mu.Lock()
	a.hostAt, a.nodesAt = time.Time{}, time.Time{}
	a.mu.Unlock()
	return c.ID, nil
}

// Run samples every SampleInterval (so CPU figures are averages over it)
// and, when p is not nil, sheds one warm container per interval while under
// pressure. It returns when ctx ends.
func (a *Admitter) Run(ctx context.Context, p Pool) error {
	t := time.NewTicker(a.o.SampleInterval)
	defer t.Stop()
	for {
		a.sample(ctx)
		if p != nil {
			if id, err := a.ShedOnce(ctx, p); err != nil && ctx.Err() == nil {
				a.log.Warn("shedding a warm container failed", "container", id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
