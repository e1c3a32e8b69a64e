//go:build linux

package process

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestIsolationAsRoot: run as root (as `serve` is here), a container's
// agent and the workloads it starts run as the unprivileged user, inside
// the container's own cgroups whose limits are the profile's.
func TestIsolationAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root runs processes as another user and makes cgroups")
	}
	o := testOptions(t)
	searchableDir := func() string {
		d := t.TempDir()
		for _, p := range []string{d, filepath.Dir(d)} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	o.DataDir = searchableDir()
	// The stand-in agent (this test binary) where nobody can run it.
	exe := filepath.Join(searchableDir(), "agent")
	copyFile(t, testExe(t), exe)
	o.AgentCommand = []string{exe}
	o.ExtraEnv[envGrandchild] = "1" // the agent starts a "workload"
	o.User = &User{UID: 65534, GID: 65534}
	o.Limits = true
	r := openRuntime(t, o)
	if r.opts.User == nil || r.limits == nil {
		t.Fatalf("isolation refused: user %v, limits %v", r.opts.User, r.limits)
	}
	spec := testSpec(nil, nil)
	spec.Profile.MemoryLimit = 256 << 20
	spec.Profile.CPULimit = 0.5
	mustCreate(t, r, spec)
	env := childEnv(t, o.DataDir, spec.ID)
	dir := filepath.Join(o.DataDir, "containers", spec.ID)
	if env["HOME"] != filepath.Join(dir, "home") {
		t.Errorf("HOME = %q, want the container's own", env["HOME"])
	}
	b, err := os.ReadFile(filepath.Join(dir, "state", grandPIDFile))
	if err != nil {
		t.Fatal(err)
	}
	workload, _ := strconv.Atoi(string(b))
	r.mu.Lock()
	agent := r.containers[spec.ID].meta.Process.PID
	groups := r.containers[spec.ID].meta.Cgroups
	r.mu.Unlock()
	for name, pid := range map[string]int{"agent": agent, "workload": workload} {
		status := readProc(t, pid, "status")
		for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534"} {
			if !strings.Contains(status, want) {
				t.Errorf("%s (pid %d) does not run as nobody: no %q in its status", name, pid, want)
			}
		}
		for _, l := range strings.Split(status, "\n") {
			if g, ok := strings.CutPrefix(l, "Groups:"); ok && len(strings.Fields(g)) > 0 {
				t.Errorf("%s (pid %d) kept supplementary groups %q", name, pid, g)
			}
		}
		// Its cgroups and their limits, as the kernel reports them.
		mem, cpu := limitsOf(t, pid)
		if mem != strconv.Itoa(256<<20) {
			t.Errorf("%s: memory limit %q, want %d", name, mem, 256<<20)
		}
		if cpu != "50000 100000" {
			t.Errorf("%s: cpu quota %q, want 50000 per 100000 µs (0.5 CPU)", name, cpu)
		}
	}
	if err := r.Remove(t.Context(), spec.ID); err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if _, err := os.Stat(g); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left after Remove: %v", g, err)
		}
	}
}

func readProc(t *testing.T, pid int, file string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// limitsOf returns the memory limit and the CPU quota ("quota period") of
// pid's cgroups, read from cgroup v2 or v1 files.
func limitsOf(t *testing.T, pid int) (mem, cpu string) {
	t.Helper()
	v1, v2, hasV2 := ownCgroups(readProc(t, pid, "cgroup"))
	mnt1, mnt2 := cgroupMounts(readProc(t, os.Getpid(), "mountinfo"))
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if v1["memory"] != "" && mnt1["memory"] != "" {
		mem = read(filepath.Join(mnt1["memory"], v1["memory"], "memory.limit_in_bytes"))
		cd := filepath.Join(mnt1["cpu"], v1["cpu"])
		cpu = read(filepath.Join(cd, "cpu.cfs_quota_us")) + " " + read(filepath.Join(cd, "cpu.cfs_period_us"))
		return mem, cpu
	}
	if !hasV2 {
		t.Fatal("no cgroup")
	}
	d := filepath.Join(mnt2, v2)
	return read(filepath.Join(d, "memory.max")), read(filepath.Join(d, "cpu.max"))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
