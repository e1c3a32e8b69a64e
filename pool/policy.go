package pool

import (
	"context"

	"github.com/idepool/idepool"
)

// PoolDetail is one pool's classroom view: why its target is what it is,
// and who waits.
type PoolDetail struct {
	Profile string `json:"profile"`
	// BaseTarget is the configured (or API-set) target; Target the
	// effective one and TargetReason why (base, adaptive, schedule).
	BaseTarget   int     `json:"baseTarget"`
	Target       int     `json:"target"`
	TargetReason string  `json:"targetReason"`
	Window       *Window `json:"window,omitempty"`
	Queued       int     `json:"queued"`
	// ClaimRate is the smoothed claim rate (per minute); CreateSeconds the
	// measured (or assumed) time a create takes to become warm.
	ClaimRate     float64 `json:"claimRatePerMinute"`
	CreateSeconds float64 `json:"createSeconds"`
	Live          int     `json:"live"`
	Policy        Policy  `json:"policy"`
}

// PoolDetails returns every pool's classroom view, in configuration order.
func (m *Manager) PoolDetails() []PoolDetail {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PoolDetail, 0, len(m.order))
	for _, name := range m.order {
		ps := m.profiles[name]
		res := m.effectiveTarget(ps, now)
		out = append(out, PoolDetail{Profile: name, BaseTarget: ps.target, Target: res.Target, TargetReason: res.Reason,
			Window: res.Window, Queued: len(ps.queue), ClaimRate: ps.claimRate.at(now, m.opts.ClaimRateWindow) * 60,
			CreateSeconds: m.createDuration(ps).Seconds(), Live: m.live(name), Policy: clonePolicy(ps.policy)})
	}
	return out
}

// Policy returns a profile's classroom policy.
func (m *Manager) Policy(profile string) (Policy, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.profiles[profile]
	if ps == nil {
		return Policy{}, idepool.Errorf(idepool.EUnknownProfile, "unknown profile %q", profile)
	}
	return clonePolicy(ps.policy), nil
}

// SetPolicy replaces a profile's classroom policy at run time (schedules,
// adaptive bounds, limits); the reconciler acts at once. It is kept in
// memory only: the profiles file is the lasting record.
func (m *Manager) SetPolicy(ctx context.Context, profile string, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	ps := m.profiles[profile]
	if ps == nil {
		m.mu.Unlock()
		return idepool.Errorf(idepool.EUnknownProfile, "unknown profile %q", profile)
	}
	ps.policy = clonePolicy(p)
	m.mu.Unlock()
	m.log.Info("pool policy changed", "profile", profile, "schedules", len(p.Schedules), "adaptive", p.Adaptive != nil,
		"maxContainers", p.MaxContainers, "maxPerUser", p.MaxPerUser)
	m.events.Publish(idepool.Event{Time: m.clock.Now(), Type: idepool.EventPool, Profile: profile, Reason: "policy",
		Data: map[string]any{"schedules": len(p.Schedules), "adaptive": p.Adaptive != nil}})
	m.kick()
	return nil
}

// SetSchedules replaces only a profile's schedule windows.
func (m *Manager) SetSchedules(ctx context.Context, profile string, ws []Window) error {
	p, err := m.Policy(profile)
	if err != nil {
		return err
	}
	p.Schedules = ws
	return m.SetPolicy(ctx, profile, p)
}
