package fake_test

import (
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/fake"
	"github.com/idepool/idepool/runtime/runtimetest"
)

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  fake.Config
	}{
		{"Immediate", fake.Config{}},
		// Latencies make the suite see pending containers and wait; they
		// are short because the suite polls with the real clock.
		{"Leftover", fake.Config{LeaveLeftoverOnFailure: true}},
		{"WithLatency", fake.Config{CreateLatency: time.Millisecond, CreateJitter: 2 * time.Millisecond, StartLatency: 20 * time.Millisecond, RemoveLatency: time.Millisecond}},
	} {
		t.Run(c.name, func(t *testing.T) {
			newRuntime := func(t *testing.T) idepool.Runtime {
				cfg := c.cfg
				cfg.Seed = 1
				return fake.New(cfg)
			}
			runtimetest.Run(t, newRuntime,
				runtimetest.WithDeployment(func(rt idepool.Runtime) string { return rt.(*fake.Runtime).Deployment() }),
				runtimetest.WithReadEnv(func(t *testing.T, rt idepool.Runtime, inst idepool.Instance) map[string]string {
					env, ok := rt.(*fake.Runtime).Env(inst.ID)
					if !ok {
						t.Fatalf("fake: no env for %s", inst.ID)
					}
					return env
				}),
				runtimetest.WithKill(func(t *testing.T, rt idepool.Runtime, id string) {
					if err := rt.(*fake.Runtime).Backend().Kill(id); err != nil {
						t.Fatalf("kill %s: %v", id, err)
					}
				}),
				runtimetest.WithFailNextCreate(func(t *testing.T, rt idepool.Runtime) { rt.(*fake.Runtime).FailNext(1) }),
				runtimetest.WithReopen(func(t *testing.T, old idepool.Runtime) idepool.Runtime {
					cfg := old.(*fake.Runtime).Config()
					cfg.Backend = old.(*fake.Runtime).Backend()
					return fake.New(cfg)
				}),
				runtimetest.WithOtherDeployment(func(t *testing.T, rt idepool.Runtime) idepool.Runtime {
					cfg := rt.(*fake.Runtime).Config()
					cfg.Backend = rt.(*fake.Runtime).Backend()
					cfg.Deployment = "other-" + cfg.Deployment
					return fake.New(cfg)
				}),
			)
		})
	}
}
