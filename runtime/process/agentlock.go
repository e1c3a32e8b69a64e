//go:build unix

package process

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// agentLockFile is held, through one open file description, by the agent
// from the instant it is forked: Create locks it and passes it as the
// agent's fd 3, so a child killed-parent-mid-start still holds it while it
// runs the few instructions between fork and exec — the window in which it
// does not yet carry its marker. Recover uses it to tell "a process of this
// container exists but cannot be seen yet" from "none was started".
const agentLockFile = "agent.lock"

// startingWait bounds how long Recover waits for such a process to exec.
const startingWait = 10 * time.Second

// lockForAgent creates and locks dir's agent lock; the caller passes the
// file to the agent (ExtraFiles) and closes its own copy after the start.
func lockForAgent(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, agentLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// agentLockHeld reports whether some process holds dir's agent lock.
func agentLockHeld(dir string) bool {
	f, err := os.Open(filepath.Join(dir, agentLockFile))
	if err != nil {
		return false // never created: no agent was started
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}

// awaitUnmarked waits, for a record without a pid, until the process that
// holds its agent lock carries its marker (it was between fork and exec
// when the earlier orchestrator died) or lets the lock go. Bounded by
// startingWait; a container nobody started returns at once.
func (r *Runtime) awaitUnmarked(ctx context.Context, c *container) {
	if _, err := os.Lstat(filepath.Join(c.dir, agentLockFile)); errors.Is(err, fs.ErrNotExist) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, startingWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; len(r.markedOf(c.dir)) == 0 && agentLockHeld(c.dir); i++ {
		if i == 0 && r.awaiting != nil {
			r.awaiting(c.id)
		}
		select {
		case <-ctx.Done():
			r.log.Warn("a process of the container holds its lock but never showed its marker", "id", c.id)
			return
		case <-tick.C:
		}
	}
}
