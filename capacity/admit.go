// Package capacity measures what the machines can still hold and decides
// whether one more container may be created (admission control).
//
// Without a NodeSource (process runtime, one Docker engine) admission uses
// the host: memory and CPU in use now, plus the reservations of containers
// still starting (their usage does not show yet) and of creates just
// admitted, plus the new container's reservation, must stay under
// MAX_MEMORY_PERCENT / MAX_CPU_PERCENT. With a NodeSource (Swarm) it uses
// reservations: the nodes' reservations plus the new one must stay under the
// limits across ready nodes, and the reservation must fit on one node.
//
// Warm refills are refused first: they must stay WarmReservePercent points
// under the limits, so that the room left is kept for cold creates serving
// waiting users. Pressure says when the pool should give warm containers up.
package capacity

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// Committed is what the orchestrator has asked for that a sample may not
// show yet (implemented by pool.Manager).
type Committed interface {
	Pools() []idepool.PoolStatus
	Profiles() []idepool.Profile
}

// Options configure an Admitter; zero values get defaults.
type Options struct {
	// Host samples the host (default: NewProcSource("/")).
	Host HostSource
	// Nodes, when set, switches admission to Swarm nodes' reservations.
	Nodes NodeSource
	// Committed gives the containers still starting (optional).
	Committed Committed
	// MaxMemoryPercent and MaxCPUPercent (1-100, default 90).
	MaxMemoryPercent float64
	MaxCPUPercent    float64
	// WarmReservePercent is how many points under the limits warm refills
	// must stay (default 10; negative means 0).
	WarmReservePercent float64
	// HostReservations also counts, on a host, the reservations of every
	// live container (not only of starting ones) — for hosts that run only
	// idepool containers with real limits. Off by default: the process
	// runtime does not enforce limits, so reservations would overstate use.
	HostReservations bool
	// MeasuredCPU makes host-mode CPU admission compare the measured load
	// (like memory) instead of the CPU reservations of live containers.
	// Off by default: a load spike would stop refills.
	MeasuredCPU bool
	// SampleInterval: samples older than this are taken again (default 5 s).
	SampleInterval time.Duration
	// Settle is how long an admitted create is counted before the pool's
	// own figures show it (default 10 s).
	Settle time.Duration
	// Timeout bounds one sample (default 5 s).
	Timeout time.Duration
	Clock   idepool.Clock
	Logger  *slog.Logger
}

// Admitter implements pool.Admitter and pool.HeadroomReporter.
type Admitter struct {
	o   Options
	log *slog.Logger

	mu        sync.Mutex
	host      HostSample
	hostErr   error
	hostAt    time.Time
	nodes     []Node
	nodesErr  error
	nodesAt   time.Time
	admitted  []grant
	warnedErr bool
}

// grant is a recently admitted create.
type grant struct {
	at  time.Time
	mem int64
	cpu float64
}

// New returns an Admitter.
func New(o Options) *Admitter {
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.Host == nil {
		o.Host = NewProcSource("/", o.Clock)
	}
	if o.MaxMemoryPercent <= 0 || o.MaxMemoryPercent > 100 {
		o.MaxMemoryPercent = 90
	}
	if o.MaxCPUPercent <= 0 || o.MaxCPUPercent > 100 {
		o.MaxCPUPercent = 90
	}
	if o.WarmReservePercent == 0 {
		o.WarmReservePercent = 10
	}
	o.WarmReservePercent = max(o.WarmReservePercent, 0)
	if o.SampleInterval <= 0 {
		o.SampleInterval = 5 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Admitter{o: o, log: o.Logger}
}

// SetCommitted sets the source of starting containers after construction
// (the pool needs the Admitter before it exists).
func (a *Admitter) SetCommitted(c Committed) {
	a.mu.Lock()
	a.o.Committed = c
	a.mu.Unlock()
}

// Limits are the thresholds in force, in percent.
type Limits struct {
	MemoryPercent     float64 `json:"memoryPercent"`
	CPUPercent        float64 `json:"cpuPercent"`
	WarmMemoryPercent float64 `json:"warmMemoryPercent"`
	WarmCPUPercent    float64 `json:"warmCpuPercent"`
}

func (a *Admitter) limits() Limits {
	return Limits{
		MemoryPercent: a.o.MaxMemoryPercent, CPUPercent: a.o.MaxCPUPercent,
		WarmMemoryPercent: max(a.o.MaxMemoryPercent-a.o.WarmReservePercent, 0),
		WarmCPUPercent:    max(a.o.MaxCPUPercent-a.o.WarmReservePercent, 0),
	}
}

// state is one consistent view used by a decision.
type state struct {
	now time.Time
	// Capacity and what is used (host: measured; swarm: reserved) in bytes
	// and cores; pending is what starting containers and fresh grants add.
	memTotal, memUsed, memPending int64
	cpuTotal, cpuUsed, cpuPending float64
	swarm                         bool
	nodes                         []Node // the ready ones
	allNodes                      []Node // down and drained ones too
	err                           error  // the sample failed: admit (fail open)
}

// sample returns fresh-enough figures. Caller must not hold a.mu.
func (a *Admitter) sample(ctx context.Context) state {
	now := a.o.Clock.Now()
	a.mu.Lock()
	needHost := a.hostAt.IsZero() || now.Sub(a.hostAt) >= a.o.SampleInterval
	needNodes := a.o.Nodes != nil && (a.nodesAt.IsZero() || now.Sub(a.nodesAt) >= a.o.SampleInterval)
	a.mu.Unlock()
	if needHost {
		sctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
		h, err := a.o.Host.SampleHost(sctx)
		cancel()
		a.mu.Lock()
		a.host, a.hostErr, a.hostAt = h, err, now
		a.mu.Unlock()
	}
	if needNodes {
		sctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
		ns, err := a.o.Nodes.Nodes(sctx)
		cancel()
		a.mu.Lock()
		a.nodes, a.nodesErr, a.nodesAt = ns, err, now
		a.mu.Unlock()
	}

	var starting []idepool.PoolStatus
	var profiles []idepool.Profile
	a.mu.Lock()
	committed := a.o.Committed
	a.mu.Unlock()
	if committed != nil {
		starting = committed.Pools()
		profiles = committed.Profiles()
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	s := state{now: now}
	// Grants older than Settle show in the pool's figures by now.
	a.admitted = slices.DeleteFunc(a.admitted, func(g grant) bool { return now.Sub(g.at) >= a.o.Settle })
	for _, g := range a.admitted {
		s.memPending += g.mem
		s.cpuPending += g.cpu
	}
	res := map[string]idepool.Profile{}
	for _, p := range profiles {
		res[p.Name] = p
	}
	var liveMem int64
	var liveCPU float64
	for _, ps := range starting {
		p := res[ps.Profile]
		s.memPending += int64(ps.Starting) * p.EffectiveMemoryReservation()
		s.cpuPending += float64(ps.Starting) * p.EffectiveCPUReservation()
		n := ps.Warm + ps.Claimed
		liveMem += int64(n) * p.EffectiveMemoryReservation()
		liveCPU += float64(n) * p.EffectiveCPUReservation()
	}
	if a.o.Nodes != nil {
		s.swarm = true
		if a.nodesErr != nil {
			s.err = a.nodesErr
			return s
		}
		s.allNodes = a.nodes
		for _, n := range a.nodes {
			if !n.Ready {
				continue
			}
			s.nodes = append(s.nodes, n)
			s.memTotal += n.MemoryBytes
			s.memUsed += n.ReservedMemoryBytes
			s.cpuTotal += float64(n.NanoCPUs) / 1e9
			s.cpuUsed += float64(n.ReservedNanoCPUs) / 1e9
		}
		// Starting services already hold their reservations on Swarm; only
		// the fresh grants are pending.
		s.memPending, s.cpuPending = 0, 0
		for _, g := range a.admitted {
			s.memPending += g.mem
			s.cpuPending += g.cpu
		}
		return s
	}
	if a.hostErr != nil {
		s.err = a.hostErr
		return s
	}
	s.memTotal, s.memUsed = a.host.MemoryTotal, a.host.MemoryUsed
	s.cpuTotal, s.cpuUsed = a.host.CPUs, a.host.CPUUsed
	if !a.o.MeasuredCPU {
		// CPU is compressible: a busy host slows down but loses nothing,
		// and a load spike (a compile, a test run) must not stop the pool
		// from refilling. So CPU admission counts what was promised to
		// containers (their reservations), not the instantaneous load;
		// memory, which is not compressible, counts what is really used.
		s.cpuUsed = liveCPU
	}
	if a.o.HostReservations {
		s.memUsed = max(s.memUsed, liveMem)
		s.cpuUsed = max(s.cpuUsed, liveCPU)
	}
	return s
}

// Admit implements pool.Admitter: nil, or an idepool.Error coded ECapacity
// whose Details say why (reason memory, cpu or node-fit).
func (a *Admitter) Admit(ctx context.Context, p idepool.Profile, kind idepool.ClaimKind) error {
	s := a.sample(ctx)
	if s.err != nil {
		a.warnOnce(s.err)
		return nil
	}
	if err := a.decide(s, p, kind); err != nil {
		return err
	}
	a.mu.Lock()
	a.admitted = append(a.admitted, grant{at: s.now, mem: p.EffectiveMemoryReservation(), cpu: p.EffectiveCPUReservation()})
	a.mu.Unlock()
	return nil
}

func (a *Admitter) warnOnce(err error) {
	a.mu.Lock()
	first := !a.warnedErr
	a.warnedErr = true
	a.mu.Unlock()
	if first {
		a.log.Warn("capacity unknown, admitting everything", "err", err)
	}
}

// decide is the admission rule on one view.
func (a *Admitter) decide(s state, p idepool.Profile, kind idepool.ClaimKind) error {
	lim := a.limits()
	memLimit, cpuLimit := lim.MemoryPercent, lim.CPUPercent
	if kind == idepool.ClaimWarm {
		memLimit, cpuLimit = lim.WarmMemoryPercent, lim.WarmCPUPercent
	}
	needMem, needCPU := p.EffectiveMemoryReservation(), p.EffectiveCPUReservation()
	refuse := func(reason string, msg string, d map[string]any) error {
		d["reason"] = reason
		d["kind"] = string(kind)
		d["profile"] = p.Name
		return &idepool.Error{Code: idepool.ECapacity, Message: msg, Details: d}
	}
	if s.swarm && len(s.allNodes) > 0 && !anyNodeHolds(s.allNodes, needMem, needCPU) {
		// Not a matter of waiting: no node is that large, even empty.
		var bigMem, bigCPU int64
		for _, n := range s.allNodes {
			bigMem, bigCPU = max(bigMem, n.MemoryBytes), max(bigCPU, n.NanoCPUs)
		}
		return refuse(idepool.ReasonNeverFits, fmt.Sprintf("no node of the cluster can ever run a %s container: it reserves %d bytes and %.2f CPUs, the largest node has %d bytes and %.2f CPUs",
			p.Name, needMem, needCPU, bigMem, float64(bigCPU)/1e9),
			map[string]any{"neededBytes": needMem, "neededNanoCPUs": int64(needCPU * 1e9), "largestBytes": bigMem,
				"largestNanoCPUs": bigCPU, "nodes": len(s.allNodes)})
	}
	if s.memTotal > 0 {
		projected := percent(float64(s.memUsed+s.memPending+needMem), float64(s.memTotal))
		if projected > memLimit {
			return refuse("memory", fmt.Sprintf("not enough memory: a new %s container would bring memory to %.1f%% (limit %.0f%%)", p.Name, projected, memLimit),
				map[string]any{"usedPercent": round1(percent(float64(s.memUsed), float64(s.memTotal))), "projectedPercent": round1(projected),
					"limitPercent": memLimit, "neededBytes": needMem, "availableBytes": max(s.memTotal-s.memUsed-s.memPending, 0)})
		}
	}
	if s.cpuTotal > 0 {
		projected := percent(s.cpuUsed+s.cpuPending+needCPU, s.cpuTotal)
		if projected > cpuLimit {
			return refuse("cpu", fmt.Sprintf("not enough CPU: a new %s container would bring CPU to %.1f%% (limit %.0f%%)", p.Name, projected, cpuLimit),
				map[string]any{"usedPercent": round1(percent(s.cpuUsed, s.cpuTotal)), "projectedPercent": round1(projected),
					"limitPercent": cpuLimit, "neededCPUs": needCPU, "availableCPUs": round1(max(s.cpuTotal-s.cpuUsed-s.cpuPending, 0))})
		}
	}
	if s.swarm {
		if fits(s.nodes, needMem, needCPU) == 0 {
			var bestMem, bestCPU int64
			for _, n := range s.nodes {
				bestMem = max(bestMem, n.FreeMemoryBytes())
				bestCPU = max(bestCPU, n.FreeNanoCPUs())
			}
			return refuse("node-fit", fmt.Sprintf("no ready node has room for a %s container (%d bytes, %.2f CPUs)", p.Name, needMem, needCPU),
				map[string]any{"neededBytes": needMem, "neededNanoCPUs": int64(needCPU * 1e9), "largestFreeBytes": bestMem,
					"largestFreeNanoCPUs": bestCPU, "readyNodes": len(s.nodes)})
		}
	}
	return nil
}

// anyNodeHolds reports whether some node, empty, could hold one container
// reserving mem and cpu.
func anyNodeHolds(nodes []Node, mem int64, cpu float64) bool {
	for _, n := range nodes {
		if n.MemoryBytes >= mem && float64(n.NanoCPUs) >= cpu*1e9 {
			return true
		}
	}
	return false
}

// fits counts how many containers reserving mem and cpu the nodes can
// still place (-1: unbounded).
func fits(nodes []Node, mem int64, cpu float64) int {
	if mem <= 0 && cpu <= 0 {
		if len(nodes) == 0 {
			return 0
		}
		return -1
	}
	total := 0
	for _, n := range nodes {
		k := math.MaxInt32
		if mem > 0 {
			k = min(k, int(n.FreeMemoryBytes()/mem))
		}
		if cpu > 0 {
			k = min(k, int(float64(n.FreeNanoCPUs())/(cpu*1e9)))
		}
		total += k
	}
	return total
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// Headroom implements pool.HeadroomReporter: how many more warm containers
// of p fit under the warm thresholds (-1: no bound).
func (a *Admitter) Headroom(p idepool.Profile) int {
	s := a.sample(context.Background())
	if s.err != nil {
		return -1
	}
	lim := a.limits()
	n := -1
	bound := func(k int) {
		k = max(k, 0)
		if n < 0 || k < n {
			n = k
		}
	}
	room := func(total, used, limitPct, need float64) {
		if total <= 0 {
			return
		}
		free := total*limitPct/100 - used
		if need <= 0 {
			if free < 0 {
				bound(0)
			}
			return
		}
		bound(int(math.Floor(free/need + 1e-9)))
	}
	room(float64(s.memTotal), float64(s.memUsed+s.memPending), lim.WarmMemoryPercent, float64(p.EffectiveMemoryReservation()))
	room(s.cpuTotal, s.cpuUsed+s.cpuPending, lim.WarmCPUPercent, p.EffectiveCPUReservation())
	if s.swarm {
		if k := fits(s.nodes, p.EffectiveMemoryReservation(), p.EffectiveCPUReservation()); k >= 0 {
			bound(k)
		}
	}
	return n
}

// Pressure says whether warm containers should be given up.
type Pressure struct {
	// Active: usage is at or above a warm threshold; warm refills are
	// refused and the pool should give up warm containers (oldest first,
	// reason capacity) until it is not.
	Active bool `json:"active"`
	// Critical: usage is at or above a limit; cold creates are refused too.
	Critical bool `json:"critical"`
	// Reason is "memory" or "cpu" (the worse of the two) when Active.
	Reason        string  `json:"reason,omitempty"`
	MemoryPercent float64 `json:"memoryPercent"`
	CPUPercent    float64 `json:"cpuPercent"`
}

// Pressure samples (if stale) and reports the pressure. On Swarm the
// figures are the nodes' reservations. An unknown capacity is no pressure.
func (a *Admitter) Pressure() Pressure {
	return a.pressure(a.sample(context.Background()))
}

func (a *Admitter) pressure(s state) Pressure {
	if s.err != nil {
		return Pressure{}
	}
	lim := a.limits()
	pr := Pressure{MemoryPercent: round1(percent(float64(s.memUsed), float64(s.memTotal))),
		CPUPercent: round1(percent(s.cpuUsed, s.cpuTotal))}
	memOver := s.memTotal > 0 && pr.MemoryPercent >= lim.WarmMemoryPercent
	cpuOver := s.cpuTotal > 0 && pr.CPUPercent >= lim.WarmCPUPercent
	if !memOver && !cpuOver {
		return pr
	}
	pr.Active = true
	pr.Critical = (s.memTotal > 0 && pr.MemoryPercent >= lim.MemoryPercent) || (s.cpuTotal > 0 && pr.CPUPercent >= lim.CPUPercent)
	pr.Reason = "cpu"
	if memOver && (!cpuOver || pr.MemoryPercent-lim.WarmMemoryPercent >= pr.CPUPercent-lim.WarmCPUPercent) {
		pr.Reason = "memory"
	}
	return pr
}

// NodeStatus is a node with what it can still hold.
type NodeStatus struct {
	Node
	FreeNanoCPUs    int64   `json:"freeNanoCPUs"`
	FreeMemoryBytes int64   `json:"freeMemoryBytes"`
	MemoryPercent   float64 `json:"memoryPercent"`
	CPUPercent      float64 `json:"cpuPercent"`
}

// Snapshot is capacity for /api/health and the dashboard.
type Snapshot struct {
	Time time.Time `json:"time"`
	// Mode is "host" or "swarm": what admission uses.
	Mode       string       `json:"mode"`
	Host       *HostSample  `json:"host,omitempty"`
	HostError  string       `json:"hostError,omitempty"`
	Nodes      []NodeStatus `json:"nodes,omitempty"`
	NodesError string       `json:"nodesError,omitempty"`
	// MemoryPercent and CPUPercent are the figures admission compares
	// (without pending creates).
	MemoryPercent float64  `json:"memoryPercent"`
	CPUPercent    float64  `json:"cpuPercent"`
	Limits        Limits   `json:"limits"`
	Pressure      Pressure `json:"pressure"`
}

// Snapshot returns the current figures (sampling if stale).
func (a *Admitter) Snapshot(ctx context.Context) Snapshot {
	s := a.sample(ctx)
	out := Snapshot{Time: s.now, Mode: "host", Limits: a.limits(), Pressure: a.pressure(s),
		MemoryPercent: round1(percent(float64(s.memUsed), float64(s.memTotal))), CPUPercent: round1(percent(s.cpuUsed, s.cpuTotal))}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hostErr != nil {
		out.HostError = a.hostErr.Error()
	} else if !a.hostAt.IsZero() {
		h := a.host
		out.Host = &h
	}
	if a.o.Nodes != nil {
		out.Mode = "swarm"
		if a.nodesErr != nil {
			out.NodesError = a.nodesErr.Error()
		}
		for _, n := range a.nodes {
			out.Nodes = append(out.Nodes, NodeStatus{Node: n, FreeNanoCPUs: n.FreeNanoCPUs(), FreeMemoryBytes: n.FreeMemoryBytes(),
				MemoryPercent: round1(percent(float64(n.ReservedMemoryBytes), float64(n.MemoryBytes))),
				CPUPercent:    round1(percent(float64(n.ReservedNanoCPUs), float64(n.NanoCPUs)))})
		}
	}
	return out
}
