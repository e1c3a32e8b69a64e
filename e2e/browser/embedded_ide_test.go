package browser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/chromedp/chromedp"

	"github.com/idepool/idepool/client"
	"github.com/idepool/idepool/ide"
	"github.com/idepool/idepool/internal/testbin"
)

// TestEmbeddedDefaultOpensJupyter is the README's first run: the real
// `idepool serve` binary with no configuration but its ports and data
// directory picks the Jupyter installed on this machine (its start-up log
// says which); a container started through the API opens Jupyter in
// Chromium on the workspace (a file put into the workspace's S3 prefix is
// listed), a notebook saved from the browser session (Jupyter's contents
// API, through the router, with the router's cookie and Jupyter's XSRF
// token) and a file written by the notebook's kernel (over its websocket,
// through the router) land in the embedded S3 store.
//
// CI installs Debian's jupyter-notebook (scripts/setup-deps.sh); with
// CI=true a missing Jupyter or Chromium fails the test.
func TestEmbeddedDefaultOpensJupyter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Jupyter: not in -short")
	}
	chromium := chromiumPath(t)
	ctx := t.Context()

	// What the zero-config serve will choose on this machine. A machine
	// whose first choice is code-server is asked for Jupyter by name.
	want := ""
	choice, err := ide.Detect(ctx, ide.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if choice.Name != ide.JupyterLab && choice.Name != ide.Notebook {
		for _, name := range []string{ide.JupyterLab, ide.Notebook} {
			if c, err := ide.Detect(ctx, ide.Options{Want: name}); err == nil {
				choice, want = c, name
				break
			}
		}
	}
	if choice.Name != ide.JupyterLab && choice.Name != ide.Notebook {
		msg := "no Jupyter installed (" + choice.String() + "): apt-get install jupyter-notebook"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: required; scripts/setup-deps.sh installs it)")
		}
		t.Skip(msg)
	}
	t.Logf("Jupyter on this machine: %s", choice)

	var bin testbin.Builder
	idepoolBin, err := bin.Path(t.TempDir())
	if err != nil {
		t.Fatalf("build idepool: %v", err)
	}
	dataDir, workDir := t.TempDir(), t.TempDir()
	port, s3Addr := freeAddr(t), freeAddr(t)
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"PORT=" + port[strings.LastIndexByte(port, ':')+1:], "DATA_DIR=" + dataDir,
		// The default, PORT+1, may be another test's socket on a shared host.
		"S3_EMBEDDED_ADDR=" + s3Addr,
		// One warm Jupyter, not ten, on a shared test host.
		"PRE_WARMED_QUEUE_SIZE=1",
	}
	if want != "" {
		env = append(env, "EMBEDDED_IDE="+want)
	}
	srv := startServe(t, idepoolBin, workDir, env)
	base := "http://" + port

	// The API key serve generated and the embedded store's credentials.
	var key string
	waitFor(t, "serve to answer", 2*time.Minute, srv, func() bool {
		b, err := os.ReadFile(filepath.Join(dataDir, "api-key"))
		if err != nil {
			return false
		}
		key = strings.TrimSpace(string(b))
		api, err := client.New(base, key, client.Options{})
		if err != nil {
			return false
		}
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = api.Pools(hctx)
		return err == nil
	})
	t.Cleanup(func() { stopContainers(t, base, key, dataDir) })
	// serve logs its summary before it answers, but the lines reach this
	// test through a pipe and a reader goroutine: wait for them a little.
	var line string
	waitFor(t, fmt.Sprintf("the start-up log to say %q was chosen", choice.Name+" "+choice.Version), 10*time.Second, srv, func() bool {
		line = srv.logLine(choice.Name + " " + choice.Version)
		return line != ""
	})
	t.Logf("start-up log: %s", line)

	store := s3Client(t, dataDir, s3Addr)
	const bucket, prefix = "class-101", "alice/"
	seeded := fmt.Sprintf("seeded-from-s3-%d.txt", time.Now().UnixNano())
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	if _, err := store.CreateBucket(sctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	if _, err := store.PutObject(sctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + seeded),
		Body: strings.NewReader("hello from S3\n")}); err != nil {
		t.Fatalf("put %s: %v", seeded, err)
	}
	scancel()

	api, err := client.New(base, key, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, 5*time.Minute)
	defer acancel()
	res, err := api.Start(actx, client.StartRequest{Bucket: bucket, Prefix: prefix, UserID: "alice", Wait: true, WaitTimeout: 4 * time.Minute})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, srv.tail(40))
	}
	if !res.Ready || res.URLs.CodeServer == "" {
		t.Fatalf("start: ready %v, codeServer %q (%+v)\n%s", res.Ready, res.URLs.CodeServer, res, srv.tail(40))
	}
	t.Logf("container %s (%s claim)", res.ID, res.Claim)

	bctx := newBrowser(t, chromium)
	step(t, bctx, "open the codeServer URL", time.Minute, chromedp.Navigate(res.URLs.CodeServer))
	// Jupyter's file browser (Notebook's tree, Lab's panel) lists the
	// workspace, which the agent pulled from S3.
	waitJS(t, bctx, "Jupyter lists the seeded file", fmt.Sprintf(`document.title.length > 0 && document.body && document.body.innerText.includes(%q)`, seeded), 2*time.Minute)
	title := evalString(t, bctx, `document.title + " @ " + location.pathname`)
	t.Logf("page: %s", title)
	if !strings.HasPrefix(evalString(t, bctx, `location.pathname`), "/code/"+res.ID+"/") {
		t.Errorf("the page left the container's route: %s", title)
	}
	// Jupyter's pages carry their base URL: Notebook 6 on <body>, Lab and
	// Notebook 7 in their config script.
	if got := evalString(t, bctx, `(function(){
		if (document.body && document.body.dataset.baseUrl) return document.body.dataset.baseUrl;
		const c = document.getElementById("jupyter-config-data");
		return c ? JSON.parse(c.textContent).baseUrl || "" : "";
	})()`); got != "/code/"+res.ID+"/" {
		t.Errorf("not Jupyter's page under /code/%s/ (its base URL: %q): %s", res.ID, got, title)
	}

	// A notebook saved from the browser session, as Jupyter's UI saves.
	nbName := "hello-from-chromium.ipynb"
	marker := fmt.Sprintf("saved by Chromium %d", time.Now().UnixNano())
	out := evalAsync(t, bctx, fmt.Sprintf(jupyterJS+`
		return (async () => {
			const nb = {cells: [{cell_type: "markdown", metadata: {}, source: %q}], metadata: {}, nbformat: 4, nbformat_minor: 5};
			const r = await fetch(base + "api/contents/" + %q, {method: "PUT", headers: headers(),
				body: JSON.stringify({type: "notebook", format: "json", content: nb})});
			return r.status + " " + (await r.text()).slice(0, 300);
		})();`, marker, nbName))
	if !strings.HasPrefix(out, "200 ") && !strings.HasPrefix(out, "201 ") {
		t.Fatalf("save the notebook: %s", out)
	}

	// Code run by the notebook's kernel, over its websocket, writes a file
	// into the workspace (the kernel's working directory).
	kernelFile := "written-by-kernel.txt"
	out = evalAsync(t, bctx, fmt.Sprintf(jupyterJS+`
		return (async () => {
			const kr = await fetch(base + "api/kernels", {method: "POST", headers: headers(), body: JSON.stringify({name: "python3"})});
			if (!kr.ok) return "kernel start: HTTP " + kr.status + " " + (await kr.text()).slice(0, 300);
			const k = await kr.json();
			const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + base + "api/kernels/" + k.id + "/channels");
			const msgId = "exec-" + Date.now();
			const result = await new Promise((resolve) => {
				let out = "";
				ws.onerror = () => resolve("websocket error");
				ws.onclose = (e) => resolve("websocket closed " + e.code + " " + out);
				ws.onopen = () => ws.send(JSON.stringify({
					header: {msg_id: msgId, session: "chromium-" + Date.now(), username: "chromium", msg_type: "execute_request", version: "5.3"},
					parent_header: {}, metadata: {}, channel: "shell", buffers: [],
					content: {code: %q, silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
				ws.onmessage = (e) => {
					if (typeof e.data !== "string") return;
					const m = JSON.parse(e.data);
					if (!m.parent_header || m.parent_header.msg_id !== msgId) return;
					const type = m.msg_type || (m.header && m.header.msg_type);
					if (type === "stream") out += m.content.text;
					if (type === "error") out += "error " + m.content.ename + ": " + m.content.evalue;
					if (type === "status" && m.content.execution_state === "idle") resolve("ok " + out);
				};
			});
			ws.onclose = null;
			ws.close();
			await fetch(base + "api/kernels/" + k.id, {method: "DELETE", headers: headers()});
			return result;
		})();`, fmt.Sprintf("import os\nopen(%q, 'w').write('42\\n')\nprint(os.getcwd())", kernelFile)))
	if !strings.HasPrefix(out, "ok ") {
		t.Fatalf("run code in the kernel: %s", out)
	}
	if cwd := strings.TrimSpace(strings.TrimPrefix(out, "ok ")); filepath.Base(cwd) != "workspace" {
		t.Errorf("the kernel runs in %q, want the container's workspace", cwd)
	}

	// Both land in S3, under the workspace's prefix.
	waitFor(t, "the notebook and the kernel's file in S3", 2*time.Minute, srv, func() bool {
		nb, err := getObject(ctx, store, bucket, prefix+nbName)
		if err != nil || !strings.Contains(nb, marker) {
			return false
		}
		kf, err := getObject(ctx, store, bucket, prefix+kernelFile)
		return err == nil && kf == "42\n"
	})
	t.Logf("%s and %s are in s3://%s/%s", nbName, kernelFile, bucket, prefix)
}

// jupyterJS opens a function body: base is the container's route
// (Jupyter's base URL), headers() what Jupyter wants of a cookie-
// authenticated client (its XSRF token, from the _xsrf cookie).
const jupyterJS = `
	const base = location.pathname.match(/^\/code\/[^\/]+\//)[0];
	const headers = () => {
		const m = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
		return {"Content-Type": "application/json", "X-XSRFToken": m ? decodeURIComponent(m[1]) : ""};
	};`

// evalAsync runs a function body that returns a promise of a string.
func evalAsync(t *testing.T, bctx context.Context, body string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string]("(function(){"+body+"})()", chromedp.EvalAwaitPromise))
	if err != nil {
		diagnose(t, bctx)
		t.Fatalf("evaluate: %v", err)
	}
	return s
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveProc is a running `idepool serve` and what it logged.
type serveProc struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	err   error
}

func (s *serveProc) logLine(sub string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

func (s *serveProc) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines[max(0, len(s.lines)-n):], "\n")
}

func startServe(t *testing.T, bin, dir string, env []string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start serve: %v", err)
	}
	s := &serveProc{done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			s.mu.Unlock()
		}
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("serve's log (last lines):\n%s", s.tail(60))
		}
	})
	return s
}

// waitFor polls cond until it holds; it fails the test after d or when
// serve exits.
func waitFor(t *testing.T, what string, d time.Duration, srv *serveProc, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		select {
		case <-srv.done:
			t.Fatalf("waiting for %s: serve exited: %v\n%s", what, srv.err, srv.tail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s\n%s", what, d, srv.tail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stopContainers stops every container through the API (each flushes, its
// agent stops Jupyter), then removes what is left with the runtime.
func stopContainers(t *testing.T, base, key, dataDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if api, err := client.New(base, key, client.Options{}); err == nil {
		if cs, err := api.ListAll(ctx, client.ListOptions{}); err == nil {
			for _, c := range cs {
				if _, err := api.Stop(ctx, c.ID); err != nil {
					t.Logf("cleanup: stop %s: %v", c.ID, err)
				}
			}
		}
	}
	removeContainers(t, dataDir)
}

func s3Client(t *testing.T, dataDir, addr string) *s3.Client {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "s3", "credentials.json"))
	if err != nil {
		t.Fatalf("embedded S3 credentials: %v", err)
	}
	var c struct{ AccessKey, SecretKey string }
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://" + addr), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, ""),
	})
}

func getObject(ctx context.Context, c *s3.Client, bucket, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	var b bytes.Buffer
	_, err = io.Copy(&b, io.LimitReader(out.Body, 1<<20))
	return b.String(), err
}
