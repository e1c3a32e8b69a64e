//go:build linux

package process

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     procStat
		err      bool
	}{
		{"plain", "42 (agent) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10", procStat{'S', 42, 123456}, false},
		{"odd name", "42 (a) b (c) Z 1 7 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 99 1000 10", procStat{'Z', 7, 99}, false},
		{"short", "42 (agent) S 1 42", procStat{}, true},
		{"no name", "garbage", procStat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, err %v", got, err, tc.want, tc.err)
			}
		})
	}
	// And the real thing: this process.
	st, err := readProcStat("/proc", os.Getpid())
	if err != nil || st.start == 0 || st.dead() {
		t.Errorf("own stat: %+v, %v", st, err)
	}
}

// fakeProcs is a process table for identity checks.
type fakeProcs struct {
	procs  map[int]procStat
	boot   string
	killed []int
}

func (f *fakeProcs) stat(pid int) (procStat, error) {
	st, ok := f.procs[pid]
	if !ok {
		return procStat{}, os.ErrNotExist
	}
	return st, nil
}
func (f *fakeProcs) bootID() string { return f.boot }
func (f *fakeProcs) groupMembers(pgid int) []int {
	var out []int
	for pid, st := range f.procs {
		if st.pgrp == pgid && !st.dead() {
			out = append(out, pid)
		}
	}
	return out
}
func (f *fakeProcs) marked(key, under string) []markedProc { return nil }
func (f *fakeProcs) kill(pid int, sig syscall.Signal) error {
	f.killed = append(f.killed, pid)
	return nil
}

func TestIdentityGuards(t *testing.T) {
	const boot = "boot-1"
	ours := identity{PID: 100, StartTicks: 5000, BootID: boot}
	for _, tc := range []struct {
		name        string
		procs       map[int]procStat
		id          identity
		leader      bool
		groupAlive  bool
		wantSignals bool
	}{
		{"alive", map[int]procStat{100: {'S', 100, 5000}}, ours, true, true, true},
		{"gone", map[int]procStat{}, ours, false, false, false},
		{"zombie", map[int]procStat{100: {'Z', 100, 5000}}, ours, false, false, false},
		{"zombie leader, live member", map[int]procStat{100: {'Z', 100, 5000}, 101: {'S', 100, 5001}}, ours, false, true, true},
		{"leader gone, live member", map[int]procStat{101: {'S', 100, 5001}}, ours, false, true, true},
		{"pid reused by a stranger", map[int]procStat{100: {'S', 100, 9000}}, ours, false, false, false},
		{"pid reused, stranger has a group", map[int]procStat{100: {'S', 100, 9000}, 101: {'S', 100, 9001}}, ours, false, false, false},
		{"other boot", map[int]procStat{100: {'S', 100, 5000}}, identity{PID: 100, StartTicks: 5000, BootID: "boot-0"}, false, false, false},
		{"no pid", map[int]procStat{0: {'S', 0, 1}}, identity{}, false, false, false},
		{"init", map[int]procStat{1: {'S', 1, 1}}, identity{PID: 1}, false, false, false},
		{"start not recorded", map[int]procStat{100: {'S', 100, 77}}, identity{PID: 100}, false, false, false},
		{"no start times (no /proc)", map[int]procStat{100: {'S', 100, 0}}, identity{PID: 100}, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProcs{procs: tc.procs, boot: boot}
			if got := leaderAlive(f, tc.id); got != tc.leader {
				t.Errorf("leaderAlive = %v, want %v", got, tc.leader)
			}
			if got := ownGroupAlive(f, tc.id); got != tc.groupAlive {
				t.Errorf("ownGroupAlive = %v, want %v", got, tc.groupAlive)
			}
			if err := signalGroup(f, tc.id, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if tc.wantSignals {
				if len(f.killed) != 1 || f.killed[0] != -tc.id.PID {
					t.Errorf("signalled %v, want [-%d]", f.killed, tc.id.PID)
				}
			} else if len(f.killed) != 0 {
				t.Errorf("signalled %v, want nothing: not ours", f.killed)
			}
		})
	}
}

func TestPortsSkipInUseAndDuplicates(t *testing.T) {
	offers := []int{5000, 5000, 5001, 5000, 5001, 5002, 5003}
	i := 0
	p := newPorts(func() (int, net.Listener, error) {
		if i >= len(offers) {
			return 0, nil, errors.New("out of offers")
		}
		i++
		return offers[i-1], nil, nil
	})
	a, err := p.alloc("a", []string{"x", "y"})
	if err != nil || a["x"] != 5000 || a["y"] != 5001 {
		t.Fatalf("a: %v, %v", a, err)
	}
	b, err := p.alloc("b", []string{"x", "y"})
	if err != nil || b["x"] != 5002 || b["y"] != 5003 {
		t.Fatalf("b: %v, %v (must skip ports held by a)", b, err)
	}
	if _, err := p.alloc("c", []string{"x"}); err == nil {
		t.Error("alloc with no free port succeeded")
	}
	p.release("a")
	offers, i = []int{5001}, 0
	if c, err := p.alloc("c", []string{"x"}); err != nil || c["x"] != 5001 {
		t.Errorf("after release: %v, %v", c, err)
	}
	// Bounded: a picker that only ever offers a used port gives up.
	p2 := newPorts(func() (int, net.Listener, error) { return 7000, nil, nil })
	p2.reserve("z", map[string]int{"x": 7000})
	if _, err := p2.alloc("y", []string{"x"}); err == nil {
		t.Error("alloc succeeded with only used ports on offer")
	}
}

func TestCapLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.log")
	// Appending writer, as the agent holds it.
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(bytes.Repeat([]byte("a"), 100))
	w.Write(bytes.Repeat([]byte("b"), 50))
	if err := capLog(path, 1000); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != 150 {
		t.Errorf("under the cap it was changed: %d", st.Size())
	}
	if err := capLog(path, 60); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	if string(old) != string(bytes.Repeat([]byte("a"), 10))+string(bytes.Repeat([]byte("b"), 50)) {
		t.Errorf("rotated file holds %q, want the last 60 bytes", old)
	}
	w.Write([]byte("new"))
	cur, _ := os.ReadFile(path)
	if string(cur) != "new" {
		t.Errorf("after truncation the log holds %q, want %q (no hole)", cur, "new")
	}
}
