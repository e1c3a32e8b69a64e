package placeholder

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/idepool/idepool"
)

func setup(t *testing.T) (*httptest.Server, *atomic.Int64, string) {
	t.Helper()
	dir := t.TempDir()
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "readme.md"), []byte("hello"), 0o644))
	must(os.WriteFile(filepath.Join(dir, `<img src=x onerror="alert(1)">.txt`), []byte("x"), 0o644))
	must(os.Mkdir(filepath.Join(dir, "src"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "src", "main.go"), []byte("package main\n"), 0o644))
	must(os.Mkdir(filepath.Join(dir, "a b&c"), 0o755))
	must(os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("s"), 0o644))
	must(os.Symlink(outside, filepath.Join(dir, "escape")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")))
	must(os.Symlink("src", filepath.Join(dir, "inside")))

	var n atomic.Int64
	h := New(dir, Options{OnActivity: func() { n.Add(1) }})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	return srv, &n, outside
}

func get(t *testing.T, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestListing(t *testing.T) {
	srv, n, _ := setup(t)
	code, body := get(t, srv.URL+"/", nil)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{"readme.md", `<a href="/src/">src/</a>`, `href="/a%20b&amp;c/"`, "a b&amp;c/", "escape", "passwd", "<td class=\"n\">5</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("listing lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<img") {
		t.Fatalf("file name not escaped:\n%s", body)
	}
	if !strings.Contains(body, "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;.txt") {
		t.Fatalf("escaped name missing:\n%s", body)
	}
	// Symlinks are listed, not followed: no link into them.
	if strings.Contains(body, `href="/escape/"`) {
		t.Fatalf("symlink rendered as a directory link:\n%s", body)
	}

	code, body = get(t, srv.URL+"/src/", nil)
	if code != http.StatusOK || !strings.Contains(body, "main.go") || !strings.Contains(body, `href="/"`) {
		t.Fatalf("subdirectory: %d\n%s", code, body)
	}
	if n.Load() != 2 {
		t.Fatalf("activity = %d, want 2", n.Load())
	}
}

func TestConfinement(t *testing.T) {
	srv, _, _ := setup(t)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/escape/", http.StatusForbidden},   // symlink out of the workspace
		{"/passwd", http.StatusForbidden},    // absolute symlink
		{"/inside/", http.StatusOK},          // symlink within it is fine
		{"/../../etc/", http.StatusNotFound}, // cleaned to /etc/ inside the workspace
		{"/readme.md", http.StatusNotFound},  // not a directory: no contents served
		{"/nope/", http.StatusNotFound},
	} {
		code, body := get(t, srv.URL+tc.path, nil)
		if code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.path, code, tc.want)
		}
		if strings.Contains(body, "secret.txt") || strings.Contains(body, "root:") {
			t.Errorf("%s: leaked outside content:\n%s", tc.path, body)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader("x"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestForwardedPrefix(t *testing.T) {
	srv, _, _ := setup(t)
	_, body := get(t, srv.URL+"/src/", map[string]string{"X-Forwarded-Prefix": "/code/abcd1"})
	if !strings.Contains(body, `href="/code/abcd1/"`) || !strings.Contains(body, "/code/abcd1/ws") {
		t.Fatalf("prefix not used:\n%s", body)
	}
	_, body = get(t, srv.URL+"/", map[string]string{"X-Forwarded-Prefix": "/code/abcd1/"})
	if !strings.Contains(body, `href="/code/abcd1/src/"`) {
		t.Fatalf("prefix with slash:\n%s", body)
	}
	for _, bad := range []string{`/x"><script>`, "//evil.example", "javascript:alert(1)", "/a?b"} {
		_, body = get(t, srv.URL+"/", map[string]string{"X-Forwarded-Prefix": bad})
		if strings.Contains(body, "evil.example") || strings.Contains(body, "javascript:") || strings.Contains(body, "<script>\"") || !strings.Contains(body, `href="/src/"`) {
			t.Fatalf("bad prefix %q not ignored:\n%s", bad, body)
		}
	}
}

func TestHealthAndProbesAreNotActivity(t *testing.T) {
	srv, n, _ := setup(t)
	if code, body := get(t, srv.URL+"/healthz", nil); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	get(t, srv.URL+"/", map[string]string{idepool.ProbeHeader: "1"})
	if n.Load() != 0 {
		t.Fatalf("activity = %d", n.Load())
	}
}

func TestWebsocketEcho(t *testing.T) {
	srv, n, _ := setup(t)
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://ide.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for _, msg := range []string{"ping", "héllo", strings.Repeat("x", 100_000)} {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageText || string(got) != msg {
			t.Fatalf("echo: %v %v %d bytes", err, typ, len(got))
		}
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := c.Read(ctx); err != nil || typ != websocket.MessageBinary || len(got) != 3 {
		t.Fatalf("binary echo: %v %v %v", typ, got, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	// The upgrade request and four frames.
	if n.Load() != 5 {
		t.Fatalf("activity = %d, want 5", n.Load())
	}
}

// TestSaysWhatItIs: the page says plainly that it is not an IDE and how to
// get one, one line per option.
func TestSaysWhatItIs(t *testing.T) {
	srv, _, _ := setup(t)
	code, body := get(t, srv.URL+"/", nil)
	if code != http.StatusOK {
		t.Fatalf("GET / = %d", code)
	}
	if !strings.Contains(body, "placeholder, not an IDE") {
		t.Errorf("the page does not say it is not an IDE:\n%s", body)
	}
	for _, want := range []string{"apt install jupyter-notebook", "pip install jupyterlab", "code-server.dev/install.sh"} {
		if n := strings.Count(body, want); n != 1 {
			t.Errorf("%q appears %d times, want once:\n%s", want, n, body)
		}
	}
}
