//go:build unix && !linux

package process

import (
	"syscall"
)

type procStat struct {
	state byte
	pgrp  int
	start uint64
}

func (s procStat) dead() bool { return false }

// hostProcs is the fallback without /proc: liveness by signal 0 only, so a
// reused pid cannot be told from ours there.
type hostProcs struct{}

func newHostProcs() procTable { return hostProcs{} }

func (hostProcs) stat(pid int) (procStat, error) {
	if err := syscall.Kill(pid, 0); err != nil && err != syscall.EPERM {
		return procStat{}, err
	}
	pgrp, err := syscall.Getpgid(pid)
	if err != nil {
		return procStat{}, err
	}
	return procStat{state: 'S', pgrp: pgrp}, nil
}

func (hostProcs) bootID() string { return "" }

func (hostProcs) groupMembers(pgid int) []int {
	if syscall.Kill(-pgid, 0) == nil {
		return []int{pgid}
	}
	return nil
}

func (hostProcs) kill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// marked needs /proc: without it no process can be found by its marker.
func (hostProcs) marked(key, under string) []markedProc { return nil }
