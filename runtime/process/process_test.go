//go:build linux

package process

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	idepool "github.com/idepool/idepool"
)

func TestCreateGivesEnvPortsAndDirs(t *testing.T) {
	o := testOptions(t)
	r := openRuntime(t, o)
	spec := testSpec(map[string]string{"caller": "x"}, map[string]string{"FROM_SPEC": "1", "HOME": "/spec-home"})
	spec.Profile.Routes = append(spec.Profile.Routes, idepool.Route{Name: "my-app", Port: 9000})
	spec.Profile.Env = map[string]string{"FROM_PROFILE": "p", "FROM_SPEC": "profile-loses"}
	spec.Profile.Workloads = []idepool.Workload{{Name: "w", Command: []string{"true"}}}
	inst := mustCreate(t, r, spec)
	if inst.Status != idepool.StatusRunning {
		t.Errorf("Create returned status %s, want running (the process was started)", inst.Status)
	}
	if inst.Node == "" {
		t.Error("Node is empty")
	}
	l := inst.Labels
	if l[idepool.LabelManaged] != "test" || l[idepool.LabelID] != spec.ID || l[idepool.LabelProfile] != "test" || l["caller"] != "x" {
		t.Errorf("labels = %v", l)
	}
	if _, err := time.Parse(time.RFC3339Nano, l[idepool.LabelCreated]); err != nil {
		t.Errorf("label created: %v", err)
	}
	env := childEnv(t, o.DataDir, spec.ID)
	dir := filepath.Join(o.DataDir, "containers", spec.ID)
	want := map[string]string{
		"FROM_SPEC":             "1",
		"FROM_PROFILE":          "p",
		"HOME":                  "/spec-home",
		idepool.EnvAgentToken:   "<set>",
		idepool.EnvAgentID:      spec.ID,
		idepool.EnvWorkspaceDir: filepath.Join(dir, "workspace"),
		idepool.EnvStateDir:     filepath.Join(dir, "state"),
		idepool.EnvWorkloads:    `[{"name":"w","command":["true"]}]`,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("agent env %s = %q, want %q", k, env[k], v)
		}
	}
	var routes []idepool.Route
	if err := json.Unmarshal([]byte(env[idepool.EnvRoutes]), &routes); err != nil {
		t.Fatalf("%s: %v", idepool.EnvRoutes, err)
	}
	if len(routes) != 4 || len(inst.Endpoints) != 4 {
		t.Fatalf("routes %v, endpoints %v: want 4 of each", routes, inst.Endpoints)
	}
	for _, rt := range routes {
		ep := "127.0.0.1:" + strconv.Itoa(rt.Port)
		if inst.Endpoints[rt.Name] != ep {
			t.Errorf("route %s: endpoint %q, but the agent was told port %d", rt.Name, inst.Endpoints[rt.Name], rt.Port)
		}
		if got := env[RoutePortEnv(rt.Name)]; got != strconv.Itoa(rt.Port) {
			t.Errorf("%s = %q, want %d", RoutePortEnv(rt.Name), got, rt.Port)
		}
		resp, err := http.Get("http://" + ep + "/")
		if err != nil {
			t.Errorf("GET route %s: %v", rt.Name, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET route %s: %s", rt.Name, resp.Status)
		}
	}
	if env["IDEPOOL_PORT_MY_APP"] == "" {
		t.Errorf("no IDEPOOL_PORT_MY_APP for route my-app: %v", env)
	}
	for _, sub := range []string{"workspace", "state", "meta.json", "agent.log"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			t.Errorf("container dir: %v", err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "secret-token-value") {
		t.Error("meta.json holds the agent token")
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "agent.log")); !strings.Contains(string(log), "test child ready") {
		t.Errorf("agent.log does not hold the agent's output: %q", log)
	}
}

func TestSecretsNotInherited(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "orchestrator-secret")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAORCHESTRATOR")
	t.Setenv("API_KEY", "orchestrator-api-key")
	t.Setenv("IDEPOOL_UNRELATED", "x")
	o := testOptions(t)
	r := openRuntime(t, o)
	spec := testSpec(nil, nil)
	mustCreate(t, r, spec)
	env := childEnv(t, o.DataDir, spec.ID)
	for k, v := range env {
		if strings.HasPrefix(k, "AWS_") || k == "API_KEY" || k == "IDEPOOL_UNRELATED" || strings.Contains(v, "orchestrator-") {
			t.Errorf("agent inherited %s=%q from the orchestrator", k, v)
		}
	}
	if env["PATH"] == "" {
		t.Error("agent has no PATH")
	}
}

func TestPortsUniqueAcrossContainers(t *testing.T) {
	o := testOptions(t)
	r := openRuntime(t, o)
	seen := map[string]string{}
	for range 6 {
		inst := mustCreate(t, r, testSpec(nil, nil))
		for route, ep := range inst.Endpoints {
			if other, dup := seen[ep]; dup {
				t.Errorf("%s route %s got %s, already given to %s", inst.ID, route, ep, other)
			}
			seen[ep] = inst.ID + "/" + route
		}
	}
	if len(seen) != 18 {
		t.Errorf("%d endpoints, want 18", len(seen))
	}
}

func TestCreateRefusesExistingAndInvalid(t *testing.T) {
	o := testOptions(t)
	r := openRuntime(t, o)
	spec := testSpec(nil, nil)
	first := mustCreate(t, r, spec)
	if _, err := r.Create(t.Context(), spec); idepool.ErrorCode(err) != idepool.EExists {
		t.Errorf("second Create: %v, want %s", err, idepool.EExists)
	}
	if in, err := r.Inspect(t.Context(), spec.ID); err != nil || in.Endpoints["code"] != first.Endpoints["code"] {
		t.Errorf("after a refused Create: %+v, %v", in, err)
	}
	// A directory left by an earlier run that was not recovered.
	stray := idepool.NewID()
	if err := os.MkdirAll(filepath.Join(o.DataDir, "containers", stray), 0o700); err != nil {
		t.Fatal(err)
	}
	s2 := testSpec(nil, nil)
	s2.ID = stray
	if _, err := r.Create(t.Context(), s2); idepool.ErrorCode(err) != idepool.EExists {
		t.Errorf("Create over a stray directory: %v, want %s", err, idepool.EExists)
	}
	for _, bad := range []string{"", "../../etc", "UPPER", "a/b/c/d"} {
		s := testSpec(nil, nil)
		s.ID = bad
		if _, err := r.Create(t.Context(), s); idepool.ErrorCode(err) != idepool.EInvalid {
			t.Errorf("Create(%q): %v, want %s", bad, err, idepool.EInvalid)
		}
		if err := r.Remove(t.Context(), bad); err != nil {
			t.Errorf("Remove(%q): %v", bad, err)
		}
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	o := testOptions(t)
	o.AgentCommand = []string{filepath.Join(t.TempDir(), "no-such-agent")}
	r := openRuntime(t, o)
	spec := testSpec(nil, nil)
	if _, err := r.Create(t.Context(), spec); err == nil {
		t.Fatal("Create with a missing agent binary succeeded")
	} else if idepool.ErrorCode(err) != idepool.ERuntime {
		t.Errorf("code %s, want %s", idepool.ErrorCode(err), idepool.ERuntime)
	}
	if _, err := os.Stat(filepath.Join(o.DataDir, "containers", spec.ID)); !os.IsNotExist(err) {
		t.Errorf("directory left behind: %v", err)
	}
	if _, err := r.Inspect(t.Context(), spec.ID); !idepool.IsNotFound(err) {
		t.Errorf("Inspect after failed Create: %v", err)
	}
	if n := len(r.ports.used); n != 0 {
		t.Errorf("%d ports still reserved", n)
	}
	if err := r.Remove(t.Context(), spec.ID); err != nil {
		t.Errorf("Remove after failed Create: %v", err)
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		code string
		want idepool.RuntimeStatus
		msg  string
	}{
		{"0", idepool.StatusExited, ""},
		{"3", idepool.StatusFailed, "exited with status 3"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			r := openRuntime(t, testOptions(t))
			ev := watch(t, r)
			spec := testSpec(nil, map[string]string{envExitCode: tc.code})
			mustCreate(t, r, spec)
			ev.waitEvent(t, "exit", func(e idepool.RuntimeEvent) bool { return e.ID == spec.ID && e.Status == tc.want })
			in, err := r.Inspect(t.Context(), spec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if in.Status != tc.want || !strings.Contains(in.Message, tc.msg) {
				t.Errorf("status %s %q, want %s %q", in.Status, in.Message, tc.want, tc.msg)
			}
		})
	}
}

func TestRemoveKillsWholeGroup(t *testing.T) {
	o := testOptions(t)
	o.StopGrace = 200 * time.Millisecond
	r := openRuntime(t, o)
	ev := watch(t, r)
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"leader ignores SIGTERM", map[string]string{envIgnoreTerm: "1", envGrandchild: "1"}},
		{"leader exits, grandchild ignores SIGTERM", map[string]string{envGrandchild: "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec(nil, tc.env)
			mustCreate(t, r, spec)
			childEnv(t, o.DataDir, spec.ID)
			b, err := os.ReadFile(filepath.Join(o.DataDir, "containers", spec.ID, "state", grandPIDFile))
			if err != nil {
				t.Fatal(err)
			}
			grand, _ := strconv.Atoi(string(b))
			in, _ := r.Inspect(t.Context(), spec.ID)
			r.mu.Lock()
			leader := r.containers[spec.ID].meta.Process.PID
			r.mu.Unlock()
			if !pidAlive(leader) || !pidAlive(grand) {
				t.Fatalf("leader %d or grandchild %d not running (%s)", leader, grand, in.Status)
			}
			if err := r.Remove(t.Context(), spec.ID); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if pidAlive(leader) || pidAlive(grand) {
				t.Errorf("after Remove: leader alive %v, grandchild alive %v", pidAlive(leader), pidAlive(grand))
			}
			if _, err := os.Stat(filepath.Join(o.DataDir, "containers", spec.ID)); !os.IsNotExist(err) {
				t.Errorf("directory still there: %v", err)
			}
			if _, err := r.Inspect(t.Context(), spec.ID); !idepool.IsNotFound(err) {
				t.Errorf("Inspect after Remove: %v", err)
			}
			ev.waitEvent(t, "removal", func(e idepool.RuntimeEvent) bool { return e.ID == spec.ID && e.Removed })
			if err := r.Remove(t.Context(), spec.ID); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
}

func TestSetLabels(t *testing.T) {
	o := testOptions(t)
	r := openRuntime(t, o)
	spec := testSpec(map[string]string{"a": "1", "b": "2"}, nil)
	inst := mustCreate(t, r, spec)
	err := r.SetLabels(t.Context(), spec.ID, map[string]string{"c": "refused too", idepool.LabelManaged: "other"})
	if idepool.ErrorCode(err) != idepool.EInvalid {
		t.Errorf("SetLabels of an own label: %v, want %s", err, idepool.EInvalid)
	}
	if err := r.SetLabels(t.Context(), spec.ID, map[string]string{"a": "", "c": "3"}); err != nil {
		t.Fatal(err)
	}
	check := func(in idepool.Instance) {
		t.Helper()
		l := in.Labels
		if _, ok := l["a"]; ok || l["b"] != "2" || l["c"] != "3" || l[idepool.LabelID] != spec.ID || l[idepool.LabelManaged] != "test" ||
			l[idepool.LabelCreated] != inst.Labels[idepool.LabelCreated] {
			t.Errorf("labels = %v", l)
		}
	}
	in, _ := r.Inspect(t.Context(), spec.ID)
	check(in)
	if in.Status != idepool.StatusRunning {
		t.Errorf("status after SetLabels: %s", in.Status)
	}
	// Persisted: a new Runtime sees them.
	r2 := openRuntime(t, o)
	got, err := r2.Recover(t.Context())
	if err != nil || len(got) != 1 {
		t.Fatalf("Recover: %v, %v", got, err)
	}
	check(got[0])
	if err := r.SetLabels(t.Context(), "nosuchid", map[string]string{"x": "y"}); !idepool.IsNotFound(err) {
		t.Errorf("SetLabels of unknown: %v", err)
	}
}

// TestRestart is the orchestrator restart: its Runtime goes away, the agents
// keep running, a new Runtime on the same DataDir adopts them.
func TestRestart(t *testing.T) {
	o := testOptions(t)
	r1, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	claimed := testSpec(idepool.ClaimLabels(idepool.Workspace{Bucket: "bucket-a"}, "u1", 1, true, time.Now()), nil)
	warm := testSpec(nil, nil)
	in1 := mustCreate(t, r1, claimed)
	in2 := mustCreate(t, r1, warm)
	childEnv(t, o.DataDir, claimed.ID)
	childEnv(t, o.DataDir, warm.ID)
	r1.Close() // the orchestrator exits; its agents must not

	r2 := openRuntime(t, o)
	ev := watch(t, r2)
	got, err := r2.Recover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]idepool.Instance{}
	for _, in := range got {
		byID[in.ID] = in
	}
	if len(got) != 2 {
		t.Fatalf("Recover found %d containers, want 2: %+v", len(got), got)
	}
	for _, want := range []idepool.Instance{in1, in2} {
		in := byID[want.ID]
		if in.Status != idepool.StatusRunning {
			t.Errorf("%s recovered as %s (%s), want running", want.ID, in.Status, in.Message)
		}
		for k, v := range want.Labels {
			if in.Labels[k] != v {
				t.Errorf("%s label %s = %q after restart, want %q", want.ID, k, in.Labels[k], v)
			}
		}
		if fmt.Sprint(in.Endpoints) != fmt.Sprint(want.Endpoints) || !in.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("%s after restart: endpoints %v created %v, want %v %v", want.ID, in.Endpoints, in.CreatedAt, want.Endpoints, want.CreatedAt)
		}
	}
	if ws, ok := idepool.WorkspaceFromLabels(byID[claimed.ID].Labels); !ok || ws.Bucket != "bucket-a" {
		t.Errorf("claim labels lost: %v", byID[claimed.ID].Labels)
	}
	// New ports never collide with the adopted ones.
	in3 := mustCreate(t, r2, testSpec(nil, nil))
	for _, ep := range in3.Endpoints {
		for _, old := range []idepool.Instance{in1, in2} {
			for _, oep := range old.Endpoints {
				if ep == oep {
					t.Errorf("new container got %s, held by adopted %s", ep, old.ID)
				}
			}
		}
	}

	// The claimed one dies from outside: the new Runtime notices.
	r2.mu.Lock()
	pid := r2.containers[claimed.ID].meta.Process.PID
	r2.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev.waitEvent(t, "death of the adopted agent", func(e idepool.RuntimeEvent) bool {
		return e.ID == claimed.ID && e.Status == idepool.StatusFailed
	})
	in, err := r2.Inspect(t.Context(), claimed.ID)
	if err != nil || in.Status != idepool.StatusFailed || in.Message == "" {
		t.Errorf("after kill: %+v, %v", in, err)
	}
	if in, _ := r2.Inspect(t.Context(), warm.ID); in.Status != idepool.StatusRunning {
		t.Errorf("the other one: %s", in.Status)
	}
	// Remove an adopted, live one: SIGTERM reaches it though it is not our child.
	r2.mu.Lock()
	wpid := r2.containers[warm.ID].meta.Process.PID
	r2.mu.Unlock()
	if err := r2.Remove(t.Context(), warm.ID); err != nil {
		t.Fatal(err)
	}
	if pidAlive(wpid) {
		t.Errorf("adopted agent %d alive after Remove", wpid)
	}
}

// TestRecoverLostBrokenForeignReused writes container directories by hand:
// a dead agent, a broken meta.json, another deployment's container, and a
// pid now used by a stranger.
func TestRecoverLostBrokenForeignReused(t *testing.T) {
	o := testOptions(t)
	containers := filepath.Join(o.DataDir, "containers")
	// A stranger: a process that is not ours, listed under a pid we record
	// with the wrong start time.
	exe, _ := os.Executable()
	stranger := startStranger(t, exe)
	st, err := readProcStat("/proc", stranger)
	if err != nil {
		t.Fatal(err)
	}
	dead := deadPID(t)
	write := func(id, deployment string, p identity) {
		t.Helper()
		dir := filepath.Join(containers, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m := meta{Version: 1, ID: id, Deployment: deployment, Profile: testProfile("code"),
			Labels: map[string]string{idepool.LabelManaged: deployment, idepool.LabelID: id, "k": "v"},
			Ports:  map[string]int{"code": 1}, Process: p, CreatedAt: time.Now().UTC()}
		if err := writeMeta(dir, m); err != nil {
			t.Fatal(err)
		}
	}
	write("lost", "test", identity{PID: dead})
	write("neverstarted", "test", identity{})
	write("reused", "test", identity{PID: stranger, StartTicks: st.start + 1})
	write("otherboot", "test", identity{PID: stranger, StartTicks: st.start, BootID: "some-other-boot"})
	write("foreign", "other", identity{PID: stranger, StartTicks: st.start})
	if err := os.MkdirAll(filepath.Join(containers, "broken"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(containers, "broken", "meta.json"), []byte("{not json"), 0o600)
	os.MkdirAll(filepath.Join(containers, "nometa"), 0o700)
	os.MkdirAll(filepath.Join(containers, "Not-An-ID"), 0o700)

	r := openRuntime(t, o)
	got, err := r.Recover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]idepool.Instance{}
	for _, in := range got {
		byID[in.ID] = in
	}
	for _, id := range []string{"lost", "neverstarted", "reused", "otherboot", "broken", "nometa"} {
		in, ok := byID[id]
		if !ok {
			t.Errorf("%s not recovered", id)
			continue
		}
		if in.Status != idepool.StatusFailed || in.Message == "" {
			t.Errorf("%s: %s %q, want failed with a message", id, in.Status, in.Message)
		}
		if in.Labels[idepool.LabelManaged] != "test" || in.Labels[idepool.LabelID] != id {
			t.Errorf("%s: labels %v", id, in.Labels)
		}
	}
	if !strings.Contains(byID["lost"].Message, "lost while idepool was down") {
		t.Errorf("lost: %q", byID["lost"].Message)
	}
	if _, ok := byID["foreign"]; ok {
		t.Error("another deployment's container was listed")
	}
	if len(got) != 6 {
		t.Errorf("recovered %d, want 6", len(got))
	}
	for _, id := range []string{"lost", "neverstarted", "reused", "otherboot", "broken", "nometa", "foreign"} {
		if err := r.Remove(t.Context(), id); err != nil {
			t.Errorf("Remove(%s): %v", id, err)
		}
	}
	if !pidAlive(stranger) {
		t.Fatal("Remove killed a process that was not ours")
	}
	if _, err := os.Stat(filepath.Join(containers, "foreign", "meta.json")); err != nil {
		t.Errorf("another deployment's container was touched: %v", err)
	}
	if _, err := os.Stat(filepath.Join(containers, "broken")); !os.IsNotExist(err) {
		t.Errorf("broken dir not removed: %v", err)
	}
}

// startStranger starts a process of its own group that sleeps until the
// test ends.
func startStranger(t *testing.T, exe string) int {
	t.Helper()
	p, err := os.StartProcess(exe, []string{exe}, &os.ProcAttr{
		Env: []string{envChild + "=sleeper", envOwner + "=" + strconv.Itoa(os.Getpid())},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		p.Wait()
	})
	return p.Pid
}

// deadPID returns the pid of a process that has ended and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Skipf("no /bin/true: %v", err)
	}
	p.Wait()
	return p.Pid
}

func TestEventsStreamCloses(t *testing.T) {
	r := openRuntime(t, testOptions(t))
	ctx, cancel := context.WithCancel(context.Background())
	ch := r.Events(ctx)
	spec := testSpec(nil, nil)
	mustCreate(t, r, spec)
	seen := map[idepool.RuntimeStatus]bool{}
	for !seen[idepool.StatusRunning] {
		select {
		case e := <-ch:
			if e.ID == spec.ID {
				seen[e.Status] = true
			}
		case <-time.After(wait):
			t.Fatalf("events: %v", seen)
		}
	}
	if !seen[idepool.StatusPending] {
		t.Error("no pending event on create")
	}
	cancel()
	for range ch { // must end
	}
	r.Close()
	if _, open := <-r.Events(context.Background()); open {
		t.Error("Events after Close gave an open channel")
	}
}

func TestAgentLogCapped(t *testing.T) {
	o := testOptions(t)
	o.MaxLogSize = 8
	r := openRuntime(t, o)
	spec := testSpec(nil, nil)
	mustCreate(t, r, spec)
	childEnv(t, o.DataDir, spec.ID) // it has printed its ready line
	dir := filepath.Join(o.DataDir, "containers", spec.ID)
	deadline := time.Now().Add(wait)
	for {
		old, err := os.ReadFile(filepath.Join(dir, "agent.log.1"))
		if err == nil {
			if len(old) > 8 {
				t.Errorf("rotated log holds %d bytes, cap 8", len(old))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent.log over its cap was not rotated")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, err := os.Stat(filepath.Join(dir, "agent.log")); err != nil {
		t.Error(err)
	} else if st.Size() > 8 {
		t.Errorf("agent.log after rotation holds %d bytes, cap 8", st.Size())
	}
}
