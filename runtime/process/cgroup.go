package process

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cpuGroup is one cgroup that holds every agent of a Runtime, weighted like
// a single process at the runtime's niceness. Niceness alone cannot keep
// the orchestrator responsive: the scheduler weighs each runnable thread
// (and, with autogroups, each session), so 400 agents at nice 10 still
// outweigh one orchestrator forty to one. One group for all of them weighs
// as one process, whatever their number.
type cpuGroup struct {
	dir string
}

// niceWeight is the kernel's weight of a nice value (sched_prio_to_weight).
var niceWeight = [...]int{
	1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
	110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
}

// openCPUGroup creates (or reuses) the cgroup name beside this process's
// own CPU cgroup and gives it the weight of nice. It needs the right to
// create cgroups there (root, or a delegated cgroup v2 subtree); the caller
// falls back to niceness alone when it fails.
func openCPUGroup(name string, nice int) (*cpuGroup, error) {
	mounts, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer mounts.Close()
	own, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer own.Close()
	parent, v2, err := findCPUCgroup(mounts, own)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(parent, name)
	weight := niceWeight[nice]
	file, value := "cpu.shares", strconv.Itoa(weight)
	if v2 {
		// cgroup v2 weighs 1–10000 with 100 for a nice-0 process.
		file, value = "cpu.weight", strconv.Itoa(max(1, weight*100/1024))
		// Children get the cpu controller only where the parent hands it
		// down; a parent with processes of its own refuses (EBUSY).
		if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
			return nil, fmt.Errorf("enable the cpu controller under %s: %w", parent, err)
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return nil, fmt.Errorf("set %s of %s: %w", file, dir, err)
	}
	return &cpuGroup{dir: dir}, nil
}

// add moves process pid (all its threads) into the group; what it starts
// afterwards is born there.
func (g *cpuGroup) add(pid int) error {
	return os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// findCPUCgroup returns the directory of this process's CPU cgroup and
// whether it is cgroup v2, from /proc/self/mountinfo and /proc/self/cgroup.
func findCPUCgroup(mountinfo, cgroup io.Reader) (dir string, v2 bool, err error) {
	var v1Path, v2Path string
	hasV2 := false
	sc := bufio.NewScanner(cgroup)
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path, hasV2 = parts[2], true
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				v1Path = parts[2]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, err
	}
	var v1Mount, v2Mount string
	sc = bufio.NewScanner(mountinfo)
	for sc.Scan() {
		// id parent major:minor root mount-point options [optional...] - type source super-options
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 >= len(f) || f[3] != "/" {
			continue
		}
		switch f[sep+1] {
		case "cgroup2":
			v2Mount = f[4]
		case "cgroup":
			for _, o := range strings.Split(f[sep+3], ",") {
				if o == "cpu" {
					v1Mount = f[4]
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, err
	}
	switch {
	case v1Path != "" && v1Mount != "":
		return filepath.Join(v1Mount, v1Path), false, nil
	case hasV2 && v2Mount != "":
		dir := filepath.Join(v2Mount, v2Path)
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers")); err != nil || !slices.Contains(strings.Fields(string(b)), "cpu") {
			return "", false, fmt.Errorf("no cpu controller in %s", dir)
		}
		return dir, true, nil
	}
	return "", false, errors.New("no cpu cgroup mounted for this process")
}
