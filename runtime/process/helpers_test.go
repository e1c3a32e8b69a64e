//go:build linux

package process

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	idepool "github.com/idepool/idepool"
)

// wait bounds every wait of the tests: generous, the machine is shared; no
// check depends on speed.
const wait = 20 * time.Second

func testExe(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func childExtraEnv() map[string]string {
	return map[string]string{envChild: "1", "GORACE": "atexit_sleep_ms=0", envOwner: strconv.Itoa(os.Getpid())}
}

func testOptions(t *testing.T) Options {
	t.Helper()
	exe := testExe(t)
	return Options{
		DataDir:      t.TempDir(),
		AgentCommand: []string{exe},
		Deployment:   "test",
		// The race runtime sleeps 1s at exit by default; the stand-in
		// agent is this (race-built) test binary.
		ExtraEnv:     childExtraEnv(),
		StopGrace:    5 * time.Second,
		PollInterval: 50 * time.Millisecond,
	}
}

// openRuntime opens a Runtime and, at the end of the test, removes every
// container it knows and closes it, so no process outlives the test.
func openRuntime(t *testing.T, o Options) *Runtime {
	t.Helper()
	r, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { cleanupRuntime(t, r) })
	return r
}

func cleanupRuntime(t *testing.T, r *Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	insts, _ := r.List(ctx)
	for _, in := range insts {
		if err := r.Remove(ctx, in.ID); err != nil {
			t.Errorf("cleanup: Remove(%s): %v", in.ID, err)
		}
	}
	r.Close()
}

func testProfile(routes ...string) idepool.Profile {
	p := idepool.Profile{Name: "test", Image: "none"}
	for i, name := range routes {
		p.Routes = append(p.Routes, idepool.Route{Name: name, Port: 8000 + i})
	}
	return p
}

func testSpec(labels, env map[string]string) idepool.ContainerSpec {
	e := map[string]string{idepool.EnvAgentToken: "secret-token-value"}
	for k, v := range env {
		e[k] = v
	}
	return idepool.ContainerSpec{ID: idepool.NewID(), Profile: testProfile("code", "vnc", "web"), Labels: labels, Env: e}
}

func mustCreate(t *testing.T, r *Runtime, spec idepool.ContainerSpec) idepool.Instance {
	t.Helper()
	inst, err := r.Create(t.Context(), spec)
	if err != nil {
		t.Fatalf("Create(%s): %v", spec.ID, err)
	}
	return inst
}

// childEnv waits for the stand-in agent of id to record its environment.
func childEnv(t *testing.T, dataDir, id string) map[string]string {
	t.Helper()
	path := filepath.Join(dataDir, "containers", id, "state", envFile)
	deadline := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			var env map[string]string
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatalf("parse %s: %v", path, err)
			}
			return env
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dataDir, "containers", id, "agent.log"))
			t.Fatalf("the agent of %s did not write %s within %v; agent.log:\n%s", id, envFile, wait, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// events collects a runtime's events for the rest of the test.
type events struct {
	ch  <-chan idepool.RuntimeEvent
	got []idepool.RuntimeEvent
}

func watch(t *testing.T, r *Runtime) *events {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &events{ch: r.Events(ctx)}
}

// waitEvent returns the first event (seen so far or coming) matching ok.
func (e *events) waitEvent(t *testing.T, what string, ok func(idepool.RuntimeEvent) bool) idepool.RuntimeEvent {
	t.Helper()
	for _, ev := range e.got {
		if ok(ev) {
			return ev
		}
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case ev, open := <-e.ch:
			if !open {
				t.Fatalf("event stream closed before %s", what)
			}
			e.got = append(e.got, ev)
			if ok(ev) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no event for %s within %v; got %v", what, wait, e.got)
		}
	}
}

func pidAlive(pid int) bool {
	st, err := readProcStat("/proc", pid)
	return err == nil && !st.dead()
}
