package human

import (
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{45*time.Second + 900*time.Millisecond, "45s"},
		{3*time.Minute + 59*time.Second, "3m"},
		{2*time.Hour + 5*time.Minute + 30*time.Second, "2h5m"},
		{3*24*time.Hour + 4*time.Hour + 59*time.Minute, "3d4h"},
	} {
		if got := Duration(tt.d); got != tt.want {
			t.Errorf("Duration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
