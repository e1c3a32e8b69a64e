package httpapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool/internal/memnet"
)

// answer is what one raw connection got back.
type answer struct {
	i      int
	status int
	eof    bool // the server closed the connection after the answer
	err    error
}

// readAnswer reads one HTTP answer from c, then checks for EOF.
func readAnswer(i int, c net.Conn, deadline time.Time) answer {
	c.SetReadDeadline(deadline)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return answer{i: i, err: err}
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	a := answer{i: i, status: res.StatusCode}
	if res.Close {
		_, err := br.Read(make([]byte, 1))
		a.eof = errors.Is(err, io.EOF)
	}
	return a
}

// TestBodiesPerClient: one address may hold BodiesPerClient unfinished
// bodies; more are refused at once (429, closed). A request refused before
// it reads its body (no key) takes no place. Behind a real http.Server
// over raw sockets.
func TestBodiesPerClient(t *testing.T) {
	const limit, n = 3, 10
	h := newHarness(t, func(o *Options) {
		o.BodiesPerClient = limit
		o.BodyTimeout = time.Minute // longer than the test: held bodies stay held
	})
	ts := httptest.NewUnstartedServer(h.srv)
	ts.Config.ReadHeaderTimeout = 10 * time.Second
	ts.Start()
	t.Cleanup(ts.Close)
	addr := strings.TrimPrefix(ts.URL, "http://")
	const body = `{"s3Bucket":"bucket-a"}`
	const length = 64
	open := func(withKey bool) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		auth := ""
		if withKey {
			auth = "Authorization: Bearer " + testKey + "\r\n"
		}
		fmt.Fprintf(c, "POST /api/containers/start HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			auth, length, body[:1])
		return c
	}
	deadline := time.Now().Add(30 * time.Second)

	var conns []net.Conn
	results := make(chan answer, n)
	for i := range n {
		c := open(true)
		conns = append(conns, c)
		go func() { results <- readAnswer(i, c, deadline) }()
	}
	// The ones over the limit are answered at once; the others wait for
	// their bodies.
	answered := map[int]bool{}
	for range n - limit {
		a := <-results
		if a.err != nil || a.status != http.StatusTooManyRequests || !a.eof {
			t.Fatalf("connection %d over the limit: %+v, want 429 and closed", a.i, a)
		}
		answered[a.i] = true
	}
	// Without a key: refused before reading, not counted, closed.
	for i := range n {
		a := readAnswer(i, open(false), deadline)
		if a.err != nil || a.status != http.StatusUnauthorized || !a.eof {
			t.Fatalf("connection %d without a key: %+v, want 401 and closed", i, a)
		}
	}
	// The held ones finish their bodies and are served.
	for i, c := range conns {
		if !answered[i] {
			io.WriteString(c, body[1:]+strings.Repeat(" ", length-len(body)))
		}
	}
	for range limit {
		a := <-results
		if a.err != nil || (a.status != http.StatusCreated && a.status != http.StatusOK) {
			t.Fatalf("held connection %d after its body came: %+v, want 201 or 200 (reused)", a.i, a)
		}
	}
	// Their places are free again.
	w, _ := h.do(t, call{method: "POST", path: "/api/containers/start", body: `{"s3Bucket":"bucket-b"}`})
	if w.Code != http.StatusCreated {
		t.Fatalf("after the held bodies finished: %d", w.Code)
	}
}

// TestBodyDeadline: a body that stops coming is cut after BodyTimeout of
// silence, answered and closed.
func TestBodyDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.BodyTimeout = 10 * time.Second })
		srv := memnet.NewServer(t, h.srv)
		deadline := time.Now().Add(30 * time.Second)

		c, err := srv.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// net.Pipe is unbuffered: write while the answer is read.
		go fmt.Fprintf(c, "POST /api/containers/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 50\r\n\r\n{", testKey)
		start := time.Now()
		if a := readAnswer(0, c, deadline); a.err != nil || a.status != http.StatusBadRequest || !a.eof {
			t.Fatalf("stalled body: %+v, want 400 and closed", a)
		}
		if waited := time.Since(start); waited != 10*time.Second {
			t.Errorf("cut after %v of silence, want BodyTimeout (10s)", waited)
		}
	})
}
