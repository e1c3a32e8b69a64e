package capacity

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

// fixedClock pins Now for tests where no time passes; where it does, the
// test runs in a synctest bubble on the system clock.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

const gib = int64(1) << 30

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const meminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    4000000 kB\n"

func TestProcSourceHost(t *testing.T) { synctest.Test(t, testProcSourceHost) }

func testProcSourceHost(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"proc/meminfo": meminfo,
		"proc/stat":    "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\nintr 1\n",
	})
	src := NewProcSource(root, nil)
	s, err := src.SampleHost(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.MemoryTotal != 16000000*1024 || s.MemoryUsed != 12000000*1024 || s.CPUs != 2 || s.Source != "proc" {
		t.Fatalf("sample = %+v", s)
	}
	if s.MemoryPercent() != 75 || s.CPUUsed != 0.4 { // since boot: 200 busy of 1000
		t.Fatalf("memory %.1f%%, cpu %.2f cores", s.MemoryPercent(), s.CPUUsed)
	}
	// Then: 150 busy ticks of 200 since the last sample on 2 CPUs.
	writeFiles(t, root, map[string]string{"proc/stat": "cpu  200 0 150 850 0 0 0 0 0 0\ncpu0 0\ncpu1 0\n"})
	time.Sleep(time.Second)
	s, _ = src.SampleHost(t.Context())
	if s.CPUUsed != 1.5 || s.CPUPercent() != 75 {
		t.Fatalf("cpu used = %.2f cores (%.1f%%), want 1.5 (75%%)", s.CPUUsed, s.CPUPercent())
	}
}

func TestProcSourceCgroup(t *testing.T) { synctest.Test(t, testProcSourceCgroup) }

func testProcSourceCgroup(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"proc/meminfo":                 meminfo,
		"proc/stat":                    "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 0\ncpu1 0\ncpu2 0\ncpu3 0\n",
		"sys/fs/cgroup/memory.max":     "2147483648\n",
		"sys/fs/cgroup/memory.current": "1610612736\n",
		"sys/fs/cgroup/memory.stat":    "anon 1\ninactive_file 536870912\n",
		"sys/fs/cgroup/cpu.max":        "150000 100000\n",
		"sys/fs/cgroup/cpu.stat":       "usage_usec 1000000\nuser_usec 1\n",
	})
	src := NewProcSource(root, nil)
	s, err := src.SampleHost(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.Source != "cgroup" || s.MemoryTotal != 2*gib || s.MemoryUsed != gib || s.CPUs != 1.5 || s.CPUUsed != 0 {
		t.Fatalf("sample = %+v", s)
	}
	writeFiles(t, root, map[string]string{"sys/fs/cgroup/cpu.stat": "usage_usec 3000000\n"})
	time.Sleep(2 * time.Second)
	if s, _ = src.SampleHost(t.Context()); s.CPUUsed != 1 {
		t.Fatalf("cgroup cpu used = %v, want 1 core", s.CPUUsed)
	}
	// No limits ("max"): the host figures stand.
	writeFiles(t, root, map[string]string{"sys/fs/cgroup/memory.max": "max\n", "sys/fs/cgroup/cpu.max": "max 100000\n"})
	if s, _ = src.SampleHost(t.Context()); s.Source != "proc" || s.CPUs != 4 || s.MemoryTotal != 16000000*1024 {
		t.Fatalf("unlimited cgroup sample = %+v", s)
	}
}

func TestProcSourceBroken(t *testing.T) {
	src := NewProcSource(t.TempDir(), nil)
	if _, err := src.SampleHost(t.Context()); err == nil {
		t.Fatal("no error without /proc")
	}
}

type committed struct {
	pools    []idepool.PoolStatus
	profiles []idepool.Profile
}

func (c committed) Pools() []idepool.PoolStatus { return c.pools }
func (c committed) Profiles() []idepool.Profile { return c.profiles }

var prof = idepool.Profile{Name: "default", CPULimit: 2, MemoryLimit: 4 * gib, MemoryReservation: 1 * gib, CPUReservation: 0.5}

func host(memPct, cpuPct float64) HostSample {
	return HostSample{MemoryTotal: 100 * gib, MemoryUsed: int64(memPct * float64(gib)), CPUs: 100, CPUUsed: cpuPct}
}

func TestAdmitHost(t *testing.T) {
	tests := []struct {
		name     string
		host     HostSample
		starting int
		kind     idepool.ClaimKind
		reason   string // "" admits
	}{
		{"plenty", host(50, 10), 0, idepool.ClaimWarm, ""},
		{"cold at 89%", host(89, 10), 0, idepool.ClaimCold, ""},
		{"cold would pass 90%", host(89.5, 10), 0, idepool.ClaimCold, "memory"},
		{"95% memory refuses cold", host(95, 10), 0, idepool.ClaimCold, "memory"},
		{"warm refused first at 80%", host(80, 10), 0, idepool.ClaimWarm, "memory"},
		{"cold still admitted at 80%", host(80, 10), 0, idepool.ClaimCold, ""},
		{"starting containers count", host(70, 10), 10, idepool.ClaimWarm, "memory"},
		{"cpu limit", host(10, 89.8), 0, idepool.ClaimCold, "cpu"},
		{"warm cpu reserve", host(10, 79.8), 0, idepool.ClaimWarm, "cpu"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New(Options{Host: NewStaticHost(tc.host), Clock: fixedClock{t0}, MeasuredCPU: true})
			a.SetCommitted(committed{pools: []idepool.PoolStatus{{Profile: "default", Starting: tc.starting}}, profiles: []idepool.Profile{prof}})
			err := a.Admit(t.Context(), prof, tc.kind)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if idepool.ErrorCode(err) != idepool.ECapacity {
				t.Fatalf("err = %v, want ECapacity", err)
			}
			d := idepool.ErrorDetails(err)
			if d["reason"] != tc.reason || d["kind"] != string(tc.kind) || d["limitPercent"] == nil || d["usedPercent"] == nil {
				t.Fatalf("details = %v", d)
			}
		})
	}
}

func TestAdmitCountsGrantsUntilSettled(t *testing.T) {
	synctest.Test(t, testAdmitCountsGrantsUntilSettled)
}

func testAdmitCountsGrantsUntilSettled(t *testing.T) {
	a := New(Options{Host: NewStaticHost(host(76, 0)), Settle: 10 * time.Second})
	// Warm limit 80 %: 76 + 1 + 1 + 1 + 1 = 80 admits four, the fifth would be 81.
	for i := range 4 {
		if err := a.Admit(t.Context(), prof, idepool.ClaimWarm); err != nil {
			t.Fatalf("create %d refused: %v", i, err)
		}
	}
	if err := a.Admit(t.Context(), prof, idepool.ClaimWarm); err == nil {
		t.Fatal("fifth create admitted: grants not counted")
	}
	if h := a.Headroom(prof); h != 0 {
		t.Fatalf("headroom = %d, want 0", h)
	}
	time.Sleep(10 * time.Second)
	if h := a.Headroom(prof); h != 4 {
		t.Fatalf("headroom after settling = %d, want 4", h)
	}
}

func TestAdmitFailsOpen(t *testing.T) {
	a := New(Options{Host: hostErr{}, Clock: fixedClock{t0}})
	if err := a.Admit(t.Context(), prof, idepool.ClaimCold); err != nil {
		t.Fatalf("refused on unknown capacity: %v", err)
	}
	if h := a.Headroom(prof); h != -1 {
		t.Fatalf("headroom = %d, want -1", h)
	}
	if s := a.Snapshot(t.Context()); s.HostError == "" || s.Pressure.Active {
		t.Fatalf("snapshot = %+v", s)
	}
}

type hostErr struct{}

func (hostErr) SampleHost(context.Context) (HostSample, error) {
	return HostSample{}, errors.New("no /proc")
}

func TestHeadroomHost(t *testing.T) {
	tests := []struct {
		host HostSample
		p    idepool.Profile
		want int
	}{
		{host(50, 0), prof, 30},                          // 30 GiB to 80 %
		{host(50, 70), prof, 20},                         // cpu: 10 cores to 80 % / 0.5
		{host(85, 0), prof, 0},                           // over the warm limit
		{host(50, 0), idepool.Profile{Name: "free"}, -1}, // no reservation
		{host(85, 0), idepool.Profile{Name: "free"}, 0},  // none, but already over
		{HostSample{}, prof, -1},                         // nothing known
	}
	for i, tc := range tests {
		a := New(Options{Host: NewStaticHost(tc.host), Clock: fixedClock{t0}, MeasuredCPU: true})
		if got := a.Headroom(tc.p); got != tc.want {
			t.Errorf("%d: headroom = %d, want %d", i, got, tc.want)
		}
	}
}

func TestSwarmNodes(t *testing.T) {
	node := func(name string, memGiB, resGiB int64, cpus, resCPU float64, ready bool) Node {
		return Node{Name: name, MemoryBytes: memGiB * gib, ReservedMemoryBytes: resGiB * gib,
			NanoCPUs: int64(cpus * 1e9), ReservedNanoCPUs: int64(resCPU * 1e9), Ready: ready}
	}
	big := idepool.Profile{Name: "big", MemoryLimit: 6 * gib, CPULimit: 1}
	huge := idepool.Profile{Name: "huge", MemoryLimit: 32 * gib, CPULimit: 1}
	wide := idepool.Profile{Name: "wide", MemoryLimit: 1 * gib, CPULimit: 12}
	tests := []struct {
		name   string
		nodes  []Node
		p      idepool.Profile
		kind   idepool.ClaimKind
		reason string
		head   int
	}{
		{"fits", []Node{node("a", 16, 4, 8, 2, true)}, prof, idepool.ClaimCold, "", 8},
		{"fragmented: no node fits", []Node{node("a", 16, 11, 8, 0, true), node("b", 16, 11, 8, 0, true)}, big, idepool.ClaimCold, "node-fit", 0},
		{"down nodes do not count", []Node{node("a", 16, 4, 8, 0, true), node("b", 64, 0, 8, 0, false)}, big, idepool.ClaimCold, "", 1},
		{"cluster reservations over the limit", []Node{node("a", 100, 95, 100, 0, true)}, prof, idepool.ClaimCold, "memory", 0},
		{"no ready node", []Node{node("a", 16, 0, 8, 0, false)}, prof, idepool.ClaimCold, "node-fit", 0},
		{"more memory than any node has", []Node{node("a", 16, 0, 8, 0, true), node("b", 16, 0, 8, 0, true)}, huge, idepool.ClaimCold, idepool.ReasonNeverFits, 0},
		{"more CPUs than any node has", []Node{node("a", 64, 0, 8, 0, true)}, wide, idepool.ClaimCold, idepool.ReasonNeverFits, 0},
		{"only a down node is large enough: wait", []Node{node("a", 64, 0, 8, 0, true), node("b", 16, 0, 16, 0, false)}, wide, idepool.ClaimCold, "cpu", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New(Options{Host: NewStaticHost(host(99, 99)), Clock: fixedClock{t0},
				Nodes: NodeSourceFunc(func(context.Context) ([]Node, error) { return tc.nodes, nil })})
			if got := a.Headroom(tc.p); got != tc.head {
				t.Errorf("headroom = %d, want %d", got, tc.head)
			}
			err := a.Admit(t.Context(), tc.p, tc.kind)
			if got, _ := idepool.ErrorDetails(err)["reason"].(string); got != tc.reason {
				t.Fatalf("admit: %v (reason %q), want reason %q", err, got, tc.reason)
			}
			if s := a.Snapshot(t.Context()); s.Mode != "swarm" || len(s.Nodes) != len(tc.nodes) {
				t.Fatalf("snapshot = %+v", s)
			}
		})
	}
}

func TestPressure(t *testing.T) {
	tests := []struct {
		host     HostSample
		active   bool
		critical bool
		reason   string
	}{
		{host(50, 50), false, false, ""},
		{host(82, 10), true, false, "memory"},
		{host(95, 10), true, true, "memory"},
		{host(10, 85), true, false, "cpu"},
		{host(81, 95), true, true, "cpu"},
	}
	for i, tc := range tests {
		a := New(Options{Host: NewStaticHost(tc.host), Clock: fixedClock{t0}, MeasuredCPU: true})
		p := a.Pressure()
		if p.Active != tc.active || p.Critical != tc.critical || p.Reason != tc.reason {
			t.Errorf("%d: pressure = %+v", i, p)
		}
	}
}

type fakePool struct {
	mu      sync.Mutex
	warm    []idepool.Container
	stopped map[string]string
}

func (f *fakePool) List(_ context.Context, flt idepool.ContainerFilter) ([]idepool.Container, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]idepool.Container(nil), f.warm...)
	if flt.Limit > 0 && len(out) > flt.Limit {
		out = out[:flt.Limit]
	}
	return out, len(f.warm), nil
}

func (f *fakePool) Stop(_ context.Context, id, reason string) (idepool.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, c := range f.warm {
		if c.ID == id {
			f.warm = append(f.warm[:i], f.warm[i+1:]...)
			f.stopped[id] = reason
			return c, nil
		}
	}
	return idepool.Container{}, idepool.Errorf(idepool.ENotFound, "gone")
}

// With the source at 95 % memory: cold creates are refused, the warm pool
// shrinks one container per step, and stops when the pressure is gone.
func TestShedUnderPressure(t *testing.T) {
	src := NewStaticHost(host(95, 0))
	a := New(Options{Host: src, Clock: fixedClock{t0}})
	p := &fakePool{stopped: map[string]string{}, warm: []idepool.Container{
		{ID: "w1", State: idepool.StateWarm}, {ID: "w2", State: idepool.StateWarm}, {ID: "w3", State: idepool.StateWarm}}}
	if err := a.Admit(t.Context(), prof, idepool.ClaimCold); idepool.ErrorCode(err) != idepool.ECapacity {
		t.Fatalf("cold create at 95%%: %v", err)
	}
	for _, want := range []string{"w1", "w2"} {
		id, err := a.ShedOnce(t.Context(), p)
		if err != nil || id != want {
			t.Fatalf("shed %q, %v; want %s", id, err, want)
		}
	}
	src.Set(host(60, 0))
	if id, _ := a.ShedOnce(t.Context(), p); id != "" {
		t.Fatalf("shed %s without pressure", id)
	}
	if len(p.stopped) != 2 || p.stopped["w1"] != idepool.ReasonCapacity {
		t.Fatalf("stopped = %v", p.stopped)
	}
}

// Run sheds one warm container per interval while under pressure.
func TestRunSheds(t *testing.T) { synctest.Test(t, testRunSheds) }

func testRunSheds(t *testing.T) {
	src := NewStaticHost(host(95, 0))
	a := New(Options{Host: src, SampleInterval: 5 * time.Second})
	p := &fakePool{stopped: map[string]string{}, warm: []idepool.Container{
		{ID: "w1", State: idepool.StateWarm}, {ID: "w2", State: idepool.StateWarm}, {ID: "w3", State: idepool.StateWarm}}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- a.Run(ctx, p) }()
	synctest.Wait()
	if n := len(p.stops()); n != 1 {
		t.Fatalf("after the first sample: %d stopped", n)
	}
	time.Sleep(5 * time.Second)
	synctest.Wait()
	if n := len(p.stops()); n != 2 {
		t.Fatalf("after one interval: %d stopped", n)
	}
	src.Set(host(50, 0))
	time.Sleep(10 * time.Second)
	synctest.Wait()
	if n := len(p.stops()); n != 2 {
		t.Fatalf("shed without pressure: %d stopped", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func (f *fakePool) stops() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.stopped)
}

// By default host-mode CPU admission counts the reservations of live
// containers, not the measured load: a busy host (a compile, a test run)
// still refills its pool, while promised CPU stays bounded.
func TestAdmitHostCPUByReservation(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	busy := host(10, 99) // 99 of 100 cores busy
	a := New(Options{Host: NewStaticHost(busy), Clock: fixedClock{t0}})
	if err := a.Admit(t.Context(), prof, idepool.ClaimWarm); err != nil {
		t.Fatalf("busy host with no reservations: %v, want admitted", err)
	}
	// 170 containers reserve 85 of 100 cores: a warm refill (limit 80 %)
	// is refused, a cold create for a waiting user (limit 90 %) admitted.
	a.SetCommitted(committed{pools: []idepool.PoolStatus{{Profile: "default", Claimed: 170}}, profiles: []idepool.Profile{prof}})
	err := a.Admit(t.Context(), prof, idepool.ClaimWarm)
	if idepool.ErrorCode(err) != idepool.ECapacity || idepool.ErrorDetails(err)["reason"] != "cpu" {
		t.Fatalf("warm over the reserved CPU: %v, want ECapacity cpu", err)
	}
	if err := a.Admit(t.Context(), prof, idepool.ClaimCold); err != nil {
		t.Fatalf("cold under the limit: %v", err)
	}
}
