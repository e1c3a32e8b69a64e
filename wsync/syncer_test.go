package wsync

import (
	"context"

	"github.com/idepool/idepool"
)

// syncer is package agent's Syncer, restated: AgentSyncer must keep
// satisfying it structurally (wsync does not import agent).
type syncer interface {
	Start(ctx context.Context, a idepool.Assignment, report func(idepool.AgentReport)) error
	Flush(ctx context.Context) error
	Stats() idepool.SyncStats
	Stop(ctx context.Context) error
	ConfirmDeletions() int
}

var _ syncer = (*AgentSyncer)(nil)
