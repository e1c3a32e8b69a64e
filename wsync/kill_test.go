package wsync

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// announceStore prints every transfer as it starts, so a parent test can
// kill this process in the middle of one.
type announceStore struct {
	Store
	w io.Writer
}

func (s *announceStore) Put(ctx context.Context, key string, r io.ReaderAt, size int64, cond Condition) (ObjectInfo, error) {
	fmt.Fprintf(s.w, "PUT %s\n", key)
	return s.Store.Put(ctx, key, r, size, cond)
}

func (s *announceStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, ObjectInfo, error) {
	fmt.Fprintf(s.w, "GET %s\n", key)
	return s.Store.Get(ctx, key, off, n)
}

// TestHelperSyncProcess is not a test: it is the engine run as a
// subprocess by TestKill* (and the benchmark), configured by env.
func TestHelperSyncProcess(t *testing.T) {
	if os.Getenv("WSYNC_HELPER") != "1" {
		t.Skip("helper process")
	}
	cfg := S3Config{Endpoint: os.Getenv("WSYNC_ENDPOINT"), Bucket: os.Getenv("WSYNC_BUCKET"), AccessKeyID: os.Getenv("WSYNC_AK"), SecretAccessKey: os.Getenv("WSYNC_SK"), MultipartThreshold: 6 << 20, PartSize: 5 << 20}
	st, err := NewS3Store(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.Parallelism = 16
	if os.Getenv("WSYNC_DEFAULT_OPTIONS") == "1" {
		opts = Options{} // production defaults (benchmarks)
	}
	if n, err := strconv.Atoi(os.Getenv("WSYNC_PARALLEL")); err == nil {
		opts.Parallelism = n
	}
	var store Store = st
	if os.Getenv("WSYNC_QUIET") != "1" {
		store = &announceStore{Store: st, w: os.Stdout}
	}
	var logger *slog.Logger
	if os.Getenv("WSYNC_LOG") == "1" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	eng, err := NewEngine(Config{Dir: os.Getenv("WSYNC_DIR"), StateFile: os.Getenv("WSYNC_STATE"), Store: store, Options: opts, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if os.Getenv("WSYNC_HELPER_RUN") == "1" {
		eng.Watch() // as the agent's syncer: watching before "synced"
	}
	if _, err := eng.SyncOnce(ctx); err != nil {
		fmt.Println("ERROR", err)
	}
	fmt.Println("SYNCED")
	if os.Getenv("WSYNC_HELPER_RUN") == "1" {
		_ = eng.Run(ctx)
	}
}

// startHelper runs the engine in a subprocess and returns it with a
// channel of its stdout lines.
func (e *env) startHelper(run bool, extraEnv ...string) (*exec.Cmd, <-chan string) {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSyncProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "WSYNC_HELPER=1", "WSYNC_ENDPOINT="+e.srv.Endpoint, "WSYNC_BUCKET="+e.bucket,
		"WSYNC_AK="+e.srv.AccessKey, "WSYNC_SK="+e.srv.SecretKey, "WSYNC_DIR="+e.dir, "WSYNC_STATE="+filepath.Join(e.state, "state.json"))
	if run {
		cmd.Env = append(cmd.Env, "WSYNC_HELPER_RUN=1")
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if os.Getenv("WSYNC_LOG") == "1" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	e.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, lines
}

func waitLine(t *testing.T, lines <-chan string, prefix string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("helper exited before printing %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return
			}
		case <-deadline:
			t.Fatalf("helper did not print %q in %v", prefix, timeout)
		}
	}
}

func killHard(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

func TestKillMidUploadThenRestartConverges(t *testing.T) {
	e := newEnv(t, "")
	want := map[string][]byte{"big.bin": randBytes(t, 24<<20)}
	for i := range 40 {
		want[fmt.Sprintf("src/f%02d.txt", i)] = []byte(fmt.Sprintf("small file %d", i))
	}
	for rel, b := range want {
		e.writeLocal(rel, b)
	}
	cmd, lines := e.startHelper(false)
	waitLine(t, lines, "PUT big.bin", time.Minute)
	killHard(t, cmd)

	// Edits made while the engine was dead.
	want["src/f01.txt"] = []byte("edited while the engine was dead")
	e.writeLocal("src/f01.txt", want["src/f01.txt"])
	want["after-kill.txt"] = []byte("created while dead")
	e.writeLocal("after-kill.txt", want["after-kill.txt"])

	var events eventLog
	eng := e.engine(nil, testOptions(), &events)
	if err := eng.Flush(e.ctx()); err != nil {
		t.Fatal(err)
	}
	for rel, b := range want {
		if got, ok := e.remote(rel); !ok || !bytes.Equal(got, b) {
			t.Fatalf("%s in S3: present=%v, %d bytes, want %d", rel, ok, len(got), len(b))
		}
		if got, _ := e.local(rel); !bytes.Equal(got, b) {
			t.Fatalf("%s changed locally", rel)
		}
	}
	if got := len(e.remoteKeys()); got != len(want) {
		t.Fatalf("%d objects in S3, want %d (%v)", got, len(want), e.remoteKeys())
	}
	if events.has("conflict", "") {
		t.Fatalf("a restart after a kill made conflicts: %+v", events.evs)
	}
}

func TestKillMidDownloadThenRestartConverges(t *testing.T) {
	e := newEnv(t, "")
	big := randBytes(t, 24<<20)
	e.putRemote("big.bin", big)
	for i := range 30 {
		e.putRemote(fmt.Sprintf("d/f%02d", i), []byte{byte(i)})
	}
	cmd, lines := e.startHelper(false)
	waitLine(t, lines, "GET big.bin", time.Minute)
	killHard(t, cmd)
	// Edit a file the dead engine had already pulled (its base is in the
	// journal), or else create one.
	edited := "d/new-while-dead"
	for _, f := range e.localFiles() {
		if strings.HasPrefix(f, "d/f") {
			edited = f
			break
		}
	}
	t.Logf("editing %s; local files after the kill: %d", edited, len(e.localFiles()))
	e.writeLocal(edited, []byte("local edit while dead"))

	eng := e.engine(nil, testOptions(), nil)
	if err := eng.Flush(e.ctx()); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.local("big.bin"); !bytes.Equal(got, big) {
		t.Fatalf("big.bin locally: %d bytes", len(got))
	}
	if b, _ := e.remote(edited); string(b) != "local edit while dead" {
		t.Fatalf("%s in S3 = %q", edited, b)
	}
	for _, f := range e.localFiles() {
		if strings.Contains(f, tmpPrefix) || strings.Contains(f, ".conflict-") {
			t.Fatalf("left behind: %s", f)
		}
	}
	want := 31
	if edited == "d/new-while-dead" {
		want++
	}
	if n := len(e.localFiles()); n != want {
		t.Fatalf("%d local files, want %d", n, want)
	}
}
