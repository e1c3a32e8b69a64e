package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool/internal/quantile"
	"golang.org/x/sys/unix"
)

// BenchmarkClaimLatency measures what a classroom feels: 200 concurrent
// starts at the HTTP API against 200 warm containers (process runtime, real
// agents), p50/p99 claim latency, then the time the pool takes to refill.
// Goal: p99 under 10 ms on this machine (the original slept 2 s per claim).
// The same burst against an empty JSON handler, with the same client in the
// same process, is measured first: it is what Go's HTTP stack alone costs
// for 200 requests at once on this host, the floor of any API here.
// Both bursts report the CPU time, allocations and collections of this
// process (server and client) while they ran. BENCH_CLAIM_PERF=file records
// the claims' burst with Linux perf (kernel time included; Go's own profiler
// takes a handful of samples in a burst this short).
// Run with -benchtime 1x: one iteration is the whole classroom.
func BenchmarkClaimLatency(b *testing.B) {
	const n = 200
	for i := 0; i < b.N; i++ {
		dataDir := b.TempDir()
		cleanupContainers(b, dataDir)
		// One more than the burst: a first start creates the class's bucket
		// (as a platform would have) before the timed burst.
		cfg := testConfig(b, dataDir, freePort(b), n+1)
		fillStart := time.Now()
		in := start(b, cfg)
		in.waitPool(b, "201 warm", 10*time.Minute, func(w, s, c int) bool { return w == n+1 })
		fill := time.Since(fillStart)
		if code := in.call(b, "POST", "/api/containers/start", map[string]any{"s3Bucket": "bench-class", "s3Prefix": "teacher/"}, nil); code != 201 {
			b.Fatalf("warm-up start: %d", code)
		}
		in.waitPool(b, "200 warm after the warm-up start", 10*time.Minute, func(w, s, c int) bool { return w == n+1 && c == 1 })
		// The floor's handler gets a warm-up burst; so does the server's
		// HTTP path (authenticated, JSON, through every middleware), with
		// a read that claims nothing.
		httpBurst(b, in.base, "GET", "/api/pool", n, nil)
		// The floor is measured in the state the claims meet (201 agents
		// up and heartbeating), right before the burst and again after
		// the refill: the mean of the two is the baseline.
		idleBefore := cpuIdle(b, time.Second)
		floorBefore := emptyHandlerBurst(b, n)

		b.ResetTimer()
		var perf *exec.Cmd
		if f := os.Getenv("BENCH_CLAIM_PERF"); f != "" {
			// Linux perf sees what the Go profiler cannot in a burst of
			// tens of ms: kernel time (file creation, TCP) included.
			// CLOCK_MONOTONIC: the burst's bounds, logged below on the
			// same clock, select its samples (perf script --time).
			perf = exec.Command("perf", "record", "-k", "CLOCK_MONOTONIC", "-F", "20000", "-g", "-o", f, "-p", fmt.Sprint(os.Getpid()))
			perf.Stderr = os.Stderr
			if err := perf.Start(); err != nil {
				b.Fatalf("perf: %v", err)
			}
			time.Sleep(2 * time.Second) // perf attaches
		}
		res := httpBurst(b, in.base, "POST", "/api/containers/start", n, func(j int) []byte {
			return fmt.Appendf(nil, `{"s3Bucket":"bench-class","s3Prefix":"student-%03d/","userId":"student-%d"}`, j, j)
		})
		if perf != nil {
			perf.Process.Signal(os.Interrupt)
			perf.Wait()
			b.Logf("the claims' burst in the perf record: perf script -i %s --time %.6f,%.6f", os.Getenv("BENCH_CLAIM_PERF"), res.mono[0], res.mono[1])
		}
		b.StopTimer()
		for j, c := range res.codes {
			if c != 201 {
				b.Fatalf("start %d: status %d", j, c)
			}
		}
		refillStart := time.Now()
		in.waitPool(b, "refilled", 10*time.Minute, func(w, s, c int) bool { return w == n+1 && c == n+1 })
		refill := time.Since(refillStart)
		// The pool counts a container warm once its agent is ready; the
		// 200 new agents and the 200 claimed ones' syncs still use the
		// CPU for a while after. The floor after is measured once the
		// machine is as idle as before the burst, not in that noise (it
		// was 3× the floor before in CI, which flattered the ratio).
		settled := waitIdle(b, idleBefore, 2*time.Minute)
		floorAfter := emptyHandlerBurst(b, n)
		in.stop(b)
		floor := floorBefore
		floor.lat = make([]time.Duration, n)
		for j := range floor.lat {
			floor.lat[j] = (floorBefore.lat[j] + floorAfter.lat[j]) / 2 // both sorted: the mean of each quantile
		}
		b.Logf("floor before the burst: p50 %v, p99 %v (CPU idle %.0f %%); after the refill, once the CPU was as idle (%v after it): p50 %v, p99 %v",
			floorBefore.pct(0.50), floorBefore.pct(0.99), idleBefore*100, settled.Round(time.Millisecond), floorAfter.pct(0.50), floorAfter.pct(0.99))

		p50, p99 := res.pct(0.50), res.pct(0.99)
		b.ReportMetric(ms(p50), "p50-ms")
		b.ReportMetric(ms(p99), "p99-ms")
		b.ReportMetric(ms(res.max()), "max-ms")
		b.ReportMetric(ms(floor.pct(0.99)), "floor-p99-ms")
		b.ReportMetric(float64(p99)/float64(floor.pct(0.99)), "p99/floor")
		b.ReportMetric(refill.Seconds(), "refill-s")
		b.ReportMetric(float64(res.cpu.Microseconds())/n, "cpu-us/claim")
		b.ReportMetric(float64(res.gcs), "gcs-in-burst")
		b.Logf("%d concurrent warm claims over HTTP: p50 %v, p99 %v, max %v, all answered in %v, CPU %v and %d KB allocated (server and client), %d GCs; "+
			"same burst against an empty JSON handler: p50 %v, p99 %v, CPU %v (claim p99 = %.1f× that floor); "+
			"first fill of %d took %v; refill of %d took %v",
			n, p50, p99, res.max(), res.wall, res.cpu, res.alloc>>10, res.gcs, floor.pct(0.50), floor.pct(0.99), floor.cpu,
			float64(p99)/float64(floor.pct(0.99)), n+1, fill, n, refill)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// burstResult holds one burst's latencies, sorted.
type burstResult struct {
	lat   []time.Duration
	codes []int
	wall  time.Duration
	// cpu is the CPU time this process (server and client) spent during
	// the burst.
	cpu time.Duration
	// gcs counts the garbage collections that ended during the burst.
	gcs uint32
	// alloc is what the burst allocated (server and client), in bytes.
	alloc uint64
	// mono is the burst's start and end on CLOCK_MONOTONIC, in seconds:
	// perf's clock with -k CLOCK_MONOTONIC.
	mono [2]float64
}

func (r burstResult) pct(q float64) time.Duration { return quantile.Sorted(r.lat, q) }
func (r burstResult) max() time.Duration          { return r.lat[len(r.lat)-1] }

// httpBurst opens n keep-alive connections to base (the benchmark is about
// the requests, not TCP: they are all dialled before the burst and handed
// to the client's transport as it asks for them), then sends n requests
// method path at once, body(j) each (nil: none), and measures each from
// send to the end of its response.
func httpBurst(b *testing.B, base, method, path string, n int, body func(j int) []byte) burstResult {
	b.Helper()
	u, err := url.Parse(base)
	if err != nil {
		b.Fatal(err)
	}
	dialled := make(chan net.Conn, n)
	for range n {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			b.Fatalf("dial %s: %v", u.Host, err)
		}
		dialled <- c
	}
	var d net.Dialer
	tr := &http.Transport{
		MaxIdleConnsPerHost: n, MaxConnsPerHost: n,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			select {
			case c := <-dialled:
				return c, nil
			default:
				return d.DialContext(ctx, network, addr) // only if the server closed one
			}
		},
	}
	defer func() {
		tr.CloseIdleConnections()
		for len(dialled) > 0 {
			(<-dialled).Close()
		}
	}()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	r := burstResult{lat: make([]time.Duration, n), codes: make([]int, n)}
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for j := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rd io.Reader
			if body != nil {
				rd = bytes.NewReader(body(j))
			}
			req, _ := http.NewRequest(method, base+path, rd)
			req.Header.Set("Authorization", "Bearer "+testKey)
			if body != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			<-gate
			t0 := time.Now()
			res, err := client.Do(req)
			if err != nil {
				r.codes[j] = -1
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			r.lat[j] = time.Since(t0)
			r.codes[j] = res.StatusCode
		}()
	}
	// Every burst starts from a finished collection: whether a cycle of
	// the collector lands inside a burst of ~10 ms otherwise depends on
	// how full the heap happened to be when it began, not on the work the
	// burst does, and the claims' burst and the floor's are compared. A
	// collection the burst's own allocation causes still counts (gcs).
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime(b)
	r.mono[0] = monotonic(b)
	start := time.Now()
	close(gate)
	wg.Wait()
	r.wall = time.Since(start)
	r.mono[1] = monotonic(b)
	r.cpu = cpuTime(b) - cpu0
	runtime.ReadMemStats(&ms1)
	r.gcs = ms1.NumGC - ms0.NumGC
	r.alloc = ms1.TotalAlloc - ms0.TotalAlloc
	sort.Slice(r.lat, func(a, c int) bool { return r.lat[a] < r.lat[c] })
	return r
}

// emptyHandlerBurst is the floor: the same burst against a handler that
// only decodes the body and answers a small JSON document.
func emptyHandlerBurst(b *testing.B, n int) burstResult {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": "0123456789ab", "status": "running",
			"urls": map[string]string{"code": "http://localhost/code/0123456789ab/?token=0123456789abcdef"}})
	}))
	defer srv.Close()
	start := "/api/containers/start"
	httpBurst(b, srv.URL, "POST", start, n, func(int) []byte { return []byte(`{"s3Bucket":"bench-class"}`) }) // warm-up
	return httpBurst(b, srv.URL, "POST", start, n, func(j int) []byte {
		return fmt.Appendf(nil, `{"s3Bucket":"bench-class","s3Prefix":"student-%03d/","userId":"student-%d"}`, j, j)
	})
}

// cpuIdle is the machine's idle share of its CPU time over d (/proc/stat).
func cpuIdle(b *testing.B, d time.Duration) float64 {
	b.Helper()
	read := func() (idle, total uint64) {
		data, err := os.ReadFile("/proc/stat")
		if err != nil {
			b.Fatalf("cpu idle: %v", err)
		}
		line, _, _ := strings.Cut(string(data), "\n")
		for i, f := range strings.Fields(line)[1:] {
			v, _ := strconv.ParseUint(f, 10, 64)
			total += v
			if i == 3 || i == 4 { // idle, iowait
				idle += v
			}
		}
		return idle, total
	}
	i0, t0 := read()
	time.Sleep(d)
	i1, t1 := read()
	if t1 == t0 {
		return 1
	}
	return float64(i1-i0) / float64(t1-t0)
}

// waitIdle waits until the machine's CPU is at least as idle as want
// (less 5 points) over a second, or until limit; it returns how long.
func waitIdle(b *testing.B, want float64, limit time.Duration) time.Duration {
	b.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if cpuIdle(b, time.Second) >= want-0.05 {
			break
		}
	}
	return time.Since(start)
}

// monotonic reads CLOCK_MONOTONIC, in seconds.
func monotonic(b *testing.B) float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		b.Fatal(err)
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
