// Package e2etest holds the helpers the end-to-end tests on real engines
// share (e2e/swarm, e2e/kubernetes): the repository's root, HTTP with a
// cookie, and waits on idepool's API.
package e2etest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/modroot"
)

// RepoRoot is the module root (deploy/ scripts live there); see modroot.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := modroot.Dir()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// RouteCookie is the route cookie of container id that jar holds for
// base (after a token exchange), as a Cookie header value; "" if none.
func RouteCookie(jar http.CookieJar, base, id string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	for _, c := range jar.Cookies(u) {
		if c.Name == "idepool_"+id {
			return c.String()
		}
	}
	return ""
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// HTTPGet fetches url with the given cookie header and returns status,
// body and the time to the first byte of the answer.
func HTTPGet(hc *http.Client, url, cookie string) (int, string, time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", 0, err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", 0, err
	}
	ttfb := time.Since(start)
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), ttfb, nil
}

// WaitHealthy waits up to d until idepool's API answers, asking every
// every; it fails t with logs() if not.
func WaitHealthy(t testing.TB, api *idepoolclient.Client, d, every time.Duration, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := api.Pools(ctx)
		cancel()
		if err == nil {
			return
		}
		last = err
		time.Sleep(every)
	}
	t.Fatalf("idepool did not answer within %v: %v\n%s", d, last, logs())
}

// WaitPool waits up to d until profile's pool has want warm containers;
// it fails t with logs() if not.
func WaitPool(t testing.TB, api *idepoolclient.Client, profile string, want int, d time.Duration, logs func() string) idepool.PoolStatus {
	t.Helper()
	deadline := time.Now().Add(d)
	var last idepool.PoolStatus
	for time.Now().Before(deadline) {
		ps, err := api.Pools(context.Background())
		if err == nil {
			for _, p := range ps {
				if p.Profile == profile {
					last = p
					if p.Warm >= want {
						return p
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pool %s did not reach %d warm within %v: %+v\n%s", profile, want, d, last, logs())
	return last
}
