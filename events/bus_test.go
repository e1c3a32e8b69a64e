package events

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idepool/idepool"
)

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func ev(i int) idepool.Event {
	return idepool.Event{Type: idepool.EventState, ContainerID: fmt.Sprintf("c%03d", i), State: idepool.StateWarm}
}

func TestRecordAndHistory(t *testing.T) {
	b := New(Options{Clock: fixedClock{t0}, History: 5})
	given := t0.Add(-time.Minute)
	e1 := b.Record(idepool.Event{Type: idepool.EventPool, Time: given})
	if e1.ID != 1 || !e1.Time.Equal(given) {
		t.Fatalf("first event = %+v, want id 1 and its own time", e1)
	}
	for i := range 7 {
		b.Publish(ev(i))
	}
	if got := b.LastID(); got != 8 {
		t.Fatalf("LastID = %d, want 8", got)
	}
	tests := []struct {
		after uint64
		limit int
		want  []uint64
	}{
		{0, 0, []uint64{4, 5, 6, 7, 8}},
		{5, 0, []uint64{6, 7, 8}},
		{5, 2, []uint64{6, 7}},
		{8, 0, nil},
		{100, 0, nil},
	}
	for _, tc := range tests {
		var got []uint64
		for _, e := range b.History(tc.after, tc.limit) {
			got = append(got, e.ID)
			if !e.Time.Equal(t0) {
				t.Errorf("event %d time = %v, want the clock's", e.ID, e.Time)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("History(%d, %d) = %v, want %v", tc.after, tc.limit, got, tc.want)
		}
	}
}

func TestSubscribeReplayThenLive(t *testing.T) {
	b := New(Options{Clock: fixedClock{t0}})
	defer b.Close()
	for i := range 5 {
		b.Publish(ev(i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := b.Subscribe(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{3, 4, 5} {
		if e := <-ch; e.ID != want {
			t.Fatalf("replayed id %d, want %d", e.ID, want)
		}
	}
	b.Publish(ev(9))
	if e := <-ch; e.ID != 6 || e.ContainerID != "c009" {
		t.Fatalf("live event = %+v", e)
	}
	cancel()
	for range ch { // closed once ctx ends
	}
	if n := b.Subscribers(); n != 0 {
		t.Fatalf("subscribers after cancel = %d", n)
	}
}

// A subscriber that does not read never blocks the publisher; when it reads
// again it gets a lag marker for what the ring overwrote, then the rest.
func TestSlowSubscriberLags(t *testing.T) {
	b := New(Options{Clock: fixedClock{t0}, History: 10, Buffer: 1})
	defer b.Close()
	slow, err := b.Subscribe(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := b.Subscribe(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var fastIDs []uint64
	for i := range 100 {
		b.Publish(ev(i)) // must not block although slow reads nothing
		fastIDs = append(fastIDs, (<-fast).ID)
	}
	if fastIDs[99] != 100 {
		t.Fatalf("fast subscriber got %v", fastIDs[90:])
	}
	var got, missed uint64
	var last uint64
	sawMarker := false
	for got+missed < 100 {
		e := <-slow
		if e.ID <= last {
			t.Fatalf("ids not increasing: %d after %d", e.ID, last)
		}
		last = e.ID
		if e.Type == EventLagged {
			sawMarker = true
			missed += e.Data["missed"].(uint64)
			continue
		}
		got++
	}
	if !sawMarker || last != 100 {
		t.Fatalf("marker %v, last id %d (got %d, missed %d)", sawMarker, last, got, missed)
	}
}

func TestSubscribeResumeAcrossRestart(t *testing.T) {
	b := New(Options{Clock: fixedClock{t0}})
	defer b.Close()
	b.Publish(ev(1))
	b.Publish(ev(2))
	ch, err := b.Subscribe(t.Context(), 500) // an id of a previous run
	if err != nil {
		t.Fatal(err)
	}
	if e := <-ch; e.Type != EventLagged || e.Data["reset"] != true {
		t.Fatalf("first = %+v, want a reset marker", e)
	}
	if e := <-ch; e.ID != 1 {
		t.Fatalf("then id %d, want 1", e.ID)
	}
}

func TestCloseEndsSubscriptionsAndLimits(t *testing.T) {
	b := New(Options{MaxSubscribers: 1})
	ch, err := b.Subscribe(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(t.Context(), 0); idepool.ErrorCode(err) != idepool.EUnavailable {
		t.Fatalf("second subscribe: %v, want EUnavailable", err)
	}
	b.Close()
	if _, ok := <-ch; ok {
		t.Fatal("channel open after Close")
	}
	if _, err := b.Subscribe(t.Context(), 0); err != ErrClosed {
		t.Fatalf("subscribe after close: %v", err)
	}
	b.Publish(ev(1)) // still records
}

func TestFanoutStampsForLaterSinks(t *testing.T) {
	b := New(Options{Clock: fixedClock{t0}})
	var got []idepool.Event
	f := NewFanout(b, nil, idepool.EventSinkFunc(func(e idepool.Event) { got = append(got, e) }), LogSink(nil))
	f.Publish(ev(1))
	f.Publish(ev(2))
	if len(got) != 2 || got[0].ID != 1 || got[1].ID != 2 || !got[1].Time.Equal(t0) {
		t.Fatalf("later sink got %+v", got)
	}
}

type sseMsg struct {
	id, event, data string
}

// readSSE parses messages from an SSE body; comments are returned with
// event ":".
func readSSE(r *bufio.Reader) (sseMsg, error) {
	var m sseMsg
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return m, err
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if m != (sseMsg{}) {
				return m, nil
			}
		case strings.HasPrefix(line, ":"):
			return sseMsg{event: ":", data: line}, nil
		case strings.HasPrefix(line, "id: "):
			m.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			m.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			m.data = line[6:]
		}
	}
}

func TestSSEOverHTTP(t *testing.T) {
	b := New(Options{Clock: fixedClock{t0}})
	srv := httptest.NewServer(b.Handler(HandlerOptions{}))
	defer srv.Close()
	defer b.Close()
	for i := range 4 {
		b.Publish(ev(i))
	}
	b.Publish(idepool.Event{Type: idepool.EventStopped, ContainerID: "c002", Reason: idepool.ReasonInactivity})

	get := func(t *testing.T, query string, hdr map[string]string) (*http.Response, *bufio.Reader, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/events"+query, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, bufio.NewReader(resp.Body), cancel
	}

	t.Run("resume with Last-Event-ID", func(t *testing.T) {
		resp, r, cancel := get(t, "?after=1", map[string]string{"Last-Event-ID": "3"})
		defer cancel()
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("content type %q", ct)
		}
		m, err := readSSE(r)
		if err != nil || m.id != "4" || m.event != string(idepool.EventState) || !strings.Contains(m.data, `"containerId":"c003"`) {
			t.Fatalf("first message %+v, %v", m, err)
		}
		if m, _ = readSSE(r); m.id != "5" || m.event != string(idepool.EventStopped) {
			t.Fatalf("second message %+v", m)
		}
		b.Publish(ev(7))
		if m, _ = readSSE(r); m.id != "6" {
			t.Fatalf("live message %+v", m)
		}
	})
	t.Run("filters", func(t *testing.T) {
		resp, r, cancel := get(t, "?after=0&type=container.stop*&container=c002", nil)
		defer cancel()
		defer resp.Body.Close()
		m, err := readSSE(r)
		if err != nil || m.id != "5" || !strings.Contains(m.data, `"reason":"inactivity"`) {
			t.Fatalf("filtered message %+v, %v", m, err)
		}
	})
	t.Run("live only by default", func(t *testing.T) {
		resp, r, cancel := get(t, "", nil)
		defer cancel()
		defer resp.Body.Close()
		last := b.LastID()
		b.Publish(ev(8))
		m, _ := readSSE(r)
		if m.id != fmt.Sprint(last+1) {
			t.Fatalf("got %+v, want id %d", m, last+1)
		}
	})
	t.Run("bad resume id", func(t *testing.T) {
		resp, _, cancel := get(t, "?after=x", nil)
		defer cancel()
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("bus close ends the stream", func(t *testing.T) {
		b2 := New(Options{})
		srv2 := httptest.NewServer(b2.Handler(HandlerOptions{}))
		defer srv2.Close()
		resp, err := http.Get(srv2.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		r.ReadString('\n') // retry line: the stream is open
		b2.Close()
		if _, err := io.ReadAll(r); err != nil {
			t.Fatalf("body after close: %v", err)
		}
	})
}

// pipeWriter is a ResponseWriter whose body can be read while written.
type pipeWriter struct {
	mu   sync.Mutex
	h    http.Header
	body strings.Builder
}

func (p *pipeWriter) Header() http.Header { return p.h }
func (p *pipeWriter) WriteHeader(int)     {}
func (p *pipeWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.body.Write(b)
}
func (p *pipeWriter) Flush() {}
func (p *pipeWriter) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.body.String()
}

func TestSSEHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{})
		ctx, cancel := context.WithCancel(t.Context())
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/events", nil)
		w := &pipeWriter{h: http.Header{}}
		done := make(chan struct{})
		go func() {
			b.Handler(HandlerOptions{}).ServeHTTP(w, req)
			close(done)
		}()
		synctest.Wait()
		if strings.Contains(w.String(), "heartbeat") {
			t.Fatal("heartbeat before the interval")
		}
		time.Sleep(DefaultHeartbeat) // fake time inside the bubble
		synctest.Wait()
		if n := strings.Count(w.String(), ": heartbeat\n\n"); n != 1 {
			t.Fatalf("%d heartbeats after one interval: %q", n, w.String())
		}
		cancel()
		<-done
		b.Close()
	})
}
