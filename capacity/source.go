package capacity

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// HostSample is the memory and CPU of the machine (or of the cgroup the
// orchestrator runs in) at one moment.
type HostSample struct {
	Time time.Time `json:"time"`
	// MemoryTotal is the memory usable here: MemTotal, or the cgroup's
	// memory.max when lower. MemoryUsed excludes reclaimable caches.
	MemoryTotal int64 `json:"memoryTotal"`
	MemoryUsed  int64 `json:"memoryUsed"`
	// CPUs is the number of cores usable (cgroup cpu.max quota when set);
	// CPUUsed the cores busy on average since the previous sample.
	CPUs    float64 `json:"cpus"`
	CPUUsed float64 `json:"cpuUsed"`
	// Source says where the figures come from: "proc" or "cgroup".
	Source string `json:"source"`
}

// MemoryAvailable is MemoryTotal - MemoryUsed.
func (h HostSample) MemoryAvailable() int64 { return max(h.MemoryTotal-h.MemoryUsed, 0) }

// MemoryPercent is the share of memory in use.
func (h HostSample) MemoryPercent() float64 {
	return percent(float64(h.MemoryUsed), float64(h.MemoryTotal))
}

// CPUPercent is the share of CPU in use.
func (h HostSample) CPUPercent() float64 { return percent(h.CPUUsed, h.CPUs) }

func percent(used, total float64) float64 {
	if total <= 0 {
		return 0
	}
	return 100 * used / total
}

// HostSource samples the host. Tests inject one (95 % memory).
type HostSource interface {
	SampleHost(ctx context.Context) (HostSample, error)
}

// StaticHost is a HostSource that returns a fixed sample (tests, and hosts
// without /proc); change it with Set.
type StaticHost struct {
	mu sync.Mutex
	s  HostSample
}

var _ HostSource = (*StaticHost)(nil)

// NewStaticHost returns a source that reports s.
func NewStaticHost(s HostSample) *StaticHost { return &StaticHost{s: s} }

// Set replaces the sample.
func (h *StaticHost) Set(s HostSample) {
	h.mu.Lock()
	h.s = s
	h.mu.Unlock()
}

// SampleHost returns the sample.
func (h *StaticHost) SampleHost(context.Context) (HostSample, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.s, nil
}

// ProcSource reads /proc/meminfo and /proc/stat, and the cgroup v2 files
// under /sys/fs/cgroup when the orchestrator runs in a container (a
// non-root cgroup: memory.max and cpu.max exist), so that a container's
// limits, not the whole machine, bound admission.
type ProcSource struct {
	root  string
	clock idepool.Clock

	mu       sync.Mutex
	prevBusy float64 // /proc/stat: busy ticks; cgroup: usage µs
	prevAll  float64 // /proc/stat: all ticks; cgroup: unused
	prevTime time.Time
	prevSrc  string
}

var _ HostSource = (*ProcSource)(nil)

// NewProcSource reads under root ("" or "/" for the real system; tests
// pass a directory holding proc/ and sys/fs/cgroup/ files).
func NewProcSource(root string, clock idepool.Clock) *ProcSource {
	if root == "" {
		root = "/"
	}
	if clock == nil {
		clock = idepool.SystemClock{}
	}
	return &ProcSource{root: root, clock: clock}
}

func (p *ProcSource) read(rel string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(p.root, rel))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", rel, err)
	}
	return b, nil
}

// SampleHost reads the files once; CPU usage is the average since the
// previous call (the first call of a host gives the average since boot,
// of a cgroup 0).
func (p *ProcSource) SampleHost(ctx context.Context) (HostSample, error) {
	if err := ctx.Err(); err != nil {
		return HostSample{}, err
	}
	now := p.clock.Now()
	mi, err := p.read("proc/meminfo")
	if err != nil {
		return HostSample{}, err
	}
	total, avail, err := parseMeminfo(mi)
	if err != nil {
		return HostSample{}, err
	}
	st, err := p.read("proc/stat")
	if err != nil {
		return HostSample{}, err
	}
	busy, all, ncpu, err := parseStat(st)
	if err != nil {
		return HostSample{}, err
	}
	s := HostSample{Time: now, MemoryTotal: total, MemoryUsed: total - avail, CPUs: float64(ncpu), Source: "proc"}

	// cgroup v2 limits, when this process runs in a limited cgroup.
	cgMax, errMax := p.read("sys/fs/cgroup/memory.max")
	cpuMax, errCPU := p.read("sys/fs/cgroup/cpu.max")
	inCgroup := errMax == nil || errCPU == nil
	if errMax == nil {
		if lim, ok := parseMax(cgMax); ok && lim < s.MemoryTotal {
			s.MemoryTotal = lim
			s.Source = "cgroup"
		}
		if cur, err := p.read("sys/fs/cgroup/memory.current"); err == nil {
			if used, err := strconv.ParseInt(strings.TrimSpace(string(cur)), 10, 64); err == nil {
				// The working set: page cache the kernel can drop is not in use.
				if ms, err := p.read("sys/fs/cgroup/memory.stat"); err == nil {
					used -= statField(ms, "inactive_file")
				}
				if s.Source == "cgroup" {
					s.MemoryUsed = max(used, 0)
				}
			}
		}
	}
	if errCPU == nil {
		if cores, ok := parseCPUMax(cpuMax); ok && cores < s.CPUs {
			s.CPUs = cores
			s.Source = "cgroup"
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if inCgroup && s.Source == "cgroup" {
		if cs, err := p.read("sys/fs/cgroup/cpu.stat"); err == nil {
			usec := float64(statField(cs, "usage_usec"))
			if p.prevSrc == "cgroup" && now.After(p.prevTime) {
				s.CPUUsed = max(usec-p.prevBusy, 0) / float64(now.Sub(p.prevTime).Microseconds())
			}
			p.prevBusy, p.prevTime, p.prevSrc = usec, now, "cgroup"
			return s, nil
		}
	}
	dBusy, dAll := busy, all
	if p.prevSrc == "proc" {
		dBusy, dAll = busy-p.prevBusy, all-p.prevAll
	}
	if dAll > 0 {
		s.CPUUsed = float64(ncpu) * max(dBusy, 0) / dAll
	}
	p.prevBusy, p.prevAll, p.prevTime, p.prevSrc = busy, all, now, "proc"
	return s, nil
}

// parseMeminfo returns MemTotal and MemAvailable in bytes.
func parseMeminfo(b []byte) (total, avail int64, err error) {
	var haveT, haveA bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		if len(f) >= 3 && f[2] == "kB" {
			v *= 1024
		}
		switch f[0] {
		case "MemTotal:":
			total, haveT = v, true
		case "MemAvailable:":
			avail, haveA = v, true
		}
	}
	if !haveT || !haveA {
		return 0, 0, fmt.Errorf("meminfo: MemTotal or MemAvailable missing")
	}
	return total, avail, nil
}

// parseStat returns the aggregate busy and total ticks and the CPU count.
func parseStat(b []byte) (busy, all float64, ncpu int, err error) {
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if f[0] != "cpu" {
			ncpu++
			continue
		}
		// user nice system idle iowait irq softirq steal (guest is in user).
		var v [8]float64
		for i := 0; i < 8 && i+1 < len(f); i++ {
			v[i], _ = strconv.ParseFloat(f[i+1], 64)
		}
		for _, x := range v {
			all += x
		}
		busy = all - v[3] - v[4]
		found = true
	}
	if !found || ncpu == 0 {
		return 0, 0, 0, fmt.Errorf("stat: no cpu lines")
	}
	return busy, all, ncpu, nil
}

// parseMax reads a cgroup "max" or a byte count.
func parseMax(b []byte) (int64, bool) {
	s := strings.TrimSpace(string(b))
	if s == "max" || s == "" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0
}

// parseCPUMax reads cpu.max ("quota period" or "max period") as cores.
func parseCPUMax(b []byte) (float64, bool) {
	f := strings.Fields(string(b))
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	q, err1 := strconv.ParseFloat(f[0], 64)
	per, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || q <= 0 || per <= 0 {
		return 0, false
	}
	return q / per, true
}

// statField returns a "key value" line's value (memory.stat, cpu.stat).
func statField(b []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// Node is one node's capacity and what the tasks placed on it reserve (a
// runtime's Capabilities.Nodes, on Swarm).
type Node struct {
	Name                string `json:"name"`
	NanoCPUs            int64  `json:"nanoCPUs"`
	MemoryBytes         int64  `json:"memoryBytes"`
	ReservedNanoCPUs    int64  `json:"reservedNanoCPUs"`
	ReservedMemoryBytes int64  `json:"reservedMemoryBytes"`
	// Ready: the node is ready and active (not drained or paused), so
	// tasks can be placed on it.
	Ready bool `json:"ready"`
}

// FreeNanoCPUs is what the node can still reserve.
func (n Node) FreeNanoCPUs() int64 { return max(n.NanoCPUs-n.ReservedNanoCPUs, 0) }

// FreeMemoryBytes is what the node can still reserve.
func (n Node) FreeMemoryBytes() int64 { return max(n.MemoryBytes-n.ReservedMemoryBytes, 0) }

// NodeSource lists the nodes containers may run on.
type NodeSource interface {
	Nodes(ctx context.Context) ([]Node, error)
}

// NodeSourceFunc adapts a function to NodeSource.
type NodeSourceFunc func(ctx context.Context) ([]Node, error)

// Nodes calls f.
func (f NodeSourceFunc) Nodes(ctx context.Context) ([]Node, error) { return f(ctx) }
