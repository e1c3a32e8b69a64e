package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	idepoolclient "github.com/idepool/idepool/client"
)

// BenchmarkServeMemory measures idepool's memory with a class in it (issue
// 18, item 5): `idepool serve` (the binary, its process runtime and
// embedded S3 store) with a warm pool of 100, then 300 claims (8 at a
// time), then the pool refilled: 300 claimed and 100 warm agents, each a
// real `idepool agent` process with the placeholder IDE. It reports serve's
// peak RSS over the whole run (VmHWM) and its RSS at the end, with the Go
// runtime's own figures (heap in use, goroutine stacks, collections).
// IDEPOOL_BENCH_MEM_ENV adds serve's environment (e.g. GC_MEMORY_LIMIT=0,
// for the figure without the soft limit). Run with -benchtime 1x.
func BenchmarkServeMemory(b *testing.B) {
	const warm, claims = 100, 300
	for b.Loop() {
		dataDir := b.TempDir()
		cleanupContainers(b, dataDir)
		profiles := filepath.Join(b.TempDir(), "profiles.json")
		// Reservations small enough for 400 on any test machine; the
		// limits still hold each agent (cgroups, as root).
		if err := os.WriteFile(profiles, fmt.Appendf(nil, `{"profiles":[{"name":"default","cpuLimit":1,"memoryLimit":"256MiB","cpuReservation":0.001,"memoryReservation":"16MiB","poolTarget":%d}]}`, warm), 0o644); err != nil {
			b.Fatal(err)
		}
		port, debugPort := freePort(b), freePort(b)
		env := append(os.Environ(),
			"DATA_DIR="+dataDir, fmt.Sprintf("PORT=%d", port), fmt.Sprintf("S3_EMBEDDED_ADDR=127.0.0.1:%d", freePort(b)),
			fmt.Sprintf("DEBUG_ADDR=127.0.0.1:%d", debugPort), "API_KEY="+testKey, "RUNTIME=process", "EMBEDDED_IDE=placeholder",
			"PROFILES_FILE="+profiles, "RATE_LIMIT_REQUESTS=0", "LOG_LEVEL=warn")
		if extra := os.Getenv("IDEPOOL_BENCH_MEM_ENV"); extra != "" {
			env = append(env, strings.Fields(extra)...)
		}
		bin := agentBinary(b)
		serve := exec.Command(bin, "serve")
		serve.Env = env
		logFile, err := os.Create(filepath.Join(b.TempDir(), "serve.log"))
		if err != nil {
			b.Fatal(err)
		}
		serve.Stdout, serve.Stderr = logFile, logFile
		if err := serve.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = serve.Wait(); close(exited) }()
		b.Cleanup(func() {
			// The real tool stops serve and every container (each after
			// flushing its workspace); cleanupContainers catches the rest.
			down := exec.Command(bin, "down", "--stop-serve")
			down.Env = env
			if out, err := down.CombinedOutput(); err != nil {
				b.Logf("idepool down --stop-serve: %v\n%s", err, out)
			}
			_ = serve.Process.Kill()
			<-exited
		})
		api, err := idepoolclient.New(fmt.Sprintf("http://127.0.0.1:%d", port), testKey, idepoolclient.Options{Timeout: 30 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		pool := func() (w, c int, err error) {
			pools, err := api.Pools(ctx)
			for _, p := range pools {
				if p.Profile == "default" {
					return p.Warm, p.Claimed, nil
				}
			}
			return 0, 0, err
		}
		waitFor := func(what string, cond func(w, c int) bool) time.Duration {
			start := time.Now()
			var last string
			for time.Since(start) < 10*time.Minute {
				w, c, err := pool()
				if err == nil && cond(w, c) {
					return time.Since(start)
				}
				last = fmt.Sprintf("warm %d, claimed %d, err %v", w, c, err)
				select {
				case <-exited:
					last += "; serve exited"
				case <-time.After(200 * time.Millisecond):
					continue
				}
				break
			}
			log, _ := os.ReadFile(logFile.Name())
			b.Fatalf("%s: not within 10m (last: %s); serve's log ends:\n%s", what, last, tail(log, 30))
			return 0
		}
		fill := waitFor(fmt.Sprintf("%d warm", warm), func(w, _ int) bool { return w == warm })

		start := time.Now()
		var next, failed atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > claims {
						return
					}
					req := idepoolclient.StartRequest{Bucket: "mem-class", Prefix: fmt.Sprintf("student-%03d/", i), UserID: fmt.Sprintf("student-%d", i)}
					if _, err := api.Start(ctx, req); err != nil {
						failed.Add(1)
						b.Logf("start %d: %v", i, err)
					}
				}
			}()
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d of %d starts failed", n, claims)
		}
		answered := time.Since(start)
		refill := waitFor(fmt.Sprintf("%d claimed and %d warm", claims, warm), func(w, c int) bool { return w == warm && c == claims })

		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", serve.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		hwm, rss := procKiB(b, status, "VmHWM"), procKiB(b, status, "VmRSS")
		rt := runtimeFigures(b, debugPort)
		b.ReportMetric(float64(hwm)/1024, "peak-rss-mib")
		b.ReportMetric(float64(rss)/1024, "rss-mib")
		b.ReportMetric(float64(rt["HeapInuse"])/(1<<20), "heap-inuse-mib")
		b.ReportMetric(float64(rt["Stack"])/(1<<20), "stacks-mib")
		b.ReportMetric(float64(rt["NumGC"]), "gcs")
		b.Logf("serve with %d claimed and %d warm (process runtime, real agents, embedded S3): peak RSS %.1f MiB, RSS %.1f MiB "+
			"(Go: heap in use %.1f MiB, heap idle %.1f MiB of which %.1f released, stacks %.1f MiB, %d collections); "+
			"pool of %d warm in %v, %d claims answered in %v, refilled %v later",
			claims, warm, float64(hwm)/1024, float64(rss)/1024, float64(rt["HeapInuse"])/(1<<20), float64(rt["HeapIdle"])/(1<<20),
			float64(rt["HeapReleased"])/(1<<20), float64(rt["Stack"])/(1<<20), rt["NumGC"], warm, fill.Round(time.Millisecond),
			claims, answered.Round(time.Millisecond), refill.Round(time.Millisecond))
	}
}

// procKiB reads a "Name:   123 kB" line of /proc/<pid>/status.
func procKiB(b *testing.B, status []byte, name string) int64 {
	b.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+) kB$`).FindSubmatch(status)
	if m == nil {
		b.Fatalf("no %s in /proc status", name)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// runtimeFigures reads the "# Name = value" lines the heap profile's text
// form (DEBUG_ADDR) ends with: Go's MemStats of the serving process.
func runtimeFigures(b *testing.B, port int) map[string]int64 {
	b.Helper()
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?debug=1", port))
	if err != nil {
		b.Fatalf("heap profile: %v", err)
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(res.Body)
	out := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^# (\w+) = (\d+)`).FindAllSubmatch(text, -1) {
		n, _ := strconv.ParseInt(string(m[2]), 10, 64)
		out[string(m[1])] = n
	}
	for _, k := range []string{"HeapInuse", "HeapIdle", "HeapReleased", "Stack", "NumGC"} {
		if _, ok := out[k]; !ok {
			b.Fatalf("heap profile lacks %s", k)
		}
	}
	return out
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
