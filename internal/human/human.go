// Package human formats values for people: the CLI's tables and the
// dashboard say ages the same way.
package human

import (
	"fmt"
	"time"
)

// Duration formats d in at most two units, rounded down: "45s", "3m",
// "2h5m", "3d4h". A negative d is "0s".
func Duration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
