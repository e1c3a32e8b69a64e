//go:build linux

package process

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestFindCPUCgroup(t *testing.T) {
	const v1Mounts = `25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 25 0:27 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
32 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw`
	v2Root := t.TempDir()
	os.WriteFile(filepath.Join(v2Root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
	os.MkdirAll(filepath.Join(v2Root, "nocpu"), 0o755)
	os.WriteFile(filepath.Join(v2Root, "nocpu", "cgroup.controllers"), []byte("memory pids\n"), 0o644)
	v2Mounts := "40 1 0:30 / " + v2Root + " rw - cgroup2 cgroup2 rw,nsdelegate"
	for _, c := range []struct {
		name, mounts, cgroup string
		dir                  string
		v2                   bool
		err                  string
	}{
		{"v1 root", v1Mounts, "9:memory:/x\n1:cpu:/\n0::/", "/sys/fs/cgroup/cpu", false, ""},
		{"v1 nested, cpu with cpuacct", strings.Replace(v1Mounts, "rw,cpu", "rw,cpu,cpuacct", 1), "1:cpu,cpuacct:/svc/idepool\n", "/sys/fs/cgroup/cpu/svc/idepool", false, ""},
		{"v2", v2Mounts, "0::/\n", v2Root, true, ""},
		{"v2 without the cpu controller", v2Mounts, "0::/nocpu\n", "", false, "no cpu controller"},
		{"v1 cpu not mounted", v1Mounts, "9:memory:/x\n", "", false, "no cpu cgroup"},
		{"nothing", "", "", "", false, "no cpu cgroup"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, v2, err := findCPUCgroup(strings.NewReader(c.mounts), strings.NewReader(c.cgroup))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || dir != c.dir || v2 != c.v2 {
				t.Fatalf("got %q %v %v, want %q %v", dir, v2, err, c.dir, c.v2)
			}
		})
	}
}

// TestNiceAgentsRunLower runs an agent at nice 10: the runtime lowers the
// whole group's priority (and, where it may, moves it into the agents'
// cgroup).
func TestNiceAgentsRunLower(t *testing.T) {
	o := testOptions(t)
	o.Nice = 10
	r := openRuntime(t, o)
	inst := mustCreate(t, r, testSpec(nil, nil))
	r.mu.Lock()
	pid := r.containers[inst.ID].meta.Process.PID
	r.mu.Unlock()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if f[16] != "10" { // stat's 19th field, nice
		t.Fatalf("agent nice = %s, want 10", f[16])
	}
	if r.cpu != nil {
		procs, err := os.ReadFile(filepath.Join(r.cpu.dir, "cgroup.procs"))
		if err != nil || !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(pid)+"\n") {
			t.Fatalf("agent %d not in %s: %v", pid, r.cpu.dir, err)
		}
	} else if os.Geteuid() == 0 {
		t.Log("running as root but no agents' cgroup: this kernel offers no writable cpu cgroup")
	}
	if _, err := New(Options{DataDir: t.TempDir(), Nice: 20}); err == nil {
		t.Fatal("Nice 20 accepted")
	}
}
