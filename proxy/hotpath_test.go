package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// TestCachedCookieStillChecked: once a cookie is cached as verified, each
// request still checks its expiry, its container's generation and its
// container; a tampered value is not the cached one.
func TestCachedCookieStillChecked(t *testing.T) {
	f := newFixture(t, nil)
	ck := f.login(t, "aaaa1111", "code")
	for i := range 3 { // the first verifies, the others hit the cache
		if resp, body := f.get(t, "/code/aaaa1111/x", ck); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if f.rt.verifiedCookies.n.Load() != 1 {
		t.Fatalf("cached cookies: %d, want 1", f.rt.verifiedCookies.n.Load())
	}
	tampered := &http.Cookie{Name: ck.Name, Value: strings.Replace(ck.Value, "aaaa1111.1.", "aaaa1111.2.", 1)}
	c, _ := f.be.Lookup("aaaa1111")
	c.Generation = 2
	f.be.set(c)
	if resp, _ := f.get(t, "/code/aaaa1111/x", ck); resp.StatusCode != 401 {
		t.Fatalf("cached cookie of the previous generation: %d", resp.StatusCode)
	}
	if resp, _ := f.get(t, "/code/aaaa1111/x", tampered); resp.StatusCode != 401 {
		t.Fatalf("cookie with its generation rewritten: %d", resp.StatusCode)
	}
	c.Generation = 1
	f.be.set(c)
	// Another container's cookie name carrying this cookie's value.
	stolen := &http.Cookie{Name: CookieName("bbbb2222"), Value: ck.Value}
	if resp, _ := f.get(t, "/code/bbbb2222/x", stolen); resp.StatusCode != 401 {
		t.Fatalf("cached cookie of another container: %d", resp.StatusCode)
	}
	f.clk.Add(12*time.Hour + time.Second)
	if resp, _ := f.get(t, "/code/aaaa1111/x", ck); resp.StatusCode != 401 {
		t.Fatalf("cached cookie past its expiry: %d", resp.StatusCode)
	}
}

// TestCookieCacheBounded: past maxVerified entries the cache starts over.
func TestCookieCacheBounded(t *testing.T) {
	var c cookieCache
	for i := range maxVerified + 10 {
		c.put(strconv.Itoa(i), verifiedCookie{id: "x"})
	}
	if n := c.n.Load(); n > maxVerified || n < 10 {
		t.Fatalf("entries %d, want 10..%d", n, maxVerified)
	}
}

// TestRequestTouchThrottled: requests report activity once per TouchEvery
// per container, and again once it has passed.
func TestRequestTouchThrottled(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.TouchEvery = time.Second })
	ck := f.login(t, "aaaa1111", "code")
	ck2 := f.login(t, "bbbb2222", "code")
	for range 5 {
		f.get(t, "/code/aaaa1111/x", ck)
		f.get(t, "/code/bbbb2222/x", ck2)
	}
	if a, b := f.be.touched("aaaa1111"), f.be.touched("bbbb2222"); a != 1 || b != 1 {
		t.Fatalf("touches within a second: %d and %d, want 1 each", a, b)
	}
	f.clk.Add(time.Second)
	f.get(t, "/code/aaaa1111/x", ck)
	f.get(t, "/code/aaaa1111/x", ck)
	if n := f.be.touched("aaaa1111"); n != 2 {
		t.Fatalf("touches after a second: %d, want 2", n)
	}
	// Containers not seen for a while leave the table at the next sweep.
	f.clk.Add(2 * touchSweepEvery)
	f.get(t, "/code/bbbb2222/x", ck2)
	if _, ok := f.rt.touched.Load("aaaa1111"); ok {
		t.Fatal("a container idle for two sweep periods is still in the activity table")
	}
}

// TestStreamsNotBuffered: an answer of unknown length (event stream, long
// poll) reaches the client write by write, and one of known length whose
// body stalls gets its headers and first bytes through within the flush
// interval, not at its end.
func TestStreamsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", "10")
		}
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "later")
	}))
	defer up.Close()
	f := newFixture(t, nil)
	ep := strings.TrimPrefix(up.URL, "http://")
	f.be.set(idepool.Container{ID: "strm5555", Profile: "default", State: idepool.StateRunning, Generation: 1,
		Endpoints: map[string]string{"code": ep}})
	ck := f.login(t, "strm5555", "code")
	for _, path := range []string{"/chunked", "/sized"} {
		req, _ := http.NewRequest("GET", f.front.URL+"/code/strm5555"+path, nil)
		req.AddCookie(ck)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := f.client.Do(req.WithContext(ctx))
		if err != nil {
			cancel()
			t.Fatalf("%s: %v", path, err)
		}
		buf := make([]byte, 5)
		_, err = io.ReadFull(resp.Body, buf)
		resp.Body.Close()
		cancel()
		if err != nil || string(buf) != "first" {
			t.Fatalf("%s: first write not through while the upstream waits: %q %v", path, buf, err)
		}
	}
}
