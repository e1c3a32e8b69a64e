//go:build linux || darwin

package health

import (
	"fmt"
	"syscall"
)

// Disk measures the filesystem holding path (statfs(2)).
func Disk(path string) (DiskUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return DiskUsage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize)
	return DiskUsage{
		Total:     int64(st.Blocks) * bs,
		Used:      (int64(st.Blocks) - int64(st.Bfree)) * bs,
		Available: int64(st.Bavail) * bs,
	}, nil
}
