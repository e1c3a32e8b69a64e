package ide

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// fakePath makes a directory of scripts: name → what the script does
// ("1.2.3": prints it; "fail": exits 127 as a pyenv shim does; "junk":
// prints no version). A `jupyter` script answers for its subcommands from
// the entries "jupyter lab" and "jupyter notebook".
func fakePath(t *testing.T, progs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	script := func(behaviour string) string {
		switch behaviour {
		case "fail":
			return "echo \"pyenv: command not found\" >&2; exit 127\n"
		case "junk":
			return "echo 'usage: whatever'\n"
		default:
			return "echo " + behaviour + "\n"
		}
	}
	var jupyter strings.Builder
	jupyter.WriteString("#!/bin/sh\ncase \"$1\" in\n")
	hasJupyter := false
	for name, b := range progs {
		if sub, ok := strings.CutPrefix(name, "jupyter "); ok {
			hasJupyter = true
			jupyter.WriteString(sub + ") " + strings.TrimSuffix(script(b), "\n") + " ;;\n")
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script(b)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if hasJupyter {
		jupyter.WriteString("*) echo \"Jupyter command jupyter-$1 not found.\" >&2; exit 1 ;;\nesac\n")
		if err := os.WriteFile(filepath.Join(dir, "jupyter"), []byte(jupyter.String()), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestDetectOrder(t *testing.T) {
	no := false
	tests := []struct {
		name     string
		progs    map[string]string
		want     string
		wantName string
		wantCmd  []string // base names
		err      bool
	}{
		{name: "nothing", progs: map[string]string{}, wantName: Placeholder},
		{name: "code-server first", progs: map[string]string{"code-server": "4.96.4", "jupyter-lab": "4.2.5", "jupyter-notebook": "6.4.12"},
			wantName: CodeServer, wantCmd: []string{"code-server"}},
		{name: "lab before notebook", progs: map[string]string{"jupyter-lab": "4.2.5", "jupyter-notebook": "6.4.12"},
			wantName: JupyterLab, wantCmd: []string{"jupyter-lab"}},
		{name: "notebook alone", progs: map[string]string{"jupyter-notebook": "6.4.12"},
			wantName: Notebook, wantCmd: []string{"jupyter-notebook"}},
		{name: "a broken code-server is skipped", progs: map[string]string{"code-server": "fail", "jupyter-notebook": "6.4.12"},
			wantName: Notebook, wantCmd: []string{"jupyter-notebook"}},
		{name: "a stub printing no version is skipped", progs: map[string]string{"jupyter-lab": "junk", "jupyter-notebook": "7.2.1"},
			wantName: Notebook, wantCmd: []string{"jupyter-notebook"}},
		{name: "jupyter lab subcommand", progs: map[string]string{"jupyter lab": "4.0.1", "jupyter notebook": "6.4.12"},
			wantName: JupyterLab, wantCmd: []string{"jupyter", "lab"}},
		{name: "jupyter notebook subcommand when lab is missing", progs: map[string]string{"jupyter notebook": "6.4.12"},
			wantName: Notebook, wantCmd: []string{"jupyter", "notebook"}},
		{name: "only broken ones", progs: map[string]string{"code-server": "fail", "jupyter-lab": "junk"}, wantName: Placeholder},
		{name: "asked for notebook", want: Notebook, progs: map[string]string{"code-server": "4.96.4", "jupyter-notebook": "6.4.12"},
			wantName: Notebook, wantCmd: []string{"jupyter-notebook"}},
		{name: "asked for placeholder", want: Placeholder, progs: map[string]string{"code-server": "4.96.4"}, wantName: Placeholder},
		{name: "asked for a missing one", want: JupyterLab, progs: map[string]string{"jupyter-notebook": "6.4.12"}, err: true},
		{name: "asked for a broken one", want: CodeServer, progs: map[string]string{"code-server": "fail"}, err: true},
		{name: "unknown", want: "emacs", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fakePath(t, tt.progs)
			// A directory without the programs first: the search goes on.
			path := t.TempDir() + string(filepath.ListSeparator) + dir
			c, err := Detect(context.Background(), Options{Want: tt.want, Path: path, Root: &no, Timeout: 10 * time.Second})
			if tt.err {
				if err == nil {
					t.Fatalf("Detect = %v, want an error", c)
				}
				if tt.want != "emacs" && !errors.Is(err, ErrNotInstalled) {
					t.Errorf("error %v does not wrap ErrNotInstalled", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != tt.wantName {
				t.Fatalf("Detect = %v, want %s", c, tt.wantName)
			}
			var base []string
			for i, a := range c.Command {
				if i == 0 {
					a = filepath.Base(a)
				}
				base = append(base, a)
			}
			if !slices.Equal(base, tt.wantCmd) {
				t.Errorf("command %q, want %q", c.Command, tt.wantCmd)
			}
			if c.IsIDE() && (c.Version == "" || !filepath.IsAbs(c.Command[0])) {
				t.Errorf("choice %+v: want a version and an absolute program path", c)
			}
			if !c.IsIDE() {
				if _, ok := c.Workload(); ok {
					t.Error("the placeholder has a workload")
				}
				if tt.want == "" && !strings.Contains(c.String(), "apt install jupyter-notebook") {
					t.Errorf("placeholder line %q does not say how to get an IDE", c.String())
				}
			}
		})
	}
}

// TestWorkloadRuns starts the workload's shell command with a fake IDE that
// prints its arguments, as the agent would (variables set), and checks
// the flags each IDE gets.
func TestWorkloadRuns(t *testing.T) {
	yes := true
	tests := []struct {
		progs    map[string]string
		want     []string
		notWant  []string
		keepPfx  bool
		wantName string
	}{
		{progs: map[string]string{"jupyter-notebook": "6.4.12"}, wantName: Notebook, keepPfx: true,
			want: []string{"--no-browser", "--ip=127.0.0.1", "--port=18080", "--notebook-dir=/ws dir", "--NotebookApp.base_url=/code/abc123/",
				"--NotebookApp.token=", "--NotebookApp.password=", "--NotebookApp.allow_remote_access=True", "--allow-root"}},
		{progs: map[string]string{"jupyter-notebook": "7.2.1"}, wantName: Notebook, keepPfx: true,
			want: []string{"--ServerApp.root_dir=/ws dir", "--ServerApp.base_url=/code/abc123/", "--ServerApp.token="}, notWant: []string{"--notebook-dir=/ws dir"}},
		{progs: map[string]string{"jupyter lab": "4.2.5"}, wantName: JupyterLab, keepPfx: true,
			want: []string{"lab", "--ServerApp.root_dir=/ws dir", "--ServerApp.base_url=/code/abc123/", "--ServerApp.password="}},
		{progs: map[string]string{"code-server": "4.96.4"}, wantName: CodeServer,
			want: []string{"--bind-addr", "127.0.0.1:18080", "--auth", "none", "/ws dir"}, notWant: []string{"--allow-root"}},
	}
	for _, tt := range tests {
		t.Run(tt.wantName, func(t *testing.T) {
			dir := fakePath(t, tt.progs)
			c, err := Detect(context.Background(), Options{Path: dir, Root: &yes})
			if err != nil || c.Name != tt.wantName {
				t.Fatalf("Detect = %v, %v", c, err)
			}
			// Now the program prints its arguments, one a line.
			prog := c.Command[0]
			if err := os.WriteFile(prog, []byte("#!/bin/sh\necho \"HOME=$HOME\"\nfor a; do echo \"$a\"; done\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			p := idepool.Profile{Name: "default", Routes: idepool.DefaultRoutes()}
			c.Apply(&p)
			if len(p.Routes) != 1 || p.Routes[0].Name != Route || p.Routes[0].Port != 8080 || p.Routes[0].KeepPrefix != tt.keepPfx {
				t.Errorf("routes %+v, want code:8080 only, keepPrefix %v", p.Routes, tt.keepPfx)
			}
			if len(p.Workloads) != 1 {
				t.Fatalf("workloads %+v", p.Workloads)
			}
			w := p.Workloads[0]
			tmp := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := execCommand(ctx, w.Command, []string{"IDEPOOL_PORT_CODE=18080", "IDEPOOL_WORKSPACE=/ws dir",
				"IDEPOOL_CONTAINER_ID=abc123", "IDEPOOL_LISTEN_HOST=127.0.0.1", "PATH=/usr/bin:/bin",
				// serve's HOME, not the workload user's to write: the
				// IDE gets one of the container's own.
				"HOME=/nonexistent/home", "TMPDIR=" + tmp})
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%q: %v", w.Command, err)
			}
			args := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			if want := "HOME=" + filepath.Join(tmp, "idepool-home-abc123"); args[0] != want {
				t.Errorf("%s, want %s", args[0], want)
			}
			for _, a := range tt.want {
				if !slices.Contains(args, a) {
					t.Errorf("argument %q missing from %q", a, args)
				}
			}
			for _, a := range tt.notWant {
				if slices.Contains(args, a) {
					t.Errorf("argument %q in %q", a, args)
				}
			}
		})
	}
}

func TestPlaceholderLeavesProfile(t *testing.T) {
	p := idepool.Profile{Name: "default", Routes: idepool.DefaultRoutes()}
	Choice{Name: Placeholder}.Apply(&p)
	Choice{}.Apply(&p)
	if len(p.Routes) != 3 || p.Workloads != nil {
		t.Errorf("profile changed: %+v", p)
	}
}

func execCommand(ctx context.Context, argv, env []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	return cmd
}

func TestDescribe(t *testing.T) {
	nb := Choice{Name: Notebook, Version: "6.4.12", Command: []string{"/usr/bin/jupyter-notebook"}}
	ph := Choice{Name: Placeholder, Reason: "EMBEDDED_IDE=placeholder"}
	runs := idepool.Profile{Name: "default", Routes: idepool.DefaultRoutes()}
	nb.Apply(&runs)
	own := idepool.Profile{Name: "default", Workloads: []idepool.Workload{{Name: "a"}, {Name: "b"}}}
	bare := idepool.Profile{Name: "default", Routes: idepool.DefaultRoutes()}
	tests := []struct {
		p    idepool.Profile
		c    Choice
		want string
	}{
		{runs, nb, "notebook 6.4.12 (/usr/bin/jupyter-notebook)"},
		{bare, ph, "placeholder, not an IDE (EMBEDDED_IDE=placeholder)"},
		{bare, nb, "placeholder, not an IDE (the profile's own routes"},
		{own, nb, "the profile's own workloads (a, b)"},
		{own, ph, "the profile's own workloads (a, b)"},
	}
	for _, tt := range tests {
		if got := Describe(tt.p, tt.c); !strings.HasPrefix(got, tt.want) {
			t.Errorf("Describe(%v, %v) = %q, want %q…", tt.p.Workloads, tt.c, got, tt.want)
		}
	}
}

// TestProbeEnvironment: a version probe does not see serve's secrets.
func TestProbeEnvironment(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
	dir := t.TempDir()
	script := "#!/bin/sh\n[ -z \"$AWS_SECRET_ACCESS_KEY\" ] || { echo leaked >&2; exit 3; }\necho 4.96.4\n"
	if err := os.WriteFile(filepath.Join(dir, "code-server"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Detect(context.Background(), Options{Path: dir})
	if err != nil || c.Name != CodeServer {
		t.Fatalf("Detect = %v, %v (skipped: %q)", c, err, c.Skipped)
	}
}
