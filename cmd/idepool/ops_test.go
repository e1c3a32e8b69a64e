package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool/internal/testbin"
)

// opsBin is the idepool binary the tests of `serve` and `down` run. It is
// built once per test process into opsBinDir, which TestMain removes.
var (
	opsBin    testbin.Builder
	opsBinDir = filepath.Join(os.TempDir(), fmt.Sprintf("idepool-cmd-test-%d", os.Getpid()))
)

func TestMain(m *testing.M) {
	os.MkdirAll(opsBinDir, 0o755)
	code := m.Run()
	os.RemoveAll(opsBinDir)
	os.Exit(code)
}

func idepoolBinary(t *testing.T) string {
	t.Helper()
	p, err := opsBin.Path(opsBinDir)
	if err != nil {
		t.Fatalf("build idepool: %v", err)
	}
	return p
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a running idepool binary.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	err            error
}

func startBinary(t *testing.T, env map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(idepoolBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{cmd: cmd, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start idepool %v: %v", args, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
	})
	return p
}

// wait waits for the process to end and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("idepool %v still runs after %v\nstderr:\n%s", p.cmd.Args[1:], d, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitServing waits until the serve answers /api/health on port.
func (p *proc) waitServing(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("serve ended at start (%v)\nstderr:\n%s", p.err, p.stderr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/api/health", port), nil)
		res, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			res.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("serve does not answer on port %d\nstderr:\n%s", port, p.stderr)
}

func serveEnv(t *testing.T, dataDir string, pool int) (map[string]string, int) {
	port := freeTCPPort(t)
	return map[string]string{
		"PORT": fmt.Sprint(port), "DATA_DIR": dataDir, "RUNTIME": "process",
		"API_KEY": cliTestKey, "PRE_WARMED_QUEUE_SIZE": fmt.Sprint(pool),
		"S3_EMBEDDED_ADDR": fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)),
		"FLUSH_TIMEOUT":    "10s",
		"EMBEDDED_IDE":     "placeholder", // serve's own behaviour, not an IDE installed here
	}, port
}

// TestServeLocksDataDir: a second serve on the same DATA_DIR (another
// port) exits 1 naming the first (pid, port); once the first is killed
// with SIGKILL, the lock is gone with it and a new serve starts.
func TestServeLocksDataDir(t *testing.T) {
	dataDir := t.TempDir()
	env1, port1 := serveEnv(t, dataDir, 0)
	first := startBinary(t, env1, "serve")
	first.waitServing(t, port1)

	env2, _ := serveEnv(t, dataDir, 0)
	second := startBinary(t, env2, "serve")
	if code := second.wait(t, 60*time.Second); code != 1 {
		t.Fatalf("second serve exited %d, want 1\nstderr:\n%s", code, second.stderr)
	}
	msg := second.stderr.String()
	for _, want := range []string{fmt.Sprintf("pid %d", first.cmd.Process.Pid), fmt.Sprintf("port %d", port1), dataDir} {
		if !strings.Contains(msg, want) {
			t.Errorf("second serve's error does not name %q:\n%s", want, msg)
		}
	}

	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 30*time.Second)
	env3, port3 := serveEnv(t, dataDir, 0)
	third := startBinary(t, env3, "serve")
	third.waitServing(t, port3)
}
