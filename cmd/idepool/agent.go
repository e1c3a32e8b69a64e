package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/idepool/idepool/agent"
	"github.com/idepool/idepool/wsync"
)

func runAgent(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("agent takes no arguments; it is configured by the IDEPOOL_* environment its runtime sets")
	}
	cfg, err := agent.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("agent configuration: %w", err)
	}
	logger := newLogger(stderr, getenv("LOG_LEVEL"), getenv("LOG_FORMAT")) // the agent adds the container id
	cfg.Logger = logger
	cfg.NewSyncer = func(workspaceDir, stateDir string, logger *slog.Logger) agent.Syncer {
		return wsync.NewAgentSyncer(workspaceDir, stateDir, logger, wsync.Options{})
	}
	return agent.Run(ctx, cfg)
}
