package server_test

// Helpers of the health and idle end-to-end tests (health_e2e_test.go,
// idle_e2e_test.go). Names carry an e2e prefix or are specific enough not to
// collide with the other test files of this package.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/config"
)

// e2eConfig is testConfig with fast health checks and a short inactivity
// timeout: real time is unavoidable end to end.
func e2eConfig(t testing.TB, dataDir string, poolTarget int, idle time.Duration) config.Config {
	t.Helper()
	cfg := testConfig(t, dataDir, freePort(t), poolTarget)
	cfg.HealthCheckInterval = 300 * time.Millisecond
	// Not shorter: on a machine compiling beside the tests (a new
	// machine's CI, load average 15 on 2 cores) python's single-threaded
	// http.server missed two 300 ms probes in a row, and the health
	// monitor replaced a healthy container a test had just claimed. A
	// frozen workload still fails every probe, 2 s later.
	cfg.HealthCheckTimeout = 2 * time.Second
	cfg.HealthCheckRetries = 2
	cfg.InactivityTimeout = idle
	// A port of its own for the embedded S3 store: PORT+1 (the default)
	// may be taken on a busy machine.
	cfg.S3EmbeddedAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	return cfg
}

// writeProfilesFile writes a PROFILES_FILE into a temporary directory.
func writeProfilesFile(t testing.TB, profiles ...map[string]any) string {
	t.Helper()
	b, err := json.MarshalIndent(map[string]any{"profiles": profiles}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "profiles.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// realPython returns the python3 interpreter itself (not a pyenv shim, which
// would exec several programs first), or skips without one (fails in CI).
func realPython(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	p := strings.TrimSpace(string(out))
	if err != nil || p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 is needed for a supervised workload: %v", err)
		}
		t.Skipf("python3 is needed for a supervised workload: %v", err)
	}
	return p
}

// containerE2E is the part of GET /api/containers/{id} these tests read.
type containerE2E struct {
	ID             string             `json:"id"`
	State          string             `json:"state"`
	ShutdownReason string             `json:"shutdownReason"`
	S3Bucket       string             `json:"s3Bucket"`
	Workspace      *idepool.Workspace `json:"workspace"`
	LastActivity   *time.Time         `json:"lastActivity"`
	StoppedAt      *time.Time         `json:"stoppedAt"`
	ReplacedBy     string             `json:"replacedBy"`
	Health         struct {
		Status              string            `json:"status"`
		Checks              map[string]string `json:"checks"`
		ConsecutiveFailures int               `json:"consecutiveFailures"`
	} `json:"health"`
}

// getContainer answers GET /api/containers/{id}: status code and body.
func (in *instance) getContainer(t testing.TB, id string) (int, containerE2E) {
	t.Helper()
	var c containerE2E
	code := in.call(t, "GET", "/api/containers/"+id, nil, &c)
	return code, c
}

// pollUntil calls f every 50 ms until it reports done or d passes; the
// message of the last call explains a failure. It returns how long it took
// (a figure to log, never to assert).
func pollUntil(t testing.TB, what string, d time.Duration, f func() (bool, string)) time.Duration {
	t.Helper()
	t0 := time.Now()
	deadline := t0.Add(d)
	var last string
	for {
		var ok bool
		if ok, last = f(); ok {
			return time.Since(t0)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agentPID reads the agent's pid from the process runtime's meta.json.
func agentPID(t testing.TB, dataDir, id string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "containers", id, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Process struct {
			PID int `json:"pid"`
		} `json:"process"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Process.PID <= 1 {
		t.Fatalf("meta.json of %s: pid %d, %v", id, m.Process.PID, err)
	}
	return m.Process.PID
}

// childPID finds the child of parent whose command line contains match, in
// /proc (the agent starts its workloads as its own children).
func childPID(parent int, match string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(strings.ReplaceAll(string(cmd), "\x00", " "), match) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child of %d runs %q", parent, match)
}

// waitEvent reads GET /api/events from the start of the history (after=0),
// for container id, until an event matches or d passes.
func (in *instance) waitEvent(t testing.TB, id string, d time.Duration, what string, match func(idepool.Event) bool) idepool.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", in.base+"/api/events?after=0&container="+id, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /api/events: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /api/events: %d", res.StatusCode)
	}
	var seen []string
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var e idepool.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		if match(e) {
			return e
		}
		seen = append(seen, fmt.Sprintf("%s/%s/%s", e.Type, e.State, e.Reason))
	}
	t.Fatalf("no %s event for %s within %v; saw %v", what, id, d, seen)
	return idepool.Event{}
}

// routeClient opens a container's route with the one-time token URL of a
// start answer and returns a client holding the route cookie, and the
// router's base URL as that URL names it (PUBLIC_URL: the cookie's host).
// The client does not follow redirects beyond the token exchange, so a test
// sees them.
func routeClient(t testing.TB, tokenURL string) (*http.Client, string) {
	t.Helper()
	u, err := url.Parse(tokenURL)
	if err != nil {
		t.Fatalf("token URL %q: %v", tokenURL, err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	res, err := c.Get(tokenURL) // 302 with Set-Cookie, then the route's page
	if err != nil {
		t.Fatalf("open %s: %v", tokenURL, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("open the token URL: %d", res.StatusCode)
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, u.Scheme + "://" + u.Host
}
