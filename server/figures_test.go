package server_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool/server"
)

// procStatBusy reads the aggregate "cpu" line of /proc/stat: busy and all
// ticks (busy = all - idle - iowait), as the health figure counts them.
func procStatBusy(t *testing.T) (busy, all float64) {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Skipf("no /proc/stat: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[0] != "cpu" {
			continue
		}
		var v [8]float64
		for i := 0; i < 8 && i+1 < len(f); i++ {
			v[i], _ = strconv.ParseFloat(f[i+1], 64)
		}
		for _, x := range v {
			all += x
		}
		return all - v[3] - v[4], all
	}
	t.Fatal("/proc/stat: no cpu line")
	return 0, 0
}

type healthJSON struct {
	Status  string `json:"status"`
	Runtime struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
	} `json:"runtime"`
	Docker struct {
		Connected bool   `json:"connected"`
		Error     string `json:"error"`
	} `json:"docker"`
	Resources struct {
		CPU struct {
			Cores        float64 `json:"cores"`
			UsagePercent float64 `json:"usagePercent"`
		} `json:"cpu"`
		Disk struct {
			Total        int64   `json:"total"`
			Used         int64   `json:"used"`
			Available    int64   `json:"available"`
			UsagePercent float64 `json:"usagePercent"`
		} `json:"disk"`
	} `json:"resources"`
}

// TestHealthFiguresTellTheTruth: with a core kept busy, /api/health's CPU
// figure is above 0 (it was the reservations' 0 % on the process runtime);
// disk is DATA_DIR's filesystem, not zeros; the runtime is named and
// docker.connected does not claim a Docker that is not used; /metrics has
// 0–1 ratios and idepool_build_info.
func TestHealthFiguresTellTheTruth(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	in := startWith(t, testConfig(t, dataDir, freePort(t), 0), func(o *server.Options) {
		o.CapacityInterval = 100 * time.Millisecond
	})
	defer in.stop(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // one busy core
		defer wg.Done()
		for n := 0; ctx.Err() == nil; n++ {
			_ = n * n
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	// Our own /proc/stat computation: wait until the host's busy ticks
	// have grown (the load shows), then ask the server.
	busy0, all0 := procStatBusy(t)
	var own float64
	for {
		busy, all := procStatBusy(t)
		if busy-busy0 >= 20 && all > all0 {
			own = (busy - busy0) / (all - all0)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var h healthJSON
	if code := in.call(t, "GET", "/api/health", nil, &h); code != 200 {
		t.Fatalf("/api/health: %d %+v", code, h)
	}
	t.Logf("under load: /proc/stat busy share %.2f; /api/health cpu %.1f%% of %v cores", own, h.Resources.CPU.UsagePercent, h.Resources.CPU.Cores)
	if own <= 0 {
		t.Fatalf("the busy goroutine does not show in /proc/stat")
	}
	if h.Resources.CPU.UsagePercent <= 0 || h.Resources.CPU.Cores <= 0 {
		t.Errorf("cpu under load = %+v, want > 0", h.Resources.CPU)
	}
	if d := h.Resources.Disk; d.Total <= 0 || d.Used <= 0 || d.Available <= 0 || d.UsagePercent <= 0 {
		t.Errorf("disk = %+v, want DATA_DIR's filesystem", d)
	}
	if h.Runtime.Name != "process" || !h.Runtime.Connected || h.Status != "ok" {
		t.Errorf("runtime = %+v, status %q", h.Runtime, h.Status)
	}
	if h.Docker.Connected || h.Docker.Error == "" {
		t.Errorf("docker = %+v: the process runtime uses no Docker", h.Docker)
	}

	m := scrape(t, in.base)
	var build string
	for k, v := range m {
		if name := strings.SplitN(k, "{", 2)[0]; strings.HasPrefix(name, "idepool_") && strings.HasSuffix(name, "_percent") {
			t.Errorf("metric %s: ratios are 0-1 with _ratio names", k)
		}
		if strings.HasPrefix(k, "idepool_build_info{") {
			build = k + " " + v
		}
	}
	if !strings.Contains(build, `runtime="process"`) || !strings.Contains(build, `version="test"`) ||
		!strings.Contains(build, `goversion="go`) || !strings.HasSuffix(build, " 1") {
		t.Errorf("idepool_build_info = %q", build)
	}
	for _, name := range []string{"idepool_capacity_cpu_ratio", "idepool_capacity_memory_ratio", "idepool_host_cpu_ratio",
		"idepool_host_memory_ratio", "idepool_host_disk_ratio"} {
		v, err := strconv.ParseFloat(m[name], 64)
		if err != nil || v < 0 || v > 1 {
			t.Errorf("%s = %q, want a ratio 0-1", name, m[name])
		}
	}
	if v, _ := strconv.ParseFloat(m["idepool_host_cpu_ratio"], 64); v <= 0 {
		t.Errorf("idepool_host_cpu_ratio under load = %v", v)
	}
}
