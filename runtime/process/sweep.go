//go:build unix

package process

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	idepool "github.com/idepool/idepool"
)

// markedOf lists the live processes started for the container in dir.
func (r *Runtime) markedOf(dir string) []markedProc {
	var out []markedProc
	for _, p := range r.procs.marked(markerEnv, dir) {
		if p.value == dir {
			out = append(out, p)
		}
	}
	return out
}

// sweep settles every process carrying this runtime's marker that no
// record tracks, after a crash of an earlier orchestrator: the agent of a
// record that has no pid yet (a crash between starting it and recording
// it) is adopted, since its record is complete but for the pid; processes
// of a container without a record (its directory was removed, or never
// held one), of a broken record, and of a container whose agent is gone
// (its workloads) are stopped.
// The files stay: the orchestrator salvages and removes the failed
// containers. loaded holds the containers Recover just read.
func (r *Runtime) sweep(ctx context.Context, loaded map[string]*container) {
	for _, c := range loaded {
		if !c.broken && c.meta.Process.PID == 0 {
			r.awaitUnmarked(ctx, c)
		}
	}
	byID := map[string][]markedProc{}
	for _, p := range r.procs.marked(markerEnv, r.dir+string(filepath.Separator)) {
		if filepath.Dir(p.value) != r.dir {
			continue
		}
		id := filepath.Base(p.value)
		byID[id] = append(byID[id], p)
	}
	for id, ps := range byID {
		r.mu.Lock()
		_, known := r.containers[id]
		r.mu.Unlock()
		if known {
			continue // this Runtime made or adopted it
		}
		c := loaded[id]
		if c == nil {
			if _, err := os.Lstat(filepath.Join(r.dir, id)); !errors.Is(err, fs.ErrNotExist) {
				continue // another deployment's container: not ours to stop
			}
			r.log.Warn("stopping processes that no record points to", "id", id, "pids", pidsOf(ps))
			if err := r.killProcs(ctx, ps); err != nil {
				r.log.Error("could not stop processes without a record", "id", id, "err", err)
			}
			continue
		}
		if !c.broken && c.meta.Process.PID == 0 {
			// The agent leads its own session (Setsid); of several
			// leaders (a workload may start a session too, as tmux
			// does) it is the oldest.
			var leader *markedProc
			for i, p := range ps {
				if p.sid == p.pid && (leader == nil || p.start < leader.start) {
					leader = &ps[i]
				}
			}
			if leader != nil {
				r.adopt(c, *leader)
			}
		}
		// A running agent's processes are its own to manage, even those in
		// sessions of their own. Otherwise nobody is left to stop them: a
		// broken record's agent, the workloads of a dead one.
		var stray []markedProc
		if c.broken || c.status != idepool.StatusRunning {
			stray = ps
		}
		if len(stray) > 0 {
			r.log.Warn("stopping processes of a container whose agent is gone", "id", id, "pids", pidsOf(stray))
			if err := r.killProcs(ctx, stray); err != nil {
				r.log.Error("could not stop processes of a container whose agent is gone", "id", id, "err", err)
			}
		}
	}
}

// adopt records p as the agent of c, whose record has no pid: the
// orchestrator crashed between starting the agent and writing its pid.
func (r *Runtime) adopt(c *container, p markedProc) {
	m := c.meta
	m.Process = identity{PID: p.pid, StartTicks: p.start, BootID: r.procs.bootID()}
	if err := writeMeta(c.dir, m); err != nil {
		// Adopted in memory all the same: Remove still finds it by its
		// marker should this record never get the pid.
		r.log.Warn("could not record the adopted agent's pid", "id", c.id, "err", err)
	}
	c.meta = m
	c.status, c.message = idepool.StatusRunning, ""
	c.exited = make(chan struct{})
	r.log.Info("adopted an agent whose start was not recorded", "id", c.id, "pid", p.pid)
}

// killProcs kills ps (each process and, where it leads one, its group) and
// waits until none of them runs. Each is checked by its start time, so a
// reused pid is never signalled.
func (r *Runtime) killProcs(ctx context.Context, ps []markedProc) error {
	if len(ps) == 0 {
		return nil
	}
	boot := r.procs.bootID()
	ids := make([]identity, len(ps))
	for i, p := range ps {
		ids[i] = identity{PID: p.pid, StartTicks: p.start, BootID: boot}
		if !leaderAlive(r.procs, ids[i]) {
			continue
		}
		if p.pgrp == p.pid {
			_ = r.procs.kill(-p.pid, syscall.SIGKILL)
		}
		if err := r.procs.kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill %d: %w", p.pid, err)
		}
	}
	alive := func() bool {
		for _, id := range ids {
			if leaderAlive(r.procs, id) {
				return true
			}
		}
		return false
	}
	if r.waitGone(ctx, killWait, alive) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("processes %v still run after SIGKILL", pidsOf(ps))
}

func pidsOf(ps []markedProc) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.pid
	}
	return out
}
