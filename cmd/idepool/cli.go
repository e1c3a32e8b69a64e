package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/human"
)

// Exit codes of the client commands.
const (
	exitOK       = 0
	exitError    = 1 // the server failed, could not be reached, or anything else
	exitUsage    = 2 // a mistake in the command line (or a value the server refused as invalid)
	exitNotFound = 3 // no such container (or route)
	exitAuth     = 4 // the API key is missing or was refused
	exitCapacity = 5 // the server refused a start for lack of capacity or by a limit
)

// cliExitCodes documents the exit codes; shown by every client command's -h
// (and meant for `idepool help`).
const cliExitCodes = `
Exit codes:
  0  success
  1  the server failed or could not be reached (or another error)
  2  usage: a wrong flag or argument, or a value the server refused as invalid
  3  not found: no such container
  4  authentication: IDEPOOL_API_KEY is missing or was refused
  5  capacity: the server refused the start (no room, queue full, or a limit)
`

const cliEnvHelp = `
Environment:
  IDEPOOL_URL      the server (default http://localhost:3001)
  IDEPOOL_API_KEY  an API key: the server's API_KEY, or the key it stored in DATA_DIR/api-key
`

// cliError is a client command's failure with its exit code.
type cliError struct {
	msg  string
	code int
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) ExitCode() int { return e.code }

// cli is what every client command shares: the flags common to all, the
// environment and the output.
type cli struct {
	ctx    context.Context
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
	fs     *flag.FlagSet
	name   string
	args   string // the usage line's arguments
	help   string

	url     string
	key     string
	json    bool
	timeout time.Duration
	c       *client.Client
}

func newCLI(ctx context.Context, name, args, help string, getenv func(string) string, stdout, stderr io.Writer) *cli {
	c := &cli{ctx: ctx, getenv: getenv, stdout: stdout, stderr: stderr, name: name, args: args, help: help}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; -h prints c.usage
	// Defaults come from the environment after parsing, so -h never
	// prints the key.
	fs.StringVar(&c.url, "url", "", "the server's URL (default $IDEPOOL_URL, else "+client.DefaultURL+")")
	fs.StringVar(&c.key, "api-key", "", "the API key; prefer $IDEPOOL_API_KEY, since a flag lands in shell history")
	fs.BoolVar(&c.json, "json", false, "print JSON for scripts instead of tables")
	fs.DurationVar(&c.timeout, "timeout", client.DefaultTimeout, "how long to wait for each answer")
	c.fs = fs
	return c
}

// usage prints the command's help to w.
func (c *cli) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: idepool %s [flags] %s\n\n%s\n\nFlags:\n", c.name, c.args, strings.TrimSpace(c.help))
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
	fmt.Fprint(w, cliEnvHelp, cliExitCodes)
}

// errHelp says -h was asked for (exit 0 after the help).
var errHelp = errors.New("help shown")

// parse reads flags wherever they are among the arguments ("get ID --json"
// works like "get --json ID") and returns the positional arguments.
func (c *cli) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.usage(c.stdout)
				return nil, errHelp
			}
			return nil, usageError(fmt.Sprintf("%s: %v (see 'idepool %s -h')", c.name, err, c.name))
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			break
		}
		// Parse stops at "--" too; what follows is all positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if c.url == "" {
		c.url = c.getenv("IDEPOOL_URL")
	}
	if c.url == "" {
		c.url = client.DefaultURL
	}
	if c.key == "" {
		c.key = strings.TrimSpace(c.getenv("IDEPOOL_API_KEY"))
	}
	cl, err := client.New(c.url, c.key, client.Options{Timeout: c.timeout, UserAgent: "idepool-cli/" + version})
	if err != nil {
		return nil, usageError(fmt.Sprintf("%v: set IDEPOOL_URL or --url", err))
	}
	c.c = cl
	return pos, nil
}

// wantArgs checks the number of positional arguments.
func (c *cli) wantArgs(pos []string, lo, hi int) error {
	if len(pos) < lo || (hi >= 0 && len(pos) > hi) {
		return usageError(fmt.Sprintf("usage: idepool %s %s (see 'idepool %s -h')", c.name, c.args, c.name))
	}
	return nil
}

// fail turns an error of a call into a message that says what to do, with
// its exit code.
func (c *cli) fail(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) && c.ctx.Err() != nil {
		return &cliError{msg: what + ": interrupted", code: exitError}
	}
	var ce *client.ConnError
	if errors.As(err, &ce) {
		return &cliError{code: exitError, msg: fmt.Sprintf("%s: %v\n  is `idepool serve` running there? Set IDEPOOL_URL (or --url) to the server's address", what, err)}
	}
	var e *client.Error
	if !errors.As(err, &e) {
		return &cliError{code: exitError, msg: fmt.Sprintf("%s: %v", what, err)}
	}
	rid := ""
	if e.RequestID != "" {
		rid = " [request " + e.RequestID + "]"
	}
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		if c.key == "" {
			return &cliError{code: exitAuth, msg: fmt.Sprintf("%s: no API key given: set IDEPOOL_API_KEY to a key from the server's API_KEY or DATA_DIR/api-key", what)}
		}
		return &cliError{code: exitAuth, msg: fmt.Sprintf("%s: the API key was refused: set IDEPOOL_API_KEY to a key from API_KEY or DATA_DIR/api-key", what)}
	case e.Code == idepool.ENotFound:
		return &cliError{code: exitNotFound, msg: fmt.Sprintf("%s: %s\n  `idepool ls` lists the live containers", what, e.Message)}
	case e.Status == http.StatusNotFound:
		return &cliError{code: exitNotFound, msg: fmt.Sprintf("%s: the server has no %s: is IDEPOOL_URL an idepool server of this version?", what, e.Path)}
	case client.IsCapacity(err):
		return &cliError{code: exitCapacity, msg: fmt.Sprintf("%s: refused: %s\n  stop containers no longer needed (`idepool ls`, `idepool stop ID`) or try again later", what, e.Message)}
	case e.Code == idepool.EUnknownProfile:
		return &cliError{code: exitUsage, msg: fmt.Sprintf("%s: %s; the profiles are: %s", what, e.Message, joinDetail(e.Details["profiles"]))}
	case e.Status == http.StatusBadRequest:
		msg := fmt.Sprintf("%s: %s", what, e.Message)
		if r, ok := e.Details["rules"].(string); ok {
			msg += "\n  rules: " + r
		}
		if a := joinDetail(e.Details["accepted"]); a != "" {
			msg += "\n  accepted: " + a
		}
		return &cliError{code: exitUsage, msg: msg}
	case e.Status == http.StatusTooManyRequests:
		return &cliError{code: exitError, msg: fmt.Sprintf("%s: %s: wait a moment and try again", what, e.Message)}
	}
	return &cliError{code: exitError, msg: fmt.Sprintf("%s: %s (HTTP %d %s)%s", what, e.Message, e.Status, e.Code, rid)}
}

func joinDetail(v any) string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		out = append(out, fmt.Sprint(x))
	}
	sort.Strings(out)
	out = slices.Compact(out)
	return strings.Join(out, ", ")
}

// printJSON writes v indented, for scripts.
func (c *cli) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = c.stdout.Write(append(b, '\n'))
	return err
}

// printLine writes v as one line of JSON (streams: events, top).
func (c *cli) printLine(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = c.stdout.Write(append(b, '\n'))
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// ago formats the time since t for people ("45s", "3m", "2h5m", "3d4h").
func ago(now time.Time, t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return human.Duration(now.Sub(*t))
}

func workspaceOf(ct client.Container) string {
	if ct.Workspace == nil {
		if ct.S3Bucket != "" {
			return ct.S3Bucket
		}
		return "-"
	}
	return ct.Workspace.Bucket + "/" + idepool.NormalizePrefix(ct.Workspace.Prefix)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// containerTable writes containers as a table for people.
func containerTable(w io.Writer, now time.Time, cs []client.Container) {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tPROFILE\tSTATE\tWORKSPACE\tUSER\tAGE\tACTIVE\tHEALTH")
	for _, ct := range cs {
		created := ct.CreatedAt
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ct.ID, ct.Profile, ct.State, workspaceOf(ct), orDash(ct.UserID),
			ago(now, &created), ago(now, ct.LastActivity), orDash(string(ct.Health.Status)))
	}
	tw.Flush()
}

// poolTable writes pools as a table for people.
func poolTable(w io.Writer, now time.Time, ps []idepool.PoolStatus) {
	tw := newTable(w)
	fmt.Fprintln(tw, "PROFILE\tTARGET\tWARM\tSTARTING\tCLAIMED\tFAILED\tNOTE")
	for _, p := range ps {
		note := p.LastError
		if !p.BackoffUntil.IsZero() && p.BackoffUntil.After(now) {
			note = strings.TrimSpace(fmt.Sprintf("refills held back %s; %s", human.Duration(p.BackoffUntil.Sub(now)), note))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", p.Profile, p.Target, p.Warm, p.Starting, p.Claimed, p.Failed, orDash(note))
	}
	tw.Flush()
}

// clientCommands is the table of client commands.
func clientCommands() map[string]commandFunc {
	return map[string]commandFunc{
		"start":  cmdStart,
		"ls":     cmdList,
		"list":   cmdList,
		"get":    cmdGet,
		"stop":   cmdStop,
		"pool":   cmdPool,
		"events": cmdEvents,
		"top":    cmdTop,
	}
}

// runClient parses the flags and runs body; it hides -h's sentinel.
func runClient(c *cli, args []string, body func(pos []string) error) error {
	pos, err := c.parse(args)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	return body(pos)
}
