package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/agent"
	"github.com/idepool/idepool/wsync"
)

func runAgent(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("agent takes no arguments; it is configured by the IDEPOOL_* environment its runtime sets")
	}
	if err := awaitStartGate(getenv); err != nil {
		return fmt.Errorf("agent start gate: %w", err)
	}
	cfg, err := agent.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("agent configuration: %w", err)
	}
	logger := newLogger(stderr, getenv("LOG_LEVEL"), getenv("LOG_FORMAT")) // the agent adds the container id
	cfg.Logger = logger
	opts, err := syncOptionsFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("agent configuration: %w", err)
	}
	cfg.NewSyncer = func(workspaceDir, stateDir string, logger *slog.Logger) agent.Syncer {
		return wsync.NewAgentSyncer(workspaceDir, stateDir, logger, opts)
	}
	return agent.Run(ctx, cfg)
}

// syncOptionsFromEnv reads the workspace sync's settings idepool passes to
// every agent (unset: wsync's defaults).
func syncOptionsFromEnv(getenv func(string) string) (wsync.Options, error) {
	var opts wsync.Options
	if s := getenv(idepool.EnvSyncMaxDeletePercent); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil || p < 0 || p > 100 {
			return opts, fmt.Errorf("%s=%q: want an integer 0-100", idepool.EnvSyncMaxDeletePercent, s)
		}
		opts.MaxDeletePercent = p
	}
	if s := getenv(idepool.EnvSyncParallelism); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 256 {
			return opts, fmt.Errorf("%s=%q: want an integer 1-256", idepool.EnvSyncParallelism, s)
		}
		opts.Parallelism = n
	}
	return opts, nil
}

// awaitStartGate waits until the runtime closes the start gate
// (idepool.EnvStartGate), i.e. until it has put this process in its
// limits, so that no workload starts outside them.
func awaitStartGate(getenv func(string) string) error {
	v := getenv(idepool.EnvStartGate)
	if v == "" {
		return nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return fmt.Errorf("%s=%q: want an inherited file descriptor (3 or more)", idepool.EnvStartGate, v)
	}
	f := os.NewFile(uintptr(fd), "start-gate")
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		return fmt.Errorf("read fd %d: %w", fd, err)
	}
	return nil
}
