package swarm

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/idepool/idepool"
	"github.com/idepool/idepool/wsync/salvage"
	"github.com/moby/moby/client"
)

// Salvage reaches a dead container's files where its task container still
// exists on the node of the engine idepool talks to (a one-node Swarm, or
// the manager's own node): it copies /workspace and the agent's state out
// of the stopped container and pushes what the agent had not uploaded
// (package salvage). A container on another node cannot be read through
// this engine's API (the archive endpoint is per engine, and Swarm offers
// no remote equivalent), so it answers EUnavailable and the orchestrator
// says what may be lost. A task container that still runs is not touched
// (EConflict): it may still be syncing by itself.
func (r *Runtime) Salvage(ctx context.Context, id string, a idepool.Assignment) (idepool.SalvageResult, error) {
	if !idepool.ValidID(id) {
		return idepool.SalvageResult{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	lctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	cl, err := r.o.Docker.ContainerList(lctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).
		Add("label", idepool.LabelManaged+"="+r.o.Deployment, idepool.LabelID+"="+id)})
	cancel()
	if err != nil {
		return idepool.SalvageResult{}, dockerError(err, "list containers of %s", ServiceName(id))
	}
	var newest *struct {
		id      string
		created int64
	}
	for _, c := range cl.Items {
		switch c.State {
		case "exited", "dead":
			if newest == nil || c.Created > newest.created {
				newest = &struct {
					id      string
					created int64
				}{c.ID, c.Created}
			}
		case "created":
		default:
			return idepool.SalvageResult{}, idepool.Errorf(idepool.EConflict, "container %s still runs (%s); not salvaged", id, c.State)
		}
	}
	if newest == nil {
		return idepool.SalvageResult{}, idepool.Errorf(idepool.EUnavailable, "no stopped task container of %s on this engine's node: its files cannot be reached", id)
	}
	tmp, err := os.MkdirTemp("", "idepool-salvage-"+id+"-")
	if err != nil {
		return idepool.SalvageResult{}, idepool.WrapError(idepool.ERuntime, err, "salvage %s", id)
	}
	defer os.RemoveAll(tmp)
	for _, part := range []struct{ src, dst string }{{WorkspaceDir, "workspace"}, {StateDir, "state"}} {
		if err := r.copyOut(ctx, newest.id, part.src, filepath.Join(tmp, part.dst)); err != nil {
			if part.dst == "state" && cerrdefs.IsNotFound(err) {
				continue // never synced: no base, every file counts as new
			}
			return idepool.SalvageResult{}, idepool.WrapError(idepool.ERuntime, err, "copy %s out of the container of %s", part.src, id)
		}
	}
	res, err := salvage.ForAssignment(ctx, filepath.Join(tmp, "workspace"), filepath.Join(tmp, "state"), a, r.log.With("container", id))
	out := idepool.SalvageResult{Uploaded: res.Uploaded, Conflicts: res.Conflicts, Failed: res.Failed, Bytes: res.Bytes, Paths: res.Paths}
	if err != nil {
		return out, idepool.WrapError(idepool.ERuntime, err, "salvage %s", id)
	}
	r.log.Info("container salvaged", "container", id, "uploaded", res.Uploaded, "conflicts", res.Conflicts, "failed", res.Failed)
	return out, nil
}

// copyOut extracts directory src of container cid into dst: regular files
// and directories only, nothing outside dst.
func (r *Runtime) copyOut(ctx context.Context, cid, src, dst string) error {
	res, err := r.o.Docker.CopyFromContainer(ctx, cid, client.CopyFromContainerOptions{SourcePath: src})
	if err != nil {
		return err
	}
	defer res.Content.Close()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(res.Content)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		// The archive holds the directory itself: "workspace/...".
		_, rel, _ := strings.Cut(path.Clean(h.Name), "/")
		if rel == "" || !filepath.IsLocal(rel) {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if dir := path.Dir(rel); dir != "." {
				if err := root.MkdirAll(dir, 0o700); err != nil {
					return err
				}
			}
			f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
