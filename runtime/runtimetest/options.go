// Package runtimetest is the conformance suite every idepool.Runtime passes.
//
// A runtime's package test calls Run with a factory and the hooks it can
// offer:
//
//	func TestConformance(t *testing.T) {
//		runtimetest.Run(t, newRuntime,
//			runtimetest.WithKill(kill),
//			runtimetest.WithReopen(reopen),
//			runtimetest.WithReadEnv(readEnv))
//	}
//
// Each call of the factory must return a runtime over an empty deployment
// (List returns nothing after Recover); every subtest starts a fresh one and
// removes what it created in t.Cleanup. Checks that need a hook the runtime
// does not give are skipped with a message naming the option.
package runtimetest

import (
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// Options are the hooks a runtime's test may give the suite. Every field is
// optional.
type Options struct {
	// ReadEnv returns the environment the container really got, so the
	// suite can check that spec.Env reached it. It is called once the
	// container runs. Nil skips the check.
	ReadEnv func(t *testing.T, rt idepool.Runtime, inst idepool.Instance) map[string]string
	// Kill makes a container die from outside, as a crash would (process:
	// kill its pid; swarm: kill the task's container; fake: its Kill knob).
	// The runtime must then report StatusFailed or StatusExited and send an
	// event. Nil skips the death checks.
	Kill func(t *testing.T, rt idepool.Runtime, id string)
	// FailNextCreate makes the runtime's next Create fail (fake: FailNext;
	// a real runtime: whatever makes its backend refuse once). The suite
	// then checks that Remove leaves nothing of it. Nil skips the check.
	FailNextCreate func(t *testing.T, rt idepool.Runtime)
	// Reopen returns a NEW runtime over the same backend and deployment as
	// old, as after an orchestrator restart. The suite calls Recover on it
	// first. Nil skips the recovery checks.
	Reopen func(t *testing.T, old idepool.Runtime) idepool.Runtime
	// OtherDeployment returns a runtime of ANOTHER deployment name on the
	// same backend as rt, for the isolation checks. Nil skips them.
	OtherDeployment func(t *testing.T, rt idepool.Runtime) idepool.Runtime
	// Deployment returns the deployment name rt must put in LabelManaged.
	// Nil: the suite only checks that the value is not empty and the same
	// on every container of one runtime.
	Deployment func(rt idepool.Runtime) string
	// Profile is put in every spec; zero means DefaultProfile(). A runtime
	// that needs a real image (swarm) sets one here.
	Profile idepool.Profile
	// Env is added to every spec's Env (for example an IDEPOOL_AGENT_URL
	// the test serves). The suite adds EnvAgentID, EnvAgentToken and a
	// marker variable of its own.
	Env map[string]string
	// TimeoutScale multiplies every deadline (base 15s); Swarm wants 4 or
	// more. Zero or less means 1.
	TimeoutScale float64
	// Concurrency is how many goroutines the concurrency checks use;
	// zero means 8.
	Concurrency int
}

// Option sets one of the Options.
type Option func(*Options)

// WithReadEnv sets Options.ReadEnv.
func WithReadEnv(f func(t *testing.T, rt idepool.Runtime, inst idepool.Instance) map[string]string) Option {
	return func(o *Options) { o.ReadEnv = f }
}

// WithKill sets Options.Kill.
func WithKill(f func(t *testing.T, rt idepool.Runtime, id string)) Option {
	return func(o *Options) { o.Kill = f }
}

// WithFailNextCreate sets Options.FailNextCreate.
func WithFailNextCreate(f func(t *testing.T, rt idepool.Runtime)) Option {
	return func(o *Options) { o.FailNextCreate = f }
}

// WithReopen sets Options.Reopen.
func WithReopen(f func(t *testing.T, old idepool.Runtime) idepool.Runtime) Option {
	return func(o *Options) { o.Reopen = f }
}

// WithOtherDeployment sets Options.OtherDeployment.
func WithOtherDeployment(f func(t *testing.T, rt idepool.Runtime) idepool.Runtime) Option {
	return func(o *Options) { o.OtherDeployment = f }
}

// WithDeployment sets Options.Deployment.
func WithDeployment(f func(rt idepool.Runtime) string) Option {
	return func(o *Options) { o.Deployment = f }
}

// WithProfile sets Options.Profile.
func WithProfile(p idepool.Profile) Option {
	return func(o *Options) { o.Profile = p }
}

// WithEnv sets Options.Env.
func WithEnv(env map[string]string) Option {
	return func(o *Options) { o.Env = env }
}

// WithTimeoutScale sets Options.TimeoutScale.
func WithTimeoutScale(f float64) Option {
	return func(o *Options) { o.TimeoutScale = f }
}

// WithConcurrency sets Options.Concurrency.
func WithConcurrency(n int) Option {
	return func(o *Options) { o.Concurrency = n }
}

// DefaultProfile is the profile the suite uses when Options.Profile is
// zero: the default routes, small limits, no workloads (the placeholder).
func DefaultProfile() idepool.Profile {
	return idepool.Profile{
		Name:        "conformance",
		Image:       "idepool-conformance",
		CPULimit:    0.25,
		MemoryLimit: 128 << 20,
		Routes:      idepool.DefaultRoutes(),
	}
}

// baseTimeout is the deadline of one wait at TimeoutScale 1: generous,
// because the suite runs on a shared, loaded machine; no check depends on
// speed.
const baseTimeout = 15 * time.Second

// EnvMarker is a variable the suite puts in every spec's Env, with the
// container's id as value, so ReadEnv checks see a value no runtime
// invents.
const EnvMarker = "IDEPOOL_CONFORMANCE_MARKER"

func (o *Options) timeout() time.Duration {
	s := o.TimeoutScale
	if s <= 0 {
		s = 1
	}
	return time.Duration(float64(baseTimeout) * s)
}

func (o *Options) concurrency() int {
	if o.Concurrency <= 0 {
		return 8
	}
	return o.Concurrency
}

func (o *Options) profile() idepool.Profile {
	if o.Profile.Name == "" {
		return DefaultProfile()
	}
	return o.Profile
}
