package main

import (
	"context"
	"fmt"
	"io"

	"github.com/idepool/idepool/agent"
)

func runAgent(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) > 0 {
		return usageError("agent takes no arguments; it is configured by the IDEPOOL_* environment its runtime sets")
	}
	cfg, err := agent.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("agent configuration: %w", err)
	}
	logger := newLogger(stderr, getenv("LOG_LEVEL"), getenv("LOG_FORMAT")).With("container", cfg.ContainerID)
	cfg.Logger = logger
	return agent.Run(ctx, cfg)
}
