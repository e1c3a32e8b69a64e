package httpapi

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// fakeOrch is a pure-logic Orchestrator for handler tests.
type fakeOrch struct {
	mu         sync.Mutex
	now        time.Time
	containers map[string]idepool.Container
	profiles   []idepool.Profile
	targets    map[string]int
	startErr   error
	// neverReady makes WaitReady block until its context ends.
	neverReady bool
	lastStart  idepool.StartRequest
	starts     int  // Start calls
	failedOnce bool // a fails-once container failed
	// endpoint is where every route of a claimed container answers.
	endpoint   string
	touches    int
	lastFilter idepool.ContainerFilter
	warm       []string
}

var _ Orchestrator = (*fakeOrch)(nil)

func newFakeOrch(now time.Time) *fakeOrch {
	f := &fakeOrch{now: now, containers: map[string]idepool.Container{}, targets: map[string]int{"default": 2, "big": 0}}
	f.profiles = []idepool.Profile{
		{Name: "default", CPULimit: 2, MemoryLimit: 4 << 30, Routes: idepool.DefaultRoutes(), PoolTarget: 2},
		{Name: "big", CPULimit: 4, MemoryLimit: 8 << 30, Routes: append(idepool.DefaultRoutes(), idepool.Route{Name: "terminal", Port: 7681})},
	}
	for _, id := range []string{"warm0001", "warm0002"} {
		f.containers[id] = idepool.Container{ID: id, Profile: "default", State: idepool.StateWarm, CreatedAt: now}
		f.warm = append(f.warm, id)
	}
	return f
}

func (f *fakeOrch) Start(ctx context.Context, req idepool.StartRequest) (idepool.Claim, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastStart = req
	f.starts++
	if req.Workspace.Bucket == "panic-bucket" {
		panic("boom: secret internals")
	}
	if f.startErr != nil {
		return idepool.Claim{}, f.startErr
	}
	if req.Profile == "" {
		req.Profile = idepool.DefaultProfile
	}
	for _, c := range f.containers {
		if c.Workspace != nil && c.Workspace.Key() == req.Workspace.Key() && c.State.Live() {
			return idepool.Claim{Container: c, Kind: idepool.ClaimReused}, nil
		}
	}
	w := req.Workspace
	if req.Profile == idepool.DefaultProfile && len(f.warm) > 0 {
		id := f.warm[0]
		f.warm = f.warm[1:]
		c := f.containers[id]
		c.State, c.Workspace, c.UserID, c.Generation, c.PreWarmed, c.ClaimedAt = idepool.StateSyncing, &w, req.UserID, 1, true, f.now
		c.Endpoints = f.endpoints()
		f.containers[id] = c
		return idepool.Claim{Container: c, Kind: idepool.ClaimWarm}, nil
	}
	id := idepool.NewID()
	gen := int64(1)
	if f.failedOnce && w.Bucket == "fails-once" {
		gen = 2 // the second container of the workspace (fails-once fails generation 1)
	}
	c := idepool.Container{ID: id, Profile: req.Profile, State: idepool.StateCreating, Workspace: &w, UserID: req.UserID, Generation: gen, CreatedAt: f.now, Endpoints: f.endpoints()}
	f.containers[id] = c
	return idepool.Claim{Container: c, Kind: idepool.ClaimCold}, nil
}

func (f *fakeOrch) Get(ctx context.Context, id string) (idepool.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return c, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	return c, nil
}

func (f *fakeOrch) List(ctx context.Context, flt idepool.ContainerFilter) ([]idepool.Container, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastFilter = flt
	var all []idepool.Container
	for _, c := range f.containers {
		if len(flt.States) > 0 && !slices.Contains(flt.States, c.State) {
			continue
		}
		if flt.Profile != "" && c.Profile != flt.Profile {
			continue
		}
		all = append(all, c)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	total := len(all)
	lo := min(flt.Offset, total)
	hi := min(lo+flt.Limit, total)
	return all[lo:hi], total, nil
}

func (f *fakeOrch) Stop(ctx context.Context, id, reason string) (idepool.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return c, idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	delete(f.containers, id)
	c.State, c.StoppedAt, c.StopReason = idepool.StateStopped, f.now, reason
	return c, nil
}

func (f *fakeOrch) WaitReady(ctx context.Context, id string) (idepool.Container, error) {
	if f.neverReady {
		<-ctx.Done()
		return idepool.Container{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return c, idepool.Errorf(idepool.ENotFound, "gone")
	}
	// fails-to-start: every container of the workspace fails before it is
	// ready; fails-once: its first one does.
	if b := c.Workspace; b != nil && (b.Bucket == "fails-to-start" || b.Bucket == "fails-once" && c.Generation == 1) {
		c.State = idepool.StateFailed
		f.containers[id] = c
		if b.Bucket == "fails-once" {
			f.failedOnce = true
		}
		return c, idepool.Errorf(idepool.EStartFailed, "container failed to start")
	}
	c.State, c.ReadyAt = idepool.StateRunning, f.now
	f.containers[id] = c
	return c, nil
}

func (f *fakeOrch) Pools() []idepool.PoolStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []idepool.PoolStatus
	for _, p := range f.profiles {
		st := idepool.PoolStatus{Profile: p.Name, Target: f.targets[p.Name]}
		for _, c := range f.containers {
			if c.Profile != p.Name {
				continue
			}
			switch {
			case c.State == idepool.StateWarm:
				st.Warm++
			case c.State.Claimed():
				st.Claimed++
			case c.State == idepool.StateCreating || c.State == idepool.StateStarting:
				st.Starting++
			}
		}
		out = append(out, st)
	}
	return out
}

func (f *fakeOrch) SetTarget(ctx context.Context, profile string, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.targets[profile]; !ok {
		return idepool.Errorf(idepool.EUnknownProfile, "unknown profile %q", profile)
	}
	f.targets[profile] = n
	return nil
}

func (f *fakeOrch) Profiles() []idepool.Profile { return f.profiles }

func (f *fakeOrch) Profile(name string) (idepool.Profile, bool) {
	for _, p := range f.profiles {
		if p.Name == name {
			return p, true
		}
	}
	return idepool.Profile{}, false
}

// fakeURLs hands out "token" URLs like the router does.
type fakeURLs struct{}

func (u *fakeURLs) RouteURLs(c idepool.Container, p idepool.Profile) (map[string]string, error) {
	if c.ID == "" {
		return nil, errors.New("no id")
	}
	out := map[string]string{}
	for _, r := range p.Routes {
		out[r.Name] = "http://ide.test/" + r.Name + "/" + c.ID + "/?token=tok" + r.Name
	}
	return out, nil
}

func (u *fakeURLs) BaseURLs(c idepool.Container, p idepool.Profile) map[string]string {
	out := map[string]string{}
	for _, r := range p.Routes {
		out[r.Name] = "http://ide.test/" + r.Name + "/" + c.ID + "/"
	}
	return out
}

type fakeHealth struct{ rep HealthReport }

func (h fakeHealth) Health(context.Context) HealthReport { return h.rep }

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

func (f *fakeOrch) endpoints() map[string]string {
	if f.endpoint == "" {
		return nil
	}
	return map[string]string{"code": f.endpoint, "vnc": f.endpoint, "web": f.endpoint, "terminal": f.endpoint}
}

// Lookup and Touch make fakeOrch a proxy.Backend for the wiring test.
func (f *fakeOrch) Lookup(id string) (idepool.Container, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	return c, ok
}

func (f *fakeOrch) Touch(id string) {
	f.mu.Lock()
	f.touches++
	f.mu.Unlock()
}
