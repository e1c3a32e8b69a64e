package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idepool/idepool"
)

// EventOption adjusts an event stream.
type EventOption func(*eventQuery)

type eventQuery struct {
	fromStart bool
	types     []string
	container string
}

// FromStart replays the kept history when afterID is 0 (without it, a
// stream with afterID 0 shows only new events).
func FromStart() EventOption { return func(q *eventQuery) { q.fromStart = true } }

// Types keeps only events of these types ("container.*" matches a prefix).
func Types(types ...string) EventOption {
	return func(q *eventQuery) { q.types = append(q.types, types...) }
}

// ForContainer keeps only one container's events.
func ForContainer(id string) EventOption { return func(q *eventQuery) { q.container = id } }

// maxEventLine bounds one SSE line, so a broken server cannot make the
// client buffer without end.
const maxEventLine = 1 << 20

// EventStream is an open GET /api/events. Next returns its events one by
// one; Close ends it. It is not safe for concurrent use, but Close may be
// called from any goroutine.
type EventStream struct {
	body   io.ReadCloser
	rd     *bufio.Reader
	cancel context.CancelFunc
	idle   time.Duration
	timer  *time.Timer
	lastID uint64
	retry  time.Duration
	once   sync.Once
	parent context.Context
	idled  atomic.Bool
}

// Events opens the event stream. afterID > 0 resumes after that event (the
// server replays what it kept); afterID 0 shows only new events unless
// FromStart is given. Errors the server answers (401, 503 ...) come back
// at once as *Error.
func (c *Client) Events(ctx context.Context, afterID uint64, opts ...EventOption) (*EventStream, error) {
	var eq eventQuery
	for _, o := range opts {
		o(&eq)
	}
	q := url.Values{}
	if afterID > 0 || eq.fromStart {
		q.Set("after", strconv.FormatUint(afterID, 10))
	}
	if len(eq.types) > 0 {
		q.Set("type", strings.Join(eq.types, ","))
	}
	if eq.container != "" {
		q.Set("container", eq.container)
	}
	sctx, cancel := context.WithCancel(ctx)
	// The handshake is bounded like any call; the stream itself only by the
	// idle timer below.
	hs := time.AfterFunc(c.timeout, cancel)
	req, err := c.newRequest(sctx, http.MethodGet, "/api/events", q, nil)
	if err != nil {
		hs.Stop()
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if afterID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(afterID, 10))
	}
	res, err := c.hc.Do(req)
	stopped := hs.Stop()
	if err != nil {
		cancel()
		if !stopped && ctx.Err() == nil {
			return nil, &ConnError{URL: c.base.String(), Err: fmt.Errorf("no answer to GET /api/events within %s", c.timeout)}
		}
		return nil, c.connError(err)
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
		cancel()
		return nil, decodeError(res, b)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		res.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET /api/events: answer is %q, not an event stream", ct)
	}
	s := &EventStream{body: res.Body, rd: bufio.NewReaderSize(res.Body, 64<<10), cancel: cancel, idle: c.idle, lastID: afterID, parent: ctx}
	s.timer = time.AfterFunc(c.idle, func() { s.idled.Store(true); cancel() })
	return s, nil
}

// LastID is the id of the last event read (or the afterID the stream
// resumed from).
func (s *EventStream) LastID() uint64 { return s.lastID }

// Retry is the reconnection delay the server suggested (0 if none).
func (s *EventStream) Retry() time.Duration { return s.retry }

// Close ends the stream.
func (s *EventStream) Close() error {
	s.once.Do(func() {
		s.timer.Stop()
		s.cancel()
		s.body.Close()
	})
	return nil
}

// ErrStreamIdle is returned by Next when the server sent nothing, not even
// a heartbeat, for the idle timeout.
var ErrStreamIdle = errors.New("event stream idle: no data or heartbeat from the server")

// Next returns the next event. It returns io.EOF when the server ended the
// stream, ErrStreamIdle after a silent spell, and the context's error
// when it ends.
func (s *EventStream) Next() (idepool.Event, error) {
	var data bytes.Buffer
	var id string
	hasID, hasData := false, false
	for {
		line, err := s.readLine()
		if err != nil {
			return idepool.Event{}, s.streamErr(err)
		}
		s.timer.Reset(s.idle)
		if len(line) == 0 {
			if !hasData {
				hasID = false
				continue
			}
			var e idepool.Event
			if err := json.Unmarshal(data.Bytes(), &e); err != nil {
				return idepool.Event{}, fmt.Errorf("event stream: bad event data: %w", err)
			}
			if hasID {
				if n, err := strconv.ParseUint(id, 10, 64); err == nil {
					s.lastID = n
				}
			} else if e.ID > 0 {
				s.lastID = e.ID
			}
			return e, nil
		}
		if line[0] == ':' {
			continue // a comment: the heartbeat
		}
		field, value, _ := strings.Cut(string(line), ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			id, hasID = value, true
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && ms >= 0 {
				s.retry = time.Duration(ms) * time.Millisecond
			}
		case "event":
			// The type is in the data too.
		}
	}
}

// readLine returns one line without its end (\n or \r\n), bounded.
func (s *EventStream) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := s.rd.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > maxEventLine {
			return nil, fmt.Errorf("event stream: a line longer than %d bytes", maxEventLine)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

func (s *EventStream) streamErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return io.EOF
	}
	// The stream's context was cancelled: by the caller, by the idle
	// timer, or by Close.
	if s.parent.Err() != nil {
		return s.parent.Err()
	}
	if s.idled.Load() {
		return ErrStreamIdle
	}
	return err
}

// Follow reads events into fn until ctx ends (it then returns nil) or fn
// returns an error (returned as is). When the stream breaks it reconnects,
// resuming after the last event seen, waiting between tries (the server's
// retry hint, at most 30 s). Answers that will not change by retrying (401,
// 403, 404, 400) end it with their *Error.
func (c *Client) Follow(ctx context.Context, afterID uint64, fn func(idepool.Event) error, opts ...EventOption) error {
	backoff := time.Second
	last := afterID
	for first := true; ; first = false {
		s, err := c.Events(ctx, last, opts...)
		if err == nil {
			backoff = time.Second
			err = c.drain(ctx, s, fn)
			if s.LastID() > last {
				last = s.LastID()
			}
			if r := s.Retry(); r > 0 {
				backoff = min(r, 30*time.Second)
			}
			var fe fnError
			if errors.As(err, &fe) {
				return fe.err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		var ae *Error
		if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return err
		}
		if first && err != nil && !isStreamEnd(err) {
			// The first connection failed for a reason other than a closed
			// stream: say so rather than retrying in silence.
			var ce *ConnError
			if errors.As(err, &ce) {
				return err
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

func (c *Client) drain(ctx context.Context, s *EventStream, fn func(idepool.Event) error) error {
	defer s.Close()
	for {
		e, err := s.Next()
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return fnError{err}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func isStreamEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, ErrStreamIdle) || errors.Is(err, context.Canceled)
}
