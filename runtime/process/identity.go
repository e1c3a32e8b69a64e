//go:build unix

package process

import (
	"errors"
	"syscall"
)

// procTable is the view of the host's processes the runtime needs; tests
// swap in a fake one to play pid reuse.
type procTable interface {
	stat(pid int) (procStat, error)
	bootID() string
	// groupMembers lists the live processes of a process group.
	groupMembers(pgid int) []int
	kill(pid int, sig syscall.Signal) error
	// marked lists live processes carrying the runtime's marker (see
	// markerEnv) with a value under the given prefix.
	marked(key, under string) []markedProc
}

// markedProc is a live process that carries the runtime's marker.
type markedProc struct {
	pid   int
	value string // the marker's value: the container's directory
	pgrp  int
	sid   int
	start uint64
}

// identity names one agent process so that it can be found again after a
// restart and told apart from an unrelated process that got the same pid.
type identity struct {
	PID int `json:"pid,omitempty"`
	// StartTicks is /proc/<pid>/stat's starttime (0 when unknown).
	StartTicks uint64 `json:"startTicks,omitempty"`
	BootID     string `json:"bootId,omitempty"`
}

// otherBoot reports whether id was recorded during an earlier boot: then
// nothing of it can still run.
func otherBoot(pt procTable, id identity) bool {
	if id.BootID == "" {
		return false
	}
	b := pt.bootID()
	return b != "" && b != id.BootID
}

// leaderAlive reports whether the agent process itself still runs. A pid
// whose start time differs is someone else's: pids are reused.
func leaderAlive(pt procTable, id identity) bool {
	if id.PID <= 1 || otherBoot(pt, id) {
		return false
	}
	st, err := pt.stat(id.PID)
	if err != nil || st.dead() {
		return false
	}
	// Where start times are known (Linux) an unrecorded one never matches:
	// such a pid cannot be proven ours. Without /proc both are 0.
	return st.start == id.StartTicks
}

// pidReused reports whether id.PID now names a process that is not ours.
func pidReused(pt procTable, id identity) bool {
	if otherBoot(pt, id) {
		return true
	}
	st, err := pt.stat(id.PID)
	if err != nil {
		return false
	}
	return st.start != id.StartTicks
}

// ownGroupAlive reports whether any process of the agent's group (it is the
// leader: Setsid) still runs. Linux does not hand out a pid while a process
// group of that number exists, so while the leader's pid is not reused the
// group's members are ours; once it is reused our group was empty.
func ownGroupAlive(pt procTable, id identity) bool {
	if id.PID <= 1 {
		return false
	}
	if leaderAlive(pt, id) {
		return true
	}
	if pidReused(pt, id) {
		return false
	}
	return len(pt.groupMembers(id.PID)) > 0
}

// signalGroup sends sig to the agent's process group, and to nothing that is
// not ours: never for pid 0 or 1 (kill(0) would hit our own group), never
// when the pid was reused.
func signalGroup(pt procTable, id identity, sig syscall.Signal) error {
	if !ownGroupAlive(pt, id) {
		return nil
	}
	err := pt.kill(-id.PID, sig)
	if errors.Is(err, syscall.ESRCH) && leaderAlive(pt, id) {
		// The agent left its group (setpgid): signal it alone.
		err = pt.kill(id.PID, sig)
	}
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}
