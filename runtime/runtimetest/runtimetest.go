package runtimetest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/idepool/idepool"
)

// Run runs the conformance suite against the runtimes newRuntime makes, one
// fresh runtime per subtest. Subtests run one after another (the machine is
// shared; Swarm is slow); each cleans up what it created.
func Run(t *testing.T, newRuntime func(t *testing.T) idepool.Runtime, opts ...Option) {
	o := &Options{}
	for _, opt := range opts {
		opt(o)
	}
	s := &suite{o: o, newRuntime: newRuntime}
	for _, c := range s.cases() {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, newHarness(t, o, newRuntime))
		})
	}
}

type suite struct {
	o          *Options
	newRuntime func(t *testing.T) idepool.Runtime
}

type testCase struct {
	name string
	run  func(t *testing.T, h *harness)
}

func (s *suite) cases() []testCase {
	return []testCase{
		{"Name", s.testName},
		{"Capabilities", s.testCapabilities},
		{"Create", s.testCreate},
		{"CreateCopiesMaps", s.testCreateCopiesMaps},
		{"CreateOwnLabelsWin", s.testOwnLabelsWin},
		{"CreateExisting", s.testCreateExisting},
		{"CreateSameIDConcurrently", s.testCreateSameIDConcurrently},
		{"CreateCancelledContext", s.testCreateCancelled},
		{"CreateFailedThenRemove", s.testCreateFailed},
		{"Env", s.testEnv},
		{"BecomesRunning", s.testRunning},
		{"InspectUnknown", s.testInspectUnknown},
		{"List", s.testList},
		{"SetLabels", s.testSetLabels},
		{"SetLabelsOwnRefused", s.testSetLabelsOwn},
		{"SetLabelsUnknown", s.testSetLabelsUnknown},
		{"Remove", s.testRemove},
		{"RemovePending", s.testRemovePending},
		{"EventsCreateRunRemove", s.testEvents},
		{"EventsCloseOnCancel", s.testEventsClose},
		{"Death", s.testDeath},
		{"Recover", s.testRecover},
		{"DeploymentIsolation", s.testIsolation},
		{"ConcurrentCreateRemove", s.testConcurrent},
	}
}

// Name: a runtime names itself.
func (s *suite) testName(t *testing.T, h *harness) {
	if h.runtime().Name() == "" {
		t.Error("Name() is empty")
	}
}

// Create returns at once with the labels set; Inspect and List agree.
func (s *suite) testCreate(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(map[string]string{"conformance.caller": "kept", idepool.LabelTokenHash: "abc123"})
	inst := h.create(spec)
	if inst.CreatedAt.IsZero() {
		t.Error("Create returned a zero CreatedAt")
	}
	got := h.inspect(rt, spec.ID)
	h.checkLabels(rt, spec, got)
	if !maps.Equal(got.Labels, inst.Labels) {
		t.Errorf("Inspect labels %v differ from Create's %v", got.Labels, inst.Labels)
	}
	if got.CreatedAt.IsZero() {
		t.Error("Inspect returned a zero CreatedAt")
	}
	l, ok := h.list(rt)[spec.ID]
	if !ok {
		t.Fatalf("List does not return %s", spec.ID)
	}
	h.checkLabels(rt, spec, l)
}

// The runtime keeps its own copies: changing the caller's maps after Create,
// or the returned ones, changes nothing recorded.
func (s *suite) testCreateCopiesMaps(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(map[string]string{"conformance.k": "v"})
	inst := h.create(spec)
	want := maps.Clone(inst.Labels)
	spec.Labels["conformance.k"] = "changed"
	spec.Labels["conformance.added"] = "x"
	inst.Labels["conformance.k"] = "changed-too"
	got := h.inspect(rt, spec.ID)
	if !maps.Equal(got.Labels, want) {
		t.Errorf("labels changed through the caller's maps: got %v, want %v", got.Labels, want)
	}
	got.Labels["conformance.k"] = "changed-again"
	if again := h.inspect(rt, spec.ID); !maps.Equal(again.Labels, want) {
		t.Errorf("labels changed through Inspect's map: got %v, want %v", again.Labels, want)
	}
}

// The runtime's own labels cannot be forged through spec.Labels: Create
// either refuses (EInvalid) or records its own values.
func (s *suite) testOwnLabelsWin(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(map[string]string{
		idepool.LabelManaged: "someone-else",
		idepool.LabelID:      "not-the-id",
		idepool.LabelProfile: "not-the-profile",
		idepool.LabelCreated: "yesterday",
	})
	h.track(spec.ID)
	inst, err := rt.Create(h.ctx(), spec)
	if err != nil {
		if idepool.ErrorCode(err) != idepool.EInvalid {
			t.Fatalf("Create with forged own labels: %v (code %q); want success with the runtime's values or code %s", err, idepool.ErrorCode(err), idepool.EInvalid)
		}
		if err := rt.Remove(h.ctx(), spec.ID); err != nil {
			t.Fatalf("Remove after a refused Create: %v", err)
		}
		h.expectGone(rt, spec.ID)
		return
	}
	h.checkCreated(spec, inst)
	h.checkLabels(rt, spec, h.inspect(rt, spec.ID))
}

// Create with an existing id: EExists, the first untouched.
func (s *suite) testCreateExisting(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(map[string]string{"conformance.first": "yes"})
	h.create(spec)
	before := h.inspect(rt, spec.ID)

	again := spec
	again.Labels = map[string]string{"conformance.second": "yes"}
	again.Env = maps.Clone(spec.Env)
	again.Env[EnvMarker] = "second"
	_, err := rt.Create(h.ctx(), again)
	if idepool.ErrorCode(err) != idepool.EExists {
		t.Fatalf("second Create(%s): err = %v (code %q), want code %s", spec.ID, err, idepool.ErrorCode(err), idepool.EExists)
	}
	after := h.inspect(rt, spec.ID)
	if !maps.Equal(after.Labels, before.Labels) {
		t.Errorf("labels changed by the refused Create: %v, were %v", after.Labels, before.Labels)
	}
	if !after.CreatedAt.Equal(before.CreatedAt) {
		t.Errorf("CreatedAt changed by the refused Create: %v, was %v", after.CreatedAt, before.CreatedAt)
	}
	if after.Status.Terminal() {
		t.Errorf("the first container is %s after the refused Create", after.Status)
	}
	n := 0
	for id := range h.list(rt) {
		if id == spec.ID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("List returns %s %d times, want once", spec.ID, n)
	}
	if s.o.ReadEnv != nil {
		running := h.waitRunning(rt, spec.ID)
		if got := s.o.ReadEnv(t, rt, running)[EnvMarker]; got != spec.ID {
			t.Errorf("container env %s = %q after the refused Create, want the first spec's %q", EnvMarker, got, spec.ID)
		}
	}
}

// Concurrent Creates of one id: exactly one wins, the others get EExists.
func (s *suite) testCreateSameIDConcurrently(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(nil)
	h.track(spec.ID)
	n := s.o.concurrency()
	errs := make([]error, n)
	var wg sync.WaitGroup
	ctx := h.ctx()
	for i := range n {
		wg.Go(func() {
			sp := spec
			sp.Labels = map[string]string{"conformance.n": strconv.Itoa(i)}
			_, errs[i] = rt.Create(ctx, sp)
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case idepool.ErrorCode(err) != idepool.EExists:
			t.Errorf("Create #%d: %v (code %q), want nil or code %s", i, err, idepool.ErrorCode(err), idepool.EExists)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent Creates of one id succeeded, want exactly 1", ok, n)
	}
	if _, found := h.list(rt)[spec.ID]; !found {
		t.Errorf("List does not return %s", spec.ID)
	}
}

// A cancelled context makes Create fail; Remove then leaves nothing.
func (s *suite) testCreateCancelled(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(nil)
	h.track(spec.ID)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := rt.Create(ctx, spec); err == nil {
		t.Errorf("Create with a cancelled context returned nil error")
	}
	if err := rt.Remove(h.ctx(), spec.ID); err != nil {
		t.Fatalf("Remove after a cancelled Create: %v", err)
	}
	h.expectGone(rt, spec.ID)
}

// A failed Create leaves nothing, or a leftover that Remove cleans.
func (s *suite) testCreateFailed(t *testing.T, h *harness) {
	if s.o.FailNextCreate == nil {
		t.Skip("no FailNextCreate option: the runtime's test gives no way to make a Create fail")
	}
	rt := h.runtime()
	spec := h.spec(nil)
	h.track(spec.ID)
	s.o.FailNextCreate(t, rt)
	if _, err := rt.Create(h.ctx(), spec); err == nil {
		t.Fatal("Create succeeded after FailNextCreate")
	} else if c := idepool.ErrorCode(err); c == idepool.EExists {
		t.Fatalf("failed Create returned code %s for a new id: %v", c, err)
	}
	if err := rt.Remove(h.ctx(), spec.ID); err != nil {
		t.Fatalf("Remove after a failed Create: %v", err)
	}
	h.expectGone(rt, spec.ID)
	// The runtime still works.
	h.create(h.spec(nil))
}

// spec.Env reaches the container.
func (s *suite) testEnv(t *testing.T, h *harness) {
	if s.o.ReadEnv == nil {
		t.Skip("no ReadEnv option: the runtime's test gives no way to read a container's env")
	}
	rt := h.runtime()
	spec := h.spec(nil)
	spec.Env["CONFORMANCE_SPACES"] = "a value with spaces = and signs"
	h.create(spec)
	inst := h.waitRunning(rt, spec.ID)
	env := s.o.ReadEnv(t, rt, inst)
	for k, v := range spec.Env {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("container env %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
}

// The container eventually runs; Inspect and List agree; every route has an
// endpoint of the form host:port.
func (s *suite) testRunning(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(nil)
	h.create(spec)
	inst := h.waitRunning(rt, spec.ID)
	h.checkLabels(rt, spec, inst)
	for _, r := range spec.Profile.Routes {
		ep, ok := inst.Endpoints[r.Name]
		if !ok {
			t.Errorf("running container has no endpoint for route %q (endpoints %v)", r.Name, inst.Endpoints)
			continue
		}
		if host, port, err := net.SplitHostPort(ep); err != nil || host == "" || port == "" {
			t.Errorf("endpoint %q of route %q is not host:port (%v)", ep, r.Name, err)
		}
	}
	if l := h.list(rt)[spec.ID]; l.Status != idepool.StatusRunning {
		t.Errorf("List says %s is %q while Inspect says running", spec.ID, l.Status)
	}
}

// Inspect of an unknown id: ENotFound.
func (s *suite) testInspectUnknown(t *testing.T, h *harness) {
	h.expectGone(h.runtime(), newID())
}

// List returns exactly the managed containers, each labelled.
func (s *suite) testList(t *testing.T, h *harness) {
	rt := h.runtime()
	created := h.createN(3)
	got := h.list(rt)
	if want := instIDs(created); !slices.Equal(slices.Sorted(maps.Keys(got)), want) {
		t.Fatalf("List = %v, want exactly %v", slices.Sorted(maps.Keys(got)), want)
	}
	managed := ""
	for i, c := range created {
		in := got[c.ID]
		if in.Labels[idepool.LabelID] != c.ID || in.Labels["conformance.n"] != fmt.Sprint(i) {
			t.Errorf("List's labels of %s: %v", c.ID, in.Labels)
		}
		switch in.Status {
		case idepool.StatusPending, idepool.StatusRunning:
		default:
			t.Errorf("List's status of new %s: %q", c.ID, in.Status)
		}
		if managed == "" {
			managed = in.Labels[idepool.LabelManaged]
		} else if in.Labels[idepool.LabelManaged] != managed {
			t.Errorf("%s: %s = %q, another container of this runtime has %q", c.ID, idepool.LabelManaged, in.Labels[idepool.LabelManaged], managed)
		}
	}
}

// SetLabels merges, "" deletes, and does not disturb the container.
func (s *suite) testSetLabels(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(map[string]string{"conformance.keep": "1", "conformance.change": "old", "conformance.drop": "x"})
	h.create(spec)
	before := h.waitRunning(rt, spec.ID)
	err := rt.SetLabels(h.ctx(), spec.ID, map[string]string{
		"conformance.change":  "new",
		"conformance.drop":    "",
		"conformance.added":   "yes",
		"conformance.missing": "", // deleting an absent key is fine
	})
	if err != nil {
		t.Fatalf("SetLabels: %v", err)
	}
	want := maps.Clone(before.Labels)
	want["conformance.change"] = "new"
	delete(want, "conformance.drop")
	want["conformance.added"] = "yes"
	after := h.inspect(rt, spec.ID)
	if !maps.Equal(after.Labels, want) {
		t.Errorf("labels after SetLabels = %v, want %v", after.Labels, want)
	}
	if after.Status != idepool.StatusRunning || !after.CreatedAt.Equal(before.CreatedAt) {
		t.Errorf("SetLabels disturbed the container: status %q (was running), CreatedAt %v (was %v)", after.Status, after.CreatedAt, before.CreatedAt)
	}
	if l := h.list(rt)[spec.ID]; !maps.Equal(l.Labels, want) {
		t.Errorf("List's labels after SetLabels = %v, want %v", l.Labels, want)
	}
	if err := rt.SetLabels(h.ctx(), spec.ID, nil); err != nil {
		t.Errorf("SetLabels with no labels: %v", err)
	}
	if got := h.inspect(rt, spec.ID); !maps.Equal(got.Labels, want) {
		t.Errorf("labels after an empty SetLabels = %v, want %v", got.Labels, want)
	}
}

// The runtime's own labels cannot be changed: SetLabels returns EInvalid
// and changes nothing (not even the other keys of the same call).
func (s *suite) testSetLabelsOwn(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(nil)
	h.create(spec)
	before := h.inspect(rt, spec.ID)
	for _, k := range []string{idepool.LabelManaged, idepool.LabelID, idepool.LabelProfile, idepool.LabelCreated} {
		for _, v := range []string{"forged", ""} {
			err := rt.SetLabels(h.ctx(), spec.ID, map[string]string{k: v, "conformance.other": "x"})
			if idepool.ErrorCode(err) != idepool.EInvalid {
				t.Errorf("SetLabels(%s=%q): err = %v (code %q), want code %s", k, v, err, idepool.ErrorCode(err), idepool.EInvalid)
			}
		}
	}
	if after := h.inspect(rt, spec.ID); !maps.Equal(after.Labels, before.Labels) {
		t.Errorf("labels after refused SetLabels = %v, want unchanged %v", after.Labels, before.Labels)
	}
}

// SetLabels of an unknown or removed container: ENotFound.
func (s *suite) testSetLabelsUnknown(t *testing.T, h *harness) {
	rt := h.runtime()
	err := rt.SetLabels(h.ctx(), newID(), map[string]string{"conformance.x": "y"})
	if idepool.ErrorCode(err) != idepool.ENotFound {
		t.Errorf("SetLabels of an unknown id: err = %v (code %q), want code %s", err, idepool.ErrorCode(err), idepool.ENotFound)
	}
	spec := h.spec(nil)
	h.create(spec)
	if err := rt.Remove(h.ctx(), spec.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	err = rt.SetLabels(h.ctx(), spec.ID, map[string]string{"conformance.x": "y"})
	if idepool.ErrorCode(err) != idepool.ENotFound {
		t.Errorf("SetLabels of a removed container: err = %v (code %q), want code %s", err, idepool.ErrorCode(err), idepool.ENotFound)
	}
}

// Remove deletes at once (it blocks until gone) and is idempotent.
func (s *suite) testRemove(t *testing.T, h *harness) {
	rt := h.runtime()
	cs := h.createN(2)
	gone, kept := cs[0].ID, cs[1].ID
	h.waitRunning(rt, gone)
	if err := rt.Remove(h.ctx(), gone); err != nil {
		t.Fatalf("Remove(%s): %v", gone, err)
	}
	h.expectGone(rt, gone)
	if err := rt.Remove(h.ctx(), gone); err != nil {
		t.Errorf("second Remove(%s): %v, want nil", gone, err)
	}
	if err := rt.Remove(h.ctx(), newID()); err != nil {
		t.Errorf("Remove of an unknown id: %v, want nil", err)
	}
	h.inspect(rt, kept) // the other one is untouched
	if got := h.list(rt); len(got) != 1 {
		t.Errorf("List after removing one of two = %v, want only %s", slices.Sorted(maps.Keys(got)), kept)
	}
}

// Remove right after Create, whatever state the container is in.
func (s *suite) testRemovePending(t *testing.T, h *harness) {
	rt := h.runtime()
	spec := h.spec(nil)
	h.create(spec)
	if err := rt.Remove(h.ctx(), spec.ID); err != nil {
		t.Fatalf("Remove right after Create: %v", err)
	}
	h.expectGone(rt, spec.ID)
}

// Events: a hint for the creation, for running, and for the removal.
func (s *suite) testEvents(t *testing.T, h *harness) {
	rt := h.runtime()
	rec := h.record(rt)
	spec := h.spec(nil)
	h.create(spec)
	id := spec.ID
	rec.waitFor(h, "the creation of "+id, func(ev idepool.RuntimeEvent) bool { return ev.ID == id })
	h.waitRunning(rt, id)
	rec.waitFor(h, id+" running", func(ev idepool.RuntimeEvent) bool {
		return ev.ID == id && ev.Status == idepool.StatusRunning
	})
	if err := rt.Remove(h.ctx(), id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	rec.waitFor(h, "the removal of "+id, func(ev idepool.RuntimeEvent) bool { return ev.ID == id && ev.Removed })
}

// Events closes its channel when its context ends, also with several
// subscribers at once.
func (s *suite) testEventsClose(t *testing.T, h *harness) {
	rt := h.runtime()
	a := h.record(rt)
	ctx, cancel := context.WithCancel(context.Background())
	ch := rt.Events(ctx)
	spec := h.spec(nil)
	h.create(spec)
	a.waitFor(h, "the creation of "+spec.ID, func(ev idepool.RuntimeEvent) bool { return ev.ID == spec.ID })
	cancel()
	timer := h.ctx()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.Done():
			t.Fatal("Events did not close its channel after its context was cancelled")
		}
	}
}

// A container that dies from outside is reported failed or exited, stays
// inspectable and listed until removed, and an event says so.
func (s *suite) testDeath(t *testing.T, h *harness) {
	if s.o.Kill == nil {
		t.Skip("no Kill option: the runtime's test gives no way to kill a container from outside")
	}
	rt := h.runtime()
	spec := h.spec(map[string]string{"conformance.k": "v"})
	h.create(spec)
	h.waitRunning(rt, spec.ID)
	rec := h.record(rt)
	s.o.Kill(t, rt, spec.ID)
	dead := h.waitTerminal(rt, spec.ID)
	h.checkLabels(rt, spec, dead)
	rec.waitFor(h, "the death of "+spec.ID, func(ev idepool.RuntimeEvent) bool {
		return ev.ID == spec.ID && ev.Status.Terminal()
	})
	if l, ok := h.list(rt)[spec.ID]; !ok || !l.Status.Terminal() {
		t.Errorf("List after death: present %v, status %q; want it listed as failed or exited", ok, l.Status)
	}
	if err := rt.Remove(h.ctx(), spec.ID); err != nil {
		t.Fatalf("Remove of a dead container: %v", err)
	}
	h.expectGone(rt, spec.ID)
}

// Recover on a new runtime over the same backend returns the surviving
// containers with their labels, and the new runtime then covers them fully.
func (s *suite) testRecover(t *testing.T, h *harness) {
	if s.o.Reopen == nil {
		t.Skip("no Reopen option: the runtime's test gives no way to open a second runtime over the same backend")
	}
	old := h.runtime()
	cs := h.createN(3)
	live, labelled, dead := cs[0].ID, cs[1].ID, cs[2].ID
	for _, c := range cs {
		h.waitRunning(old, c.ID)
	}
	if err := old.SetLabels(h.ctx(), labelled, map[string]string{"conformance.claimed": "yes", "conformance.n": ""}); err != nil {
		t.Fatalf("SetLabels: %v", err)
	}
	if s.o.Kill != nil {
		s.o.Kill(t, old, dead)
		h.waitTerminal(old, dead)
	}
	want := map[string]idepool.Instance{}
	for _, c := range cs {
		want[c.ID] = h.inspect(old, c.ID)
	}

	rt := s.o.Reopen(t, old)
	if rt == nil {
		t.Fatal("Reopen returned nil")
	}
	h.adopt(rt)
	got := h.recover(rt)
	if ids := instIDs(got); !slices.Equal(ids, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("Recover returned %v, want %v", ids, slices.Sorted(maps.Keys(want)))
	}
	for _, in := range got {
		w := want[in.ID]
		if !maps.Equal(in.Labels, w.Labels) {
			t.Errorf("recovered %s: labels %v, want %v", in.ID, in.Labels, w.Labels)
		}
		if !in.CreatedAt.Equal(w.CreatedAt) {
			t.Errorf("recovered %s: CreatedAt %v, want %v", in.ID, in.CreatedAt, w.CreatedAt)
		}
		if in.ID == dead && s.o.Kill != nil && !in.Status.Terminal() {
			t.Errorf("recovered dead %s as %q, want failed or exited", in.ID, in.Status)
		}
	}
	// The new runtime covers them as if it had made them.
	if l := h.list(rt); len(l) != len(want) {
		t.Errorf("List after Recover has %d containers, want %d", len(l), len(want))
	}
	h.waitRunning(rt, live)
	if err := rt.SetLabels(h.ctx(), live, map[string]string{"conformance.after": "restart"}); err != nil {
		t.Errorf("SetLabels after Recover: %v", err)
	} else if got := h.inspect(rt, live).Labels["conformance.after"]; got != "restart" {
		t.Errorf("label set after Recover reads %q", got)
	}
	rec := h.record(rt)
	if s.o.Kill != nil {
		s.o.Kill(t, rt, labelled)
		h.waitTerminal(rt, labelled)
		rec.waitFor(h, "the death of recovered "+labelled, func(ev idepool.RuntimeEvent) bool {
			return ev.ID == labelled && ev.Status.Terminal()
		})
	}
	for _, id := range []string{live, labelled, dead} {
		if err := rt.Remove(h.ctx(), id); err != nil {
			t.Errorf("Remove(%s) after Recover: %v", id, err)
		}
		h.expectGone(rt, id)
	}
	rec.waitFor(h, "the removal of recovered "+live, func(ev idepool.RuntimeEvent) bool { return ev.ID == live && ev.Removed })
}

// Two deployments on one backend never see or touch each other's
// containers.
func (s *suite) testIsolation(t *testing.T, h *harness) {
	if s.o.OtherDeployment == nil {
		t.Skip("no OtherDeployment option: the runtime's test gives no second deployment on the same backend")
	}
	a := h.runtime()
	recA := h.record(a)
	ia := h.create(h.spec(nil))
	b := s.o.OtherDeployment(t, a)
	if b == nil {
		t.Fatal("OtherDeployment returned nil")
	}
	hb := &harness{t: t, o: h.o, ids: map[string]bool{}, prof: h.prof}
	hb.adopt(b)
	if got := hb.recover(b); len(got) != 0 {
		t.Fatalf("Recover of the other deployment returned %v; it has created nothing (and must not see %s)", instIDs(got), ia.ID)
	}
	recB := hb.record(b)
	ib := hb.create(hb.spec(nil))
	if ia.Labels[idepool.LabelManaged] == ib.Labels[idepool.LabelManaged] {
		t.Fatalf("both deployments label %s = %q", idepool.LabelManaged, ia.Labels[idepool.LabelManaged])
	}
	recA.waitFor(h, "the creation of "+ia.ID, func(ev idepool.RuntimeEvent) bool { return ev.ID == ia.ID })
	recB.waitFor(hb, "the creation of "+ib.ID, func(ev idepool.RuntimeEvent) bool { return ev.ID == ib.ID })

	for _, c := range []struct {
		name      string
		h         *harness
		rt        idepool.Runtime
		mine, his string
	}{{"A", h, a, ia.ID, ib.ID}, {"B", hb, b, ib.ID, ia.ID}} {
		if ids := slices.Sorted(maps.Keys(c.h.list(c.rt))); !slices.Equal(ids, []string{c.mine}) {
			t.Errorf("deployment %s lists %v, want only [%s]", c.name, ids, c.mine)
		}
		if _, err := c.rt.Inspect(c.h.ctx(), c.his); idepool.ErrorCode(err) != idepool.ENotFound {
			t.Errorf("deployment %s inspects the other's %s: err %v, want code %s", c.name, c.his, err, idepool.ENotFound)
		}
		if err := c.rt.SetLabels(c.h.ctx(), c.his, map[string]string{"conformance.x": "y"}); idepool.ErrorCode(err) != idepool.ENotFound {
			t.Errorf("deployment %s sets labels on the other's %s: err %v, want code %s", c.name, c.his, err, idepool.ENotFound)
		}
		if err := c.rt.Remove(c.h.ctx(), c.his); err != nil {
			t.Errorf("deployment %s removes the other's %s: %v, want nil (nothing of ours there)", c.name, c.his, err)
		}
	}
	// Nothing of the other's was touched.
	for _, c := range []struct {
		h  *harness
		rt idepool.Runtime
		in idepool.Instance
	}{{h, a, ia}, {hb, b, ib}} {
		got := c.h.inspect(c.rt, c.in.ID)
		if !maps.Equal(got.Labels, c.in.Labels) {
			t.Errorf("%s: labels %v after the other deployment's calls, want %v", c.in.ID, got.Labels, c.in.Labels)
		}
	}
	for _, ev := range recA.snapshot() {
		if ev.ID == ib.ID {
			t.Errorf("deployment A got an event of B's container: %+v", ev)
		}
	}
	for _, ev := range recB.snapshot() {
		if ev.ID == ia.ID {
			t.Errorf("deployment B got an event of A's container: %+v", ev)
		}
	}
}

// Concurrent Creates with distinct ids and concurrent (repeated) Removes.
func (s *suite) testConcurrent(t *testing.T, h *harness) {
	rt := h.runtime()
	n := s.o.concurrency()
	specs := make([]idepool.ContainerSpec, n)
	for i := range specs {
		specs[i] = h.spec(map[string]string{"conformance.n": strconv.Itoa(i)})
		h.track(specs[i].ID)
	}
	ctx := h.ctx()
	var wg sync.WaitGroup
	insts := make([]idepool.Instance, n)
	errs := make([]error, n)
	for i := range specs {
		wg.Go(func() { insts[i], errs[i] = rt.Create(ctx, specs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Create(%s): %v", specs[i].ID, err)
		}
		h.checkCreated(specs[i], insts[i])
	}
	got := h.list(rt)
	for _, sp := range specs {
		in, ok := got[sp.ID]
		if !ok {
			t.Errorf("List misses %s after concurrent creates", sp.ID)
			continue
		}
		h.checkLabels(rt, sp, in)
	}
	if len(got) != n {
		t.Errorf("List has %d containers, want %d", len(got), n)
	}
	// Every container removed twice, all at once.
	rerrs := make([]error, 2*n)
	for i := range rerrs {
		wg.Go(func() { rerrs[i] = rt.Remove(ctx, specs[i%n].ID) })
	}
	wg.Wait()
	for i, err := range rerrs {
		if err != nil {
			t.Errorf("concurrent Remove(%s): %v", specs[i%n].ID, err)
		}
	}
	if got := h.list(rt); len(got) != 0 {
		t.Errorf("List after removing everything = %v", slices.Sorted(maps.Keys(got)))
	}
	for _, sp := range specs {
		h.expectGone(rt, sp.ID)
	}
}
