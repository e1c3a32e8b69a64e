package server

import (
	"context"

	"github.com/idepool/idepool/dashboard"
	"github.com/idepool/idepool/health"
)

// dashboardResources shows the host and, on Swarm, every node.
func (s *Server) dashboardResources(ctx context.Context) []dashboard.Resource {
	snap := s.admitter.Snapshot(ctx)
	var out []dashboard.Resource
	if h := snap.Host; h != nil {
		// The measured load, as /api/health reports it.
		r := dashboard.Resource{Name: "host", Role: s.rt.Name(), State: "ready", CPUCores: h.CPUs,
			CPUPercent: round1(h.CPUPercent()), MemoryTotal: h.MemoryTotal, MemoryUsed: h.MemoryUsed}
		if d, err := health.Disk(s.cfg.DataDir); err == nil {
			r.DiskTotal, r.DiskUsed = d.Total, d.Used
		}
		out = append(out, r)
	}
	for _, n := range snap.Nodes {
		state := "ready"
		if !n.Ready {
			state = "unavailable"
		}
		out = append(out, dashboard.Resource{Name: n.Name, Role: "node", State: state, CPUCores: float64(n.NanoCPUs) / 1e9,
			CPUPercent: n.CPUPercent, MemoryTotal: n.MemoryBytes, MemoryUsed: n.ReservedMemoryBytes})
	}
	return out
}
