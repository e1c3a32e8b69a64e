package server

import (
	"context"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/control"
	"github.com/idepool/idepool/httpapi"
	"github.com/idepool/idepool/pool"
)

// syncControl serves the API's sync actions: the container must be one
// the pool knows (404 otherwise) with a workspace; the request goes to its
// agent over the control channel.
type syncControl struct {
	pool *pool.Manager
	hub  *control.Hub
}

var _ httpapi.SyncControl = syncControl{}

func (s syncControl) ConfirmDeletions(ctx context.Context, id string) (int, error) {
	c, err := s.pool.Get(ctx, id)
	if err != nil {
		return 0, err
	}
	if c.Workspace == nil {
		return 0, idepool.Errorf(idepool.EConflict, "container %s has no workspace, so no deletions are held", id)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return s.hub.ConfirmDeletions(ctx, id)
}
