package process

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/idepool/idepool"
)

// creation is one Create in progress: the container it registered and the
// agent it started, which a failure undoes.
type creation struct {
	r       *Runtime
	spec    idepool.ContainerSpec
	c       *container
	started *identity // the agent, once started
}

// reserve registers the container under its id and makes its directory;
// either refuses an id that exists, in memory or on disk.
func (cr *creation) reserve() error {
	r, id := cr.r, cr.spec.ID
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return idepool.Errorf(idepool.EUnavailable, "process runtime is closed")
	}
	if _, ok := r.containers[id]; ok {
		r.mu.Unlock()
		return idepool.Errorf(idepool.EExists, "container %s already exists", id)
	}
	r.containers[id] = cr.c
	r.mu.Unlock()
	// Mkdir (not MkdirAll) is the on-disk guard: a directory left by an
	// earlier run that was not recovered is refused, not overwritten.
	if err := os.Mkdir(cr.c.dir, 0o700); err != nil {
		cr.forget()
		if errors.Is(err, fs.ErrExist) {
			return idepool.Errorf(idepool.EExists, "container %s already exists", id)
		}
		return idepool.WrapError(idepool.ERuntime, err, "create directory of %s", id)
	}
	return nil
}

// forget drops the container from memory and its ports.
func (cr *creation) forget() {
	r := cr.r
	r.mu.Lock()
	cr.c.gone = true
	delete(r.containers, cr.spec.ID)
	r.mu.Unlock()
	r.ports.release(cr.spec.ID)
}

// fail undoes the creation (the agent and what it started, the cgroups,
// the directory, the registration) and returns err as a runtime error.
func (cr *creation) fail(err error) (idepool.Instance, error) {
	r, c, id := cr.r, cr.c, cr.spec.ID
	if cr.started != nil {
		_ = signalGroup(r.procs, *cr.started, syscall.SIGKILL)
		select {
		case <-c.exited:
		case <-time.After(killWait):
			r.log.Warn("agent of a failed create did not end", "id", id, "pid", cr.started.PID)
		}
		if err := r.killProcs(context.Background(), r.markedOf(c.dir)); err != nil {
			r.log.Warn("processes of a failed create did not end", "id", id, "err", err)
		}
	}
	r.mu.Lock()
	groups := c.meta.Cgroups
	r.mu.Unlock()
	if err := removeGroups(groups); err != nil {
		r.log.Warn("remove cgroups of failed create", "id", id, "err", err)
	}
	if rmErr := os.RemoveAll(c.dir); rmErr != nil {
		r.log.Warn("remove directory of failed create", "id", id, "err", rmErr)
	}
	cr.forget()
	return idepool.Instance{}, idepool.WrapError(idepool.ERuntime, err, "process runtime")
}

// record makes the container's directories, ports, labels and cgroups and
// writes meta.json before any agent starts, so a crash right after leaves
// a record that Recover reports (as lost) and Remove cleans.
func (cr *creation) record() (meta, error) {
	r, c, spec := cr.r, cr.c, cr.spec
	for _, sub := range []string{"workspace", "state"} {
		if err := os.Mkdir(filepath.Join(c.dir, sub), 0o700); err != nil {
			return meta{}, fmt.Errorf("create %s directory of %s: %w", sub, spec.ID, err)
		}
	}
	if err := r.prepareDirs(c.dir); err != nil {
		return meta{}, fmt.Errorf("give the directories of %s to its user: %w", spec.ID, err)
	}
	if r.crashed(stepDir) {
		return meta{}, errCrashed
	}
	routeNames := make([]string, 0, len(spec.Profile.Routes))
	for _, rt := range spec.Profile.Routes {
		routeNames = append(routeNames, rt.Name)
	}
	ports, err := r.ports.alloc(spec.ID, routeNames)
	if err != nil {
		return meta{}, fmt.Errorf("allocate ports for %s: %w", spec.ID, err)
	}
	now := time.Now().UTC()
	labels := make(map[string]string, len(spec.Labels)+4)
	maps.Copy(labels, spec.Labels)
	labels[idepool.LabelManaged] = r.opts.Deployment
	labels[idepool.LabelID] = spec.ID
	labels[idepool.LabelProfile] = spec.Profile.Name
	labels[idepool.LabelCreated] = now.Format(time.RFC3339Nano)
	m := meta{
		Version:    metaVersion,
		ID:         spec.ID,
		Deployment: r.opts.Deployment,
		Profile:    spec.Profile,
		Labels:     labels,
		Ports:      ports,
		CreatedAt:  now,
	}
	m.Cgroups, err = r.containerLimits(spec.ID, spec.Profile)
	if err != nil {
		_ = removeGroups(m.Cgroups)
		return meta{}, fmt.Errorf("cgroups of %s: %w", spec.ID, err)
	}
	if err := writeMeta(c.dir, m); err != nil {
		return meta{}, fmt.Errorf("write meta.json of %s: %w", spec.ID, err)
	}
	r.mu.Lock()
	c.meta = m
	r.mu.Unlock()
	return m, nil
}

// startAgent starts the agent in its own session, holding agent.lock,
// inside the container's limits, and records its identity in m.
func (cr *creation) startAgent(m *meta) error {
	r, c, spec := cr.r, cr.c, cr.spec
	env, err := r.agentEnv(spec, c.dir, m.Ports)
	if err != nil {
		return fmt.Errorf("environment of %s: %w", spec.ID, err)
	}
	logf, err := os.OpenFile(filepath.Join(c.dir, "agent.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open agent.log of %s: %w", spec.ID, err)
	}
	cmd := exec.Command(r.opts.AgentCommand[0], r.opts.AgentCommand[1:]...)
	cmd.Dir = filepath.Join(c.dir, "workspace")
	cmd.Env = env
	// The file itself, not a pipe: the agent must keep logging after we exit.
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own session and process group: it outlives us, a terminal's ^C
	// does not reach it, and Remove can signal all it started at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: r.credential()}
	lockf, err := lockForAgent(c.dir)
	if err != nil {
		logf.Close()
		return fmt.Errorf("lock %s of %s: %w", agentLockFile, spec.ID, err)
	}
	// The start gate (idepool.EnvStartGate): the agent waits for the end
	// of this pipe, which comes once it is in its cgroups and at its
	// priority, so that nothing it starts escapes them. On every return
	// (or our own death) the write end closes and the agent goes on.
	gateR, gateW, err := os.Pipe()
	if err != nil {
		logf.Close()
		lockf.Close()
		return fmt.Errorf("start gate of %s: %w", spec.ID, err)
	}
	defer gateW.Close()
	cmd.ExtraFiles = []*os.File{lockf, gateR} // fd 3: see agentLockFile; fd 4: the gate
	cmd.Env = append(cmd.Env, idepool.EnvStartGate+"=4")
	err = cmd.Start()
	logf.Close()
	lockf.Close()
	gateR.Close()
	if err != nil {
		close(c.exited)
		return fmt.Errorf("start agent of %s: %w", spec.ID, err)
	}
	if r.cpu != nil {
		if err := r.cpu.add(cmd.Process.Pid); err != nil {
			r.log.Warn("could not move the agent into the agents' cgroup", "id", spec.ID, "cgroup", r.cpu.dir, "err", err)
		}
	}
	if r.opts.Nice > 0 {
		// The whole group (every thread of the agent, which setsid made its
		// leader); what it starts later inherits the value.
		if err := syscall.Setpriority(syscall.PRIO_PGRP, cmd.Process.Pid, r.opts.Nice); err != nil {
			r.log.Warn("could not lower the agent's priority", "id", spec.ID, "err", err)
		}
	}
	// Read before the reaper can collect it: until then the pid is ours.
	m.Process = identity{PID: cmd.Process.Pid, BootID: r.procs.bootID()}
	if st, err := r.procs.stat(cmd.Process.Pid); err == nil {
		m.Process.StartTicks = st.start
	}
	cr.started = &m.Process
	go r.reap(c, cmd)
	if err := joinGroups(m.Cgroups, cmd.Process.Pid); err != nil {
		return fmt.Errorf("limit the agent of %s: %w", spec.ID, err)
	}
	_ = gateW.Close() // open the gate (a pipe's close cannot fail here)
	return nil
}

// finish marks the container running with its recorded agent and writes
// the first labels.log record.
func (cr *creation) finish(m meta) (idepool.Instance, error) {
	r, c, spec := cr.r, cr.c, cr.spec
	r.mu.Lock()
	c.meta = m
	if c.status == idepool.StatusPending {
		c.status = idepool.StatusRunning
	}
	inst := r.instanceLocked(c)
	r.mu.Unlock()
	// labels.log is created now, not at the claim, with a first record:
	// creating a file (an inode) and then its first page were most of
	// SetLabels' cost, and a class's 200 claims arrive at once.
	if err := c.appendLabelLog(m.Labels); err != nil {
		r.log.Warn("could not write labels.log; the first claim will", "id", spec.ID, "err", err)
	}
	if r.crashed(stepLabels) {
		return idepool.Instance{}, errCrashed
	}
	r.log.Info("agent started", "id", spec.ID, "pid", m.Process.PID, "profile", spec.Profile.Name)
	r.emit(spec.ID, inst.Status, false)
	return inst, nil
}
