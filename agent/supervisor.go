package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/idepool/idepool"
)

// Process states reported in heartbeats.
const (
	StateRunning    = "running"
	StateRestarting = "restarting"
	StateExited     = "exited"
	StateFailed     = "failed"
)

// supervisor starts the workloads, restarts them when they crash, and stops
// them (SIGTERM to the process group, SIGKILL after a grace) on shutdown.
type supervisor struct {
	cfg    *Config
	log    *slog.Logger
	env    []string // shared part of every workload's environment
	procs  []*proc
	reaper *reaper // nil unless cfg.Reap
	wg     sync.WaitGroup
}

type proc struct {
	w  idepool.Workload
	mu sync.Mutex
	st idepool.ProcessStatus
}

func (p *proc) set(state string, pid int, msg string, restarts int) {
	p.mu.Lock()
	p.st = idepool.ProcessStatus{Name: p.w.Name, State: state, PID: pid, Restarts: restarts, Since: time.Now(), Message: msg}
	p.mu.Unlock()
}

func (p *proc) status() idepool.ProcessStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

func newSupervisor(cfg *Config) *supervisor {
	s := &supervisor{cfg: cfg, log: cfg.Logger, env: workloadEnv(cfg)}
	for _, w := range cfg.Workloads {
		p := &proc{w: w}
		p.st = idepool.ProcessStatus{Name: w.Name, State: StateRestarting, Message: "not started yet"}
		s.procs = append(s.procs, p)
	}
	return s
}

// workloadEnv is the base environment of workloads: the agent's own minus
// its token (the workloads are the user's; the token is the agent's), plus
// the route ports and the workspace.
func workloadEnv(cfg *Config) []string {
	routes := cfg.workRoutes
	if routes == nil {
		routes = cfg.Routes
	}
	var env []string
	for _, kv := range cfg.BaseEnv {
		// The token is the agent's; the ports and listen host are set
		// below (a duplicate would leave the choice to each program).
		if strings.HasPrefix(kv, idepool.EnvAgentToken+"=") || strings.HasPrefix(kv, idepool.EnvRoutePortPrefix) ||
			cfg.workHost != "" && strings.HasPrefix(kv, EnvListenHost+"=") {
			continue
		}
		env = append(env, kv)
	}
	for _, r := range routes {
		env = append(env, fmt.Sprintf("%s%s=%d", idepool.EnvRoutePortPrefix, portEnvName(r.Name), r.Port))
	}
	if cfg.workHost != "" {
		// Behind relays: the workloads must bind loopback only, or peers
		// could reach them around the relay.
		env = append(env, EnvListenHost+"="+cfg.workHost)
	}
	if cfg.WorkspaceDir != "" {
		env = append(env, idepool.EnvWorkspaceDir+"="+cfg.WorkspaceDir)
	}
	return env
}

// start launches every workload; they run until ctx ends. wait returns once
// all are stopped.
func (s *supervisor) start(ctx context.Context) {
	if s.cfg.Reap {
		s.reaper = startReaper(s.log)
	}
	for _, p := range s.procs {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(ctx, p)
		}()
	}
}

func (s *supervisor) wait() {
	s.wg.Wait()
	if s.reaper != nil {
		s.reaper.stop()
	}
}

// statuses returns every workload's state, sorted by name.
func (s *supervisor) statuses() []idepool.ProcessStatus {
	out := make([]idepool.ProcessStatus, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, p.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// run keeps one workload running until ctx ends.
func (s *supervisor) run(ctx context.Context, p *proc) {
	backoff := s.cfg.RestartMin
	for attempt := 0; ; attempt++ {
		started := time.Now()
		pid, exited, err := s.spawn(p.w)
		if err != nil {
			s.log.Error("workload could not start", "workload", p.w.Name, "err", err)
			p.set(StateFailed, 0, err.Error(), attempt)
		} else {
			s.log.Info("workload started", "workload", p.w.Name, "pid", pid)
			p.set(StateRunning, pid, "", attempt)
			select {
			case msg := <-exited:
				// Leftovers of the group (background children) would hold
				// its ports; the restart starts from a clean slate.
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				if ctx.Err() != nil {
					p.set(StateExited, 0, msg, attempt)
					return
				}
				if time.Since(started) >= s.cfg.StableAfter {
					backoff = s.cfg.RestartMin
				}
				s.log.Warn("workload exited; restarting", "workload", p.w.Name, "status", msg, "backoff", backoff)
				p.set(StateRestarting, 0, msg, attempt)
			case <-ctx.Done():
				msg := s.terminate(p.w.Name, pid, exited)
				p.set(StateExited, 0, msg, attempt)
				return
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			st := p.status()
			p.set(StateExited, 0, st.Message, attempt)
			return
		case <-t.C:
		}
		backoff = min(backoff*2, s.cfg.RestartMax)
	}
}

// terminate stops a workload's process group: SIGTERM, then SIGKILL after
// the grace.
func (s *supervisor) terminate(name string, pid int, exited <-chan string) string {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	// A stopped group (SIGSTOP: a frozen workload) acts on SIGTERM only once
	// continued. Without this it sat out the whole grace, and the process
	// runtime, whose grace is as long, killed the agent first and left the
	// workload's group behind.
	_ = syscall.Kill(-pid, syscall.SIGCONT)
	t := time.NewTimer(s.cfg.KillGrace)
	defer t.Stop()
	var msg string
	select {
	case msg = <-exited:
	case <-t.C:
		s.log.Warn("workload ignored SIGTERM; killing it", "workload", name, "grace", s.cfg.KillGrace)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		msg = <-exited
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL) // what is left of the group
	return msg
}

// spawn starts one workload in its own process group and returns a channel
// that receives its exit status.
func (s *supervisor) spawn(w idepool.Workload) (int, <-chan string, error) {
	env := append([]string(nil), s.env...)
	for k, v := range w.Env {
		env = append(env, k+"="+v)
	}
	path := w.Command[0]
	if !strings.Contains(path, "/") {
		lp, err := exec.LookPath(path)
		if err != nil {
			return 0, nil, fmt.Errorf("workload %s: %w", w.Name, err)
		}
		path = lp
	}
	dir := w.Dir
	if dir == "" {
		if fi, err := os.Stat(s.cfg.WorkspaceDir); err == nil && fi.IsDir() {
			dir = s.cfg.WorkspaceDir
		}
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer devnull.Close()
	attr := &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{devnull, s.cfg.Output, s.cfg.Output},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	if s.reaper != nil {
		return s.reaper.start(path, w.Command, attr)
	}
	p, err := os.StartProcess(path, w.Command, attr)
	if err != nil {
		return 0, nil, fmt.Errorf("workload %s: %w", w.Name, err)
	}
	ch := make(chan string, 1)
	go func() {
		st, err := p.Wait()
		if err != nil {
			ch <- err.Error()
			return
		}
		ch <- st.String()
	}()
	return p.Pid, ch, nil
}

// reaper is the one place that waits for children when the agent is PID 1
// (or a subreaper): it reaps every exited child, orphans included, and hands
// the exit status of a supervised workload to whoever waits for that pid.
// Nothing else in the process may wait for children then: a Wait4(-1) would
// steal their statuses.
type reaper struct {
	log      *slog.Logger
	mu       sync.Mutex // held while starting a child, so its pid is registered before it can be reaped
	waiters  map[int]chan string
	sigs     chan os.Signal
	quit     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func startReaper(log *slog.Logger) *reaper {
	r := &reaper{log: log, waiters: map[int]chan string{}, sigs: make(chan os.Signal, 1),
		quit: make(chan struct{}), done: make(chan struct{})}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.loop()
	return r
}

func (r *reaper) loop() {
	defer close(r.done)
	// Signals coalesce; the ticker also catches anything missed.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.quit:
			r.reap()
			return
		case <-r.sigs:
		case <-t.C:
		}
		r.reap()
	}
}

func (r *reaper) stop() {
	r.stopOnce.Do(func() {
		signal.Stop(r.sigs)
		close(r.quit)
	})
	<-r.done
}

func (r *reaper) start(path string, argv []string, attr *os.ProcAttr) (int, <-chan string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan string, 1)
	r.waiters[p.Pid] = ch
	pid := p.Pid
	_ = p.Release() // its status is collected by reap, not by p.Wait
	return pid, ch, nil
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- describeWait(ws)
		} else {
			r.log.Debug("reaped an orphan", "pid", pid, "status", describeWait(ws))
		}
	}
}

func describeWait(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "signal: " + ws.Signal().String()
	default:
		return fmt.Sprintf("wait status %#x", uint32(ws))
	}
}
