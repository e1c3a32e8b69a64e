// Package browser drives the dashboard in a real Chromium against a real
// idepool server (process runtime, real agents).
package browser

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/client"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/dashboard"
	"github.com/idepool/idepool/events"
	"github.com/idepool/idepool/internal/testbin"
	"github.com/idepool/idepool/runtime/process"
	"github.com/idepool/idepool/server"
)

const apiKey = "browser-test-key-0123456789abcdef"

// chromiumPath finds Chromium; without it the test skips, except on CI.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (CI=true): install Debian's chromium package (scripts/setup-deps.sh)")
	}
	t.Skip("chromium is not installed: apt-get install chromium to run the browser tests")
	return ""
}

// env is a real server with the dashboard mounted in front of it, the way
// server.go mounts it.
type env struct {
	url string // what the browser and the API client use
	api *client.Client
	bus *events.Bus
}

func startServer(t *testing.T) *env {
	t.Helper()
	var bin testbin.Builder
	agent, err := bin.Path(t.TempDir())
	if err != nil {
		t.Fatalf("build idepool: %v", err)
	}
	dataDir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"PORT": fmt.Sprint(ln.Addr().(*net.TCPAddr).Port), "API_KEY": apiKey, "DATA_DIR": dataDir, "RUNTIME": "process",
		"PRE_WARMED_QUEUE_SIZE": "1", "FLUSH_TIMEOUT": "5s",
		// Port 0: the store picks a free port itself (PORT+1, the
		// default, may be some other socket's on a busy test host).
		"S3_EMBEDDED_ADDR": "127.0.0.1:0",
		"EMBEDDED_IDE":     "placeholder", // the dashboard, not an IDE installed here
	}
	cfg, err := config.Load(func(k string) string { return vars[k] }, "")
	if err != nil {
		ln.Close()
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *server.Server, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		done <- server.Run(ctx, cfg, server.Options{Logger: logger, Listener: ln, AgentCommand: []string{agent, "agent"},
			Version: "browser-test", Ready: func(s *server.Server) { ready <- s }})
	}()
	var srv *server.Server
	select {
	case srv = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("server ended at start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
		removeContainers(t, dataDir)
	})

	api, err := client.New("http://"+srv.Addr(), apiKey, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if mountedByServer(t, "http://"+srv.Addr()) {
		t.Log("the server mounts the dashboard itself: testing its wiring (events from the server's bus)")
		return &env{url: "http://" + srv.Addr(), api: api}
	}
	// Not mounted yet: mount it in front of the server the way server.go
	// should, with an event bus of the test's own feeding the log.
	t.Log("the server does not mount /dashboard: the test mounts it in front")
	bus := events.New(events.Options{})
	t.Cleanup(func() { bus.Close() })
	dash := dashboard.New(dashboard.Options{
		Orchestrator: srv.Pool(),
		Events:       bus,
		CheckKey:     dashboard.KeyChecker([]string{apiKey}),
		Logger:       logger.With("part", "dashboard"),
		Version:      "browser-test",
		// A chart of the last minute, sampled every second, so the
		// screenshot shows the test's own changes.
		SampleEvery:   time.Second,
		History:       time.Minute,
		SnapshotEvery: 500 * time.Millisecond,
		Resources: func(context.Context) []dashboard.Resource {
			return []dashboard.Resource{{Name: "test-host", Role: "host", State: "ready", CPUCores: 2, CPUPercent: 23,
				MemoryTotal: 8 << 30, MemoryUsed: 3 << 30, DiskTotal: 100 << 30, DiskUsed: 41 << 30, Containers: 2}}
		},
	})
	go dash.Run(ctx)
	mux := http.NewServeMux()
	mux.Handle("/dashboard", dash)
	mux.Handle("/dashboard/", dash)
	mux.Handle("/", srv.Handler())
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)
	if api, err = client.New(front.URL, apiKey, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return &env{url: front.URL, api: api, bus: bus}
}

// mountedByServer reports whether the server serves the dashboard's
// sign-in form.
func mountedByServer(t *testing.T, base string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/dashboard/login", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Logf("probe /dashboard/login: %v", err)
		return false
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	return res.StatusCode == http.StatusOK && strings.Contains(string(b), `id="login"`)
}

func removeContainers(t *testing.T, dataDir string) {
	rt, err := process.New(process.Options{DataDir: dataDir, StopGrace: 2 * time.Second})
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	insts, _ := rt.Recover(ctx)
	for _, i := range insts {
		if err := rt.Remove(ctx, i.ID); err != nil {
			t.Logf("cleanup %s: %v", i.ID, err)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newBrowser starts headless Chromium; cancelling the test's cleanup ends it.
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1100),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { bcancel(); acancel() })
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// step runs browser actions with a deadline.
func step(t *testing.T, bctx context.Context, what string, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		diagnose(t, bctx)
		t.Fatalf("%s: %v", what, err)
	}
}

// diagnose logs where the page is and what it shows, for a failed step.
func diagnose(t *testing.T, bctx context.Context) {
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	defer cancel()
	if s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.documentElement.outerHTML.slice(0, 3000)`)); err == nil {
		t.Logf("the page at failure: %s", s)
	} else {
		t.Logf("cannot read the page: %v", err)
	}
	// What it shows (an error dialog, an empty list) and which of its
	// loads failed or never ended: a page whose scripts or API calls did
	// not load looks the same in its HTML.
	if s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`"text: " + (document.body ? document.body.innerText.slice(0, 1500) : "(no body)") + "\nloads: " +
		performance.getEntriesByType("resource").map(e => e.name.replace(location.origin, "") + " " + (e.responseStatus || 0) + " " + Math.round(e.duration) + "ms").join("\n  ")`)); err == nil {
		t.Logf("the page's text and loads at failure:\n%s", s)
	}
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		p := filepath.Join(artifactsDir(t), "dashboard-failure.png")
		if os.WriteFile(p, png, 0o644) == nil {
			t.Logf("screenshot at failure: %s", p)
		}
	}
}

// waitJS waits until a JavaScript expression is truthy in the page.
func waitJS(t *testing.T, bctx context.Context, what, expr string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, d+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		diagnose(t, bctx)
		t.Fatalf("%s: %v (waited for %s)", what, err, expr)
	}
}

func evalString(t *testing.T, bctx context.Context, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return s
}

func artifactsDir(t *testing.T) string {
	if d := os.Getenv("ARTIFACTS_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d
		}
	}
	return t.TempDir()
}

func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server and Chromium")
	}
	chromium := chromiumPath(t)
	e := startServer(t)
	bctx := newBrowser(t, chromium)

	// Not signed in: the dashboard sends the browser to the sign-in form.
	step(t, bctx, "open the dashboard", 30*time.Second,
		chromedp.Navigate(e.url+"/dashboard/"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
	)
	if loc := evalString(t, bctx, "location.pathname"); loc != "/dashboard/login" {
		t.Fatalf("not signed in, the page is %s", loc)
	}
	// A wrong key is refused.
	step(t, bctx, "wrong key", 30*time.Second,
		chromedp.SendKeys(chromedp.CSS("#key"), "not-the-key"),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#login-error")),
	)
	// Sign in.
	step(t, bctx, "sign in", 30*time.Second,
		chromedp.SendKeys(chromedp.CSS("#key"), apiKey),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS(`#pools tr[data-key="default"]`)),
	)
	waitJS(t, bctx, "the live view connects", `document.getElementById("conn").textContent === "live"`, 20*time.Second)
	if c := evalString(t, bctx, "document.cookie"); c != "" {
		t.Errorf("scripts can read cookies %q: the session cookie must be HttpOnly", c)
	}
	if html := evalString(t, bctx, "document.documentElement.outerHTML"); strings.Contains(html, apiKey) {
		t.Error("the API key is in the page")
	}

	// A container started through the API appears without a reload.
	waitWarm(t, e.api)
	marker := evalString(t, bctx, `(window.__marker = "same-page-" + Math.random())`)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	st, err := e.api.Start(ctx, client.StartRequest{Bucket: "browser-bucket", Prefix: "bob", UserID: "bob", Wait: true})
	cancel()
	if err != nil {
		t.Fatalf("start through the API: %v", err)
	}
	row := fmt.Sprintf(`#containers tr[data-key="%s"]`, st.ID)
	waitJS(t, bctx, "the started container appears", fmt.Sprintf(`(function(){var r=document.querySelector(%q);
		return r && r.querySelector(".badge").textContent === "running" && r.querySelector("td.user").textContent === "bob"})()`, row), 30*time.Second)
	if m := evalString(t, bctx, "window.__marker || ''"); m != marker {
		t.Fatal("the page was reloaded: the container should appear live")
	}
	// Events reach the log live (from the server's bus when it mounts the
	// dashboard, else from the test's).
	if e.bus != nil {
		e.bus.Publish(idepool.Event{Type: idepool.EventClaim, ContainerID: st.ID, Profile: "default", State: idepool.StateRunning,
			Reason: string(st.Claim), Message: "claimed for browser-bucket/bob/"})
	}
	waitJS(t, bctx, "the event log shows the claim", fmt.Sprintf(`[...document.querySelectorAll("#log li")].some(function(li){
		return li.textContent.indexOf("container.") >= 0 && li.textContent.indexOf(%q) >= 0})`, st.ID), 20*time.Second)

	// Change the pool target in the page; the server takes it and the
	// page shows it.
	input := `#pools tr[data-key="default"] input[name=target]`
	step(t, bctx, "change the pool target", 30*time.Second,
		// Empty the field as a person would (select all, type over it);
		// once edited, refreshes leave it alone.
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(function(){var i=document.querySelector(%q); i.focus(); i.select();})()`, input)),
		chromedp.KeyEvent("\b"),
		chromedp.SendKeys(chromedp.CSS(input), "3"),
		chromedp.Click(chromedp.CSS(`#pools tr[data-key="default"] button`)),
	)
	waitJS(t, bctx, "the page shows target 3", `document.querySelector('#pools tr[data-key="default"] td.target').textContent === "3"`, 30*time.Second)
	ps, err := e.api.Pools(context.Background())
	if err != nil || len(ps) != 1 || ps[0].Target != 3 {
		t.Errorf("after the change in the page the server has %+v (%v)", ps, err)
	}
	// A change made elsewhere (the API) shows too.
	if _, err := e.api.SetPoolTarget(context.Background(), "default", 2); err != nil {
		t.Fatal(err)
	}
	waitJS(t, bctx, "the page shows target 2", `document.querySelector('#pools tr[data-key="default"] td.target').textContent === "2"`, 30*time.Second)
	waitJS(t, bctx, "the chart has points", `document.querySelector('#pools tr[data-key="default"] polyline.s-warm').getAttribute("points").split(" ").length >= 2`, 30*time.Second)

	// Filter and search.
	step(t, bctx, "search", 10*time.Second, chromedp.SendKeys(chromedp.CSS("#search"), "browser-bucket"))
	waitJS(t, bctx, "search keeps only the claimed container", fmt.Sprintf(`(function(){
		var rows=[...document.querySelectorAll("#containers tbody tr")].filter(function(r){return !r.hidden});
		return rows.length===1 && rows[0].dataset.key===%q})()`, st.ID), 10*time.Second)
	step(t, bctx, "clear search", 10*time.Second,
		chromedp.Evaluate[chromedp.Void](`(function(){var s=document.getElementById("search"); s.value=""; s.dispatchEvent(new Event("input"))})()`))
	waitJS(t, bctx, "every container shows again", `[...document.querySelectorAll("#containers tbody tr")].every(function(r){return !r.hidden})`, 10*time.Second)

	// The screenshot, with the running container in view.
	png, err := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		return chromedp.Run(ctx, chromedp.FullScreenshot(100))
	}()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(artifactsDir(t), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// The stop button stops it.
	step(t, bctx, "click stop", 10*time.Second, chromedp.Click(chromedp.CSS(row+" button.stop")))
	waitJS(t, bctx, "the stopped container leaves the list", fmt.Sprintf(`!document.querySelector(%q)`, row), 60*time.Second)
	c, err := e.api.Get(context.Background(), st.ID)
	if err != nil || c.State != idepool.StateStopped || c.ShutdownReason != idepool.ReasonManual {
		t.Errorf("after the stop button: %+v %v", c.State, err)
	}
	waitJS(t, bctx, "the page says it stopped", `document.getElementById("flash").textContent.indexOf("stopped") >= 0`, 10*time.Second)

	// Sign out: back to the form, and the dashboard is closed again.
	step(t, bctx, "sign out", 30*time.Second,
		chromedp.Click(chromedp.CSS("#signout")),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.Navigate(e.url+"/dashboard/"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
	)
}

func waitWarm(t *testing.T, api *client.Client) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last []idepool.PoolStatus
	var err error
	for time.Now().Before(deadline) {
		if last, err = api.Pools(context.Background()); err == nil && len(last) > 0 && last[0].Warm > 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no warm container after 2 minutes; pools %+v (%v)", last, err)
}
