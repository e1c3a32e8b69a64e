package server

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/capacity"
	"github.com/idepool/idepool/health"
	"github.com/idepool/idepool/httpapi"
	"github.com/idepool/idepool/metrics"
	"github.com/idepool/idepool/pool"
)

// processAdmitter adapts admission to the process runtime, which reserves
// nothing (its limits, as root, are caps: docs/operations.md "On the process
// runtime"): a local container is an agent and its workloads, so its memory is
// counted at a small estimate and its CPU not at all (an idle agent uses
// none), unless its profile reserves more explicitly. Measured host memory
// still decides.
type processAdmitter struct{ a *capacity.Admitter }

const (
	processMemEstimate = 64 << 20
)

func processProfile(p idepool.Profile) idepool.Profile {
	if p.MemoryReservation == 0 {
		p.MemoryReservation = processMemEstimate
		if p.MemoryLimit > 0 && p.MemoryLimit < processMemEstimate {
			p.MemoryReservation = p.MemoryLimit
		}
	}
	if p.CPUReservation == 0 {
		p.CPULimit = 0 // EffectiveCPUReservation falls back to the limit
	}
	return p
}

func (pa processAdmitter) Admit(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error {
	return pa.a.Admit(ctx, processProfile(p), kind)
}

func (pa processAdmitter) Headroom(p idepool.Profile) int { return pa.a.Headroom(processProfile(p)) }

// processCommitted shows the admitter the process runtime's profiles as
// processAdmitter counts them.
type processCommitted struct{ m *pool.Manager }

func (c processCommitted) Pools() []idepool.PoolStatus { return c.m.Pools() }

func (c processCommitted) Profiles() []idepool.Profile {
	ps := c.m.Profiles()
	for i := range ps {
		ps[i] = processProfile(ps[i])
	}
	return ps
}

var (
	_ capacity.Committed    = processCommitted{}
	_ pool.Admitter         = processAdmitter{}
	_ pool.HeadroomReporter = processAdmitter{}
)

// timedOrchestrator records claim latency as the API sees it.
type timedOrchestrator struct {
	*pool.Manager
	m *metrics.Metrics
	// buckets, with the embedded S3 store, creates a workspace's bucket on
	// first use (local-only mode has no one else to create it); nil
	// otherwise.
	buckets *bucketEnsurer
}

// bucketEnsurer creates each bucket once per run; concurrent starts for a
// new bucket (a class opening its lab) share one create.
type bucketEnsurer struct {
	create func(ctx context.Context, bucket string) error
	mu     sync.Mutex
	done   map[string]bool
	group  singleflight.Group
}

func (b *bucketEnsurer) ensure(ctx context.Context, ws idepool.Workspace) error {
	if b == nil || ws.Validate() != nil {
		return nil // validation errors are the pool's to report
	}
	b.mu.Lock()
	ok := b.done[ws.Bucket]
	b.mu.Unlock()
	if ok {
		return nil
	}
	_, err, _ := b.group.Do(ws.Bucket, func() (any, error) {
		if err := b.create(context.WithoutCancel(ctx), ws.Bucket); err != nil {
			return nil, err
		}
		b.mu.Lock()
		b.done[ws.Bucket] = true
		b.mu.Unlock()
		return nil, nil
	})
	if err != nil {
		return idepool.WrapError(idepool.EStartFailed, err, "create bucket %s in the embedded S3 store", ws.Bucket)
	}
	return nil
}

func (t *timedOrchestrator) prepareBucket(ctx context.Context, req idepool.StartRequest) error {
	return t.buckets.ensure(ctx, req.Workspace)
}

func (t *timedOrchestrator) Start(ctx context.Context, req idepool.StartRequest) (idepool.Claim, error) {
	t0 := time.Now()
	if err := t.prepareBucket(ctx, req); err != nil {
		return idepool.Claim{}, err
	}
	c, err := t.Manager.Start(ctx, req)
	kind := c.Kind
	if err != nil {
		kind = idepool.ClaimRefused
	}
	t.m.ObserveClaim(kind, time.Since(t0))
	return c, err
}

// healthReporter answers /api/health from the runtime and the capacity
// sampler.
type healthReporter struct{ s *Server }

func (h healthReporter) Health(ctx context.Context) httpapi.HealthReport {
	rep := httpapi.HealthReport{Runtime: h.s.rt.Name(), Connected: true}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	insts, err := h.s.rt.List(lctx)
	if err != nil {
		rep.Connected = false
		rep.Error = idepool.ErrorMessage(err)
	}
	running := 0
	for _, i := range insts {
		if i.Status == idepool.StatusRunning {
			running++
		}
	}
	rep.Resources.Containers = httpapi.ContainerCounts{Running: running, Total: len(insts)}
	snap := h.s.admitter.Snapshot(ctx)
	if hs := snap.Host; hs != nil {
		avail := hs.MemoryTotal - hs.MemoryUsed
		rep.Resources.Memory = httpapi.Usage{Total: hs.MemoryTotal, Used: hs.MemoryUsed, Available: avail, UsagePercent: percent(hs.MemoryUsed, hs.MemoryTotal)}
		// Measured (busy /proc/stat ticks, or the cgroup's usage, between
		// two samples), not the reservations admission counts: those are
		// 0 on the process runtime however busy the host is.
		rep.Resources.CPU = httpapi.CPUUsage{Cores: hs.CPUs, UsagePercent: round1(hs.CPUPercent())}
	}
	if d, err := health.Disk(h.s.cfg.DataDir); err == nil {
		rep.Resources.Disk = httpapi.Usage{Total: d.Total, Used: d.Used, Available: d.Available, UsagePercent: round1(100 * d.UsedRatio())}
	}
	return rep
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func percent(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) * 100 / float64(b)
}

// hostFigures are the host's measured figures for /metrics.
func (s *Server) hostFigures() metrics.HostFigures {
	snap := s.admitter.Snapshot(context.Background())
	hs := snap.Host
	if hs == nil {
		return metrics.HostFigures{}
	}
	f := metrics.HostFigures{CPU: hs.CPUPercent() / 100, Memory: hs.MemoryPercent() / 100, OK: true}
	if d, err := health.Disk(s.cfg.DataDir); err == nil {
		f.Disk = d.UsedRatio()
	}
	return f
}
