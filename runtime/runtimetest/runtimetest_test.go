package runtimetest_test

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
	"github.com/idepool/idepool/runtime/runtimetest"
)

// The suite is tested by running it against runtimes with one deliberate
// flaw each, in a child process (a failing subtest cannot be contained in
// this one), and checking that the subtest meant to catch the flaw fails.

const brokenEnv = "RUNTIMETEST_BROKEN"

// broken wraps the fake with one flaw, chosen by name.
type broken struct {
	*fake.Runtime
	flaw string
}

func (b *broken) Capabilities() idepool.Capabilities {
	c := b.Runtime.Capabilities()
	switch b.flaw {
	case "caps-host-network-fenced":
		c.NetworkSubnets = func(context.Context) ([]netip.Prefix, error) {
			return []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, nil
		}
	case "caps-nodes-none-ready":
		c.Reservations = true
		c.Nodes = func(context.Context) ([]idepool.NodeResources, error) {
			return []idepool.NodeResources{{Name: "n1", NanoCPUs: 1e9, MemoryBytes: 1 << 30}}, nil
		}
	}
	return c
}

func (b *broken) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	switch b.flaw {
	case "create-replaces":
		_ = b.Runtime.Remove(ctx, spec.ID)
	case "create-ignores-ctx":
		ctx = context.WithoutCancel(ctx)
	case "create-drops-caller-labels":
		spec.Labels = nil
	case "create-keeps-forged-labels":
		inst, err := b.Runtime.Create(ctx, spec)
		if err == nil {
			inst.Labels[idepool.LabelManaged] = spec.Labels[idepool.LabelManaged]
		}
		return inst, err
	}
	return b.Runtime.Create(ctx, spec)
}

func (b *broken) Remove(ctx context.Context, id string) error {
	if b.flaw == "remove-unknown-errors" {
		if _, err := b.Runtime.Inspect(ctx, id); err != nil {
			return err
		}
	}
	return b.Runtime.Remove(ctx, id)
}

func (b *broken) List(ctx context.Context) ([]idepool.Instance, error) {
	insts, err := b.Runtime.List(ctx)
	if b.flaw == "list-forgets" && len(insts) > 1 {
		insts = insts[1:]
	}
	return insts, err
}

func (b *broken) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	switch b.flaw {
	case "setlabels-own-ignored":
		l := maps.Clone(labels)
		for _, k := range []string{idepool.LabelManaged, idepool.LabelID, idepool.LabelProfile, idepool.LabelCreated} {
			delete(l, k)
		}
		return b.Runtime.SetLabels(ctx, id, l)
	case "setlabels-no-delete":
		l := maps.Clone(labels)
		maps.DeleteFunc(l, func(_, v string) bool { return v == "" })
		return b.Runtime.SetLabels(ctx, id, l)
	}
	return b.Runtime.SetLabels(ctx, id, labels)
}

func (b *broken) Events(ctx context.Context) <-chan idepool.RuntimeEvent {
	switch b.flaw {
	case "events-silent":
		ch := make(chan idepool.RuntimeEvent)
		context.AfterFunc(ctx, func() { close(ch) })
		return ch
	case "events-never-close":
		in := b.Runtime.Events(ctx)
		out := make(chan idepool.RuntimeEvent, 64)
		go func() {
			for ev := range in {
				out <- ev
			}
		}()
		return out
	}
	return b.Runtime.Events(ctx)
}

// TestBrokenRuntime is the child: it runs the suite against one flawed
// runtime. It is skipped unless the parent set brokenEnv.
func TestBrokenRuntime(t *testing.T) {
	flaw := os.Getenv(brokenEnv)
	if flaw == "" {
		t.Skip("run by TestSuiteDetectsFlaws in a child process")
	}
	var opts []runtimetest.Option
	opts = append(opts,
		runtimetest.WithTimeoutScale(0.05),
		runtimetest.WithDeployment(func(rt idepool.Runtime) string { return rt.(*broken).Deployment() }),
		runtimetest.WithReadEnv(func(t *testing.T, rt idepool.Runtime, inst idepool.Instance) map[string]string {
			env, _ := rt.(*broken).Env(inst.ID)
			if flaw == "env-lost" {
				delete(env, runtimetest.EnvMarker)
			}
			return env
		}),
		runtimetest.WithKill(func(t *testing.T, rt idepool.Runtime, id string) {
			if flaw != "kill-unnoticed" {
				_ = rt.(*broken).Kill(id)
			}
		}),
		runtimetest.WithReopen(func(t *testing.T, old idepool.Runtime) idepool.Runtime {
			cfg := old.(*broken).Config()
			if flaw != "reopen-loses-backend" {
				cfg.Backend = old.(*broken).Backend()
			}
			return &broken{fake.New(cfg), flaw}
		}),
		runtimetest.WithOtherDeployment(func(t *testing.T, rt idepool.Runtime) idepool.Runtime {
			cfg := rt.(*broken).Config()
			cfg.Backend = rt.(*broken).Backend()
			if flaw != "one-deployment" {
				cfg.Deployment = "other"
			}
			return &broken{fake.New(cfg), flaw}
		}),
	)
	runtimetest.Run(t, func(t *testing.T) idepool.Runtime {
		return &broken{fake.New(fake.Config{}), flaw}
	}, opts...)
}

// TestSuiteDetectsFlaws runs the child once per flaw and checks that the
// named subtest fails.
func TestSuiteDetectsFlaws(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("child process")
	}
	for _, c := range []struct{ flaw, subtest string }{
		{"create-replaces", "CreateExisting"},
		{"create-ignores-ctx", "CreateCancelledContext"},
		{"create-drops-caller-labels", "Create"},
		{"create-keeps-forged-labels", "CreateOwnLabelsWin"},
		{"remove-unknown-errors", "Remove"},
		{"list-forgets", "List"},
		{"setlabels-own-ignored", "SetLabelsOwnRefused"},
		{"setlabels-no-delete", "SetLabels"},
		{"events-silent", "EventsCreateRunRemove"},
		{"events-never-close", "EventsCloseOnCancel"},
		{"env-lost", "Env"},
		{"kill-unnoticed", "Death"},
		{"reopen-loses-backend", "Recover"},
		{"one-deployment", "DeploymentIsolation"},
		{"caps-host-network-fenced", "Capabilities"},
		{"caps-nodes-none-ready", "Capabilities"},
	} {
		t.Run(c.flaw, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0],
				"-test.run=^TestBrokenRuntime$/^"+c.subtest+"$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+c.flaw)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a runtime with flaw %q:\n%s", c.flaw, out)
			}
			if want := "--- FAIL: TestBrokenRuntime/" + c.subtest + " "; !strings.Contains(string(out), want) {
				t.Fatalf("flaw %q: want %q in the output:\n%s", c.flaw, want, out)
			}
			if strings.Contains(string(out), "panic:") || strings.Contains(string(out), "DATA RACE") {
				t.Fatalf("flaw %q: the suite panicked or raced:\n%s", c.flaw, out)
			}
		})
	}
}
