package events

import (
	"context"
	"io"
	"log/slog"

	"github.com/idepool/idepool"
)

// Recorder is a sink that stamps events (ID, time) as it records them: the
// Bus. Fanout hands the stamped event to the sinks after it.
type Recorder interface {
	Record(idepool.Event) idepool.Event
}

// Fanout publishes each event to several sinks, in order. Put the Bus
// first: sinks after a Recorder receive the event with its ID and time.
type Fanout struct {
	sinks []idepool.EventSink
}

var _ idepool.EventSink = (*Fanout)(nil)

// NewFanout returns a sink publishing to every non-nil sink given.
func NewFanout(sinks ...idepool.EventSink) *Fanout {
	f := &Fanout{}
	for _, s := range sinks {
		if s != nil {
			f.sinks = append(f.sinks, s)
		}
	}
	return f
}

// Publish hands e to every sink.
func (f *Fanout) Publish(e idepool.Event) {
	for _, s := range f.sinks {
		if r, ok := s.(Recorder); ok {
			e = r.Record(e)
			continue
		}
		s.Publish(e)
	}
}

// LogSink returns a sink writing each event as one log line: stops,
// refusals, failures and unhealthy verdicts at Info (Warn for failures),
// everything else at Debug. Events never carry secrets.
func LogSink(l *slog.Logger) idepool.EventSink {
	if l == nil {
		l = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return idepool.EventSinkFunc(func(e idepool.Event) {
		level := slog.LevelDebug
		switch e.Type {
		case idepool.EventStopped, idepool.EventRefused, idepool.EventClaim, idepool.EventPool:
			level = slog.LevelInfo
		case idepool.EventCreateFail, idepool.EventSyncError, idepool.EventConflict, idepool.EventSyncRemoteReset, idepool.EventSyncDeletionsHeld:
			level = slog.LevelWarn
		case idepool.EventHealth:
			if s, _ := e.Data["status"].(string); s == string(idepool.HealthUnhealthy) {
				level = slog.LevelWarn
			}
		case idepool.EventSalvaged:
			level = slog.LevelInfo
			if e.Reason != "salvaged" || e.Data["failed"] != 0 {
				level = slog.LevelWarn // work may be lost
			}
		}
		ctx := context.Background()
		if !l.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{slog.Uint64("event_id", e.ID), slog.String("type", string(e.Type))}
		if e.ContainerID != "" {
			attrs = append(attrs, slog.String("container", e.ContainerID))
		}
		if e.Profile != "" {
			attrs = append(attrs, slog.String("profile", e.Profile))
		}
		if e.State != "" {
			attrs = append(attrs, slog.String("state", string(e.State)))
		}
		if e.Reason != "" {
			attrs = append(attrs, slog.String("reason", e.Reason))
		}
		if e.Message != "" {
			attrs = append(attrs, slog.String("message", e.Message))
		}
		if len(e.Data) > 0 {
			attrs = append(attrs, slog.Any("data", e.Data))
		}
		l.LogAttrs(ctx, level, "event", attrs...)
	})
}
