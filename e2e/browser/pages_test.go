package browser

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/idepool/idepool/client"
)

// TestStudentPagesInChromium: what a person sees in Chromium at / (a
// landing page, not JSON), at a link that was already used, and at the
// address of an IDE that was stopped: a short page in words, never JSON,
// never a token.
func TestStudentPagesInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server and Chromium")
	}
	chromium := chromiumPath(t)
	e := startServer(t)
	bctx := newBrowser(t, chromium)

	title := func() string {
		return evalString(t, bctx, `(document.getElementById("title")||{}).textContent || ""`)
	}
	bodyText := func() string { return evalString(t, bctx, "document.body.innerText") }
	noJSONNoToken := func(what string) {
		t.Helper()
		text := bodyText()
		if strings.Contains(text, `"error"`) || strings.HasPrefix(strings.TrimSpace(text), "{") {
			t.Errorf("%s shows JSON: %s", what, text)
		}
		html := evalString(t, bctx, "document.documentElement.outerHTML")
		if strings.Contains(html, "token=") || strings.Contains(html, apiKey) {
			t.Errorf("%s holds a token or key: %s", what, html)
		}
	}

	// The server's address: a landing page.
	step(t, bctx, "open /", 30*time.Second, chromedp.Navigate(e.url+"/"), chromedp.WaitVisible(chromedp.CSS("#title")))
	if got := title(); got != "idepool is running" {
		t.Fatalf("/ shows %q: %s", got, bodyText())
	}
	if text := bodyText(); !strings.Contains(text, "idepool browser-test") || !strings.Contains(text, "Dashboard") || !strings.Contains(text, "Health") {
		t.Errorf("/ lacks the version or links: %s", text)
	}
	noJSONNoToken("/")

	// A link used once already (here by another client) is refused in
	// words.
	waitWarm(t, e.api)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	st, err := e.api.Start(ctx, client.StartRequest{Bucket: "pages-bucket", Prefix: "carol", UserID: "carol", Wait: true})
	cancel()
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	link := st.Routes["code"]
	if !strings.Contains(link, "token=") {
		t.Fatalf("start gave no code link: %+v", st.Routes)
	}
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound {
		t.Fatalf("first use of the link: %d", res.StatusCode)
	}
	step(t, bctx, "open a used link", 30*time.Second, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#title")))
	if got := title(); got != "This link was already used" {
		t.Fatalf("a used link shows %q: %s", got, bodyText())
	}
	if text := bodyText(); !strings.Contains(text, "course page") {
		t.Errorf("the used-link page does not say what to do: %s", text)
	}
	noJSONNoToken("the used-link page")

	// A fresh link opens the IDE; once the IDE is stopped, its address
	// says so.
	ctx, cancel = context.WithTimeout(context.Background(), 90*time.Second)
	again, err := e.api.Start(ctx, client.StartRequest{Bucket: "pages-bucket", Prefix: "carol", UserID: "carol", Wait: true})
	cancel()
	if err != nil || again.ID != st.ID {
		t.Fatalf("start again: %+v %v", again.ID, err)
	}
	step(t, bctx, "open the IDE", 30*time.Second, chromedp.Navigate(again.Routes["code"]), chromedp.WaitReady(chromedp.CSS("body")))
	if got := title(); got != "" {
		t.Fatalf("a fresh link shows the page %q instead of the IDE: %s", got, bodyText())
	}
	base := strings.SplitN(again.Routes["code"], "?", 2)[0]
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	_, err = e.api.Stop(ctx, st.ID)
	cancel()
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	step(t, bctx, "open the stopped IDE", 30*time.Second, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#title")))
	if got := title(); got != "This IDE was stopped" {
		t.Fatalf("a stopped IDE shows %q: %s", got, bodyText())
	}
	noJSONNoToken("the stopped page")
}
