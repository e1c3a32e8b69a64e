// Package fake is an in-memory idepool.Runtime for unit tests and the
// pool's race tests. Its "containers" are records with a status and timers:
// it runs nothing and simulates no agent.
//
// Knobs (Config and methods) inject latency, failed creates (with or
// without a leftover), crashes and kills. Several Runtime values may share
// one Backend to simulate an orchestrator restart (Recover on a new Runtime
// over the same Backend) or two deployments on one engine.
package fake

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// DefaultDeployment is the deployment name when Config.Deployment is empty.
const DefaultDeployment = "idepool"

// Config sets up a Runtime. The zero value is a working runtime: no
// latency, no failures, containers running as soon as created.
type Config struct {
	// Deployment is the value of LabelManaged on this runtime's containers;
	// "" means DefaultDeployment.
	Deployment string
	// Backend is the world the containers live in; nil means a new private
	// one.
	Backend *Backend
	// Seed makes the random choices (jitter, FailureRate) repeatable.
	Seed uint64

	// CreateLatency (plus a uniform random part below CreateJitter) is how
	// long Create takes before the container exists.
	CreateLatency time.Duration
	CreateJitter  time.Duration
	// StartLatency is how long a container stays pending before it runs;
	// zero means Create returns it already running.
	StartLatency time.Duration
	// RemoveLatency is how long Remove takes before the container is gone.
	RemoveLatency time.Duration

	// BeforeCreate, if set, is called by every Create after its argument
	// checks and before its latency: a test can block there (to hold
	// creates in flight), watch specs, or fail chosen creates. An error it
	// returns fails the Create with nothing left; its idepool code is kept
	// (ERuntime otherwise).
	BeforeCreate func(ctx context.Context, spec idepool.ContainerSpec) error

	// FailureRate is the probability (0..1) that a Create fails.
	FailureRate float64
	// LeaveLeftoverOnFailure makes a failed Create leave a failed container
	// behind (as a runtime that cannot clean up its partial work does),
	// which Remove deletes. Otherwise a failed Create leaves nothing.
	LeaveLeftoverOnFailure bool
	// CrashAfter makes every container fail this long after it starts
	// running; zero means never (see also CrashNext).
	CrashAfter time.Duration

	// Endpoints returns a new container's endpoints; nil means
	// "<id>.fake:<port>" for every route of the profile.
	Endpoints func(spec idepool.ContainerSpec) map[string]string
	// Node is reported as Instance.Node; "" means "fake".
	Node string
	// EventBuffer is each Events subscriber's buffer; events that do not
	// fit are dropped (the contract allows it). Zero means 64.
	EventBuffer int
	// Capabilities is what Capabilities reports; nil means a runtime on
	// this machine's network, as the process runtime (its agents, in
	// tests, dial the orchestrator on loopback).
	Capabilities *idepool.Capabilities
}

// Runtime is the fake idepool.Runtime. It is safe for concurrent use.
type Runtime struct {
	cfg Config
	be  *Backend

	mu             sync.Mutex
	rand           *rand.Rand
	failNext       int
	crashNext      int
	failRemoveNext int
	creates        int
	removes        int
	createFailures int
}

var _ idepool.Runtime = (*Runtime)(nil)

// New returns a fake runtime.
func New(cfg Config) *Runtime {
	if cfg.Deployment == "" {
		cfg.Deployment = DefaultDeployment
	}
	if cfg.Node == "" {
		cfg.Node = "fake"
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = 64
	}
	be := cfg.Backend
	if be == nil {
		be = NewBackend()
	}
	return &Runtime{cfg: cfg, be: be, rand: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
}

// Name returns "fake".
func (r *Runtime) Name() string { return "fake" }

// Capabilities returns Config.Capabilities (nil: HostNetwork only).
func (r *Runtime) Capabilities() idepool.Capabilities {
	if c := r.cfg.Capabilities; c != nil {
		return *c
	}
	return idepool.Capabilities{HostNetwork: true}
}

// Deployment returns the runtime's deployment name.
func (r *Runtime) Deployment() string { return r.cfg.Deployment }

// Backend returns the backend the runtime's containers live in; give it to
// New (with the same Deployment) to simulate a restart.
func (r *Runtime) Backend() *Backend { return r.be }

// Config returns the runtime's configuration, defaults applied.
func (r *Runtime) Config() Config { return r.cfg }

// FailNext makes the next n Creates fail (after the EExists check).
func (r *Runtime) FailNext(n int) {
	r.mu.Lock()
	r.failNext = n
	r.mu.Unlock()
}

// CrashNext makes the next n containers created fail once they run (after
// CrashAfter, or at once if it is zero).
func (r *Runtime) CrashNext(n int) {
	r.mu.Lock()
	r.crashNext = n
	r.mu.Unlock()
}

// FailRemoveNext makes the next n Removes fail, leaving the container as it
// was.
func (r *Runtime) FailRemoveNext(n int) {
	r.mu.Lock()
	r.failRemoveNext = n
	r.mu.Unlock()
}

// Creates returns how many times Create was called.
func (r *Runtime) Creates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.creates
}

// Removes returns how many times Remove was called.
func (r *Runtime) Removes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removes
}

// CreateFailures returns how many Creates failed by injection (FailNext,
// FailureRate, BeforeCreate).
func (r *Runtime) CreateFailures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.createFailures
}

// Kill makes one of this deployment's containers fail as if killed from
// outside. A terminal container stays as it is. Unknown: ENotFound.
func (r *Runtime) Kill(id string) error {
	return r.be.end(r.cfg.Deployment, id, idepool.StatusFailed, "killed")
}

// Exit makes one of this deployment's containers end by itself with
// success (StatusExited).
func (r *Runtime) Exit(id string) error {
	return r.be.end(r.cfg.Deployment, id, idepool.StatusExited, "exited")
}

// Env returns the environment the container was created with.
func (r *Runtime) Env(id string) (map[string]string, bool) {
	return r.be.env(r.cfg.Deployment, id)
}

// Recover returns the deployment's containers; the fake has nothing to
// re-attach (the Backend keeps running them).
func (r *Runtime) Recover(ctx context.Context) ([]idepool.Instance, error) {
	return r.List(ctx)
}

// Create makes a container; see the knobs in Config.
func (r *Runtime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	if err := ctx.Err(); err != nil {
		return idepool.Instance{}, ctxError(err, "create %s", spec.ID)
	}
	if !idepool.ValidID(spec.ID) {
		return idepool.Instance{}, idepool.Errorf(idepool.EInvalid, "fake: create: invalid id %q", spec.ID)
	}
	if spec.Profile.Name == "" {
		return idepool.Instance{}, idepool.Errorf(idepool.EInvalid, "fake: create %s: no profile", spec.ID)
	}
	r.mu.Lock()
	r.creates++
	latency := r.cfg.CreateLatency
	if r.cfg.CreateJitter > 0 {
		latency += time.Duration(r.rand.Int64N(int64(r.cfg.CreateJitter)))
	}
	r.mu.Unlock()
	if r.cfg.BeforeCreate != nil {
		if err := r.cfg.BeforeCreate(ctx, spec); err != nil {
			r.mu.Lock()
			r.createFailures++
			r.mu.Unlock()
			code := idepool.ErrorCode(err)
			if code == idepool.EInternal {
				code = idepool.ERuntime
			}
			return idepool.Instance{}, idepool.WrapError(code, err, "fake: create %s", spec.ID)
		}
	}
	if err := r.be.sleep(ctx, latency); err != nil {
		return idepool.Instance{}, ctxError(err, "create %s", spec.ID)
	}

	labels := make(map[string]string, len(spec.Labels)+4)
	maps.Copy(labels, spec.Labels)
	labels[idepool.LabelManaged] = r.cfg.Deployment
	labels[idepool.LabelID] = spec.ID
	labels[idepool.LabelProfile] = spec.Profile.Name
	var endpoints map[string]string
	if r.cfg.Endpoints != nil {
		endpoints = maps.Clone(r.cfg.Endpoints(spec))
	} else {
		endpoints = make(map[string]string, len(spec.Profile.Routes))
		for _, rt := range spec.Profile.Routes {
			endpoints[rt.Name] = fmt.Sprintf("%s.fake:%d", spec.ID, rt.Port)
		}
	}
	c := &container{
		id:         spec.ID,
		deployment: r.cfg.Deployment,
		labels:     labels,
		env:        maps.Clone(spec.Env),
		endpoints:  endpoints,
		node:       r.cfg.Node,
	}

	b := r.be
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.containers[spec.ID]; ok {
		// Checked before any failure injection so that an existing
		// container is never replaced by a leftover.
		return idepool.Instance{}, idepool.Errorf(idepool.EExists, "fake: container %s already exists", spec.ID)
	}
	c.created = time.Now().UTC()
	labels[idepool.LabelCreated] = c.created.Format(time.RFC3339Nano)

	if r.injectCreateFailure() {
		err := idepool.Errorf(idepool.ERuntime, "fake: create %s: injected failure", spec.ID)
		if r.cfg.LeaveLeftoverOnFailure {
			c.status = idepool.StatusFailed
			c.message = "fake: injected create failure (leftover)"
			b.containers[c.id] = c
			b.emitLocked(c, false)
			err.Message += " (leftover left behind)"
		}
		return idepool.Instance{}, err
	}

	crash := r.cfg.CrashAfter
	r.mu.Lock()
	if r.crashNext > 0 {
		r.crashNext--
		if crash == 0 {
			crash = -1 // at once
		}
	}
	r.mu.Unlock()

	b.containers[c.id] = c
	if r.cfg.StartLatency > 0 {
		c.status = idepool.StatusPending
		c.schedule(b, r.cfg.StartLatency, func() {
			c.status = idepool.StatusRunning
			b.emitLocked(c, false)
			c.scheduleCrash(b, crash)
		})
	} else {
		c.status = idepool.StatusRunning
		c.scheduleCrash(b, crash)
	}
	b.emitLocked(c, false)
	return c.instance(), nil
}

// injectCreateFailure decides whether this Create fails.
func (r *Runtime) injectCreateFailure() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	fail := false
	if r.failNext > 0 {
		r.failNext--
		fail = true
	} else if r.cfg.FailureRate > 0 && r.rand.Float64() < r.cfg.FailureRate {
		fail = true
	}
	if fail {
		r.createFailures++
	}
	return fail
}

// Remove deletes a container of this deployment; idempotent.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return ctxError(err, "remove %s", id)
	}
	r.mu.Lock()
	r.removes++
	fail := r.failRemoveNext > 0
	if fail {
		r.failRemoveNext--
	}
	r.mu.Unlock()
	if fail {
		return idepool.Errorf(idepool.ERuntime, "fake: remove %s: injected failure", id)
	}
	if err := r.be.sleep(ctx, r.cfg.RemoveLatency); err != nil {
		return ctxError(err, "remove %s", id)
	}
	b := r.be
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.containers[id]
	if !ok || c.deployment != r.cfg.Deployment {
		return nil
	}
	c.stopTimers()
	delete(b.containers, id)
	b.emitLocked(c, true)
	return nil
}

// Inspect returns one container of this deployment.
func (r *Runtime) Inspect(ctx context.Context, id string) (idepool.Instance, error) {
	if err := ctx.Err(); err != nil {
		return idepool.Instance{}, ctxError(err, "inspect %s", id)
	}
	b := r.be
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.containers[id]
	if !ok || c.deployment != r.cfg.Deployment {
		return idepool.Instance{}, idepool.Errorf(idepool.ENotFound, "fake: container %s not found", id)
	}
	return c.instance(), nil
}

// List returns this deployment's containers, sorted by id.
func (r *Runtime) List(ctx context.Context) ([]idepool.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err, "list")
	}
	b := r.be
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []idepool.Instance{}
	for _, id := range slices.Sorted(maps.Keys(b.containers)) {
		if c := b.containers[id]; c.deployment == r.cfg.Deployment {
			out = append(out, c.instance())
		}
	}
	return out, nil
}

// SetLabels merges labels; "" deletes a key. Any of the runtime's own
// labels in labels is refused with EInvalid and nothing changes.
func (r *Runtime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	if err := ctx.Err(); err != nil {
		return ctxError(err, "set labels of %s", id)
	}
	for k := range labels {
		if idepool.IsRuntimeLabel(k) {
			return idepool.Errorf(idepool.EInvalid, "fake: set labels of %s: label %s belongs to the runtime", id, k)
		}
	}
	b := r.be
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.containers[id]
	if !ok || c.deployment != r.cfg.Deployment {
		return idepool.Errorf(idepool.ENotFound, "fake: container %s not found", id)
	}
	for k, v := range labels {
		if v == "" {
			delete(c.labels, k)
		} else {
			c.labels[k] = v
		}
	}
	return nil
}

// Events streams this deployment's events until ctx ends. A subscriber
// whose buffer is full loses events.
func (r *Runtime) Events(ctx context.Context) <-chan idepool.RuntimeEvent {
	return r.be.subscribe(ctx, r.cfg.Deployment, r.cfg.EventBuffer)
}

// ctxError codes a context error: a deadline is ETimeout, a cancellation
// EClientClosed.
func ctxError(err error, format string, args ...any) error {
	code := idepool.EClientClosed
	if errors.Is(err, context.DeadlineExceeded) {
		code = idepool.ETimeout
	}
	return idepool.WrapError(code, err, "fake: "+format, args...)
}
