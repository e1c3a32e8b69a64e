package runtimetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// harness is one subtest's world: the runtime under test (replaced by
// Reopen), the ids created so they are removed at the end, and the options.
type harness struct {
	t    *testing.T
	o    *Options
	mu   sync.Mutex
	rt   idepool.Runtime
	ids  map[string]bool
	prof idepool.Profile
}

// newHarness makes a fresh runtime with the factory, recovers it (the
// contract calls Recover first) and checks it starts empty.
func newHarness(t *testing.T, o *Options, newRuntime func(t *testing.T) idepool.Runtime) *harness {
	t.Helper()
	h := &harness{t: t, o: o, ids: map[string]bool{}, prof: o.profile()}
	rt := newRuntime(t)
	if rt == nil {
		t.Fatal("newRuntime returned nil")
	}
	h.adopt(rt)
	if got := h.recover(rt); len(got) != 0 {
		t.Fatalf("Recover on a fresh runtime returned %d containers (%v); the factory must give an empty deployment", len(got), instIDs(got))
	}
	return h
}

// adopt makes rt the runtime the harness cleans up with. The cleanup is
// registered after rt was made, so it runs before any cleanup the factory
// registered (LIFO): removal happens while the runtime is still open.
func (h *harness) adopt(rt idepool.Runtime) {
	h.mu.Lock()
	h.rt = rt
	h.mu.Unlock()
	h.t.Cleanup(func() {
		h.mu.Lock()
		ids := slices.Sorted(maps.Keys(h.ids))
		cur := h.rt
		h.mu.Unlock()
		if cur != rt {
			return // a later runtime (Reopen) cleans up
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.o.timeout())
		defer cancel()
		for _, id := range ids {
			if err := rt.Remove(ctx, id); err != nil {
				h.t.Errorf("cleanup: Remove(%s): %v", id, err)
			}
		}
	})
}

func (h *harness) runtime() idepool.Runtime {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rt
}

func (h *harness) track(id string) {
	h.mu.Lock()
	h.ids[id] = true
	h.mu.Unlock()
}

// ctx is a context for one call: bounded by the suite's deadline and by
// the test's end.
func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(h.t.Context(), h.o.timeout())
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) recover(rt idepool.Runtime) []idepool.Instance {
	h.t.Helper()
	got, err := rt.Recover(h.ctx())
	if err != nil {
		h.t.Fatalf("Recover: %v", err)
	}
	return got
}

// spec returns a spec for a new id with the suite's env and labels.
func (h *harness) spec(labels map[string]string) idepool.ContainerSpec {
	id := newID()
	env := map[string]string{}
	maps.Copy(env, h.o.Env)
	env[idepool.EnvAgentID] = id
	env[idepool.EnvAgentToken] = randomHex(16)
	env[EnvMarker] = id
	l := map[string]string{}
	maps.Copy(l, labels)
	return idepool.ContainerSpec{ID: id, Profile: h.prof, Labels: l, Env: env}
}

// newID returns a fresh id; NewID's ids are unique enough that parallel
// runs of the suite on one backend never collide.
func newID() string { return idepool.NewID() }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// create creates a container from spec with the current runtime, tracks it
// for cleanup and checks what every successful Create returns.
func (h *harness) create(spec idepool.ContainerSpec) idepool.Instance {
	h.t.Helper()
	h.track(spec.ID)
	inst, err := h.runtime().Create(h.ctx(), spec)
	if err != nil {
		h.t.Fatalf("Create(%s): %v", spec.ID, err)
	}
	h.checkCreated(spec, inst)
	return inst
}

// createN creates n containers with caller label "n"=i.
func (h *harness) createN(n int) []idepool.Instance {
	h.t.Helper()
	out := make([]idepool.Instance, n)
	for i := range out {
		out[i] = h.create(h.spec(map[string]string{"conformance.n": fmt.Sprint(i)}))
	}
	return out
}

func (h *harness) checkCreated(spec idepool.ContainerSpec, inst idepool.Instance) {
	h.t.Helper()
	if inst.ID != spec.ID {
		h.t.Errorf("Create(%s) returned ID %q", spec.ID, inst.ID)
	}
	if inst.Status != idepool.StatusPending && inst.Status != idepool.StatusRunning {
		h.t.Errorf("Create(%s) returned status %q; want pending or running (Create must not wait, and a new container has not failed yet)", spec.ID, inst.Status)
	}
	h.checkLabels(h.runtime(), spec, inst)
}

// checkLabels checks the runtime's own labels and the caller's.
func (h *harness) checkLabels(rt idepool.Runtime, spec idepool.ContainerSpec, inst idepool.Instance) {
	h.t.Helper()
	l := inst.Labels
	if want := h.deployment(rt); want != "" && l[idepool.LabelManaged] != want {
		h.t.Errorf("%s: label %s = %q, want the deployment name %q", inst.ID, idepool.LabelManaged, l[idepool.LabelManaged], want)
	} else if l[idepool.LabelManaged] == "" {
		h.t.Errorf("%s: label %s is missing or empty", inst.ID, idepool.LabelManaged)
	}
	if l[idepool.LabelID] != spec.ID {
		h.t.Errorf("%s: label %s = %q, want %q", inst.ID, idepool.LabelID, l[idepool.LabelID], spec.ID)
	}
	if l[idepool.LabelProfile] != spec.Profile.Name {
		h.t.Errorf("%s: label %s = %q, want %q", inst.ID, idepool.LabelProfile, l[idepool.LabelProfile], spec.Profile.Name)
	}
	if _, err := time.Parse(time.RFC3339Nano, l[idepool.LabelCreated]); err != nil {
		h.t.Errorf("%s: label %s = %q is not RFC 3339: %v", inst.ID, idepool.LabelCreated, l[idepool.LabelCreated], err)
	}
	for k, v := range spec.Labels {
		if idepool.IsRuntimeLabel(k) {
			continue
		}
		if l[k] != v {
			h.t.Errorf("%s: caller label %s = %q, want %q", inst.ID, k, l[k], v)
		}
	}
}

func (h *harness) deployment(rt idepool.Runtime) string {
	if h.o.Deployment == nil {
		return ""
	}
	return h.o.Deployment(rt)
}

func (h *harness) inspect(rt idepool.Runtime, id string) idepool.Instance {
	h.t.Helper()
	inst, err := rt.Inspect(h.ctx(), id)
	if err != nil {
		h.t.Fatalf("Inspect(%s): %v", id, err)
	}
	if inst.ID != id {
		h.t.Fatalf("Inspect(%s) returned ID %q", id, inst.ID)
	}
	return inst
}

func (h *harness) list(rt idepool.Runtime) map[string]idepool.Instance {
	h.t.Helper()
	insts, err := rt.List(h.ctx())
	if err != nil {
		h.t.Fatalf("List: %v", err)
	}
	out := map[string]idepool.Instance{}
	for _, in := range insts {
		if _, dup := out[in.ID]; dup {
			h.t.Errorf("List returned %s twice", in.ID)
		}
		out[in.ID] = in
	}
	return out
}

// expectGone checks that id is not found by Inspect, absent from List and
// unknown to SetLabels.
func (h *harness) expectGone(rt idepool.Runtime, id string) {
	h.t.Helper()
	if _, err := rt.Inspect(h.ctx(), id); idepool.ErrorCode(err) != idepool.ENotFound {
		h.t.Errorf("Inspect(%s) of a removed or unknown container: err = %v (code %q), want code %s", id, err, idepool.ErrorCode(err), idepool.ENotFound)
	}
	if _, ok := h.list(rt)[id]; ok {
		h.t.Errorf("List still returns %s", id)
	}
}

// waitStatus polls Inspect until ok(status) or the deadline.
func (h *harness) waitStatus(rt idepool.Runtime, id, want string, ok func(idepool.RuntimeStatus) bool) idepool.Instance {
	h.t.Helper()
	deadline := time.Now().Add(h.o.timeout())
	var last idepool.Instance
	var lastErr error
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		ctx, cancel := context.WithTimeout(h.t.Context(), h.o.timeout())
		last, lastErr = rt.Inspect(ctx, id)
		cancel()
		if lastErr == nil && ok(last.Status) {
			return last
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(delay):
		case <-h.t.Context().Done():
			h.t.Fatalf("test ended waiting for %s to be %s", id, want)
		}
	}
	h.t.Fatalf("%s did not become %s within %v: last Inspect = %+v, err = %v", id, want, h.o.timeout(), last, lastErr)
	return last
}

func (h *harness) waitRunning(rt idepool.Runtime, id string) idepool.Instance {
	h.t.Helper()
	return h.waitStatus(rt, id, "running", func(s idepool.RuntimeStatus) bool {
		if s.Terminal() {
			h.t.Fatalf("%s became %s while waiting for it to run", id, s)
		}
		return s == idepool.StatusRunning
	})
}

func (h *harness) waitTerminal(rt idepool.Runtime, id string) idepool.Instance {
	h.t.Helper()
	return h.waitStatus(rt, id, "failed or exited", idepool.RuntimeStatus.Terminal)
}

func instIDs(insts []idepool.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID
	}
	slices.Sort(out)
	return out
}

// recorder collects a runtime's events until the test ends.
type recorder struct {
	mu      sync.Mutex
	evs     []idepool.RuntimeEvent
	changed chan struct{} // closed and replaced on every event
	done    chan struct{} // closed when the runtime closed the channel
}

// record subscribes to rt's events for the rest of the test and checks at
// the end that the runtime closes the channel once the context ends.
func (h *harness) record(rt idepool.Runtime) *recorder {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := rt.Events(ctx)
	if ch == nil {
		cancel()
		h.t.Fatal("Events returned a nil channel")
	}
	r := &recorder{changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range ch {
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	timeout := h.o.timeout()
	h.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(timeout):
			h.t.Errorf("Events did not close its channel within %v of its context ending", timeout)
		}
	})
	return r
}

// waitFor waits for an event matching ok, seen since the recorder started.
func (r *recorder) waitFor(h *harness, what string, ok func(idepool.RuntimeEvent) bool) idepool.RuntimeEvent {
	h.t.Helper()
	timer := time.NewTimer(h.o.timeout())
	defer timer.Stop()
	for {
		r.mu.Lock()
		for _, ev := range r.evs {
			if ok(ev) {
				r.mu.Unlock()
				return ev
			}
		}
		changed := r.changed
		n := len(r.evs)
		r.mu.Unlock()
		select {
		case <-changed:
		case <-r.done:
			h.t.Fatalf("Events channel closed before %s", what)
		case <-timer.C:
			h.t.Fatalf("no event for %s within %v (%d events seen: %v)", what, h.o.timeout(), n, r.snapshot())
		}
	}
}

func (r *recorder) snapshot() []idepool.RuntimeEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}
