package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/client"
)

func cmdStart(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCLI(ctx, "start", "--bucket BUCKET", `Start (claim) a container for a workspace and print its URLs.
The URLs carry one-time tokens valid a few minutes: open them soon.
With --wait, progress goes to stderr until the container runs.`, getenv, stdout, stderr)
	var req client.StartRequest
	c.fs.StringVar(&req.Bucket, "bucket", "", "the workspace's S3 bucket (required)")
	c.fs.StringVar(&req.Prefix, "prefix", "", "the workspace's key prefix in the bucket")
	c.fs.StringVar(&req.Region, "region", "", "the bucket's region")
	c.fs.StringVar(&req.Profile, "profile", "", "the profile (default: the server's default)")
	c.fs.StringVar(&req.UserID, "user", "", "the user the container is for")
	c.fs.BoolVar(&req.IdleExempt, "idle-exempt", false, "never stop it for inactivity")
	wait := c.fs.Bool("wait", false, "wait until the container runs, printing its progress")
	waitFor := c.fs.Duration("wait-timeout", 2*time.Minute, "with --wait, how long to wait")
	return runClient(c, args, func(pos []string) error {
		if err := c.wantArgs(pos, 0, 0); err != nil {
			return err
		}
		if req.Bucket == "" {
			return usageError("start: --bucket is required (see 'idepool start -h')")
		}
		if *waitFor <= 0 {
			return usageError("start: --wait-timeout must be above 0")
		}
		begin := time.Now()
		resp, err := c.c.Start(ctx, req)
		if err != nil {
			return c.fail(err, "start")
		}
		if *wait {
			fmt.Fprintf(stderr, "%s: %s (%s claim)\n", resp.ID, resp.State, resp.Claim)
			ct, err := c.waitRunning(resp.ID, resp.State, begin, *waitFor)
			if err != nil {
				return err
			}
			resp.State, resp.Status, resp.Ready = ct.State, ct.Status, ct.State == idepool.StateRunning
		}
		if c.json {
			return c.printJSON(resp)
		}
		how := map[idepool.ClaimKind]string{idepool.ClaimWarm: "from the warm pool", idepool.ClaimCold: "started cold",
			idepool.ClaimReused: "reused: the workspace already had it"}[resp.Claim]
		fmt.Fprintf(stdout, "container %s (profile %s) %s, %s\n", resp.ID, resp.Profile, orDash(how), resp.State)
		names := make([]string, 0, len(resp.Routes))
		for n := range resp.Routes {
			names = append(names, n)
		}
		sort.Strings(names)
		tw := newTable(stdout)
		for _, n := range names {
			fmt.Fprintf(tw, "  %s\t%s\n", n, resp.Routes[n])
		}
		tw.Flush()
		if !resp.Ready && !*wait {
			fmt.Fprintf(stderr, "not ready yet: `idepool get %s` shows its state (or start with --wait)\n", resp.ID)
		}
		return nil
	})
}

// waitRunning polls the container until it runs, printing each state
// change to stderr. Polling (not the event stream) keeps it independent of
// what happened before it looked.
func (c *cli) waitRunning(id string, last idepool.State, begin time.Time, limit time.Duration) (client.Container, error) {
	ctx, cancel := context.WithTimeout(c.ctx, limit)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ct, err := c.c.Get(ctx, id)
		switch {
		case err == nil:
			if ct.State != last {
				fmt.Fprintf(c.stderr, "%s: %s (%.1fs)\n", id, ct.State, time.Since(begin).Seconds())
				last = ct.State
			}
			switch ct.State {
			case idepool.StateRunning:
				return ct, nil
			case idepool.StateFailed, idepool.StateStopping, idepool.StateStopped:
				msg := ct.Message
				if msg == "" {
					msg = ct.ShutdownReason
				}
				return ct, &cliError{code: exitError, msg: fmt.Sprintf("start: container %s is %s: %s", id, ct.State, orDash(msg))}
			}
		case ctx.Err() != nil && c.ctx.Err() == nil:
			return ct, &cliError{code: exitError, msg: fmt.Sprintf("start: container %s not running after %s (last state %s): `idepool get %s` shows it", id, limit, last, id)}
		default:
			return ct, c.fail(err, "start: wait for "+id)
		}
		select {
		case <-ctx.Done():
			if c.ctx.Err() != nil {
				return ct, &cliError{code: exitError, msg: "start: interrupted while waiting; the container keeps starting: `idepool get " + id + "`"}
			}
			return ct, &cliError{code: exitError, msg: fmt.Sprintf("start: container %s not running after %s (last state %s): `idepool get %s` shows it", id, limit, last, id)}
		case <-tick.C:
		}
	}
}

func cmdList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCLI(ctx, "ls", "", `List containers (the live ones unless --status or --state says otherwise).
--status keeps the original API's meaning: running = warm or running,
starting = creating, starting or syncing, stopped = stopping or stopped.`, getenv, stdout, stderr)
	status := c.fs.String("status", "", "comma-separated: running, starting, stopped, failed, or a state (creating, warm, syncing, stopping)")
	state := c.fs.String("state", "", "comma-separated exact states: creating, starting, warm, syncing, running, stopping, stopped, failed")
	profile := c.fs.String("profile", "", "only this profile's containers")
	limit := c.fs.Int("limit", 50, "at most this many (1-500)")
	offset := c.fs.Int("offset", 0, "skip this many")
	all := c.fs.Bool("all", false, "page through every matching container")
	return runClient(c, args, func(pos []string) error {
		if err := c.wantArgs(pos, 0, 0); err != nil {
			return err
		}
		o := client.ListOptions{Profile: *profile, Limit: *limit, Offset: *offset}
		for _, s := range strings.Split(*status, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.Status = append(o.Status, s)
			}
		}
		for _, s := range strings.Split(*state, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.State = append(o.State, s)
			}
		}
		var page client.ContainerList
		var err error
		if *all {
			page.Containers, err = c.c.ListAll(ctx, o)
			page.Total, page.Offset = len(page.Containers), *offset
		} else {
			page, err = c.c.List(ctx, o)
		}
		if err != nil {
			return c.fail(err, "ls")
		}
		if page.Containers == nil {
			page.Containers = []client.Container{}
		}
		if c.json {
			return c.printJSON(page)
		}
		containerTable(stdout, time.Now(), page.Containers)
		if n := page.Offset + len(page.Containers); n < page.Total {
			fmt.Fprintf(stderr, "(%d-%d of %d: --all, or --offset %d for more)\n", page.Offset+1, n, page.Total, n)
		}
		return nil
	})
}

func cmdGet(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCLI(ctx, "get", "ID", `Show one container.`, getenv, stdout, stderr)
	return runClient(c, args, func(pos []string) error {
		if err := c.wantArgs(pos, 1, 1); err != nil {
			return err
		}
		ct, err := c.c.Get(ctx, pos[0])
		if err != nil {
			return c.fail(err, "get "+pos[0])
		}
		if c.json {
			return c.printJSON(ct)
		}
		now := time.Now()
		created := ct.CreatedAt
		tw := newTable(stdout)
		row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
		row("id", ct.ID)
		row("profile", ct.Profile)
		row("state", string(ct.State))
		row("workspace", workspaceOf(ct))
		row("user", orDash(ct.UserID))
		row("generation", strconv.FormatInt(ct.Generation, 10))
		row("pre-warmed", strconv.FormatBool(ct.IsPreWarmed))
		row("created", created.Local().Format(time.RFC3339)+" ("+ago(now, &created)+" ago)")
		row("last activity", ago(now, ct.LastActivity))
		row("health", orDash(string(ct.Health.Status)))
		if ct.Node != "" {
			row("node", ct.Node)
		}
		if ct.ShutdownReason != "" {
			row("stop reason", ct.ShutdownReason)
		}
		if ct.Message != "" {
			row("message", ct.Message)
		}
		names := make([]string, 0, len(ct.Routes))
		for n := range ct.Routes {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			row("route "+n, ct.Routes[n])
		}
		return tw.Flush()
	})
}

func cmdStop(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCLI(ctx, "stop", "ID [ID...]", `Stop containers: flush their workspaces, then remove them.`, getenv, stdout, stderr)
	return runClient(c, args, func(pos []string) error {
		if err := c.wantArgs(pos, 1, -1); err != nil {
			return err
		}
		var first error
		for _, id := range pos {
			res, err := c.c.Stop(ctx, id)
			if err != nil {
				err = c.fail(err, "stop "+id)
				if first == nil {
					first = err
				}
				if len(pos) > 1 {
					fmt.Fprintln(stderr, "idepool:", err)
				}
				continue
			}
			if c.json {
				if err := c.printLine(res); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(stdout, "stopped %s\n", id)
		}
		if first != nil && len(pos) > 1 {
			var ce *cliError
			if errors.As(first, &ce) {
				return &cliError{code: ce.code, msg: "stop: not every container was stopped"}
			}
		}
		return first
	})
}

func cmdPool(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCLI(ctx, "pool", "[set PROFILE N]", `Show every profile's pool of warm containers, or change a profile's target.`, getenv, stdout, stderr)
	return runClient(c, args, func(pos []string) error {
		if len(pos) == 0 {
			ps, err := c.c.Pools(ctx)
			if err != nil {
				return c.fail(err, "pool")
			}
			if ps == nil {
				ps = []idepool.PoolStatus{}
			}
			if c.json {
				return c.printJSON(map[string]any{"pools": ps})
			}
			poolTable(stdout, time.Now(), ps)
			return nil
		}
		if pos[0] != "set" || len(pos) != 3 {
			return usageError("usage: idepool pool [set PROFILE N] (see 'idepool pool -h')")
		}
		n, err := strconv.Atoi(pos[2])
		if err != nil || n < 0 {
			return usageError(fmt.Sprintf("pool set: N must be a number 0 or more, not %q", pos[2]))
		}
		st, err := c.c.SetPoolTarget(ctx, pos[1], n)
		if err != nil {
			return c.fail(err, "pool set "+pos[1])
		}
		if c.json {
			return c.printJSON(st)
		}
		poolTable(stdout, time.Now(), []idepool.PoolStatus{st})
		return nil
	})
}

func cmdEvents(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCLI(ctx, "events", "", `Follow the server's events until interrupted (Ctrl-C). Reconnects and
resumes where it left off when the connection breaks.`, getenv, stdout, stderr)
	var after *uint64
	c.fs.Func("after", "replay the kept events after this id first (0: the whole kept history)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("want an event id")
		}
		after = &n
		return nil
	})
	types := c.fs.String("type", "", "only these types, comma-separated (container.* matches a prefix)")
	container := c.fs.String("container", "", "only this container's events")
	count := c.fs.Int("n", 0, "exit after this many events (0: follow until interrupted)")
	return runClient(c, args, func(pos []string) error {
		if err := c.wantArgs(pos, 0, 0); err != nil {
			return err
		}
		var opts []client.EventOption
		var start uint64
		if after != nil {
			start = *after
			opts = append(opts, client.FromStart())
		}
		if *types != "" {
			opts = append(opts, client.Types(*types))
		}
		if *container != "" {
			opts = append(opts, client.ForContainer(*container))
		}
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		seen := 0
		errEnough := errors.New("enough")
		err := c.c.Follow(fctx, start, func(e idepool.Event) error {
			if c.json {
				if err := c.printLine(e); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(stdout, eventLine(e))
			}
			seen++
			if *count > 0 && seen >= *count {
				return errEnough
			}
			return nil
		}, opts...)
		if err == nil || errors.Is(err, errEnough) {
			return nil // interrupted, or -n reached
		}
		return c.fail(err, "events")
	})
}

// eventLine formats one event for people.
func eventLine(e idepool.Event) string {
	parts := []string{e.Time.Local().Format("15:04:05.000"), "#" + strconv.FormatUint(e.ID, 10), string(e.Type)}
	for _, s := range []string{e.ContainerID, e.Profile, string(e.State), e.Reason, e.Message} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "  ")
}

// topFrame is one refresh of `idepool top`.
type topFrame struct {
	Time       time.Time            `json:"time"`
	Server     string               `json:"server"`
	Health     *client.Health       `json:"health,omitempty"`
	Pools      []idepool.PoolStatus `json:"pools"`
	Containers []client.Container   `json:"containers"`
	Total      int                  `json:"total"`
}

func cmdTop(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCLI(ctx, "top", "", `A live view of the pools and the containers, refreshed until interrupted
(Ctrl-C). With --json, one JSON object per refresh.`, getenv, stdout, stderr)
	once := c.fs.Bool("once", false, "show one refresh and exit (for scripts and tests)")
	every := c.fs.Duration("interval", time.Second, "time between refreshes")
	return runClient(c, args, func(pos []string) error {
		if err := c.wantArgs(pos, 0, 0); err != nil {
			return err
		}
		if *every < 100*time.Millisecond {
			return usageError("top: --interval must be at least 100ms")
		}
		tick := time.NewTicker(*every)
		defer tick.Stop()
		for {
			f, err := c.topFrame()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return c.fail(err, "top")
			}
			if c.json {
				if err := c.printLine(f); err != nil {
					return err
				}
			} else {
				if !*once {
					io.WriteString(stdout, "\x1b[H\x1b[2J") // home, clear screen
				}
				c.renderTop(f)
			}
			if *once {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
}

func (c *cli) topFrame() (topFrame, error) {
	f := topFrame{Time: time.Now(), Server: c.c.BaseURL()}
	if h, err := c.c.Health(c.ctx); err == nil {
		f.Health = &h
	}
	ps, err := c.c.Pools(c.ctx)
	if err != nil {
		return f, err
	}
	list, err := c.c.List(c.ctx, client.ListOptions{Limit: 500})
	if err != nil {
		return f, err
	}
	f.Pools, f.Containers, f.Total = ps, list.Containers, list.Total
	if f.Pools == nil {
		f.Pools = []idepool.PoolStatus{}
	}
	if f.Containers == nil {
		f.Containers = []client.Container{}
	}
	return f, nil
}

func (c *cli) renderTop(f topFrame) {
	w := c.stdout
	head := "idepool at " + f.Server
	if h := f.Health; h != nil {
		head += "  version " + h.Version
		if h.Runtime.Name != "" {
			head += "  runtime " + h.Runtime.Name
		}
		if !h.Runtime.Connected {
			head += " UNREACHABLE"
		}
		head += "  status " + h.Status
		if r := h.Resources; r.CPU.Cores > 0 || r.Memory.Total > 0 {
			head += fmt.Sprintf("  cpu %.0f%% of %.0f  mem %.0f%%", r.CPU.UsagePercent, r.CPU.Cores, r.Memory.UsagePercent)
		}
	}
	fmt.Fprintf(w, "%s  %s\n\n", head, f.Time.Local().Format("15:04:05"))
	poolTable(w, f.Time, f.Pools)
	fmt.Fprintf(w, "\n%d live containers\n", f.Total)
	cs := append([]client.Container(nil), f.Containers...)
	// Claimed ones first, then by age: what people look at.
	sort.SliceStable(cs, func(i, j int) bool {
		ci, cj := cs[i].State.Claimed(), cs[j].State.Claimed()
		if ci != cj {
			return ci
		}
		return cs[i].CreatedAt.Before(cs[j].CreatedAt)
	})
	containerTable(w, f.Time, cs)
}
