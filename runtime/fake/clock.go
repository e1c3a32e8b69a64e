package fake

import (
	"time"

	"github.com/idepool/idepool"
)

// Clock is the fake's time: idepool.Clock plus scheduling, so tests can
// drive latencies and crashes with their own clock, or keep SystemClock and
// run inside testing/synctest, whose bubble fakes time.AfterFunc.
type Clock interface {
	idepool.Clock
	// AfterFunc calls f in its own goroutine after d.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a scheduled call.
type Timer interface {
	// Stop prevents the call if it has not run; it reports whether it did.
	Stop() bool
}

// SystemClock is the real clock (time.Now and time.AfterFunc).
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

var _ Clock = SystemClock{}
