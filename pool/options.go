package pool

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/idepool/idepool"
)

// Options configure a Manager. Runtime, Agents and Profiles are required.
type Options struct {
	Runtime idepool.Runtime
	Agents  Agents
	// Admitter is asked before every create; nil admits everything.
	Admitter Admitter
	Profiles []idepool.Profile
	// Deployment is the value of idepool.managed (information; the runtime
	// filters by it).
	Deployment string
	// AgentURL goes into every container's IDEPOOL_AGENT_URL.
	AgentURL string
	// AgentEnv is added to every container's environment: the agent's
	// settings (idepool.EnvOrphanTimeout, ...). No secrets.
	AgentEnv map[string]string
	// DefaultCredentials and S3Endpoint go into assignments when a start
	// brings no credentials of its own.
	DefaultCredentials idepool.Credentials
	S3Endpoint         string
	Events             idepool.EventSink
	Clock              idepool.Clock
	Logger             *slog.Logger
	// CreateTimeout: a container whose agent is not ready by then is failed
	// and removed (default 5 min).
	CreateTimeout time.Duration
	// FlushTimeout bounds the agent's final flush on stop (default 30 s).
	FlushTimeout time.Duration
	// AdoptGrace: recovered containers whose agent never says hello by then
	// are removed (default 2 min).
	AdoptGrace time.Duration
	// ReconcileInterval is Run's ticker (default 10 s).
	ReconcileInterval time.Duration
	// AssignTimeout bounds one assignment's delivery (default 15 s).
	AssignTimeout time.Duration
	// RouteGate, when set, must return nil before a ready unclaimed
	// container joins the pool: an external router (Traefik) must route it
	// first, so a claim never waits for the router's refresh. It is retried
	// with backoff until CreateTimeout.
	RouteGate func(ctx context.Context, c idepool.Container) error
	// HoldLabelWrites is a fault point for tests: claims' labels are
	// queued but never written, as if the orchestrator crashed right after
	// answering. A restart must adopt those claims from their agents.
	HoldLabelWrites bool
	// AdoptWait: after Recover, starts wait (at most this long, default
	// 10 s) until every recovered unclaimed container's agent has said
	// hello, since one may hold a claim its labels do not record yet;
	// serving its workspace before would give it a second container.
	AdoptWait time.Duration
	// PaceQuiet and PaceMax put a burst of warm claims first: the work
	// they cause — refilling the pool — starts once no claim came for
	// PaceQuiet (default 50 ms), or PaceMax (default 500 ms) after the
	// first claim at the latest. A class claiming 200 containers at once
	// gets its answers first; the creates (seconds each) follow a moment
	// later instead of competing with the claims for the host.
	// Reconciles for other reasons wait for the same pause.
	PaceQuiet time.Duration
	PaceMax   time.Duration
	// RuntimeTimeout bounds one runtime call (default 2 min).
	RuntimeTimeout time.Duration
	// NodeCheckInterval: while an agent's connection is down on a node the
	// engine still calls up, the nodes are observed this often (default
	// 1 s), so a lost node is acted on as soon as the engine says so
	// rather than at the next ReconcileInterval.
	NodeCheckInterval time.Duration
	// NodeSilence: a node on which every agent has been gone this long,
	// while agents on other nodes answer, is judged lost before its
	// engine says so (MarkSilentNodes; default 5 s; negative: wait for
	// the engine).
	NodeSilence time.Duration
	// ImageRetry: a node that lacked a profile's image is avoided this long
	// (default 5 min); then it is tried again (the image may be loaded).
	ImageRetry time.Duration
	// CreateConcurrency bounds parallel creates and removes of one
	// reconcile, per node that takes containers (default 8).
	CreateConcurrency int
	// History is how many stopped containers Get still answers for
	// (default 1000).
	History int

	// Queue configures the admission queue (issue 8); off by default.
	Queue QueueOptions
	// Policies are per-profile schedules, adaptive bounds and limits,
	// by profile name.
	Policies map[string]Policy
	// DefaultCreateDuration is assumed for a create until one was measured
	// (default 30 s); lead times and adaptive targets use it.
	DefaultCreateDuration time.Duration
	// ClaimRateWindow is the time constant of the smoothed claim rate
	// (default 2 min).
	ClaimRateWindow time.Duration
}

// Policy is one profile's classroom settings.
type Policy struct {
	// Schedules raise the target around windows.
	Schedules []Window `json:"schedules,omitempty"`
	// Adaptive, when set, replaces the base target by a demand-following
	// one.
	Adaptive *Adaptive `json:"adaptive,omitempty"`
	// MaxContainers caps the profile's live containers (warm, starting and
	// claimed); 0 means no cap.
	MaxContainers int `json:"maxContainers,omitempty"`
	// MaxPerUser caps one user's live claimed containers of the profile;
	// 0 means no cap. Starts without a user id are not counted.
	MaxPerUser int `json:"maxPerUser,omitempty"`
}

// Validate checks a policy.
func (p Policy) Validate() error {
	for _, w := range p.Schedules {
		if err := w.Validate(); err != nil {
			return err
		}
	}
	if p.Adaptive != nil {
		if err := p.Adaptive.Validate(); err != nil {
			return err
		}
	}
	if p.MaxContainers < 0 || p.MaxPerUser < 0 {
		return idepool.Errorf(idepool.EInvalid, "limits must not be negative")
	}
	return nil
}

func clonePolicy(p Policy) Policy {
	p.Schedules = slices.Clone(p.Schedules)
	for i := range p.Schedules {
		p.Schedules[i].Days = slices.Clone(p.Schedules[i].Days)
	}
	if p.Adaptive != nil {
		a := *p.Adaptive
		p.Adaptive = &a
	}
	return p
}

// withDefaults checks the required options and fills the defaults.
func (o *Options) withDefaults() error {
	if o.Runtime == nil {
		return idepool.Errorf(idepool.EMisconfigured, "pool: a runtime is required")
	}
	if o.Agents == nil {
		return idepool.Errorf(idepool.EMisconfigured, "pool: agents are required")
	}
	if len(o.Profiles) == 0 {
		return idepool.Errorf(idepool.EMisconfigured, "pool: at least one profile is required")
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Events == nil {
		o.Events = idepool.EventSinkFunc(func(idepool.Event) {})
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.CreateTimeout, 5*time.Minute)
	def(&o.FlushTimeout, 30*time.Second)
	def(&o.AdoptGrace, 2*time.Minute)
	def(&o.ReconcileInterval, 10*time.Second)
	def(&o.AssignTimeout, 15*time.Second)
	def(&o.AdoptWait, 10*time.Second)
	def(&o.PaceQuiet, 50*time.Millisecond)
	def(&o.PaceMax, 500*time.Millisecond)
	def(&o.RuntimeTimeout, 2*time.Minute)
	def(&o.NodeCheckInterval, time.Second)
	if o.NodeSilence == 0 {
		o.NodeSilence = 5 * time.Second // negative stays: off
	}
	def(&o.ImageRetry, 5*time.Minute)
	if o.CreateConcurrency <= 0 {
		o.CreateConcurrency = 8
	}
	if o.History <= 0 {
		o.History = 1000
	}
	def(&o.DefaultCreateDuration, 30*time.Second)
	def(&o.ClaimRateWindow, 2*time.Minute)
	o.Queue.defaults()
	return nil
}
