package health

// DiskUsage is a filesystem's size and use, in bytes.
type DiskUsage struct {
	Total int64
	Used  int64
	// Available is what an unprivileged writer may still use (less than
	// Total-Used by the blocks reserved for root).
	Available int64
}

// UsedRatio is Used/Total, from 0 to 1.
func (d DiskUsage) UsedRatio() float64 {
	if d.Total <= 0 {
		return 0
	}
	return float64(d.Used) / float64(d.Total)
}
