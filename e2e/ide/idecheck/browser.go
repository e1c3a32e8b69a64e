package idecheck

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// ErrNoChromium is returned by ChromiumPath when no browser is installed.
var ErrNoChromium = errors.New("chromium is not installed (Debian: apt-get install chromium)")

// ChromiumPath finds Chromium (or Chrome).
func ChromiumPath() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// Browser starts a headless Chromium with a fresh profile in userDataDir;
// cancel stops it.
func Browser(path, userDataDir string, logf func(string, ...any)) (ctx context.Context, cancel context.CancelFunc, err error) {
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(userDataDir),
		chromedp.WindowSize(1400, 1000),
	)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(logf))
	cancel = func() { bcancel(); acancel() }
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		cancel()
		return nil, nil, fmt.Errorf("start chromium: %w", err)
	}
	return bctx, cancel, nil
}

// NoVNCView is what noVNC shows once connected.
type NoVNCView struct {
	URL           string // where the page ended (vnc.html?…path=…)
	Status        string // noVNC's status line
	Width, Height int    // the remote desktop's canvas
	Loads         int    // page loads it took (see NoVNC)
}

// maxLoads bounds the page loads of NoVNC.
const maxLoads = 4

var errNetworkChanged = errors.New("the network changed while the page loaded (net::ERR_NETWORK_CHANGED)")

// waitConnected polls the page until noVNC is connected, ctx ends, or the
// network changed under the page.
func waitConnected(ctx context.Context, netChanged *atomic.Bool) error {
	const connected = `document.documentElement.classList.contains("noVNC_connected") &&
		!!document.querySelector("#noVNC_container canvas") &&
		document.querySelector("#noVNC_container canvas").width > 0`
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := chromedp.Run(pctx, chromedp.Poll[chromedp.Void](connected,
			chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(0)))
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case netChanged.Load():
			return errNetworkChanged
		}
		// Not yet (or the page was between documents): poll again.
	}
}

// NoVNC opens pageURL (the vnc route's start page, token included) in the
// browser of bctx and waits, within d, until noVNC says it is connected
// (the page gets class noVNC_connected and draws the desktop in a canvas).
func NoVNC(bctx context.Context, pageURL string, d time.Duration) (NoVNCView, error) {
	ctx, cancel := context.WithTimeout(bctx, d)
	defer cancel()
	// Script errors explain a page that never connects.
	var mu sync.Mutex
	var problems []string
	var netChanged atomic.Bool
	loads := 0
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, s)
		}
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *cdplog.EventEntryAdded:
			if e := ev.Entry; e != nil && (e.Level == cdplog.EntryLevelError || e.Level == cdplog.EntryLevelWarning) {
				note(fmt.Sprintf("log %s %s: %s %s", e.Source, e.Level, e.Text, e.URL))
				if strings.Contains(e.Text, "ERR_NETWORK_CHANGED") {
					netChanged.Store(true)
				}
			}
		case *runtime.EventExceptionThrown:
			if e := ev.ExceptionDetails; e != nil {
				desc := e.Text
				if e.Exception != nil {
					desc += " " + e.Exception.Description
				}
				note(fmt.Sprintf("exception at %s:%d: %s", e.URL, e.LineNumber, desc))
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range ev.Args {
					if a.Description != "" {
						parts = append(parts, a.Description)
					} else {
						parts = append(parts, string(a.Value))
					}
				}
				note(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " ")))
			}
		}
	}); err != nil {
		return NoVNCView{}, fmt.Errorf("listen to the page: %w", err)
	}
	// Module loading and network failures are reported in the Log domain.
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
		return err
	})); err != nil {
		return NoVNCView{}, fmt.Errorf("enable the page's log: %w", err)
	}
	// Chromium aborts the requests in flight when the host's network
	// changes (another container's interface comes or goes, common on a
	// shared Docker host: net::ERR_NETWORK_CHANGED), and noVNC's modules
	// then never run. Only then is the page loaded again, as a person would.
	u := pageURL
	var perr error
	for load := 1; ; load++ {
		netChanged.Store(false)
		if _, err := chromedp.Run(ctx, chromedp.Navigate(u)); err != nil {
			return NoVNCView{Loads: load}, fmt.Errorf("open %s: %w", u, err)
		}
		perr = waitConnected(ctx, &netChanged)
		if perr == nil || !errors.Is(perr, errNetworkChanged) || load == maxLoads {
			loads = load
			break
		}
		note(fmt.Sprintf("load %d: the network changed; loading the page again", load))
		// The token in pageURL is spent: reload where the page is now.
		if cur, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`)); err == nil && strings.HasPrefix(cur, "http") {
			u = cur
		}
	}
	// What the page shows, connected or not (it explains a failure).
	v := NoVNCView{Loads: loads}
	sctx, scancel := context.WithTimeout(context.WithoutCancel(bctx), 10*time.Second)
	defer scancel()
	state, err := chromedp.Run(sctx, chromedp.Evaluate[[]any](`(() => {
		const c = document.querySelector("#noVNC_container canvas");
		const s = document.getElementById("noVNC_status");
		return [location.href, s ? s.textContent : document.title, c ? c.width : 0, c ? c.height : 0];
	})()`))
	if err == nil && len(state) == 4 {
		v.URL, _ = state[0].(string)
		v.Status, _ = state[1].(string)
		w, _ := state[2].(float64)
		h, _ := state[3].(float64)
		v.Width, v.Height = int(w), int(h)
	}
	if perr != nil {
		// Which of the page's requests did not finish, or failed.
		res, _ := chromedp.Run(sctx, chromedp.Evaluate[string](`document.readyState + "; " +
			performance.getEntriesByType("resource").map(e => e.name.replace(location.origin, "") + " " +
				(e.responseStatus || 0) + " " + Math.round(e.duration) + "ms").join(", ")`))
		note("resources (" + res + ")")
		mu.Lock()
		defer mu.Unlock()
		return v, fmt.Errorf("noVNC at %s did not connect (status %q; page problems: %q): %w", v.URL, v.Status, problems, perr)
	}
	return v, nil
}
