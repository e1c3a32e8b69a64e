//go:build unix

// Package process is the embedded default Runtime: every "container" is a
// local process group running the agent (`idepool agent`), with its own
// directory under DataDir/containers/<id>/ (workspace/, state/, meta.json,
// agent.log) and its own free loopback ports. No Docker.
//
// The agents run in their own sessions so that they outlive the
// orchestrator: after a restart Recover finds them again through meta.json
// and tells them apart from strangers that got a reused pid by their start
// time in /proc.
package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	idepool "github.com/idepool/idepool"
)

// Options configure a Runtime.
type Options struct {
	// DataDir holds containers/<id>/. Required.
	DataDir string
	// AgentCommand starts the agent; default: this executable + "agent".
	AgentCommand []string
	// Deployment is LabelManaged's value (default "idepool"); containers of
	// other deployments under the same DataDir are left alone.
	Deployment string
	Logger     *slog.Logger
	// StopGrace is how long Remove waits after SIGTERM before SIGKILL
	// (default 10s).
	StopGrace time.Duration
	// ExtraEnv is added to every agent's environment (below the spec's).
	ExtraEnv map[string]string
	// PollInterval is how often adopted processes are checked and logs
	// capped (default 1s).
	PollInterval time.Duration
	// MaxLogSize caps agent.log (default 4 MiB; one rotated file is kept).
	MaxLogSize int64
	// Nice is the scheduling niceness (0–19) of every agent and all it
	// starts. Local containers have no CPU limits, so a positive value is
	// what keeps the orchestrator (claims, routing) responsive while many
	// workloads start or sync at once; 0 leaves them at ours. Where this
	// process may create cgroups, the agents also share one CPU cgroup
	// weighted like a single process at this niceness (see cpuGroup).
	Nice int
	// User, when set, is who every agent and all it starts run as (only
	// root may switch); their directories become its own. Refused (with a
	// warning at start-up) where that user could not run the agent binary
	// or reach DataDir.
	User *User
	// Limits puts each container in cgroups of its own with its profile's
	// memory and CPU limits (cgroup v1 or v2; needs root or a delegated
	// subtree). Where that cannot be done, the start-up line says so.
	Limits bool
}

// Runtime runs containers as local process groups. It implements
// idepool.Runtime.
type Runtime struct {
	opts   Options
	log    *slog.Logger
	node   string
	procs  procTable
	ports  *ports
	events *fanout
	dir    string // DataDir/containers

	mu         sync.Mutex
	containers map[string]*container
	closed     bool

	stop     context.CancelFunc
	monitorW sync.WaitGroup

	cpu    *cpuGroup // nil: agents are only reniced
	limits *limiter  // nil: containers get no memory or CPU limits

	// crashAfter, set by tests only, simulates a crash of this process
	// inside Create: when it returns true for a step, Create returns
	// errCrashed at once, leaving on disk and running whatever the steps
	// so far made, as a SIGKILL there would.
	crashAfter func(createStep) bool
	// awaiting, set by tests only, is called when Recover starts waiting
	// for a process that holds a container's agent lock to show its marker.
	awaiting func(id string)
}

// createStep names the points of Create after which a crash leaves a
// different state behind.
type createStep int

const (
	stepDir     createStep = iota + 1 // the container's directories exist
	stepIntent                        // meta.json records it, without a process
	stepStarted                       // the agent runs; meta.json has no pid yet
	stepPID                           // meta.json records the agent's identity
	stepLabels                        // labels.log has its first record
)

var errCrashed = errors.New("simulated crash")

func (r *Runtime) crashed(step createStep) bool { return r.crashAfter != nil && r.crashAfter(step) }

// markerEnv is set in every agent's environment to its container's
// directory; what the agent starts inherits it. It finds every process this
// runtime started, whatever the records say: after a crash between
// starting an agent and recording its pid, and for workloads left behind by
// an agent that was killed.
const markerEnv = "IDEPOOL_PROCESS_DIR"

var _ idepool.Runtime = (*Runtime)(nil)

// container is one container as this Runtime knows it.
type container struct {
	id  string
	dir string
	// op serialises Create, Remove and SetLabels of this container.
	op sync.Mutex
	// labelLog is labels.log, open for appending from Create (or, for a
	// recovered container, from its first SetLabels) to Remove;
	// labelLogSize its size. Guarded by op.
	labelLog     *os.File
	labelLogSize int64

	// Guarded by Runtime.mu.
	meta    meta
	status  idepool.RuntimeStatus
	message string
	broken  bool // meta.json unreadable: only Remove applies
	child   bool // started by this Runtime (reaped by Wait), else adopted
	gone    bool // removed
	exited  chan struct{}
}

const (
	defaultDeployment = "idepool"
	defaultStopGrace  = 10 * time.Second
	defaultPoll       = time.Second
	defaultMaxLog     = 4 << 20
	// killWait bounds the wait for a group after SIGKILL.
	killWait = 10 * time.Second
)

// New returns a Runtime over opts.DataDir. It starts one monitor goroutine;
// Close stops it (and leaves the containers running).
func New(opts Options) (*Runtime, error) {
	return newRuntime(opts, newHostProcs(), nil)
}

func newRuntime(opts Options, procs procTable, pick portPicker) (*Runtime, error) {
	if opts.DataDir == "" {
		return nil, idepool.Errorf(idepool.EMisconfigured, "process runtime: DataDir is required")
	}
	abs, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, idepool.WrapError(idepool.EMisconfigured, err, "process runtime: DataDir %q", opts.DataDir)
	}
	opts.DataDir = abs
	if opts.Deployment == "" {
		opts.Deployment = defaultDeployment
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = defaultStopGrace
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPoll
	}
	if opts.MaxLogSize <= 0 {
		opts.MaxLogSize = defaultMaxLog
	}
	if opts.Nice < 0 || opts.Nice > 19 {
		return nil, idepool.Errorf(idepool.EMisconfigured, "process runtime: Nice %d is outside 0-19 (raising priority needs privileges this runtime does not ask for)", opts.Nice)
	}
	if len(opts.AgentCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, idepool.WrapError(idepool.EMisconfigured, err, "process runtime: find own executable for the agent")
		}
		opts.AgentCommand = []string{exe, "agent"}
	}
	opts.AgentCommand = slices.Clone(opts.AgentCommand)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(abs, "containers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, idepool.WrapError(idepool.ERuntime, err, "process runtime: create %s", dir)
	}
	node, _ := os.Hostname()
	if node == "" {
		node = "localhost"
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runtime{
		opts:       opts,
		log:        log.With("runtime", "process"),
		node:       node,
		procs:      procs,
		ports:      newPorts(pick),
		events:     newFanout(),
		dir:        dir,
		containers: map[string]*container{},
		stop:       cancel,
	}
	if opts.Nice > 0 {
		g, err := openCPUGroup("idepool-agents-"+opts.Deployment, opts.Nice)
		if err != nil {
			r.log.Info("agents are reniced but share no cgroup", "reason", err)
		} else {
			r.cpu = g
			r.log.Debug("agents share a CPU cgroup", "cgroup", g.dir, "nice", opts.Nice)
		}
	}
	r.setupIsolation()
	r.monitorW.Add(1)
	go r.monitor(ctx)
	return r, nil
}

// appendLabelLog appends a record of labels to labels.log, opening it
// first if needed; after an error the file is closed (the next call
// reopens it). Caller holds c.op.
func (c *container) appendLabelLog(labels map[string]string) error {
	if c.labelLog == nil {
		f, size, err := openLabels(c.dir)
		if err != nil {
			return err
		}
		c.labelLog, c.labelLogSize = f, size
	}
	n, err := appendLabels(c.labelLog, labels)
	c.labelLogSize += n
	if err != nil {
		c.closeLabelLog()
	}
	return err
}

// closeLabelLog closes labels.log if open. Caller holds c.op.
func (c *container) closeLabelLog() {
	if c.labelLog != nil {
		c.labelLog.Close()
		c.labelLog = nil
	}
}

// Name returns "process".
func (r *Runtime) Name() string { return "process" }

// Capabilities: agents are processes on this machine's network; their
// limits, where set, are caps, not reservations.
func (r *Runtime) Capabilities() idepool.Capabilities {
	// LocalLabels: a label change is one append to the container's
	// labels.log on this machine.
	return idepool.Capabilities{HostNetwork: true, Salvage: r.Salvage, LocalLabels: true}
}

// Close stops the monitor and ends every event stream. The agents keep
// running: a later Runtime on the same DataDir adopts them with Recover.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	cs := make([]*container, 0, len(r.containers))
	for _, c := range r.containers {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	r.stop()
	r.monitorW.Wait()
	r.events.close()
	for _, c := range cs {
		c.op.Lock()
		c.closeLabelLog()
		c.op.Unlock()
	}
	return nil
}

// Events streams hints until ctx ends.
func (r *Runtime) Events(ctx context.Context) <-chan idepool.RuntimeEvent {
	return r.events.subscribe(ctx)
}

func (r *Runtime) emit(id string, st idepool.RuntimeStatus, removed bool) {
	r.events.emit(idepool.RuntimeEvent{ID: id, Status: st, Removed: removed})
}

// Create makes the container's directory, reserves its ports, records it in
// meta.json and starts the agent. It returns once the agent process runs.
func (r *Runtime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	if !idepool.ValidID(spec.ID) {
		return idepool.Instance{}, idepool.Errorf(idepool.EInvalid, "container id %q is not valid", spec.ID)
	}
	if err := ctx.Err(); err != nil {
		return idepool.Instance{}, idepool.WrapError(idepool.ERuntime, err, "create %s", spec.ID)
	}
	cr := &creation{r: r, spec: spec,
		c: &container{id: spec.ID, dir: filepath.Join(r.dir, spec.ID), status: idepool.StatusPending, child: true, exited: make(chan struct{})}}
	cr.c.op.Lock()
	defer cr.c.op.Unlock()
	if err := cr.reserve(); err != nil {
		return idepool.Instance{}, err
	}
	// Each step leaves what a crash right after it needs to be recovered
	// or cleaned (TestCrashInCreate stops after each).
	m, err := cr.record()
	if errors.Is(err, errCrashed) {
		return idepool.Instance{}, err
	}
	if err != nil {
		return cr.fail(err)
	}
	if r.crashed(stepIntent) {
		return idepool.Instance{}, errCrashed
	}
	r.emit(spec.ID, idepool.StatusPending, false)
	if err := cr.startAgent(&m); err != nil {
		return cr.fail(err)
	}
	if r.crashed(stepStarted) {
		return idepool.Instance{}, errCrashed
	}
	if err := writeMeta(cr.c.dir, m); err != nil {
		return cr.fail(fmt.Errorf("write meta.json of %s: %w", spec.ID, err))
	}
	if r.crashed(stepPID) {
		return idepool.Instance{}, errCrashed
	}
	return cr.finish(m)
}

// agentEnv builds the agent's environment from scratch: the orchestrator's
// own environment (API keys, S3 credentials) is never inherited.
func (r *Runtime) agentEnv(spec idepool.ContainerSpec, dir string, ports map[string]int) ([]string, error) {
	env := map[string]string{}
	for _, k := range []string{"PATH", "HOME", "LANG", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	if env["PATH"] == "" {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	if r.opts.User != nil {
		env["HOME"] = filepath.Join(dir, "home") // ours is not its to write
	}
	maps.Copy(env, r.opts.ExtraEnv)
	maps.Copy(env, spec.Profile.Env)
	maps.Copy(env, spec.Env)
	routes := make([]idepool.Route, len(spec.Profile.Routes))
	for i, rt := range spec.Profile.Routes {
		rt.Port = ports[rt.Name]
		routes[i] = rt
		env[RoutePortEnv(rt.Name)] = fmt.Sprint(rt.Port)
	}
	rj, err := json.Marshal(routes)
	if err != nil {
		return nil, err
	}
	workloads := spec.Profile.Workloads
	if workloads == nil {
		workloads = []idepool.Workload{}
	}
	wj, err := json.Marshal(workloads)
	if err != nil {
		return nil, err
	}
	env[idepool.EnvRoutes] = string(rj)
	env[idepool.EnvWorkloads] = string(wj)
	env[idepool.EnvWorkspaceDir] = filepath.Join(dir, "workspace")
	env[idepool.EnvStateDir] = filepath.Join(dir, "state")
	env[idepool.EnvAgentID] = spec.ID
	env[markerEnv] = dir
	out := make([]string, 0, len(env))
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("bad environment variable %q", k)
		}
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// RoutePortEnv is the variable that gives a route's port to the agent:
// IDEPOOL_PORT_ + the route name in upper case with '-' as '_'
// (IDEPOOL_PORT_CODE, IDEPOOL_PORT_MY_APP).
func RoutePortEnv(route string) string { return idepool.RoutePortEnv(route) }

// reap waits for an agent this Runtime started and records how it ended.
// It runs on after Close: someone has to collect the child.
func (r *Runtime) reap(c *container, cmd *exec.Cmd) {
	err := cmd.Wait()
	st, msg := idepool.StatusExited, ""
	if err != nil {
		st = idepool.StatusFailed
		msg = "agent " + exitText(cmd.ProcessState, err)
	}
	r.markEnded(c, st, msg)
}

func exitText(ps *os.ProcessState, err error) string {
	if ps == nil {
		return err.Error()
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exited with status %d", ps.ExitCode())
}

// markEnded records that a container's agent is gone, once.
func (r *Runtime) markEnded(c *container, st idepool.RuntimeStatus, msg string) {
	r.mu.Lock()
	select {
	case <-c.exited:
		r.mu.Unlock()
		return
	default:
	}
	close(c.exited)
	if c.gone {
		r.mu.Unlock()
		return
	}
	c.status, c.message = st, msg
	r.mu.Unlock()
	r.log.Info("agent ended", "id", c.id, "status", st, "message", msg)
	r.emit(c.id, st, false)
}

// monitor checks adopted agents (not our children, so no Wait) and caps logs.
func (r *Runtime) monitor(ctx context.Context) {
	defer r.monitorW.Done()
	t := time.NewTicker(r.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		var check []*container
		var ids []identity
		for _, c := range r.containers {
			if c.gone || c.broken {
				continue
			}
			check = append(check, c)
			ids = append(ids, c.meta.Process)
		}
		r.mu.Unlock()
		for i, c := range check {
			if !c.child && !isClosed(c.exited) && !leaderAlive(r.procs, ids[i]) {
				r.markEnded(c, idepool.StatusFailed, "agent process ended (adopted after a restart, exit status unknown)")
			}
			if err := capLog(filepath.Join(c.dir, "agent.log"), r.opts.MaxLogSize); err != nil {
				r.log.Warn("cap agent.log", "id", c.id, "err", err)
			}
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Remove stops the agent's process group (SIGTERM, StopGrace, SIGKILL) and
// deletes the container's directory. Removing what does not exist is nil.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if !idepool.ValidID(id) {
		return nil // no such container can exist; never join it into a path
	}
	c, err := r.getOrLoad(id)
	if err != nil || c == nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	r.mu.Lock()
	gone, pid := c.gone, c.meta.Process
	r.mu.Unlock()
	if gone {
		return nil
	}
	if err := r.stopGroup(ctx, c, pid); err != nil {
		return idepool.WrapError(idepool.EStopFailed, err, "stop container %s", id)
	}
	// What the group left: an agent never recorded (a crash before its pid
	// was), workloads in groups of their own whose agent was killed.
	if err := r.killProcs(ctx, r.markedOf(c.dir)); err != nil {
		return idepool.WrapError(idepool.EStopFailed, err, "stop processes of container %s", id)
	}
	r.mu.Lock()
	groups := c.meta.Cgroups
	r.mu.Unlock()
	if err := removeGroups(groups); err != nil {
		r.log.Warn("could not remove the container's cgroups", "id", id, "err", err)
	}
	c.closeLabelLog()
	if err := os.RemoveAll(c.dir); err != nil {
		return idepool.WrapError(idepool.ERuntime, err, "delete directory of %s", id)
	}
	r.mu.Lock()
	c.gone = true
	if r.containers[id] == c {
		delete(r.containers, id)
	}
	r.mu.Unlock()
	r.ports.release(id)
	r.log.Info("container removed", "id", id)
	r.emit(id, idepool.StatusExited, true)
	return nil
}

// stopGroup ends the agent's process group and waits until nothing of it
// runs.
func (r *Runtime) stopGroup(ctx context.Context, c *container, pid identity) error {
	alive := func() bool { return ownGroupAlive(r.procs, pid) || (c.child && !isClosed(c.exited)) }
	if !alive() {
		return nil
	}
	if err := signalGroup(r.procs, pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	if r.waitGone(ctx, r.opts.StopGrace, alive) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.log.Warn("agent ignored SIGTERM, killing", "id", c.id, "grace", r.opts.StopGrace)
	if err := signalGroup(r.procs, pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	if r.waitGone(ctx, killWait, alive) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("process group %d still runs after SIGKILL", pid.PID)
}

// waitGone polls alive until it is false, d passes or ctx ends.
func (r *Runtime) waitGone(ctx context.Context, d time.Duration, alive func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if !alive() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return !alive()
		case <-tick.C:
		}
	}
}

// getOrLoad returns the container called id, reading it from disk if this
// Runtime does not know it (a leftover of an earlier run). It returns nil
// when there is none, or it belongs to another deployment.
func (r *Runtime) getOrLoad(id string) (*container, error) {
	r.mu.Lock()
	c, ok := r.containers[id]
	r.mu.Unlock()
	if ok {
		return c, nil
	}
	dir := filepath.Join(r.dir, id)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, idepool.WrapError(idepool.ERuntime, err, "look up %s", id)
	}
	c = r.load(id)
	if c == nil {
		return nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.containers[id]; ok {
		return old, nil
	}
	r.containers[id] = c
	return c, nil
}

// load reads one container directory. It returns nil for another
// deployment's container.
func (r *Runtime) load(id string) *container {
	dir := filepath.Join(r.dir, id)
	c := &container{id: id, dir: dir, exited: make(chan struct{})}
	m, err := readMeta(dir)
	if err != nil {
		c.broken = true
		c.status = idepool.StatusFailed
		c.message = "broken container directory: " + err.Error()
		c.meta = meta{ID: id, Labels: map[string]string{idepool.LabelManaged: r.opts.Deployment, idepool.LabelID: id}}
		close(c.exited)
		return c
	}
	if m.Deployment != r.opts.Deployment || m.Labels[idepool.LabelManaged] != r.opts.Deployment || m.ID != id {
		return nil
	}
	c.meta = m
	if leaderAlive(r.procs, m.Process) {
		c.status = idepool.StatusRunning
	} else {
		c.status = idepool.StatusFailed
		c.message = "agent lost while idepool was down"
		if m.Process.PID == 0 {
			c.message = "agent never started (idepool stopped while creating it)"
		}
		close(c.exited)
	}
	return c
}

// Recover reads every container directory of this deployment, re-adopts the
// agents that still run and reports the others as failed. Directories of
// other deployments are left alone; broken ones are reported as failed so
// that the orchestrator removes them.
func (r *Runtime) Recover(ctx context.Context) ([]idepool.Instance, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, idepool.WrapError(idepool.ERuntime, err, "read %s", r.dir)
	}
	loaded := map[string]*container{}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, idepool.WrapError(idepool.ERuntime, err, "recover")
		}
		if !e.IsDir() || !idepool.ValidID(e.Name()) {
			continue
		}
		r.mu.Lock()
		_, known := r.containers[e.Name()]
		r.mu.Unlock()
		if known {
			continue
		}
		c := r.load(e.Name())
		if c == nil {
			continue
		}
		loaded[c.id] = c
	}
	r.sweep(ctx, loaded)
	for _, c := range loaded {
		r.mu.Lock()
		if _, known := r.containers[c.id]; !known {
			r.containers[c.id] = c
			r.ports.reserve(c.id, c.meta.Ports)
		}
		r.mu.Unlock()
		r.log.Info("container recovered", "id", c.id, "status", c.status, "pid", c.meta.Process.PID, "message", c.message)
	}
	return r.List(ctx)
}

// Inspect returns one container in any status.
func (r *Runtime) Inspect(ctx context.Context, id string) (idepool.Instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[id]
	if !ok || c.gone {
		return idepool.Instance{}, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	return r.instanceLocked(c), nil
}

// List returns every container of this deployment.
func (r *Runtime) List(ctx context.Context) ([]idepool.Instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]idepool.Instance, 0, len(r.containers))
	for _, c := range r.containers {
		if !c.gone {
			out = append(out, r.instanceLocked(c))
		}
	}
	return out, nil
}

func (r *Runtime) instanceLocked(c *container) idepool.Instance {
	eps := make(map[string]string, len(c.meta.Ports))
	for name, port := range c.meta.Ports {
		eps[name] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	return idepool.Instance{
		ID:        c.id,
		Status:    c.status,
		Labels:    maps.Clone(c.meta.Labels),
		Endpoints: eps,
		CreatedAt: c.meta.CreatedAt,
		Node:      r.node,
		Message:   c.message,
	}
}

// SetLabels merges labels into meta.json ("" deletes a key). Changing one of
// the runtime's own labels is refused with EInvalid and changes nothing. The
// agent is not disturbed.
func (r *Runtime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	for k := range labels {
		if idepool.IsRuntimeLabel(k) {
			return idepool.Errorf(idepool.EInvalid, "label %s is set by the runtime and cannot be changed", k)
		}
	}
	r.mu.Lock()
	c, ok := r.containers[id]
	r.mu.Unlock()
	if !ok {
		return idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	c.op.Lock()
	defer c.op.Unlock()
	r.mu.Lock()
	if c.gone {
		r.mu.Unlock()
		return idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	if c.broken {
		r.mu.Unlock()
		return idepool.Errorf(idepool.ERuntime, "container %s has a broken record; remove it", id)
	}
	m := c.meta
	r.mu.Unlock()
	m.Labels = maps.Clone(m.Labels)
	for k, v := range labels {
		if v == "" {
			delete(m.Labels, k)
		} else {
			m.Labels[k] = v
		}
	}
	err := c.appendLabelLog(m.Labels)
	if err == nil && c.labelLogSize > labelLogMax {
		// Fold the log into meta.json. Its last record already is m's
		// labels, so a crash before the truncation replays the same.
		if err = writeMeta(c.dir, m); err == nil {
			err = c.labelLog.Truncate(0)
			c.labelLogSize = 0
		}
	}
	if err != nil {
		c.closeLabelLog() // reopened by the next SetLabels
		return idepool.WrapError(idepool.ERuntime, err, "write labels of %s", id)
	}
	r.mu.Lock()
	c.meta = m
	st := c.status
	r.mu.Unlock()
	r.emit(id, st, false)
	return nil
}
