// Package metrics exposes idepool's Prometheus metrics at /metrics, on a
// private registry. Most figures come from idepool.Events (Metrics is an
// EventSink: put it in the events Fanout); pool sizes and containers by state
// are read at scrape time; claim latency is observed explicitly by whoever
// serves starts.
package metrics

import (
	"context"
	"net/http"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/idepool/idepool"
)

// latencyBuckets span 0.5 ms (a warm claim) to 120 s (a slow cold start).
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120}

// Lister lists containers (pool.Manager).
type Lister interface {
	List(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error)
}

// ListerFunc adapts a function to Lister.
type ListerFunc func(ctx context.Context, f idepool.ContainerFilter) ([]idepool.Container, int, error)

// List calls f.
func (f ListerFunc) List(ctx context.Context, flt idepool.ContainerFilter) ([]idepool.Container, int, error) {
	return f(ctx, flt)
}

// Options configure Metrics. Every source is optional.
type Options struct {
	// Pools gives the pools at scrape time (pool.Manager.Pools).
	Pools func() []idepool.PoolStatus
	// Containers lists live containers at scrape time, for
	// idepool_containers{state,profile}.
	Containers Lister
	// Capacity gives the percentages admission compares, at scrape time
	// (exported as 0–1 ratios).
	Capacity func() (memoryPercent, cpuPercent float64)
	// Host gives the host's measured figures at scrape time (optional).
	Host func() HostFigures
	// Version and Runtime label idepool_build_info.
	Version, Runtime string
	// Process adds the Go runtime and process collectors (default false,
	// so tests see only idepool's metrics).
	Process bool
	// Timeout bounds a scrape-time listing (default 2 s).
	Timeout time.Duration
}

// Metrics holds the collectors. It is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	claims        *prometheus.CounterVec
	claimLatency  *prometheus.HistogramVec
	createLatency *prometheus.HistogramVec
	runtimeCreate *prometheus.HistogramVec
	stops         *prometheus.CounterVec
	createFails   *prometheus.CounterVec
	healthFails   *prometheus.CounterVec
	syncBytes     *prometheus.CounterVec
	syncConflicts prometheus.Counter
	syncErrors    prometheus.Counter
	events        *prometheus.CounterVec

	mu       sync.Mutex
	creating map[string]time.Time  // container id → when it began creating
	synced   map[string]syncCounts // container id → last cumulative figures
}

type syncCounts struct{ up, down float64 }

// maxTracked bounds the per-container maps if stop events are lost.
const maxTracked = 100000

var _ idepool.EventSink = (*Metrics)(nil)

// New registers every collector on a fresh registry.
func New(o Options) *Metrics {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	m := &Metrics{
		reg:      prometheus.NewRegistry(),
		creating: map[string]time.Time{},
		synced:   map[string]syncCounts{},
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idepool_claims_total",
			Help: "Starts by how they were served: warm, cold, reused or refused."}, []string{"kind", "profile"}),
		claimLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "idepool_claim_duration_seconds",
			Help: "Time to answer a start, by kind.", Buckets: latencyBuckets}, []string{"kind"}),
		createLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "idepool_create_duration_seconds",
			Help: "Time from a container's creation to its agent being ready (warm, or syncing for a cold start).", Buckets: latencyBuckets}, []string{"profile"}),
		runtimeCreate: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "idepool_runtime_create_duration_seconds",
			Help: "Duration of the runtime's Create call.", Buckets: latencyBuckets}, []string{"profile"}),
		stops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idepool_stops_total",
			Help: "Containers stopped, by reason."}, []string{"reason", "profile"}),
		createFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idepool_create_failures_total",
			Help: "Container creates that failed."}, []string{"profile"}),
		healthFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idepool_health_failures_total",
			Help: "Containers that became unhealthy."}, []string{"profile"}),
		syncBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idepool_sync_bytes_total",
			Help: "Workspace bytes synced, up (to S3) or down."}, []string{"direction"}),
		syncConflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "idepool_sync_conflicts_total",
			Help: "Sync conflicts (both versions kept)."}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "idepool_sync_errors_total",
			Help: "Sync errors and limits hit, including failed final flushes."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "idepool_events_total",
			Help: "Events published, by type."}, []string{"type"}),
	}
	m.reg.MustRegister(m.claims, m.claimLatency, m.createLatency, m.runtimeCreate, m.stops, m.createFails,
		m.healthFails, m.syncBytes, m.syncConflicts, m.syncErrors, m.events)
	// Both directions exist from the start, so rate() works at once.
	m.syncBytes.WithLabelValues("up")
	m.syncBytes.WithLabelValues("down")
	if o.Pools != nil || o.Containers != nil {
		m.reg.MustRegister(&stateCollector{o: o})
	}
	if o.Capacity != nil {
		m.reg.MustRegister(&capacityCollector{f: o.Capacity})
	}
	if o.Host != nil {
		m.reg.MustRegister(&hostCollector{f: o.Host})
	}
	m.reg.MustRegister(buildInfo(o.Version, o.Runtime))
	if o.Process {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// Registry returns the private registry (to add collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics (text or OpenMetrics by negotiation).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// ObserveClaim records how long a start took to answer and how it was
// served (refused included).
func (m *Metrics) ObserveClaim(kind idepool.ClaimKind, d time.Duration) {
	m.claimLatency.WithLabelValues(string(kind)).Observe(d.Seconds())
}

// ObserveRuntimeCreate records the duration of one runtime Create call.
func (m *Metrics) ObserveRuntimeCreate(profile string, d time.Duration) {
	m.runtimeCreate.WithLabelValues(profile).Observe(d.Seconds())
}

// knownReasons bounds the reason label (a stop reason may come from a
// client).
var knownReasons = map[string]bool{
	idepool.ReasonManual: true, idepool.ReasonInactivity: true, idepool.ReasonUnhealthy: true,
	idepool.ReasonMaxAge: true, idepool.ReasonCapacity: true, idepool.ReasonFailed: true,
	idepool.ReasonExcess: true, idepool.ReasonOrphan: true, "duplicate": true, "broken": true, "replaced": true,
}

// Publish consumes one event.
func (m *Metrics) Publish(e idepool.Event) {
	m.events.WithLabelValues(string(e.Type)).Inc()
	switch e.Type {
	case idepool.EventClaim:
		kind, _ := e.Data["kind"].(string)
		if kind == "" {
			kind = "unknown"
		}
		m.claims.WithLabelValues(kind, e.Profile).Inc()
	case idepool.EventRefused:
		m.claims.WithLabelValues(string(idepool.ClaimRefused), e.Profile).Inc()
	case idepool.EventState:
		m.stateChanged(e)
	case idepool.EventStopped:
		reason := e.Reason
		if !knownReasons[reason] {
			reason = "other"
		}
		m.stops.WithLabelValues(reason, e.Profile).Inc()
		m.forget(e.ContainerID)
	case idepool.EventCreateFail:
		m.createFails.WithLabelValues(e.Profile).Inc()
	case idepool.EventHealth:
		if s, _ := e.Data["status"].(string); s == string(idepool.HealthUnhealthy) {
			m.healthFails.WithLabelValues(e.Profile).Inc()
		}
	case idepool.EventConflict:
		m.syncConflicts.Inc()
		m.syncFigures(e)
	case idepool.EventSyncError:
		m.syncErrors.Inc()
		m.syncFigures(e)
	case idepool.EventSync:
		m.syncFigures(e)
	}
}

func (m *Metrics) stateChanged(e idepool.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch e.State {
	case idepool.StateCreating:
		if len(m.creating) < maxTracked {
			m.creating[e.ContainerID] = e.Time
		}
	case idepool.StateWarm, idepool.StateSyncing, idepool.StateRunning:
		if t, ok := m.creating[e.ContainerID]; ok {
			delete(m.creating, e.ContainerID)
			if d := e.Time.Sub(t); d >= 0 && !t.IsZero() {
				m.createLatency.WithLabelValues(e.Profile).Observe(d.Seconds())
			}
		}
	case idepool.StateFailed, idepool.StateStopping, idepool.StateStopped:
		delete(m.creating, e.ContainerID)
	}
}

func (m *Metrics) forget(id string) {
	m.mu.Lock()
	delete(m.creating, id)
	delete(m.synced, id)
	m.mu.Unlock()
}

// syncFigures adds the growth of a container's cumulative sync figures
// (the agent reports totals since its assignment; a drop means a new one).
func (m *Metrics) syncFigures(e idepool.Event) {
	up, okU := number(e.Data["bytesUp"])
	down, okD := number(e.Data["bytesDown"])
	if !okU && !okD {
		return
	}
	m.mu.Lock()
	last, seen := m.synced[e.ContainerID]
	next := last
	if okU {
		next.up = up
	}
	if okD {
		next.down = down
	}
	if seen || len(m.synced) < maxTracked {
		m.synced[e.ContainerID] = next
	}
	m.mu.Unlock()
	add := func(dir string, now, before float64, ok bool) {
		if !ok {
			return
		}
		d := now - before
		if now < before {
			d = now // counters restarted (a new assignment)
		}
		if d > 0 {
			m.syncBytes.WithLabelValues(dir).Add(d)
		}
	}
	add("up", next.up, last.up, okU)
	add("down", next.down, last.down, okD)
}

// number reads a JSON-ish number (int64 in process, float64 after JSON).
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case float64:
		return n, true
	case uint64:
		return float64(n), true
	case int32:
		return float64(n), true
	}
	return 0, false
}

// stateCollector reads pools and containers at scrape time.
type stateCollector struct{ o Options }

var (
	poolDescs = map[string]*prometheus.Desc{
		"target":   prometheus.NewDesc("idepool_pool_target", "Warm containers wanted, per profile.", []string{"profile"}, nil),
		"warm":     prometheus.NewDesc("idepool_pool_warm", "Warm (ready, unclaimed) containers, per profile.", []string{"profile"}, nil),
		"starting": prometheus.NewDesc("idepool_pool_starting", "Unclaimed containers being created or started, per profile.", []string{"profile"}, nil),
		"claimed":  prometheus.NewDesc("idepool_pool_claimed", "Containers bound to a workspace, per profile.", []string{"profile"}, nil),
		"failed":   prometheus.NewDesc("idepool_pool_failed", "Failed containers awaiting removal, per profile.", []string{"profile"}, nil),
	}
	poolBackoffDesc = prometheus.NewDesc("idepool_pool_backoff", "1 while failed creates hold a pool's refills back.", []string{"profile"}, nil)
	containersDesc  = prometheus.NewDesc("idepool_containers", "Live containers by state and profile.", []string{"state", "profile"}, nil)
	memDesc         = prometheus.NewDesc("idepool_capacity_memory_ratio", "Memory in use (or reserved, on Swarm) as admission counts it, 0-1.", nil, nil)
	cpuDesc         = prometheus.NewDesc("idepool_capacity_cpu_ratio", "CPU reserved (or measured, where admission measures it) as admission counts it, 0-1.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	if c.o.Pools != nil {
		for _, d := range poolDescs {
			ch <- d
		}
		ch <- poolBackoffDesc
	}
	if c.o.Containers != nil {
		ch <- containersDesc
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var profiles []string
	if c.o.Pools != nil {
		for _, p := range c.o.Pools() {
			profiles = append(profiles, p.Profile)
			g := func(k string, v int) {
				ch <- prometheus.MustNewConstMetric(poolDescs[k], prometheus.GaugeValue, float64(v), p.Profile)
			}
			g("target", p.Target)
			g("warm", p.Warm)
			g("starting", p.Starting)
			g("claimed", p.Claimed)
			g("failed", p.Failed)
			b := 0.0
			if !p.BackoffUntil.IsZero() {
				b = 1
			}
			ch <- prometheus.MustNewConstMetric(poolBackoffDesc, prometheus.GaugeValue, b, p.Profile)
		}
	}
	if c.o.Containers == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.o.Timeout)
	defer cancel()
	var states []idepool.State
	for _, s := range idepool.AllStates {
		if s != idepool.StateStopped {
			states = append(states, s)
		}
	}
	cs, _, err := c.o.Containers.List(ctx, idepool.ContainerFilter{States: states})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(containersDesc, err)
		return
	}
	type key struct{ state, profile string }
	counts := map[key]int{}
	// Every state of every known profile is reported, zeros included.
	for _, p := range profiles {
		for _, s := range states {
			counts[key{string(s), p}] = 0
		}
	}
	for _, x := range cs {
		counts[key{string(x.State), x.Profile}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), k.state, k.profile)
	}
}

type capacityCollector struct {
	f func() (float64, float64)
}

func (c *capacityCollector) Describe(ch chan<- *prometheus.Desc) { ch <- memDesc; ch <- cpuDesc }

func (c *capacityCollector) Collect(ch chan<- prometheus.Metric) {
	mem, cpu := c.f()
	ch <- prometheus.MustNewConstMetric(memDesc, prometheus.GaugeValue, mem/100)
	ch <- prometheus.MustNewConstMetric(cpuDesc, prometheus.GaugeValue, cpu/100)
}

// HostFigures are the host's measured use, each from 0 to 1; OK false when
// unknown (nothing is exported then).
type HostFigures struct {
	CPU, Memory, Disk float64
	OK                bool
}

var (
	hostCPUDesc  = prometheus.NewDesc("idepool_host_cpu_ratio", "CPU busy on the host (or in idepool's cgroup, where limited), measured, 0-1.", nil, nil)
	hostMemDesc  = prometheus.NewDesc("idepool_host_memory_ratio", "Memory in use on the host (or in idepool's cgroup), measured, 0-1.", nil, nil)
	hostDiskDesc = prometheus.NewDesc("idepool_host_disk_ratio", "Space used on DATA_DIR's filesystem, 0-1.", nil, nil)
)

type hostCollector struct{ f func() HostFigures }

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hostCPUDesc
	ch <- hostMemDesc
	ch <- hostDiskDesc
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.f()
	if !h.OK {
		return
	}
	ch <- prometheus.MustNewConstMetric(hostCPUDesc, prometheus.GaugeValue, h.CPU)
	ch <- prometheus.MustNewConstMetric(hostMemDesc, prometheus.GaugeValue, h.Memory)
	ch <- prometheus.MustNewConstMetric(hostDiskDesc, prometheus.GaugeValue, h.Disk)
}

// buildInfo is the constant 1 labelled with what runs, as Prometheus'
// own *_build_info metrics.
func buildInfo(version, runtime string) prometheus.Collector {
	if version == "" {
		version = "dev"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "idepool_build_info",
		Help:        "Always 1; its labels say which idepool runs: version, Go version, runtime.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goruntime.Version(), "runtime": runtime}})
	g.Set(1)
	return g
}
