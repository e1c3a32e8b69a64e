package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/idepool/idepool"
)

// TestIdleStopsAndKeepsAlive is issue 5's idle promise end to end on the
// process runtime, with real agents (the built-in placeholder workload) and
// the embedded S3 store. Two containers are claimed together, with the same
// short INACTIVITY_TIMEOUT_SECONDS:
//
//   - A gets workspace edits, the last one just before its timeout, then
//     nothing: it is flushed (a "flushed" sync event) and stopped for
//     inactivity, and its last edit is in S3.
//   - B has a websocket open through the built-in router, with a message
//     every 500 ms: it is still running when A is stopped (so the idle
//     reaper did look at it past its deadline) and for twice the timeout
//     more; once the socket is closed, it is stopped for inactivity.
func TestIdleStopsAndKeepsAlive(t *testing.T) {
	const idle = 3 * time.Second
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := e2eConfig(t, dataDir, 2, idle)
	in := start(t, cfg)
	defer in.stop(t)
	in.waitPool(t, "2 warm", time.Minute, func(w, s, c int) bool { return w == 2 && s == 0 })

	const bucketA, prefixA, file = "idle-flush", "students/ann", "draft.txt"
	claim := func(bucket, prefix string) startJSON {
		t.Helper()
		var res startJSON
		if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": bucket, "s3Prefix": prefix}, &res); code != 201 {
			t.Fatalf("start %s: %d %+v", bucket, code, res)
		}
		return res
	}
	a := claim(bucketA, prefixA)
	b := claim("idle-websocket", "")
	claimed := time.Now()
	for _, id := range []string{a.ID, b.ID} {
		pollUntil(t, id+" running", 30*time.Second, func() (bool, string) {
			_, c := in.getContainer(t, id)
			return c.State == string(idepool.StateRunning), c.State
		})
	}

	// B: a websocket echo through the router, with the route cookie.
	client, routeBase := routeClient(t, b.URLs["codeServer"])
	wsURL := "ws" + strings.TrimPrefix(routeBase, "http") + "/code/" + b.ID + "/ws"
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	ws, _, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPClient: client})
	dcancel()
	if err != nil {
		t.Fatalf("websocket through the router: %v", err)
	}
	defer ws.CloseNow()
	busy := startTraffic(t, in, ws, b.ID)

	// A: edits in its workspace, the last one just before the timeout.
	local := filepath.Join(dataDir, "containers", a.ID, "workspace", file)
	var last string
	for i := 1; i <= 3; i++ {
		last = fmt.Sprintf("edit %d of %s\n", i, a.ID)
		if err := os.WriteFile(local, []byte(last), 0o644); err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			time.Sleep(idle / 3)
		}
	}
	lastEdit := time.Now()

	// A is flushed and stopped for inactivity; B, claimed at the same time
	// and busy, is not.
	stopped := in.waitEvent(t, a.ID, 60*time.Second, "stopped (inactivity)", func(e idepool.Event) bool {
		return e.Type == idepool.EventStopped && e.Reason == idepool.ReasonInactivity
	})
	t.Logf("A %s: stopped for inactivity %v after its last edit, %v after the claim (timeout %v)",
		a.ID, stopped.Time.Sub(lastEdit).Round(time.Millisecond), stopped.Time.Sub(claimed).Round(time.Millisecond), idle)
	in.waitEvent(t, a.ID, 5*time.Second, "flushed", func(e idepool.Event) bool {
		return e.Type == idepool.EventSync && e.Message == "flushed"
	})
	code, ac := in.getContainer(t, a.ID)
	if code != 200 || ac.State != string(idepool.StateStopped) || ac.ShutdownReason != idepool.ReasonInactivity {
		t.Errorf("GET A %s: %d state %q reason %q, want stopped/inactivity", a.ID, code, ac.State, ac.ShutdownReason)
	}
	store := embeddedS3Client(t, cfg.DataDir, cfg.S3EmbeddedAddr)
	if got, err := getObject(store, bucketA, prefixA+"/"+file); err != nil || got != last {
		t.Errorf("S3 %s/%s/%s after the stop: %q %v, want the last edit %q", bucketA, prefixA, file, got, err, last)
	}
	if _, bc := in.getContainer(t, b.ID); bc.State != string(idepool.StateRunning) {
		t.Fatalf("B %s: %q when A was stopped, want running (websocket traffic)", b.ID, bc.State)
	}

	// Health probes are not user activity: the warm containers, probed
	// every round for several agent heartbeats by now, have none (the
	// built-in placeholder once counted each probe as a request, so with
	// the default settings no idle container was ever stopped).
	var warm struct{ Containers []containerE2E }
	if code := in.call(t, "GET", "/api/containers?state=warm", nil, &warm); code != 200 {
		t.Fatalf("list warm: %d", code)
	}
	for _, c := range warm.Containers {
		if c.Health.Status == string(idepool.HealthHealthy) && c.LastActivity != nil {
			t.Errorf("warm %s (healthy, never used) has lastActivity %v: health probes counted as activity", c.ID, c.LastActivity)
		}
	}

	// B stays up for twice the timeout more while the traffic goes on.
	time.Sleep(2 * idle)
	if _, bc := in.getContainer(t, b.ID); bc.State != string(idepool.StateRunning) {
		t.Fatalf("B %s: %q after %v of websocket traffic, want running", b.ID, bc.State, time.Since(claimed).Round(time.Millisecond))
	}
	msgs, maxLag := busy.stop(t)
	t.Logf("B %s: running after %v of websocket traffic (%d messages echoed; LastActivity at most %v behind while busy)",
		b.ID, time.Since(claimed).Round(time.Millisecond), msgs, maxLag.Round(time.Millisecond))

	// Closed: B is stopped for inactivity.
	if err := ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Logf("close: %v", err)
	}
	closed := time.Now()
	stoppedB := in.waitEvent(t, b.ID, 60*time.Second, "stopped (inactivity)", func(e idepool.Event) bool {
		return e.Type == idepool.EventStopped && e.Reason == idepool.ReasonInactivity
	})
	t.Logf("B %s: stopped for inactivity %v after its websocket closed", b.ID, stoppedB.Time.Sub(closed).Round(time.Millisecond))
	if code, bc := in.getContainer(t, b.ID); code != 200 || bc.State != string(idepool.StateStopped) || bc.ShutdownReason != idepool.ReasonInactivity {
		t.Errorf("GET B %s: %d state %q reason %q, want stopped/inactivity", b.ID, code, bc.State, bc.ShutdownReason)
	}
}

// traffic sends a websocket message every 500 ms and reads its echo, and
// samples how far the pool's LastActivity of the container lags behind.
type traffic struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	msgs   int
	maxLag time.Duration
	err    error
}

func startTraffic(t *testing.T, in *instance, ws *websocket.Conn, id string) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{cancel: cancel}
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			msg := fmt.Sprintf("keystroke %d", i)
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			err := ws.Write(wctx, websocket.MessageText, []byte(msg))
			var got []byte
			if err == nil {
				_, got, err = ws.Read(wctx)
			}
			wcancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil && string(got) != msg {
				err = fmt.Errorf("echo %q, want %q", got, msg)
			}
			var lag time.Duration
			if c, ok := in.srv.Pool().Lookup(id); ok && !c.LastActivity.IsZero() {
				lag = time.Since(c.LastActivity)
			}
			tr.mu.Lock()
			if err != nil && tr.err == nil {
				tr.err = err
			}
			if err == nil {
				tr.msgs++
			}
			tr.maxLag = max(tr.maxLag, lag)
			tr.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(tr.cancel)
	return tr
}

// stop ends the traffic and returns the messages echoed and the largest
// LastActivity lag seen; it fails the test on a broken echo.
func (tr *traffic) stop(t *testing.T) (int, time.Duration) {
	t.Helper()
	tr.cancel()
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.err != nil {
		t.Fatalf("websocket traffic: %v", tr.err)
	}
	return tr.msgs, tr.maxLag
}
