// Command idepool is the one binary of idepool: the orchestrator (`serve`),
// the in-container agent (`agent`) and the client commands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // schedules name time zones; FROM scratch images have no zoneinfo
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "idepool:", err)
		os.Exit(exitCode(err))
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `idepool hands a person a browser IDE in milliseconds.

Usage:
  idepool serve                 run the orchestrator (configuration from the environment and .env)
  idepool down                  stop every container (flushed first); serve leaves them running
  idepool agent                 run the in-container agent (started by the runtimes)
  idepool version               print the version

Client commands (IDEPOOL_URL, IDEPOOL_API_KEY):
  idepool start --bucket B [--prefix P] [--profile NAME] [--wait]
  idepool ls | get ID | stop ID | pool [set PROFILE N] | events | top

Run 'idepool COMMAND -h' for a command's flags.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError("no command given")
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], getenv, stdout, stderr)
	case "down":
		return runDown(ctx, args[1:], getenv, stdout, stderr)
	case "agent":
		return runAgent(ctx, args[1:], getenv, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "idepool", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage+cliExitCodes)
		return nil
	default:
		if cmd := clientCommand(args[0]); cmd != nil {
			return cmd(ctx, args[1:], getenv, stdout, stderr)
		}
		fmt.Fprint(stderr, usage)
		return usageError(fmt.Sprintf("unknown command %q", args[0]))
	}
}

// usageError is a mistake in the command line (exit code 2).
type usageError string

func (e usageError) Error() string { return string(e) }

func exitCode(err error) int {
	if _, ok := err.(usageError); ok {
		return 2
	}
	if c, ok := err.(interface{ ExitCode() int }); ok {
		return c.ExitCode()
	}
	return 1
}

type commandFunc func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// clientCommand returns the CLI command over the REST API called name, or nil.
func clientCommand(name string) commandFunc {
	return clientCommands()[name]
}
