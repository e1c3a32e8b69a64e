package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/idepool/idepool"
)

// The per-request work besides proxying, kept off the Backend's lock and
// out of the allocator: every request through the router resolves its
// container's route, verifies its cookie and reports activity. Measured
// with e2e/routerbench (wrk, 32 connections).

// profileTTL is how long the router uses a profile table before asking
// the Backend again: route tables do not change while a pool runs, and
// asking on every request took the pool's lock and copied every profile.
const profileTTL = time.Second

// profileTable is a snapshot of Backend.Profiles by name.
type profileTable struct {
	at     time.Time
	byName map[string]idepool.Profile
}

// profile returns the profile named name from a snapshot at most
// profileTTL old.
func (rt *Router) profile(name string) (idepool.Profile, bool) {
	// The machine's monotonic clock, not Options.Clock: this is a cache's
	// age, not a time anyone sees.
	now := time.Now()
	t := rt.profiles.Load()
	if t == nil || now.Sub(t.at) >= profileTTL || now.Before(t.at) {
		ps := rt.o.Backend.Profiles()
		t = &profileTable{at: now, byName: make(map[string]idepool.Profile, len(ps))}
		for _, p := range ps {
			if _, dup := t.byName[p.Name]; !dup {
				t.byName[p.Name] = p
			}
		}
		rt.profiles.Store(t)
	}
	p, ok := t.byName[name]
	return p, ok
}

// maxVerified bounds the verified-cookie cache; past it the cache starts
// over (only cookies with a valid signature get in, so only real users'
// cookies fill it).
const maxVerified = 10_000

// verifiedCookie is what a cookie's signature vouches for.
type verifiedCookie struct {
	id         string
	generation int64
	expires    time.Time
}

// cookieCache remembers cookie values whose signature was verified, so a
// request carrying a known cookie costs a map read instead of an HMAC (and
// its allocations). The container, generation and expiry are still checked
// on every request against the values the signature covered.
type cookieCache struct {
	m sync.Map // cookie value → verifiedCookie
	n atomic.Int64
}

func (c *cookieCache) get(value string) (verifiedCookie, bool) {
	v, ok := c.m.Load(value)
	if !ok {
		return verifiedCookie{}, false
	}
	return v.(verifiedCookie), true
}

func (c *cookieCache) put(value string, v verifiedCookie) {
	if c.n.Load() >= maxVerified {
		c.m.Clear()
		c.n.Store(0)
	}
	if _, loaded := c.m.LoadOrStore(value, v); !loaded {
		c.n.Add(1)
	}
}

// touchSweepEvery is how often the activity table drops containers not
// seen for a while (gone, or idle).
const touchSweepEvery = time.Minute

// touch reports activity on container id to the Backend at most once per
// TouchEvery (negative: every time): a page load is dozens of requests,
// and each report takes the pool's lock. The Backend's last activity is
// then at most TouchEvery behind the truth, far below any idle timeout.
func (rt *Router) touch(id string) {
	every := rt.o.TouchEvery
	if every < 0 {
		rt.o.Backend.Touch(id)
		return
	}
	now := rt.clock.Now().UnixNano()
	v, ok := rt.touched.Load(id)
	if !ok {
		v, _ = rt.touched.LoadOrStore(id, new(atomic.Int64))
	}
	last := v.(*atomic.Int64)
	prev := last.Load()
	if prev != 0 && now-prev < int64(every) && now >= prev {
		return
	}
	if !last.CompareAndSwap(prev, now) {
		return // a concurrent request of the same container reports it
	}
	rt.o.Backend.Touch(id)
	if sweep := rt.touchSweep.Load(); now-sweep >= int64(touchSweepEvery) && rt.touchSweep.CompareAndSwap(sweep, now) {
		old := now - int64(max(touchSweepEvery, 2*every))
		rt.touched.Range(func(k, v any) bool {
			if v.(*atomic.Int64).Load() < old {
				rt.touched.Delete(k)
			}
			return true
		})
	}
}
