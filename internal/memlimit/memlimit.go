// Package memlimit keeps serve's Go runtime within a soft memory limit
// (as GOMEMLIMIT) that rises when idepool's live memory needs it.
//
// serve runs the collector at GC_PERCENT 400 so a class's burst of claims
// meets no collection; on its own that lets the heap grow to five times
// what is live, and a class of 400 containers held ~270 MiB for ~70 MiB
// of live heap and stacks. A soft limit makes the collector run once the
// runtime's memory nears it instead. A fixed limit below what is live
// would make the collector run without pause (the runtime caps it at half
// the CPU), so the limit in force is never below what is live plus a
// margin: a deployment larger than the configured limit gets the margin's
// headroom, not a collector that never stops.
package memlimit

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// minMargin is the least headroom above live memory the limit leaves: a
// few bursts of claims' garbage (about 28 KB each) between collections.
const minMargin = 16 << 20

// Target is the limit to set for configured bytes when inUse bytes are
// live (heap after the last collection plus what the runtime holds
// outside the heap: stacks and its own metadata): configured, or inUse
// plus a quarter of it (at least minMargin) when that is more.
func Target(configured, inUse uint64) uint64 {
	return max(configured, inUse+max(inUse/4, minMargin))
}

// Limiter holds the limit in force.
type Limiter struct {
	configured, cur uint64
	samples         *sampler
	log             *slog.Logger
}

// The limit is the process's, not a Limiter's: several servers in one
// process (tests) share it, and the limit before the first is in force
// again after the last.
var process struct {
	sync.Mutex
	holders int
	before  int64
}

// Start puts the limit for configured bytes in force now. Run gives it
// back.
func Start(configured uint64, log *slog.Logger) *Limiter {
	l := &Limiter{configured: configured, samples: newSampler(), log: log}
	l.cur = Target(configured, l.samples.inUse())
	process.Lock()
	if process.holders == 0 {
		process.before = debug.SetMemoryLimit(-1)
	}
	process.holders++
	debug.SetMemoryLimit(int64(l.cur))
	process.Unlock()
	log.Debug("memory limit", "configured", configured, "limit", l.cur)
	return l
}

// Run moves the limit with live memory every interval until ctx ends; the
// last Run to end restores the limit in force before the first Start.
func (l *Limiter) Run(ctx context.Context, interval time.Duration) {
	defer func() {
		process.Lock()
		if process.holders--; process.holders == 0 {
			debug.SetMemoryLimit(process.before)
		}
		process.Unlock()
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			l.step()
		}
	}
}

// step samples live memory and moves the limit when the target moved by an
// eighth or more (not with every sample's noise), or back to the
// configured one. It logs when the limit leaves the configured one or
// returns to it.
func (l *Limiter) step() {
	inUse := l.samples.inUse()
	next := Target(l.configured, inUse)
	if diff := absDiff(next, l.cur); diff == 0 || diff < l.cur/8 && next != l.configured {
		return
	}
	debug.SetMemoryLimit(int64(next))
	switch {
	case next > l.configured && l.cur == l.configured:
		l.log.Info("live memory is past the soft limit's margin: the limit rises with it (GC_MEMORY_LIMIT)",
			"liveMiB", inUse>>20, "limitMiB", next>>20, "configuredMiB", l.configured>>20)
	case next == l.configured && l.cur > l.configured:
		l.log.Info("the soft memory limit is back at GC_MEMORY_LIMIT", "liveMiB", inUse>>20, "limitMiB", next>>20)
	}
	l.cur = next
}

// Limit is the limit in force.
func (l *Limiter) Limit() uint64 { return l.cur }

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// The runtime/metrics this package reads.
const (
	mLive     = "/gc/heap/live:bytes"
	mTotal    = "/memory/classes/total:bytes"
	mReleased = "/memory/classes/heap/released:bytes"
	mObjects  = "/memory/classes/heap/objects:bytes"
	mUnused   = "/memory/classes/heap/unused:bytes"
	mFree     = "/memory/classes/heap/free:bytes"
)

type sampler struct{ s []metrics.Sample }

func newSampler() *sampler {
	names := []string{mLive, mTotal, mReleased, mObjects, mUnused, mFree}
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	return &sampler{s: s}
}

// inUse is what the runtime must keep whatever the collector does: the
// live heap as of the last collection and everything the runtime holds
// outside the heap's spans (goroutine stacks, its own metadata), which
// the memory limit counts too.
func (p *sampler) inUse() uint64 {
	metrics.Read(p.s)
	v := make(map[string]uint64, len(p.s))
	for _, s := range p.s {
		if s.Value.Kind() == metrics.KindUint64 {
			v[s.Name] = s.Value.Uint64()
		}
	}
	heap := v[mReleased] + v[mObjects] + v[mUnused] + v[mFree]
	var outside uint64
	if v[mTotal] > heap {
		outside = v[mTotal] - heap
	}
	return v[mLive] + outside
}
