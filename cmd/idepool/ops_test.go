package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

func apiCall(t *testing.T, port int, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), rd)
	req.Header.Set("Authorization", "Bearer "+cliTestKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if out != nil {
		_ = json.NewDecoder(res.Body).Decode(out)
	}
	return res.StatusCode
}

// processesUnder returns the pids of live processes whose environment
// names dir (every agent and workload of a DATA_DIR has its workspace
// there).
func processesUnder(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte(dir)) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// A zombie holds nothing; its parent reaps it.
			if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}

// TestDownStopsEverything: serve starts containers, Ctrl-C (SIGINT) stops
// serve and says how many keep running and how to stop them; `idepool
// down` then stops every agent (no process of the DATA_DIR left in /proc)
// and each flushes first: a file written while serve was down (so while
// the embedded store was down too) is in the store afterwards.
func TestDownStopsEverything(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { removeAll(t, dataDir) }) // runs last: whatever a failure left
	env, port := serveEnv(t, dataDir, 1)
	serve := startBinary(t, env, "serve")
	serve.waitServing(t, port)

	var started struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if code := apiCall(t, port, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": "down-test", "s3Prefix": "alice"}, &started); code != 201 || started.State != "running" {
		t.Fatalf("start: %d %+v\nstderr:\n%s", code, started, serve.stderr)
	}
	if got := processesUnder(t, dataDir); len(got) == 0 {
		t.Fatal("no agent process found under DATA_DIR while serve runs: the /proc check would prove nothing")
	}

	if err := serve.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := serve.wait(t, 60*time.Second); code != 0 {
		t.Errorf("serve exited %d after Ctrl-C", code)
	}
	msg := serve.stderr.String()
	if !strings.Contains(msg, "keep running") || !strings.Contains(msg, "idepool down") {
		t.Errorf("serve's shutdown does not say what keeps running and how to stop it:\n%s", lastLines(msg, 3))
	}
	if len(processesUnder(t, dataDir)) == 0 {
		t.Fatal("the agents ended with serve; down has nothing to prove")
	}

	ws := filepath.Join(dataDir, "containers", started.ID, "workspace")
	const content = "written while serve was down"
	if err := os.WriteFile(filepath.Join(ws, "unsaved.txt"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	down := startBinary(t, env, "down")
	if code := down.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("down exited %d\nstdout:\n%s\nstderr:\n%s", code, down.stdout, down.stderr)
	}
	if left := processesUnder(t, dataDir); len(left) > 0 {
		t.Errorf("processes of DATA_DIR left after down: %v", left)
	}
	// The embedded store keeps objects as plain files.
	obj := filepath.Join(dataDir, "s3", "buckets", "down-test", "alice", "unsaved.txt")
	if b, err := os.ReadFile(obj); err != nil || string(b) != content {
		t.Errorf("the file written in the workspace did not reach the store before the agent stopped: %q, %v\ndown said:\n%s",
			b, err, down.stdout)
	}
	if !strings.Contains(down.stdout.String(), "2 stopped, 0 failed") {
		t.Errorf("down's report:\n%s", down.stdout)
	}

	// A serve running on the DATA_DIR makes down refuse, naming it.
	env["PRE_WARMED_QUEUE_SIZE"] = "0"
	serve2 := startBinary(t, env, "serve")
	serve2.waitServing(t, port)
	refused := startBinary(t, env, "down")
	if code := refused.wait(t, time.Minute); code != 1 || !strings.Contains(refused.stderr.String(), fmt.Sprintf("pid %d", serve2.cmd.Process.Pid)) {
		t.Errorf("down beside a running serve: exit %d\n%s", code, refused.stderr)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(len(l)-n, 0):], "\n")
}

// TestStartupOutputIsShort: a zero-config serve (no API_KEY, no S3) says
// what a person needs in a few short lines — address, runtime, store, key
// file, pools — and no library prints its own (versitygw's "No IAM service
// configured").
func TestStartupOutputIsShort(t *testing.T) {
	dataDir := t.TempDir()
	// Searchable by every user, as a real DATA_DIR may be: as root, the
	// process runtime would otherwise warn that its agents' user cannot
	// reach it (a warning about this test's directory, not the summary).
	for d := dataDir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	t.Cleanup(func() { removeAll(t, dataDir) })
	env, port := serveEnv(t, dataDir, 0)
	delete(env, "API_KEY")
	serve := startBinary(t, env, "serve")
	serve.waitServing(t, port)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(serve.stderr.String(), "msg=settings") {
		if time.Now().After(deadline) {
			t.Fatalf("no start-up summary:\n%s", serve.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	errOut, stdOut := serve.stderr.String(), serve.stdout.String()
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) >= 8 {
		t.Errorf("start-up log has %d lines, want a few:\n%s", len(lines), errOut)
	}
	for _, l := range append(lines, strings.Split(stdOut, "\n")...) {
		if len(l) > 200 {
			t.Errorf("start-up line of %d characters: %.120s...", len(l), l)
		}
		if strings.Contains(l, "IAM") {
			t.Errorf("a library's line in the start-up output: %s", l)
		}
	}
	for _, want := range []string{fmt.Sprintf(":%d", port), "runtime=process", "store=embedded", "api_key=DATA_DIR/api-key", `pools="default=0"`, "data_dir=" + dataDir} {
		if !strings.Contains(errOut, want) {
			t.Errorf("start-up summary lacks %q:\n%s", want, errOut)
		}
	}
	if !strings.Contains(stdOut, "generated") {
		t.Errorf("the generated key is not announced on stdout:\n%s", stdOut)
	}
}
