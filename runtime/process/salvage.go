//go:build unix

package process

import (
	"context"
	"path/filepath"

	idepool "github.com/idepool/idepool"
	"github.com/idepool/idepool/wsync/salvage"
)

// Salvage stops what is left of the container (its agent gets SIGTERM and
// the grace, so a live one flushes by itself), then pushes the files it had
// not uploaded from its workspace directory to a's workspace, three-way
// against the base the agent kept in its state directory (package
// salvage). The directory stays until Remove.
func (r *Runtime) Salvage(ctx context.Context, id string, a idepool.Assignment) (idepool.SalvageResult, error) {
	if !idepool.ValidID(id) {
		return idepool.SalvageResult{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	c, err := r.getOrLoad(id)
	if err != nil {
		return idepool.SalvageResult{}, err
	}
	if c == nil {
		return idepool.SalvageResult{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	c.op.Lock()
	defer c.op.Unlock()
	r.mu.Lock()
	gone, pid := c.gone, c.meta.Process
	r.mu.Unlock()
	if gone {
		return idepool.SalvageResult{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	// Nothing may write the workspace or the agent's base meanwhile.
	if err := r.stopGroup(ctx, c, pid); err != nil {
		return idepool.SalvageResult{}, idepool.WrapError(idepool.EStopFailed, err, "stop container %s before salvage", id)
	}
	if err := r.killProcs(ctx, r.markedOf(c.dir)); err != nil {
		return idepool.SalvageResult{}, idepool.WrapError(idepool.EStopFailed, err, "stop processes of container %s before salvage", id)
	}
	res, err := salvage.ForAssignment(ctx, filepath.Join(c.dir, "workspace"), filepath.Join(c.dir, "state"), a, r.log.With("id", id))
	out := idepool.SalvageResult{Uploaded: res.Uploaded, Conflicts: res.Conflicts, Failed: res.Failed, Bytes: res.Bytes, Paths: res.Paths}
	if err != nil {
		return out, idepool.WrapError(idepool.ERuntime, err, "salvage container %s", id)
	}
	r.log.Info("container salvaged", "id", id, "uploaded", res.Uploaded, "conflicts", res.Conflicts, "failed", res.Failed)
	return out, nil
}
