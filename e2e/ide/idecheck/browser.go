package idecheck

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

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
}

// NoVNC opens pageURL (the vnc route's start page, token included) in the
// browser of bctx and waits, within d, until noVNC says it is connected
// (the page gets class noVNC_connected and draws the desktop in a canvas).
func NoVNC(bctx context.Context, pageURL string, d time.Duration) (NoVNCView, error) {
	ctx, cancel := context.WithTimeout(bctx, d)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(pageURL)); err != nil {
		return NoVNCView{}, fmt.Errorf("open %s: %w", pageURL, err)
	}
	const connected = `document.documentElement.classList.contains("noVNC_connected") &&
		!!document.querySelector("#noVNC_container canvas") &&
		document.querySelector("#noVNC_container canvas").width > 0`
	_, perr := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](connected,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(0)))
	// What the page shows, connected or not (it explains a failure).
	var v NoVNCView
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
		return v, fmt.Errorf("noVNC at %s did not connect (status %q): %w", v.URL, v.Status, perr)
	}
	return v, nil
}
