package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/internal/testbin"
	"github.com/idepool/idepool/runtime/process"
	"github.com/idepool/idepool/server"
)

const testKey = "test-key-0123456789abcdef"

var bin testbin.Builder

// binDir outlives single tests: agents started by one server instance keep
// running while the next instance adopts them.
var binDir = filepath.Join(os.TempDir(), fmt.Sprintf("idepool-server-test-%d", os.Getpid()))

func TestMain(m *testing.M) {
	os.MkdirAll(binDir, 0o755)
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// instance is one running `idepool serve`, in-process, on a fixed port so a
// restarted instance is found by the same agents.
type instance struct {
	cfg    config.Config
	cancel context.CancelFunc
	done   chan error
	base   string
	srv    *server.Server
}

func agentBinary(t testing.TB) string {
	t.Helper()
	p, err := bin.Path(binDir)
	if err != nil {
		t.Fatalf("build idepool: %v", err)
	}
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func testConfig(t testing.TB, dataDir string, port, poolTarget int) config.Config {
	t.Helper()
	env := map[string]string{
		"PORT": fmt.Sprint(port),
		// The default, PORT+1, may be some other socket's on a busy test
		// host; a port of its own, fixed for this config so a restarted
		// server's adopted agents find the store where it was.
		"S3_EMBEDDED_ADDR":      fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"API_KEY":               testKey,
		"DATA_DIR":              dataDir,
		"PRE_WARMED_QUEUE_SIZE": fmt.Sprint(poolTarget),
		"RUNTIME":               "process",
		"FLUSH_TIMEOUT":         "5s",
		"RATE_LIMIT_REQUESTS":   "0", // the benchmark sends 200 starts with one key
		// These tests drive the placeholder, not an IDE installed here.
		"EMBEDDED_IDE": "placeholder",
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, "")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// start runs a server until stop is called; it listens on cfg.Port.
func start(t testing.TB, cfg config.Config) *instance {
	t.Helper()
	return startWith(t, cfg, nil)
}

// startWith is start with a chance to change the server's options.
func startWith(t testing.TB, cfg config.Config, change func(*server.Options)) *instance {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the previous instance's port may linger briefly
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.Port))
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *server.Server, 1)
	in := &instance{cfg: cfg, cancel: cancel, done: make(chan error, 1), base: "http://" + ln.Addr().String()}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := server.Options{
		Logger:       logger,
		Listener:     ln,
		AgentCommand: []string{agentBinary(t), "agent"},
		Version:      "test",
		Ready:        func(s *server.Server) { ready <- s },
	}
	if change != nil {
		change(&opts)
	}
	go func() { in.done <- server.Run(ctx, cfg, opts) }()
	select {
	case in.srv = <-ready:
	case err := <-in.done:
		t.Fatalf("server ended at start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	return in
}

// stop ends the server the way SIGTERM does: containers stay.
func (in *instance) stop(t testing.TB) {
	t.Helper()
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("server returned: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
}

// cleanupContainers removes every container under dataDir when the test ends.
func cleanupContainers(t testing.TB, dataDir string) {
	t.Cleanup(func() {
		rt, err := process.New(process.Options{DataDir: dataDir, StopGrace: 2 * time.Second})
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer rt.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		insts, _ := rt.Recover(ctx)
		for _, i := range insts {
			if err := rt.Remove(ctx, i.ID); err != nil {
				t.Logf("cleanup %s: %v", i.ID, err)
			}
		}
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// call does one API request and decodes the JSON answer into out.
func (in *instance) call(t testing.TB, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, in.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return res.StatusCode
}

type poolJSON struct {
	Pools []struct {
		Profile  string `json:"profile"`
		Target   int    `json:"target"`
		Warm     int    `json:"warm"`
		Starting int    `json:"starting"`
		Claimed  int    `json:"claimed"`
	} `json:"pools"`
}

// waitPool polls GET /api/pool until cond holds for profile default.
func (in *instance) waitPool(t testing.TB, what string, d time.Duration, cond func(warm, starting, claimed int) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last poolJSON
	for time.Now().Before(deadline) {
		last = poolJSON{}
		in.call(t, "GET", "/api/pool", nil, &last)
		for _, p := range last.Pools {
			if p.Profile == "default" && cond(p.Warm, p.Starting, p.Claimed) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pool never reached %s; last %+v", what, last)
}

type startJSON struct {
	ID          string            `json:"id"`
	Status      string            `json:"status"`
	State       string            `json:"state"`
	IsPreWarmed bool              `json:"isPreWarmed"`
	IsReused    bool              `json:"isReused"`
	URLs        map[string]string `json:"urls"`
	S3Bucket    string            `json:"s3Bucket"`
}

type listJSON struct {
	Containers []struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		S3Bucket string `json:"s3Bucket"`
	} `json:"containers"`
	Total int `json:"total"`
}
