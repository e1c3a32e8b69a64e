//go:build linux

package process

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	idepool "github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/runtimetest"
)

func TestConformance(t *testing.T) {
	newRuntime := func(t *testing.T) idepool.Runtime {
		return openRuntime(t, testOptions(t))
	}
	runtimetest.Run(t, newRuntime,
		runtimetest.WithDeployment(func(rt idepool.Runtime) string { return rt.(*Runtime).opts.Deployment }),
		runtimetest.WithReadEnv(readEnv),
		runtimetest.WithKill(killAgent),
		runtimetest.WithReopen(func(t *testing.T, old idepool.Runtime) idepool.Runtime {
			o := old.(*Runtime).opts
			old.(*Runtime).Close() // the orchestrator exits; the agents stay
			return openRuntime(t, o)
		}),
		runtimetest.WithOtherDeployment(func(t *testing.T, rt idepool.Runtime) idepool.Runtime {
			o := rt.(*Runtime).opts
			o.Deployment += "-other"
			return openRuntime(t, o)
		}),
	)
}

// agentPID reads the agent's pid from meta.json, as any outsider could.
func agentPID(t *testing.T, rt idepool.Runtime, id string) int {
	t.Helper()
	m, err := readMeta(filepath.Join(rt.(*Runtime).dir, id))
	if err != nil {
		t.Fatalf("meta of %s: %v", id, err)
	}
	if m.Process.PID <= 1 {
		t.Fatalf("meta of %s records pid %d", id, m.Process.PID)
	}
	return m.Process.PID
}

// readEnv reads the environment the agent process really has, from
// /proc/<pid>/environ: the suite compares every spec.Env value, the token's
// included, which the stand-in's own env.json redacts.
func readEnv(t *testing.T, rt idepool.Runtime, inst idepool.Instance) map[string]string {
	t.Helper()
	pid := agentPID(t, rt, inst.ID)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatalf("environment of %s: %v", inst.ID, err)
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte("=")); ok {
			env[string(k)] = string(v)
		}
	}
	return env
}

func killAgent(t *testing.T, rt idepool.Runtime, id string) {
	t.Helper()
	if err := syscall.Kill(agentPID(t, rt, id), syscall.SIGKILL); err != nil {
		t.Fatalf("kill agent of %s: %v", id, err)
	}
}
