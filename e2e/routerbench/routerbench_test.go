// Package routerbench measures the built-in router's throughput against
// Traefik's, side by side on this machine (issue 18, item 3): wrk with 32
// connections against the same upstream (a Go HTTP server in its own process
// serving a 1 KB page) three ways: straight to the upstream, through
// Traefik v3 (a file-provider route shaped as the swarm runtime's labels:
// path rule, strip-prefix middleware, no ForwardAuth) and through idepool's
// built-in router mounted as the server mounts it (the API's middleware in
// front, the router's cookie check, the pool manager's Lookup and Touch on
// every request).
//
// Why Traefik runs without ForwardAuth: with it, every request through
// Traefik costs a second HTTP round trip to idepool, so the comparison would
// flatter the built-in router. The fair question is whether the built-in
// router, doing its real per-request work (cookie verification, container
// lookup, activity), keeps up with Traefik doing only the proxying. For
// context, the run ends with Traefik as deployed, ForwardAuth asking the
// built-in router's server on every request (req/s-traefik-forwardauth).
//
//	go test -run '^$' -bench RouterThroughput -benchtime 1x ./e2e/routerbench/
//
// ROUTERBENCH_DURATION (default 12s) is how long each target is measured:
// the direct run, and each proxy in alternating runs of one second, after
// a 2 s warm-up run per target. ROUTERBENCH_PROFILE=<dir> writes CPU and
// allocation profiles of the built-in router's process over the measured
// runs there. Missing wrk or Traefik skips the benchmark, or fails it with
// CI=true.
package routerbench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/httpapi"
	"github.com/idepool/idepool/pool"
	"github.com/idepool/idepool/proxy"
	"github.com/idepool/idepool/runtime/fake"
)

// envUpstream makes the test binary the upstream (see TestMain): a process
// of its own, so neither proxy shares a Go runtime with it.
const envUpstream = "ROUTERBENCH_UPSTREAM"

func TestMain(m *testing.M) {
	if os.Getenv(envUpstream) == "1" {
		serveUpstream()
		return
	}
	os.Exit(m.Run())
}

// page is the upstream's answer to every path: 1 KB of HTML.
var page = func() []byte {
	head, tail := "<!doctype html><html><body><p>", "</p></body></html>\n"
	return []byte(head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail)
}()

// serveUpstream listens on a free loopback port, prints it, and serves page
// until killed.
func serveUpstream() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})}
	fmt.Fprintln(os.Stderr, "upstream:", srv.Serve(ln))
	os.Exit(1)
}

// missing skips, or fails with CI=true, where a component is absent.
func missing(b *testing.B, format string, args ...any) {
	b.Helper()
	if os.Getenv("CI") == "true" {
		b.Fatalf(format, args...)
	}
	b.Skipf(format, args...)
}

// startUpstream runs the upstream process and returns its address.
func startUpstream(b testing.TB) string {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envUpstream+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("upstream: %v", err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if err != nil || !ok {
		b.Fatalf("upstream said %q: %v", line, err)
	}
	return addr
}

// instantAgents are agents that are connected, ready and acknowledge every
// assignment at once, as a healthy container's agent does.
type instantAgents struct{ m *pool.Manager }

func (a *instantAgents) Assign(ctx context.Context, id string, as idepool.Assignment) error {
	a.m.AgentReport(idepool.AgentReport{ContainerID: id, Kind: idepool.AgentSynced, Generation: as.Generation, Workspace: &as.Workspace})
	return nil
}
func (a *instantAgents) Flush(ctx context.Context, id string) error { return nil }
func (a *instantAgents) Connected(id string) bool                   { return true }

// helloRuntime is the fake runtime whose containers' agents say hello as
// soon as they exist.
type helloRuntime struct {
	*fake.Runtime
	agents *instantAgents
}

func (r *helloRuntime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	inst, err := r.Runtime.Create(ctx, spec)
	if err == nil {
		r.agents.m.AgentReport(idepool.AgentReport{ContainerID: spec.ID, Kind: idepool.AgentHello, Ready: true})
	}
	return inst, err
}

// claimed is the pool's answer set: claimed containers whose every route
// is the upstream.
const claimed = 20

// builtin serves the router as the server does (server/wire.go, routes):
// the pool manager as its backend, behind the API's middleware with the
// router as fallback. It returns the front's address, the path of one
// claimed container's code route, its route cookie, and every claimed id.
func builtin(b testing.TB, upstream string) (front, path string, cookie *http.Cookie, ids []string) {
	b.Helper()
	ctx := context.Background()
	// The server logs at INFO: the access log's DEBUG lines for answered
	// requests are not written, as in production.
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	prof := idepool.Profile{Name: idepool.DefaultProfile, Image: "ide:bench", CPULimit: 1, MemoryLimit: 1 << 30,
		Routes: idepool.DefaultRoutes(), PoolTarget: claimed + 5}
	agents := &instantAgents{}
	rt := &helloRuntime{agents: agents, Runtime: fake.New(fake.Config{Endpoints: func(spec idepool.ContainerSpec) map[string]string {
		eps := map[string]string{}
		for _, r := range prof.Routes {
			eps[r.Name] = upstream
		}
		return eps
	}})}
	mgr, err := pool.New(pool.Options{Runtime: rt, Agents: agents, Profiles: []idepool.Profile{prof}, Deployment: "idepool",
		AgentURL: "ws://127.0.0.1:1/agent/v1/connect", Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	agents.m = mgr
	b.Cleanup(func() { mgr.Close() })
	if err := mgr.ReconcileOnce(ctx); err != nil {
		b.Fatal(err)
	}
	var first idepool.Container
	for i := range claimed {
		c, err := mgr.Start(ctx, idepool.StartRequest{Workspace: idepool.Workspace{Bucket: "bench", Prefix: fmt.Sprintf("student-%02d/", i)}})
		if err != nil {
			b.Fatalf("claim %d: %v", i, err)
		}
		ids = append(ids, c.Container.ID)
		if i == 0 {
			first = c.Container
		}
	}
	router := proxy.New(proxy.Options{Backend: mgr, Secret: []byte("0123456789abcdef0123456789abcdef"), Logger: log})
	mux := http.NewServeMux()
	mux.Handle("/_auth/forward", router.ForwardAuth())
	mux.Handle("/", router)
	api := httpapi.New(httpapi.Options{Orchestrator: mgr, Keys: []string{"bench-key-0123456789"}, URLs: router,
		Logger: log, Fallback: mux})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// As server.Serve configures its http.Server.
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	front = ln.Addr().String()

	// The user's way in: the start response's URL, its one-time token
	// exchanged for the route cookie.
	urls, err := router.RouteURLs(first, prof)
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + front + urls["code"])
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || len(resp.Cookies()) != 1 {
		b.Fatalf("token exchange: %d, %d cookies", resp.StatusCode, len(resp.Cookies()))
	}
	return front, "/code/" + first.ID + "/index.html", resp.Cookies()[0], ids
}

// traefikBinary finds the binary deploy/build-traefik.sh caches.
func traefikBinary(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("TRAEFIK_BIN"); p != "" {
		return p
	}
	script, err := os.ReadFile("../../deploy/build-traefik.sh")
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^version=(\S+)$`).FindSubmatch(script)
	if m == nil {
		b.Fatal("no version= line in deploy/build-traefik.sh")
	}
	cache := os.Getenv("IDEPOOL_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "idepool")
	}
	bin := filepath.Join(cache, "traefik-"+string(m[1]))
	if _, err := os.Stat(bin); err != nil {
		missing(b, "Traefik binary missing (run TRAEFIK_NO_IMAGE=1 deploy/build-traefik.sh): %v", err)
	}
	return bin
}

// startTraefik runs Traefik (and returns its pid) with a file provider routing every claimed
// container's routes to the upstream, shaped as traefik.Labels makes them
// (rule, priority, strip-prefix): on one entry point without ForwardAuth
// (the comparison, see the package comment), on another with it, as
// deployed, asking the built-in router's server at front (a figure for
// context). It returns both addresses once the routes answer.
func startTraefik(b *testing.B, bin, upstream, front string, ids []string, probe string, cookie *http.Cookie) (plain, withAuth string, pid int) {
	b.Helper()
	dir := b.TempDir()
	port, authPort := freePort(b), freePort(b)
	var dyn strings.Builder
	dyn.WriteString("http:\n  routers:\n")
	for _, id := range ids {
		for _, r := range idepool.DefaultRoutes() {
			for _, ep := range []struct{ name, suffix, auth string }{{"web", "", ""}, {"webauth", "-fa", "idepool-" + id + "-auth, "}} {
				fmt.Fprintf(&dyn, "    idepool-%s-%s%s:\n      entryPoints: [%s]\n      priority: 100\n"+
					"      rule: \"(Path(`/%s/%s`) || PathPrefix(`/%s/%s/`))\"\n      middlewares: [%sidepool-%s-%s-strip]\n      service: idepool-%s-%s\n",
					id, r.Name, ep.suffix, ep.name, r.Name, id, r.Name, id, ep.auth, id, r.Name, id, r.Name)
			}
		}
	}
	dyn.WriteString("  middlewares:\n")
	for _, id := range ids {
		fmt.Fprintf(&dyn, "    idepool-%s-auth:\n      forwardAuth:\n        address: \"http://%s/_auth/forward\"\n"+
			"        trustForwardHeader: false\n        preserveLocationHeader: true\n", id, front)
		for _, r := range idepool.DefaultRoutes() {
			fmt.Fprintf(&dyn, "    idepool-%s-%s-strip:\n      stripPrefix:\n        prefixes: [\"/%s/%s\"]\n", id, r.Name, r.Name, id)
		}
	}
	dyn.WriteString("  services:\n")
	for _, id := range ids {
		for _, r := range idepool.DefaultRoutes() {
			fmt.Fprintf(&dyn, "    idepool-%s-%s:\n      loadBalancer:\n        servers:\n          - url: \"http://%s\"\n", id, r.Name, upstream)
		}
	}
	dynPath := filepath.Join(dir, "dynamic.yml")
	if err := os.WriteFile(dynPath, []byte(dyn.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	static := fmt.Sprintf("entryPoints:\n  web:\n    address: \"127.0.0.1:%d\"\n  webauth:\n    address: \"127.0.0.1:%d\"\n"+
		"providers:\n  file:\n    filename: %q\n    watch: false\n"+
		"log:\n  level: ERROR\nglobal:\n  checkNewVersion: false\n  sendAnonymousUsage: false\n", port, authPort, dynPath)
	staticPath := filepath.Join(dir, "traefik.yml")
	if err := os.WriteFile(staticPath, []byte(static), 0o644); err != nil {
		b.Fatal(err)
	}
	// Its log goes to a file: wrk's end cancels requests in flight, which
	// Traefik logs as errors of the ForwardAuth call.
	logPath := filepath.Join(dir, "traefik.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--configFile="+staticPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatalf("traefik: %v", err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	plain, withAuth = fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", authPort)
	for _, addr := range []string{plain, withAuth} {
		waitRouted(b, "http://"+addr+probe, cookie, logPath)
	}
	return plain, withAuth, cmd.Process.Pid
}

// waitRouted waits until url answers 200 to a request with cookie.
func waitRouted(b *testing.B, url string, cookie *http.Cookie, logPath string) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", url, nil)
		req.AddCookie(cookie)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			b.Fatalf("traefik did not route %s within 30 s: %v %v; its log:\n%s", url, err, resp, log[max(0, len(log)-4000):])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(b *testing.B) int {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// combine sums a target's runs: the mean of their requests/s (the runs
// are equally long), the median of their p50 and of their p99 (one run
// caught by a spike of the machine's load does not make the figure).
func combine(rs []wrkResult) wrkResult {
	out := wrkResult{}
	p50s, p99s := make([]time.Duration, 0, len(rs)), make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		out.rps += r.rps / float64(len(rs))
		out.requestsTotal += r.requestsTotal
		out.cpu += r.cpu
		p50s, p99s = append(p50s, r.p50), append(p99s, r.p99)
	}
	out.p50, out.p99 = median(p50s), median(p99s)
	return out
}

// cpuPerRequest is the proxy's CPU time per request over its runs, in µs.
func (r wrkResult) cpuPerRequest() float64 {
	return float64(r.cpu) / float64(time.Microsecond) / float64(max(r.requestsTotal, 1))
}

// cpuTime is the CPU time (user and system, all threads) process pid has
// used, from /proc (0 for pid 0).
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold blanks) in parentheses:
	// state is the 3rd field of stat, utime and stime the 14th and 15th.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	rps           float64
	p50, p99      time.Duration
	non2xx, errs  int
	out           string
	requestsTotal int
	cpu           time.Duration // the proxy's CPU time (user and system) over the run
}

var (
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
)

// runWrk runs wrk: 2 threads (the machine's cores), 32 connections.
func runWrk(b *testing.B, url string, d time.Duration, header string) wrkResult {
	b.Helper()
	args := []string{"-t2", "-c32", "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}
	if header != "" {
		args = append(args, "-H", header)
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	res := wrkResult{out: string(out)}
	m := wrkRPS.FindStringSubmatch(res.out)
	if m == nil {
		b.Fatalf("wrk %s: no Requests/sec in\n%s", url, out)
	}
	res.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(res.out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]
		if p[1] == "50" {
			res.p50 = time.Duration(v * float64(unit))
		} else {
			res.p99 = time.Duration(v * float64(unit))
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(res.out); m != nil {
		res.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkSockErr.FindStringSubmatch(res.out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			res.errs += n
		}
	}
	if m := wrkRequests.FindStringSubmatch(res.out); m != nil {
		res.requestsTotal, _ = strconv.Atoi(m[1])
	}
	return res
}

// BenchmarkRouterThroughput: requests/s and latency of the same 1 KB page
// straight from the upstream, through Traefik and through the built-in
// router, in one run.
func BenchmarkRouterThroughput(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		missing(b, "wrk missing (Debian package wrk; scripts/setup-deps.sh installs it): %v", err)
	}
	bin := traefikBinary(b)
	d := 12 * time.Second
	if s := os.Getenv("ROUTERBENCH_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 4*time.Second {
			b.Fatalf("ROUTERBENCH_DURATION=%q: want a duration of at least 4s (whole seconds)", s)
		}
	}
	upstream := startUpstream(b)
	front, path, cookie, ids := builtin(b, upstream)
	traefik, traefikAuth, traefikPID := startTraefik(b, bin, upstream, front, ids, path, cookie)
	// wrk sends the cookie to each target alike (upstream and Traefik
	// ignore it); only the built-in router verifies it.
	header := "Cookie: " + cookie.Name + "=" + cookie.Value
	// pid is the proxy's process, whose CPU time per request is measured
	// too: unlike requests/s, it does not depend on what else the shared
	// machine runs. (Traefik with ForwardAuth makes idepool work too: not
	// measured.)
	targets := []struct {
		name, url string
		pid       int
	}{
		{"direct", "http://" + upstream + "/index.html", 0},
		{"traefik", "http://" + traefik + path, traefikPID},
		{"builtin", "http://" + front + path, os.Getpid()},
		{"traefik+forwardauth", "http://" + traefikAuth + path, 0},
	}
	for range b.N {
		for _, t := range targets {
			runWrk(b, t.url, 2*time.Second, header) // warm-up: connections, caches
		}
		// The two proxies take turns, A B B A over and over, one second
		// a run: the shared machine's load changes within seconds, and
		// short turns let both meet the same. Last, for context: Traefik
		// as deployed, asking idepool's ForwardAuth on every request.
		runs := map[string][]wrkResult{}
		type turn struct {
			target int
			run    time.Duration
		}
		order := []turn{{0, d}}
		for range d / (2 * time.Second) {
			order = append(order, turn{1, time.Second}, turn{2, time.Second}, turn{2, time.Second}, turn{1, time.Second})
		}
		order = append(order, turn{3, (d / 4).Truncate(time.Second)})
		// The built-in router runs in this process, idle but for its
		// own turns: a profile of the whole alternation is its profile.
		stop := profile(b)
		for _, o := range order {
			t := targets[o.target]
			cpu0 := cpuTime(b, t.pid)
			r := runWrk(b, t.url, o.run, header)
			r.cpu = cpuTime(b, t.pid) - cpu0
			if r.non2xx > 0 || r.errs > 0 {
				b.Fatalf("%s: %d non-2xx answers, %d socket errors\n%s", t.name, r.non2xx, r.errs, r.out)
			}
			runs[t.name] = append(runs[t.name], r)
		}
		stop()
		res := map[string]wrkResult{}
		for _, t := range targets {
			rs := runs[t.name]
			res[t.name] = combine(rs)
			var each []string
			for _, r := range rs {
				each = append(each, fmt.Sprintf("%.0f", r.rps))
			}
			cpu := ""
			if t.pid != 0 {
				cpu = fmt.Sprintf("  CPU %5.1f µs/request", res[t.name].cpuPerRequest())
			}
			b.Logf("%-19s %6.0f req/s  p50 %6.2f ms  p99 %6.2f ms%s  (%d runs, %d requests; req/s of each: %s)", t.name,
				res[t.name].rps, ms(res[t.name].p50), ms(res[t.name].p99), cpu, len(rs), res[t.name].requestsTotal, strings.Join(each, " "))
		}
		ratio := res["builtin"].rps / res["traefik"].rps
		fa := res["traefik+forwardauth"]
		b.Logf("means of the runs (p50, p99: medians): built-in %.0f req/s, Traefik %.0f req/s: %.2f×; p99 %.2f ms vs %.2f ms; direct %.0f req/s; "+
			"Traefik with ForwardAuth %.0f req/s, p99 %.2f ms",
			res["builtin"].rps, res["traefik"].rps, ratio, ms(res["builtin"].p99), ms(res["traefik"].p99), res["direct"].rps,
			fa.rps, ms(fa.p99))
		b.ReportMetric(res["builtin"].rps, "req/s-builtin")
		b.ReportMetric(res["traefik"].rps, "req/s-traefik")
		b.ReportMetric(res["direct"].rps, "req/s-direct")
		b.ReportMetric(ratio, "ratio-builtin/traefik")
		b.ReportMetric(ms(res["builtin"].p50), "p50-ms-builtin")
		b.ReportMetric(ms(res["traefik"].p50), "p50-ms-traefik")
		b.ReportMetric(ms(res["builtin"].p99), "p99-ms-builtin")
		b.ReportMetric(ms(res["traefik"].p99), "p99-ms-traefik")
		b.ReportMetric(res["builtin"].cpuPerRequest(), "cpu-µs/req-builtin")
		b.ReportMetric(res["traefik"].cpuPerRequest(), "cpu-µs/req-traefik")
		b.ReportMetric(fa.rps, "req/s-traefik-forwardauth")
		b.ReportMetric(ms(fa.p99), "p99-ms-traefik-forwardauth")
	}
}

// profile starts a CPU profile of this process when ROUTERBENCH_PROFILE
// names a directory; the returned func stops it and writes the
// allocations so far beside it.
func profile(b *testing.B) func() {
	b.Helper()
	dir := os.Getenv("ROUTERBENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	cpu, err := os.Create(filepath.Join(dir, "builtin-cpu.pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		f, err := os.Create(filepath.Join(dir, "builtin-allocs.pprof"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		b.Logf("profiles: %s/builtin-cpu.pprof, builtin-allocs.pprof", dir)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestBuiltinWiring checks the benchmark's set-up: the built-in router
// serves the upstream's page with the route cookie and refuses without it.
func TestBuiltinWiring(t *testing.T) {
	upstream := startUpstream(t)
	front, path, cookie, _ := builtin(t, upstream)
	for _, withCookie := range []bool{true, false} {
		req, _ := http.NewRequest("GET", "http://"+front+path, nil)
		if withCookie {
			req.AddCookie(cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case withCookie && (resp.StatusCode != 200 || string(body) != string(page)):
			t.Fatalf("with the cookie: %d %q", resp.StatusCode, body)
		case !withCookie && resp.StatusCode != http.StatusUnauthorized:
			t.Fatalf("without the cookie: %d %q", resp.StatusCode, body)
		}
	}
}
