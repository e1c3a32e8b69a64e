// Package ide finds a browser IDE installed on this machine for the process
// runtime's default profile (EMBEDDED_IDE): code-server first, then
// JupyterLab, then Jupyter Notebook. On Swarm the image brings its own IDE;
// nothing here applies.
//
// The command lines follow the Debian IDE image's (deploy/ide): the router
// in front authenticates, so the IDE runs without a token or password and
// listens on the agent's listen host (loopback in the process runtime).
package ide

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// Values of EMBEDDED_IDE, and Choice.Name.
const (
	Auto        = "auto"
	CodeServer  = "code-server"
	JupyterLab  = "jupyterlab"
	Notebook    = "notebook"
	Placeholder = "placeholder"
)

// Names are the values EMBEDDED_IDE accepts.
var Names = []string{Auto, CodeServer, JupyterLab, Notebook, Placeholder}

// Route is the route the IDE serves.
const Route = "code"

// Hint is one way to install an IDE that Detect finds.
type Hint struct{ IDE, Command string }

// InstallHints say, one line per option, how to get a real IDE onto the
// machine that runs `idepool serve`.
func InstallHints() []Hint {
	return []Hint{
		{"Jupyter Notebook (Debian, Ubuntu)", "apt install jupyter-notebook"},
		{"JupyterLab", "pip install jupyterlab"},
		{"code-server", "curl -fsSL https://code-server.dev/install.sh | sh"},
	}
}

// Choice is the IDE the default profile runs on its code route.
type Choice struct {
	// Name is CodeServer, JupyterLab, Notebook or Placeholder ("" until
	// detected: the placeholder).
	Name    string
	Version string   // as the IDE printed it ("6.4.12")
	Command []string // the program found, with its subcommand: ["/usr/bin/jupyter", "notebook"]
	// Reason says why the placeholder was chosen.
	Reason string
	// Skipped lists candidates found on PATH that did not work, and why.
	Skipped []string
	// Root adds --allow-root for Jupyter (it refuses to run as root
	// otherwise).
	Root bool
}

// IsIDE tells a real IDE from the placeholder.
func (c Choice) IsIDE() bool { return c.Name != "" && c.Name != Placeholder && len(c.Command) > 0 }

// String is the one line start-up logs print: "jupyterlab 4.2.5
// (/usr/bin/jupyter-lab)", or the placeholder and why.
func (c Choice) String() string {
	if c.IsIDE() {
		return fmt.Sprintf("%s %s (%s)", c.Name, c.Version, strings.Join(c.Command, " "))
	}
	r := c.Reason
	if r == "" {
		r = "no IDE detected"
	}
	return "placeholder, not an IDE (" + r + ")"
}

// Workload is the process the agent supervises to run the IDE on the code
// route; ok is false for the placeholder. The command runs through sh -c
// because the agent does not expand variables; the program's path is a
// positional argument, so it needs no quoting.
func (c Choice) Workload() (w idepool.Workload, ok bool) {
	if !c.IsIDE() {
		return idepool.Workload{}, false
	}
	const (
		host = `"${IDEPOOL_LISTEN_HOST:-127.0.0.1}"`
		port = `"$IDEPOOL_PORT_CODE"`
		ws   = `"$IDEPOOL_WORKSPACE"`
		base = `"/code/$IDEPOOL_CONTAINER_ID/"`
	)
	var flags []string
	env := map[string]string{}
	switch c.Name {
	case CodeServer:
		// code-server serves from any sub-path with relative URLs: the
		// router strips the prefix.
		flags = []string{"--bind-addr " + host + ":" + port, "--auth none",
			"--disable-telemetry", "--disable-update-check", ws}
	case JupyterLab, Notebook:
		// Jupyter Server (JupyterLab 3+, Notebook 7+) reads ServerApp
		// options; Notebook 6 and JupyterLab 1-2 read NotebookApp's.
		app, dir := "NotebookApp", "--notebook-dir="+ws
		if major(c.Version) >= 7 || c.Name == JupyterLab && major(c.Version) >= 3 {
			app, dir = "ServerApp", "--ServerApp.root_dir="+ws
		}
		flags = []string{"--no-browser", "--ip=" + host, "--port=" + port, dir,
			"--" + app + ".base_url=" + base,
			"--" + app + ".token=", "--" + app + ".password=",
			// The router forwards the public Host header.
			"--" + app + ".allow_remote_access=True"}
		if c.Root {
			flags = append(flags, "--allow-root")
		}
		env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
	default:
		return idepool.Workload{}, false
	}
	// The IDE keeps its state in $HOME; where serve's HOME is not the
	// workload user's to write (another user's), one of the container's own.
	const home = `[ -w "${HOME:-/}" ] || { HOME="${TMPDIR:-/tmp}/idepool-home-$IDEPOOL_CONTAINER_ID"; mkdir -p "$HOME" && export HOME; }; `
	script := home + `exec "$0" "$@" ` + strings.Join(flags, " ")
	cmd := append([]string{"sh", "-c", script}, c.Command...)
	return idepool.Workload{Name: c.Name, Command: cmd, Env: env}, true
}

// Apply makes p run the IDE: code is its only route (the IDE serves no
// other, and the agent waits for every route to answer), with the prefix
// kept for Jupyter, which knows its base URL. The placeholder leaves p as
// it is.
func (c Choice) Apply(p *idepool.Profile) {
	w, ok := c.Workload()
	if !ok {
		return
	}
	rt, found := p.Route(Route)
	if !found {
		rt = idepool.Route{Name: Route, Port: 8080}
	}
	rt.KeepPrefix = c.Name != CodeServer
	p.Routes = []idepool.Route{rt}
	p.Workloads = []idepool.Workload{w}
}

// Describe says in a few words what p serves on its routes, given the
// detected choice c: c.String() when p runs c (or c is the placeholder and
// p runs nothing), else what the profile gives.
func Describe(p idepool.Profile, c Choice) string {
	if len(p.Workloads) == 0 {
		if c.IsIDE() {
			return "placeholder, not an IDE (the profile's own routes; " + c.Name + " runs only on the default routes)"
		}
		return c.String()
	}
	if w, ok := c.Workload(); ok && len(p.Workloads) == 1 && reflect.DeepEqual(p.Workloads[0], w) {
		return c.String()
	}
	names := make([]string, len(p.Workloads))
	for i, w := range p.Workloads {
		names[i] = w.Name
	}
	return "the profile's own workloads (" + strings.Join(names, ", ") + ")"
}

// major is the leading number of a version ("6.4.12" → 6), 0 if none.
func major(v string) int {
	i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(v)
	}
	n, _ := strconv.Atoi(v[:i])
	return n
}

// Options configure Detect.
type Options struct {
	// Want is one of Names; "" means Auto.
	Want string
	// Path is the search path (default $PATH).
	Path string
	// Env is the environment of the version probes (default: PATH, HOME,
	// LANG and TMPDIR, PATH set to Path).
	Env []string
	// Timeout bounds one version probe (default 15 s: Python programs
	// start slowly on a busy machine).
	Timeout time.Duration
	// Root says serve runs as root (default: os.Geteuid() == 0).
	Root *bool
}

type candidate struct {
	name string
	argv []string // program name (looked up on Path), then its subcommand
}

// candidates in the order Detect tries them: the IDE a person most likely
// wants first, and for each the dedicated program before `jupyter <sub>`.
var candidates = []candidate{
	{CodeServer, []string{"code-server"}},
	{JupyterLab, []string{"jupyter-lab"}},
	{JupyterLab, []string{"jupyter", "lab"}},
	{Notebook, []string{"jupyter-notebook"}},
	{Notebook, []string{"jupyter", "notebook"}},
}

// ErrNotInstalled is returned when the IDE EMBEDDED_IDE names is not found
// or does not run.
var ErrNotInstalled = errors.New("not installed")

// Detect finds the IDE to run: the first candidate (of those o.Want
// allows) that is on the path and prints its version. With none, Auto
// gives the placeholder with a Reason; a named IDE that is missing is an
// error wrapping ErrNotInstalled.
func Detect(ctx context.Context, o Options) (Choice, error) {
	if o.Want == "" {
		o.Want = Auto
	}
	if o.Path == "" {
		o.Path = os.Getenv("PATH")
	}
	if o.Env == nil {
		// As agents get: serve's own environment (API keys, S3
		// credentials) is not the IDE's to see.
		o.Env = []string{"PATH=" + o.Path}
		for _, k := range []string{"HOME", "LANG", "TMPDIR"} {
			if v, ok := os.LookupEnv(k); ok {
				o.Env = append(o.Env, k+"="+v)
			}
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	root := os.Geteuid() == 0
	if o.Root != nil {
		root = *o.Root
	}
	switch o.Want {
	case Placeholder:
		return Choice{Name: Placeholder, Reason: "EMBEDDED_IDE=placeholder"}, nil
	case Auto, CodeServer, JupyterLab, Notebook:
	default:
		return Choice{}, fmt.Errorf("EMBEDDED_IDE %q: want one of %s", o.Want, strings.Join(Names, ", "))
	}
	var skipped []string
	for _, cd := range candidates {
		if o.Want != Auto && o.Want != cd.name {
			continue
		}
		prog, err := lookPath(cd.argv[0], o.Path)
		if err != nil {
			continue
		}
		argv := append([]string{prog}, cd.argv[1:]...)
		v, err := version(ctx, argv, o.Env, o.Timeout)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", strings.Join(argv, " "), err))
			continue
		}
		return Choice{Name: cd.name, Version: v, Command: argv, Skipped: skipped, Root: root}, nil
	}
	if o.Want != Auto {
		msg := "not found on PATH"
		if len(skipped) > 0 {
			msg = strings.Join(skipped, "; ")
		}
		return Choice{}, fmt.Errorf("EMBEDDED_IDE=%s: %s: %w", o.Want, msg, ErrNotInstalled)
	}
	reason := "no code-server, JupyterLab or Jupyter Notebook on PATH"
	if len(skipped) > 0 {
		reason = "none on PATH works: " + strings.Join(skipped, "; ")
	}
	return Choice{Name: Placeholder, Reason: reason + "; to get one: apt install jupyter-notebook, pip install jupyterlab or code-server.dev/install.sh, then restart", Skipped: skipped}, nil
}

// lookPath finds an executable file called name in the directories of path.
func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // the current directory is not a place to find an IDE
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fs.ErrNotExist
}

// version runs argv --version and returns the first word of its output,
// which must look like a version: a program on PATH may be a stub (a pyenv
// shim for a Python without it, a broken install) that answers otherwise.
func version(ctx context.Context, argv []string, env []string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], "--version")...)
	cmd.Env = env
	cmd.WaitDelay = time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("--version did not answer within %s", timeout)
		}
		msg := strings.TrimSpace(lastLine(errOut.String()))
		if msg != "" {
			return "", fmt.Errorf("--version: %v: %.120s", err, msg)
		}
		return "", fmt.Errorf("--version: %v", err)
	}
	f := strings.Fields(out.String())
	if len(f) == 0 || f[0][0] < '0' || f[0][0] > '9' {
		return "", fmt.Errorf("--version printed no version: %.80q", out.String())
	}
	return f[0], nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
