//go:build !linux && !darwin

package health

import "errors"

// Disk is not measured here.
func Disk(string) (DiskUsage, error) {
	return DiskUsage{}, errors.New("disk usage: not supported on this system")
}
