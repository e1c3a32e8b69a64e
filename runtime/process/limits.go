//go:build unix

package process

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	idepool "github.com/idepool/idepool"
)

// limiter makes one cgroup per container (per controller on cgroup v1)
// with its profile's memory and CPU limits. The agent is moved in right
// after it starts; all it starts is born there.
type limiter struct {
	v2  bool
	mem string // parent of the containers' memory groups (v2: of their groups)
	cpu string // v1: parent of their cpu groups
}

const cpuPeriod = 100000 // µs, the kernel's default CFS period

func (l *limiter) kind() string {
	if l.v2 {
		return "cgroup v2 (" + l.mem + ")"
	}
	return "cgroup v1 (" + l.mem + ", " + l.cpu + ")"
}

// openLimiter finds this process's memory and cpu cgroups and makes the
// parent of the containers' groups under them: on v1 idepool-<deployment>
// under our own memory group, and the agents' shared CPU group (cpuGroup,
// so its weight still holds) or idepool-<deployment> under our cpu group;
// on v2 idepool-<deployment> beside our own group, with both controllers
// delegated to it (a v2 group with processes cannot hand them down).
func openLimiter(deployment string, shared *cpuGroup) (*limiter, error) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	name := "idepool-" + deployment
	v1, v2path, hasV2 := ownCgroups(string(own))
	mnt1, mnt2 := cgroupMounts(string(mounts))
	if v1["memory"] != "" && mnt1["memory"] != "" && v1["cpu"] != "" && mnt1["cpu"] != "" {
		l := &limiter{mem: filepath.Join(mnt1["memory"], v1["memory"], name)}
		if shared != nil {
			l.cpu = shared.dir
		} else {
			l.cpu = filepath.Join(mnt1["cpu"], v1["cpu"], name)
		}
		for _, d := range []string{l.mem, l.cpu} {
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
		}
		return l, nil
	}
	if hasV2 && mnt2 != "" {
		parent := filepath.Dir(filepath.Join(mnt2, v2path))
		if b, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers")); err != nil ||
			!slices.Contains(strings.Fields(string(b)), "memory") || !slices.Contains(strings.Fields(string(b)), "cpu") {
			return nil, fmt.Errorf("no memory and cpu controllers in %s", parent)
		}
		l := &limiter{v2: true, mem: filepath.Join(parent, name)}
		if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory +cpu"), 0); err != nil {
			return nil, fmt.Errorf("delegate memory and cpu under %s: %w", parent, err)
		}
		if err := os.Mkdir(l.mem, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(l.mem, "cgroup.subtree_control"), []byte("+memory +cpu"), 0); err != nil {
			return nil, fmt.Errorf("delegate memory and cpu under %s: %w", l.mem, err)
		}
		return l, nil
	}
	return nil, errors.New("no memory and cpu cgroups this process may use")
}

// create makes container id's groups with p's limits and returns their
// directories (recorded in meta.json, so Remove finds them after a
// restart). A zero limit is "max".
func (l *limiter) create(id string, p idepool.Profile) ([]string, error) {
	var dirs []string
	if l.v2 {
		dirs = []string{filepath.Join(l.mem, id)}
	} else {
		dirs = []string{filepath.Join(l.mem, id), filepath.Join(l.cpu, id)}
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return dirs, err
		}
	}
	mem, quota := "max", "max"
	if p.MemoryLimit > 0 {
		mem = strconv.FormatInt(p.MemoryLimit, 10)
	}
	if p.CPULimit > 0 {
		quota = strconv.FormatInt(int64(p.CPULimit*cpuPeriod), 10)
	}
	var writes [][2]string
	if l.v2 {
		writes = [][2]string{{filepath.Join(dirs[0], "memory.max"), mem}, {filepath.Join(dirs[0], "cpu.max"), quota + " " + strconv.Itoa(cpuPeriod)}}
	} else {
		if mem == "max" {
			mem = "-1"
		}
		if quota == "max" {
			quota = "-1"
		}
		writes = [][2]string{
			{filepath.Join(dirs[0], "memory.limit_in_bytes"), mem},
			{filepath.Join(dirs[1], "cpu.cfs_period_us"), strconv.Itoa(cpuPeriod)},
			{filepath.Join(dirs[1], "cpu.cfs_quota_us"), quota},
		}
	}
	for _, w := range writes {
		if err := os.WriteFile(w[0], []byte(w[1]), 0); err != nil {
			return dirs, fmt.Errorf("set %s: %w", w[0], err)
		}
	}
	return dirs, nil
}

// joinGroups moves pid into every group of dirs.
func joinGroups(dirs []string, pid int) error {
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("join %s: %w", d, err)
		}
	}
	return nil
}

// removeGroups deletes a container's groups once nothing runs in them.
// A group whose last task was just killed can stay busy for a moment
// after the task is gone from /proc (the kernel releases it
// asynchronously): EBUSY is retried for up to about a second, as runc
// does, instead of leaving the group behind.
func removeGroups(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		err := os.Remove(d)
		for wait := 5 * time.Millisecond; errors.Is(err, syscall.EBUSY) && wait <= 320*time.Millisecond; wait *= 2 {
			time.Sleep(wait)
			err = os.Remove(d)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ownCgroups parses /proc/self/cgroup: v1 controller → path, the v2 path.
func ownCgroups(s string) (v1 map[string]string, v2 string, hasV2 bool) {
	v1 = map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2, hasV2 = parts[2], true
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			v1[c] = parts[2]
		}
	}
	return v1, v2, hasV2
}

// cgroupMounts parses /proc/self/mountinfo: v1 controller → mount point,
// and the v2 mount point (one with controllers, where several exist).
func cgroupMounts(s string) (v1 map[string]string, v2 string) {
	v1 = map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if sep < 5 || sep+3 >= len(f) || f[3] != "/" {
			continue
		}
		switch f[sep+1] {
		case "cgroup2":
			if v2 == "" {
				v2 = f[4]
			} else if b, err := os.ReadFile(filepath.Join(f[4], "cgroup.controllers")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
				v2 = f[4]
			}
		case "cgroup":
			for _, o := range strings.Split(f[sep+3], ",") {
				if o == "memory" || o == "cpu" {
					v1[o] = f[4]
				}
			}
		}
	}
	return v1, v2
}
