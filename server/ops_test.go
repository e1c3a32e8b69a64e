package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool/capacity"
	"github.com/idepool/idepool/server"
)

// TestAdmissionUnderMemoryPressure: with the host at 95% memory warm claims
// still succeed and the warm pool shrinks (warm containers are given up
// first); with no warm container left a cold create is refused with 503 and
// the reason — or, with the admission queue on, waits in the queue (202)
// and is served once memory is free again.
func TestAdmissionUnderMemoryPressure(t *testing.T) {
	for _, queue := range []bool{false, true} {
		t.Run(fmt.Sprintf("queue=%v", queue), func(t *testing.T) {
			dataDir := t.TempDir()
			cleanupContainers(t, dataDir)
			cfg := testConfig(t, dataDir, freePort(t), 3)
			cfg.QueueEnabled = queue
			const gib = 1 << 30
			host := capacity.NewStaticHost(capacity.HostSample{MemoryTotal: 16 * gib, MemoryUsed: 2 * gib, CPUs: 2})
			in := startWith(t, cfg, func(o *server.Options) {
				o.CapacityHost = host
				o.CapacityInterval = 200 * time.Millisecond
			})
			defer in.stop(t)
			in.waitPool(t, "3 warm", time.Minute, func(w, s, c int) bool { return w == 3 })

			host.Set(capacity.HostSample{MemoryTotal: 16 * gib, MemoryUsed: 16 * gib * 95 / 100, CPUs: 2})

			// A warm claim still succeeds under pressure.
			var warm startJSON
			if code := in.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": "pressure-warm"}, &warm); code != 201 || !warm.IsPreWarmed {
				t.Fatalf("warm claim under pressure: %d %+v", code, warm)
			}
			// The warm pool shrinks: warm containers are given up, none refilled.
			in.waitPool(t, "warm pool shed", time.Minute, func(w, s, c int) bool { return w == 0 && s == 0 })

			var answer struct {
				Ticket    string `json:"ticket"`
				Position  int    `json:"position"`
				StatusURL string `json:"statusUrl"`
				Error     struct {
					Code    string         `json:"code"`
					Message string         `json:"message"`
					Details map[string]any `json:"details"`
				} `json:"error"`
			}
			code := in.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": "pressure-cold"}, &answer)
			if !queue {
				if code != 503 || answer.Error.Code != "RESOURCE_LIMIT_EXCEEDED" || answer.Error.Details["reason"] != "memory" {
					t.Fatalf("cold create at 95%% memory: %d %+v, want 503 RESOURCE_LIMIT_EXCEEDED reason memory", code, answer)
				}
				t.Logf("refusal: %s %v", answer.Error.Message, answer.Error.Details)
			} else if code != 202 || answer.Position != 1 || answer.StatusURL == "" {
				t.Fatalf("cold create at 95%% memory with the queue: %d %+v, want 202 at position 1", code, answer)
			}

			// Pressure gone: the queued start is served, and the pool refills.
			host.Set(capacity.HostSample{MemoryTotal: 16 * gib, MemoryUsed: 2 * gib, CPUs: 2})
			if queue {
				var tk struct {
					Status      string `json:"status"`
					ContainerID string `json:"containerId"`
				}
				if code := in.call(t, "GET", answer.StatusURL+"?wait=ready&timeout=60s", nil, &tk); code != 200 || tk.ContainerID == "" {
					t.Fatalf("queued start after pressure: %d %+v", code, tk)
				}
				var again startJSON
				if code := in.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": "pressure-cold"}, &again); code != 200 || again.ID != tk.ContainerID {
					t.Fatalf("start of the served ticket's workspace: %d %+v, want 200 with %s", code, again, tk.ContainerID)
				}
			}
			in.waitPool(t, "refilled", time.Minute, func(w, s, c int) bool { return w == 3 })
		})
	}
}

// TestMetricsScrape scrapes /metrics of a real server and checks names,
// labels, and that values move with a claim.
func TestMetricsScrape(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	in := start(t, testConfig(t, dataDir, freePort(t), 2))
	defer in.stop(t)
	in.waitPool(t, "2 warm", time.Minute, func(w, s, c int) bool { return w == 2 })

	before := scrape(t, in.base)
	for _, name := range []string{
		`idepool_pool_target{profile="default"}`,
		`idepool_pool_warm{profile="default"}`,
		`idepool_containers{profile="default",state="warm"}`,
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if before[`idepool_pool_warm{profile="default"}`] != "2" {
		t.Errorf("warm = %q, want 2", before[`idepool_pool_warm{profile="default"}`])
	}
	if code := in.call(t, "POST", "/api/containers/start", map[string]any{"s3Bucket": "metrics-a"}, nil); code != 201 {
		t.Fatalf("start: %d", code)
	}
	after := scrape(t, in.base)
	if got := after[`idepool_claims_total{kind="warm",profile="default"}`]; got != "1" {
		t.Errorf("claims_total warm = %q, want 1", got)
	}
	if got := after[`idepool_claim_duration_seconds_count{kind="warm"}`]; got != "1" {
		t.Errorf("claim_duration count = %q, want 1", got)
	}
	if got := after[`idepool_pool_claimed{profile="default"}`]; got != "1" {
		t.Errorf("pool_claimed = %q, want 1", got)
	}
}

// scrape returns every sample line of /metrics as name{labels} → value.
func scrape(t *testing.T, base string) map[string]string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("/metrics: %d %s", res.StatusCode, b)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			out[line[:i]] = line[i+1:]
		}
	}
	return out
}
