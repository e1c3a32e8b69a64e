//go:build linux

package process

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	idepool "github.com/idepool/idepool"
)

// Knobs of the stand-in agent (the test binary itself, see childMain).
const (
	envChild      = "IDEPOOL_PROCESS_TEST_CHILD" // "1": act as the agent; "sleeper": a grandchild
	envIgnoreTerm = "IDEPOOL_TEST_IGNORE_TERM"   // "1": ignore SIGTERM (SIGKILL path)
	envExitCode   = "IDEPOOL_TEST_EXIT"          // exit at once with this code
	envGrandchild = "IDEPOOL_TEST_GRANDCHILD"    // "1": start a grandchild that ignores SIGTERM
	envOwnGroup   = "IDEPOOL_TEST_OWN_GROUP"     // "1": the grandchild gets a process group of its own, as workloads do
	envFile       = "env.json"                   // in the state dir, written when the ports listen
	grandPIDFile  = "grandchild.pid"             // in the state dir
	// envOwner is the pid of the test process: the stand-ins exit when it
	// is gone, so a crashed or timed-out test leaves nothing running.
	envOwner = "IDEPOOL_TEST_OWNER"
)

func TestMain(m *testing.M) {
	if owner, err := strconv.Atoi(os.Getenv(envOwner)); err == nil && owner > 1 {
		go func() {
			// EPERM: alive, but not ours to signal (a stand-in run as
			// another user).
			for err := syscall.Kill(owner, 0); err == nil || err == syscall.EPERM; err = syscall.Kill(owner, 0) {
				time.Sleep(200 * time.Millisecond)
			}
			os.Exit(3)
		}()
	}
	if dir := os.Getenv(envRuntimeOwner); dir != "" {
		runtimeOwnerMain(dir)
		return
	}
	switch os.Getenv(envChild) {
	case "1":
		childMain()
		return
	case "sleeper":
		signal.Ignore(syscall.SIGTERM)
		select {}
	}
	os.Exit(m.Run())
}

// childMain is a tiny stand-in for `idepool agent`: it answers 200 on every
// IDEPOOL_PORT_*, records the environment it got (the token's value
// redacted) and exits on SIGTERM.
func childMain() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "test child:", err)
		os.Exit(2)
	}
	// As `idepool agent` does: nothing starts before the runtime has put
	// this process in its limits (idepool.EnvStartGate).
	if v := os.Getenv(idepool.EnvStartGate); v != "" {
		fd, err := strconv.Atoi(v)
		if err != nil {
			fail(err)
		}
		gate := os.NewFile(uintptr(fd), "start-gate")
		if _, err := io.Copy(io.Discard, gate); err != nil {
			fail(err)
		}
		gate.Close()
	}
	if c := os.Getenv(envExitCode); c != "" {
		n, _ := strconv.Atoi(c)
		os.Exit(n)
	}
	term := make(chan os.Signal, 1)
	if os.Getenv(envIgnoreTerm) == "1" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	state := os.Getenv(idepool.EnvStateDir)
	if os.Getenv(envGrandchild) == "1" {
		exe, err := os.Executable()
		if err != nil {
			fail(err)
		}
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envChild+"=sleeper")
		if os.Getenv(envOwnGroup) == "1" {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		}
		if err := cmd.Start(); err != nil {
			fail(err)
		}
		if err := os.WriteFile(filepath.Join(state, grandPIDFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
			fail(err)
		}
	}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if k == idepool.EnvAgentToken && v != "" {
			v = "<set>"
		}
		env[k] = v
		if strings.HasPrefix(k, idepool.EnvRoutePortPrefix) {
			l, err := net.Listen("tcp", "127.0.0.1:"+v)
			if err != nil {
				fail(err)
			}
			go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "ok %s\n", k)
			}))
		}
	}
	b, err := json.Marshal(env)
	if err != nil {
		fail(err)
	}
	// Written last and atomically: once it exists, the ports listen.
	if err := writeFileAtomic(filepath.Join(state, envFile), b, 0o600); err != nil {
		fail(err)
	}
	fmt.Println("test child ready")
	<-term
	os.Exit(0)
}
