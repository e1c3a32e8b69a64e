//go:build linux

package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// procStat is what the runtime needs from /proc/<pid>/stat.
type procStat struct {
	state byte   // R, S, D, Z, X, ...
	pgrp  int    // process group
	start uint64 // start time in clock ticks since boot
}

// readProcStat parses /proc/<pid>/stat. The command name may hold spaces and
// parentheses, so the fields are counted after its last ')'.
func readProcStat(procDir string, pid int) (procStat, error) {
	b, err := os.ReadFile(procDir + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return procStat{}, errors.New("malformed stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3]; starttime is field 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("malformed stat: %d fields", len(f))
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat pgrp: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat starttime: %w", err)
	}
	return procStat{state: f[0][0], pgrp: pgrp, start: start}, nil
}

func (s procStat) dead() bool { return s.state == 'Z' || s.state == 'X' || s.state == 'x' }

// bootID tells one boot from another, so a recorded (pid, start time) of a
// previous boot is never taken for a live process.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// hostProcs reads the real /proc.
type hostProcs struct{ dir string }

func newHostProcs() procTable { return hostProcs{dir: "/proc"} }

func (h hostProcs) stat(pid int) (procStat, error) { return readProcStat(h.dir, pid) }

func (h hostProcs) bootID() string { return bootID() }

// groupMembers lists the live (not zombie) processes of process group pgid.
func (h hostProcs) groupMembers(pgid int) []int {
	ents, err := os.ReadDir(h.dir)
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(h.dir, pid)
		if err != nil || st.dead() || st.pgrp != pgid {
			continue
		}
		out = append(out, pid)
	}
	return out
}

func (h hostProcs) kill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// marked lists the live processes whose environment holds key=value with
// value starting with under: every process a Runtime started (agents and
// what they started, which inherit the variable). Processes whose
// environment cannot be read (another user's, without privileges) are not
// listed.
func (h hostProcs) marked(key, under string) []markedProc {
	ents, err := os.ReadDir(h.dir)
	if err != nil {
		return nil
	}
	want := []byte(key + "=" + under)
	var out []markedProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(h.dir + "/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		var value string
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.HasPrefix(kv, want) {
				value = string(kv[len(key)+1:])
				break
			}
		}
		if value == "" {
			continue
		}
		b, err := os.ReadFile(h.dir + "/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st, err := parseProcStat(b)
		if err != nil || st.dead() {
			continue
		}
		out = append(out, markedProc{pid: pid, value: value, pgrp: st.pgrp, sid: parseSession(b), start: st.start})
	}
	return out
}

// parseSession returns the session id (field 6) of a /proc/<pid>/stat line,
// 0 when malformed.
func parseSession(b []byte) int {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return 0
	}
	sid, _ := strconv.Atoi(f[3])
	return sid
}
