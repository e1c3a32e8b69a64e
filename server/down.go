package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/internal/dirlock"
	"github.com/idepool/idepool/runtime/process"
)

// DownOptions configure Down.
type DownOptions struct {
	Logger *slog.Logger
	// Out receives one line per container and the total.
	Out io.Writer
	// StopServe: when a serve holds DATA_DIR, stop it (SIGTERM) and go on;
	// otherwise Down refuses, since a running serve would refill its pools
	// at once.
	StopServe bool
	// AgentCommand, for the process runtime, is only needed to build the
	// runtime; Down starts no agent.
	AgentCommand []string
}

// DownResult says what Down did.
type DownResult struct {
	Stopped int
	Failed  int
}

// ServeRunningError is Down's refusal while a serve holds DATA_DIR.
type ServeRunningError struct{ Holder dirlock.Holder }

func (e *ServeRunningError) Error() string {
	return fmt.Sprintf("%s runs on this DATA_DIR and would start new containers at once: stop it first "+
		"(Ctrl-C, or kill %d), or run `idepool down --stop-serve`", e.Holder, e.Holder.PID)
}

// Down stops every container of the configuration's deployment: on the
// process runtime every agent under DATA_DIR, on Swarm every service of
// DEPLOYMENT. Each goes through the runtime's Remove, which asks the agent
// to stop (SIGTERM), and the agent flushes its workspace to S3 before it
// exits. With the embedded store, Down runs the store meanwhile (serve,
// which runs it otherwise, is not running), at the address the agents know.
//
// Down holds DATA_DIR's lock while it works, so no serve starts meanwhile.
func Down(ctx context.Context, cfg config.Config, o DownOptions) (DownResult, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	var res DownResult
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return res, fmt.Errorf("create DATA_DIR: %w", err)
	}
	lock, err := acquireForDown(ctx, cfg.DataDir, o.StopServe, out)
	if err != nil {
		return res, err
	}
	defer lock.Close()

	// The agents' last flush outlasts their own flush bound (30 s) only
	// by the time their workloads take to stop.
	grace := max(cfg.FlushTimeout, 30*time.Second) + 10*time.Second
	var rt idepool.Runtime
	switch cfg.Runtime {
	case config.RuntimeProcess:
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "containers")); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(out, "no containers under", cfg.DataDir)
			return res, nil
		}
		if cfg.S3Credentials().IsZero() && cfg.S3Endpoint == "" {
			store, err := startEmbeddedS3(ctx, cfg, log)
			if err != nil {
				return res, fmt.Errorf("the agents need the embedded store to flush: %w", err)
			}
			defer store.Stop()
		}
		prt, err := process.New(process.Options{DataDir: cfg.DataDir, Deployment: cfg.Deployment,
			AgentCommand: o.AgentCommand, StopGrace: grace, Logger: log.With("part", "runtime")})
		if err != nil {
			return res, fmt.Errorf("process runtime: %w", err)
		}
		defer prt.Close()
		rt = prt
	default:
		r, closeRT, err := newRuntime(ctx, cfg, Options{AgentCommand: o.AgentCommand}, log)
		if err != nil {
			return res, err
		}
		if closeRT != nil {
			defer closeRT()
		}
		rt = r
	}
	insts, err := rt.Recover(ctx)
	if err != nil {
		return res, fmt.Errorf("list containers of the %s runtime: %w", rt.Name(), err)
	}
	if len(insts) == 0 {
		fmt.Fprintf(out, "no containers of deployment %q (%s runtime)\n", cfg.Deployment, rt.Name())
		return res, nil
	}
	fmt.Fprintf(out, "stopping %d containers (each flushes its workspace first)...\n", len(insts))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, grace+30*time.Second)
			err := rt.Remove(rctx, in.ID)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed++
				fmt.Fprintf(out, "  %s: %v\n", in.ID, idepool.ErrorMessage(err))
				return
			}
			res.Stopped++
			fmt.Fprintf(out, "  %s stopped\n", in.ID)
		}()
	}
	wg.Wait()
	fmt.Fprintf(out, "%d stopped, %d failed\n", res.Stopped, res.Failed)
	if res.Failed > 0 {
		return res, fmt.Errorf("%d of %d containers could not be stopped", res.Failed, len(insts))
	}
	return res, nil
}

// acquireForDown takes DATA_DIR's lock; a serve holding it is stopped
// (stopServe) or named in the refusal.
func acquireForDown(ctx context.Context, dir string, stopServe bool, out io.Writer) (*dirlock.Lock, error) {
	lock, err := dirlock.Acquire(dir, "down", 0)
	var held *dirlock.HeldError
	if !errors.As(err, &held) {
		return lock, err
	}
	if held.Holder.Command != "serve" || held.Holder.PID <= 0 || !stopServe {
		if held.Holder.Command == "serve" {
			return nil, &ServeRunningError{Holder: held.Holder}
		}
		return nil, err
	}
	fmt.Fprintf(out, "stopping %s...\n", held.Holder)
	// The pid is the lock holder's own record, and the lock is held now:
	// it is that serve, not a recycled pid.
	if err := syscall.Kill(held.Holder.PID, syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("stop %s: %w", held.Holder, err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		lock, err := dirlock.Acquire(dir, "down", 0)
		if !errors.As(err, &held) {
			return lock, err
		}
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("%s did not stop within a minute", held.Holder)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
