package events

import (
	"context"
	"testing"

	"github.com/idepool/idepool"
)

// BenchmarkPublish measures the publisher's cost with 10 live subscribers
// draining their streams (the publisher never waits for them).
func BenchmarkPublish(b *testing.B) {
	bus := New(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	for range 10 {
		ch, err := bus.Subscribe(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for range ch {
			}
		}()
	}
	e := idepool.Event{Type: idepool.EventState, ContainerID: "abc123", State: idepool.StateWarm}
	b.ReportAllocs()
	for b.Loop() {
		bus.Publish(e)
	}
	cancel()
	bus.Close()
}
