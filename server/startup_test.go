package server_test

import (
	"context"
	"errors"
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

	"go.uber.org/goleak"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/internal/dirlock"
	"github.com/idepool/idepool/server"
)

// failingRecover is the real runtime whose Recover fails.
type failingRecover struct{ idepool.Runtime }

func (failingRecover) Recover(context.Context) ([]idepool.Instance, error) {
	return nil, errors.New("injected: recover failed")
}

// A start-up that fails at any stage releases everything the stages before
// it built: no goroutine, listener, file lock or agent process is left.
func TestFailedStartLeavesNothing(t *testing.T) {
	type setup struct {
		cfg  *config.Config
		opts *server.Options
	}
	occupy := func(t *testing.T, addr string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("occupy %s: %v", addr, err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	type tc = struct {
		name    string
		want    string // in New's error: the start failed where meant
		prepare func(t *testing.T, s setup)
	}
	cases := []tc{
		{"DATA_DIR locked", "is in use by idepool test", func(t *testing.T, s setup) {
			l, err := dirlock.Acquire(s.cfg.DataDir, "test", 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}},
		{"runtime cannot be built", "process runtime", func(t *testing.T, s setup) {
			// The process runtime's containers directory is a file.
			if err := os.WriteFile(filepath.Join(s.cfg.DataDir, "containers"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"store address in use", "embedded S3 store", func(t *testing.T, s setup) { occupy(t, s.cfg.S3EmbeddedAddr) }},
		{"debug address in use", "DEBUG_ADDR", func(t *testing.T, s setup) { occupy(t, s.cfg.DebugAddr) }},
		{"port in use", "listen on", func(t *testing.T, s setup) {
			s.opts.Listener.Close()
			s.opts.Listener = nil
			occupy(t, s.cfg.Addr())
		}},
		{"recover fails", "injected: recover failed", func(t *testing.T, s setup) {
			server.SetWrapRuntime(s.opts, func(rt idepool.Runtime) idepool.Runtime { return failingRecover{rt} })
		}},
	}
	for _, stage := range server.Stages() {
		cases = append(cases, tc{"fails after " + stage, "after stage " + stage, func(t *testing.T, s setup) {
			server.SetFailAfter(s.opts, stage)
		}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dataDir := t.TempDir()
			port := freePort(t)
			cfg := testConfig(t, dataDir, port, 1)
			cfg.DebugAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", cfg.Addr())
			if err != nil {
				t.Fatal(err)
			}
			opts := server.Options{
				Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
				Listener: ln,
				Version:  "test",
			}
			c.prepare(t, setup{&cfg, &opts})
			ignore := goleak.IgnoreCurrent()

			ctx, cancel := context.WithCancel(context.Background())
			s, err := server.New(ctx, cfg, opts)
			cancel()
			if err == nil {
				t.Fatalf("New succeeded (%s); want a failed start", s.Addr())
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v; want it to say %q", err, c.want)
			}

			// fasthttp's idle-worker cleaner (in the embedded store) sees
			// the stop only after its sleep of up to 10 s; it holds no
			// socket (the addresses are listened on again below).
			goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
			for _, addr := range []string{cfg.Addr(), cfg.S3EmbeddedAddr, cfg.DebugAddr} {
				if strings.Contains(c.name, "in use") {
					continue // the test holds one of them
				}
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Errorf("%s is still held: %v", addr, err)
					continue
				}
				l.Close()
			}
			if c.name != "DATA_DIR locked" {
				l, err := dirlock.Acquire(dataDir, "test", 0)
				if err != nil {
					t.Errorf("DATA_DIR lock is still held: %v", err)
				} else {
					l.Close()
				}
			}
			if ps := agentProcesses(t, dataDir); len(ps) > 0 {
				t.Errorf("agent processes left under %s: %v", dataDir, ps)
			}
		})
	}
}

// agentProcesses lists the processes the process runtime started under
// dataDir: each carries IDEPOOL_PROCESS_DIR=<dataDir>/containers/<id>.
func agentProcesses(t *testing.T, dataDir string) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/environ")
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte("IDEPOOL_PROCESS_DIR=" + filepath.Join(dataDir, "containers"))
	var out []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, kv := range strings.Split(string(b), "\x00") {
			if strings.HasPrefix(kv, string(marker)) {
				out = append(out, filepath.Base(filepath.Dir(p))) // the pid
			}
		}
	}
	return out
}

// TestDebugProfiles: with DEBUG_ADDR, serve answers Go's runtime profiles
// there (not on the API's port), and the listener goes with serve.
func TestDebugProfiles(t *testing.T) {
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := testConfig(t, dataDir, freePort(t), 0)
	cfg.DebugAddr = "127.0.0.1:0"
	in := start(t, cfg)
	addr := in.srv.DebugAddr()
	if addr == "" || addr == cfg.DebugAddr {
		t.Fatalf("DebugAddr() = %q", addr)
	}
	get := func(base, path string) (int, string) {
		t.Helper()
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s%s: %v", base, path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("http://"+addr, "/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile") {
		t.Fatalf("heap profile: %d %.200s", code, body)
	}
	if code, body := get("http://"+addr, "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("goroutine profile: %d %.200s", code, body)
	}
	// Not on the API's port.
	if code, _ := get(in.base, "/debug/pprof/heap?debug=1"); code == 200 {
		t.Fatalf("the API's port answers profiles")
	}
	in.stop(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still answers after serve stopped", addr)
	}
}
