package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/server"
)

// runDown is `idepool down`: stop every container of DATA_DIR (process
// runtime) or of DEPLOYMENT (Swarm), each after flushing its workspace. It
// reads the same configuration as serve.
func runDown(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envFile := fs.String("env-file", "", "read settings from this .env file (default .env when present)")
	stopServe := fs.Bool("stop-serve", false, "if a serve runs on this DATA_DIR, stop it first (else down refuses: serve would refill the pools)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: idepool down [--stop-serve] [--env-file FILE]\n\n"+
			"Stops every container of the configured DATA_DIR (RUNTIME=process) or Swarm deployment\n"+
			"(RUNTIME=swarm); each agent flushes its workspace to S3 before it exits.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError("down takes no arguments")
	}
	cfg, err := config.Load(getenv, *envFile)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	// Its report goes to stdout; the runtime's per-container lines only
	// at LOG_LEVEL=debug.
	level := cfg.LogLevel
	if level == "info" {
		level = "warn"
	}
	logger := newLogger(stderr, level, cfg.LogFormat)
	_, err = server.Down(ctx, cfg, server.DownOptions{Logger: logger, Out: stdout, StopServe: *stopServe})
	return err
}
