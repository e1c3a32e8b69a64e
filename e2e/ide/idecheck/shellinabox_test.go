package idecheck

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeShellInABox answers like shellinaboxd: the page on GET, JSON
// {session, data} on POSTs to "<page>?", an "OK" page to keys. Keys typed
// before the prompt was polled are dropped, as readline does.
type fakeShellInABox struct {
	mu       sync.Mutex
	prompted bool     // the prompt was sent
	pending  []string // output not yet polled
	typed    []string
}

func (f *fakeShellInABox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		fmt.Fprint(w, `<html><script src="ShellInABox.js"></script></html>`)
		return
	}
	if r.URL.RawQuery != "" || !r.URL.ForceQuery && !strings.HasSuffix(r.RequestURI, "?") {
		fmt.Fprint(w, `<html>the page again</html>`)
		return
	}
	r.ParseForm()
	f.mu.Lock()
	defer f.mu.Unlock()
	if keys := r.PostForm.Get("keys"); keys != "" {
		b, _ := hex.DecodeString(keys)
		if f.prompted {
			f.typed = append(f.typed, string(b))
			cmd := strings.TrimSuffix(string(b), "\r")
			f.pending = append(f.pending, cmd+"\r\n", strings.TrimPrefix(cmd, "echo ")+"\r\n$ ")
		}
		fmt.Fprint(w, `<html><title>OK</title></html>`)
		return
	}
	session := r.PostForm.Get("session")
	if session == "" {
		session = "s1"
		f.pending = append(f.pending, "$ ")
	}
	data := ""
	if len(f.pending) > 0 {
		data, f.pending = f.pending[0], f.pending[1:]
		f.prompted = f.prompted || strings.HasSuffix(data, "$ ")
	}
	fmt.Fprintf(w, `{"session":%q,"data":%q}`, session, data)
}

func TestTerminal(t *testing.T) {
	f := &fakeShellInABox{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := Terminal(ctx, srv.Client(), srv.URL+"/", "echo hello", "hello\r\n")
	if err != nil {
		t.Fatalf("%v (output %q)", err, out)
	}
	if len(f.typed) != 1 || f.typed[0] != "echo hello\r" {
		t.Errorf("typed %q, want one line", f.typed)
	}
}

func TestTerminalNoOutput(t *testing.T) {
	srv := httptest.NewServer(&fakeShellInABox{})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Terminal(ctx, srv.Client(), srv.URL+"/", "echo hello", "never printed")
	if err == nil || !strings.Contains(err.Error(), "never printed") {
		t.Fatalf("err = %v, want a missing-output error", err)
	}
}

func TestIsPrompt(t *testing.T) {
	for out, want := range map[string]bool{"ide@x:/workspace$ ": true, "root# ": true, "$": false, "": false, "echo $ x": false} {
		if got := isPrompt(out); got != want {
			t.Errorf("isPrompt(%q) = %v, want %v", out, got, want)
		}
	}
}
