package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/ide"
)

func profilesConfig(t *testing.T, json string) Config {
	t.Helper()
	c := Defaults()
	if json != "" {
		c.ProfilesFile = filepath.Join(t.TempDir(), "profiles.json")
		if err := os.WriteFile(c.ProfilesFile, []byte(json), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestProfilesDefaultOnly(t *testing.T) {
	ps, err := profilesConfig(t, "").Profiles()
	if err != nil {
		t.Fatal(err)
	}
	want := []idepool.Profile{{
		Name: "default", Image: "idepool-ide:latest", CPULimit: 2, MemoryLimit: 4 << 30,
		Routes: idepool.DefaultRoutes(), PoolTarget: 10, IdleTimeout: 10 * time.Minute,
	}}
	if !reflect.DeepEqual(ps, want) {
		t.Errorf("got %+v\nwant %+v", ps, want)
	}
}

func TestProfilesFile(t *testing.T) {
	c := profilesConfig(t, `{"profiles": [
	  {"name": "gpu", "image": "ide-gpu:1", "cpuLimit": 8, "memoryLimit": "16GiB", "memoryReservation": 4294967296,
	   "cpuReservation": 2, "poolTarget": 2, "constraints": ["node.labels.gpu==true"],
	   "routes": [{"name": "code", "port": 8080, "healthPath": "/healthz"}, {"name": "jupyter", "port": 8888, "keepPrefix": true}],
	   "workloads": [{"name": "jupyter", "command": ["jupyter", "lab"], "env": {"A": "1"}, "dir": "/workspace"}],
	   "env": {"LANG": "C.UTF-8"}, "idleTimeoutSeconds": 0, "maxAgeSeconds": 86400},
	  {"name": "default", "poolTarget": 3, "memoryLimit": "2GiB"},
	  {"name": "small", "cpuLimit": 0.5}
	]}`)
	ps, err := c.Profiles()
	if err != nil {
		t.Fatal(err)
	}
	def := idepool.Profile{
		Name: "default", Image: "idepool-ide:latest", CPULimit: 2, MemoryLimit: 2 << 30,
		Routes: idepool.DefaultRoutes(), PoolTarget: 3, IdleTimeout: 10 * time.Minute,
	}
	gpu := idepool.Profile{
		Name: "gpu", Image: "ide-gpu:1", CPULimit: 8, MemoryLimit: 16 << 30, CPUReservation: 2, MemoryReservation: 4 << 30,
		Routes:      []idepool.Route{{Name: "code", Port: 8080, HealthPath: "/healthz"}, {Name: "jupyter", Port: 8888, KeepPrefix: true}},
		PoolTarget:  2,
		Workloads:   []idepool.Workload{{Name: "jupyter", Command: []string{"jupyter", "lab"}, Env: map[string]string{"A": "1"}, Dir: "/workspace"}},
		Env:         map[string]string{"LANG": "C.UTF-8"},
		Constraints: []string{"node.labels.gpu==true"},
		IdleTimeout: 0, MaxAge: 24 * time.Hour,
	}
	// Another profile starts from the overridden default, with no warm pool.
	small := def
	small.Name, small.CPULimit, small.PoolTarget = "small", 0.5, 0
	small.Routes = idepool.DefaultRoutes()
	want := []idepool.Profile{def, gpu, small}
	if !reflect.DeepEqual(ps, want) {
		t.Errorf("got  %+v\nwant %+v", ps, want)
	}
	ps[2].Routes[0].Port = 1 // copies, not shared
	if ps[0].Routes[0].Port != 8080 {
		t.Error("profiles share a route slice")
	}
}

func TestProfilesFileErrors(t *testing.T) {
	tests := []struct {
		name, json string
		want       []string
	}{
		{"unknown field", `{"profiles": [{"name": "x", "imagee": "y"}]}`, []string{`unknown field "imagee"`}},
		{"unknown nested field", `{"profiles": [{"name": "x", "routes": [{"name": "code", "port": 1, "path": "/"}]}]}`, []string{`unknown field "path"`}},
		{"unknown top field", `{"profile": []}`, []string{`unknown field "profile"`}},
		{"invalid route port", `{"profiles": [{"name": "x", "routes": [{"name": "code", "port": 0}]}]}`, []string{"profile x: route code: port 0 out of range"}},
		{"reserved route", `{"profiles": [{"name": "x", "routes": [{"name": "api", "port": 80}]}]}`, []string{`route name "api" is reserved`}},
		{"no routes", `{"profiles": [{"name": "x", "routes": []}]}`, []string{"at least one route"}},
		{"invalid default override", `{"profiles": [{"name": "default", "cpuReservation": 9}]}`, []string{"profile default", "exceeds limit"}},
		{"bad name", `{"profiles": [{"name": "Bad Name"}]}`, []string{`profile name "Bad Name"`}},
		{"cpu limit below what a runtime enforces", `{"profiles": [{"name": "x", "cpuLimit": 0.004}]}`, []string{"profile x: cpu limit 0.004 is below 0.01 core"}},
		{"twice", `{"profiles": [{"name": "x"}, {"name": "x"}]}`, []string{`profile "x" listed twice`}},
		{"bad size", `{"profiles": [{"name": "x", "memoryLimit": "lots"}]}`, []string{`size "lots"`}},
		{"negative idle", `{"profiles": [{"name": "x", "idleTimeoutSeconds": -1}]}`, []string{"idleTimeoutSeconds -1"}},
		{"reserved env", `{"profiles": [{"name": "x", "env": {"IDEPOOL_AGENT_TOKEN": "t"}}]}`, []string{"IDEPOOL_"}},
		{"workload without command", `{"profiles": [{"name": "x", "workloads": [{"name": "w"}]}]}`, []string{"needs a name and a command"}},
		{"wrong type", "{\"profiles\": [\n{\"name\": \"x\", \"poolTarget\": \"two\"}]}", []string{"line 2", "poolTarget"}},
		{"syntax", "{\"profiles\": [\n\n{\"name\": }]}", []string{"line 3"}},
		{"trailing data", `{"profiles": []} {}`, []string{"unexpected data after the JSON object"}},
		{"several errors", `{"profiles": [{"name": "a", "cpuLimit": -1}, {"name": "b", "poolTarget": -1}]}`, []string{"profile a", "profile b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := profilesConfig(t, tt.json)
			_, err := c.Profiles()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tt.want, "PROFILES_FILE "+c.ProfilesFile) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestProfilesFileMissing(t *testing.T) {
	c := Defaults()
	c.ProfilesFile = filepath.Join(t.TempDir(), "nope.json")
	if _, err := c.Profiles(); err == nil || !strings.Contains(err.Error(), "PROFILES_FILE") {
		t.Errorf("error %v", err)
	}
}

// Load refuses to start with a bad profiles file.
func TestLoadValidatesProfiles(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("p.json", []byte(`{"profiles": [{"name": "x", "bogus": 1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(env(map[string]string{"PROFILES_FILE": "p.json"}), ""); err == nil || !strings.Contains(err.Error(), "PROFILES_FILE p.json") {
		t.Errorf("error %v", err)
	}
}

// TestProfilesEmbeddedIDE: with the process runtime, the IDE server
// detected runs on the default profile's code route, unless the profiles
// file gave the default workloads or routes; other runtimes (the image
// brings the IDE) and the placeholder leave the profile as it was.
func TestProfilesEmbeddedIDE(t *testing.T) {
	nb := ide.Choice{Name: ide.Notebook, Version: "6.4.12", Command: []string{"/usr/bin/jupyter-notebook"}}
	w, _ := nb.Workload()
	withIDE := []idepool.Route{{Name: "code", Port: 8080, KeepPrefix: true}}
	tests := []struct {
		name      string
		runtime   string
		choice    ide.Choice
		file      string
		routes    []idepool.Route // of default, then of "other" when the file has it
		workloads bool
	}{
		{name: "process with notebook", runtime: RuntimeProcess, choice: nb, routes: withIDE, workloads: true},
		{name: "process, copies inherit", runtime: RuntimeProcess, choice: nb,
			file: `{"profiles": [{"name": "other", "cpuLimit": 1}]}`, routes: withIDE, workloads: true},
		{name: "process with the placeholder", runtime: RuntimeProcess, choice: ide.Choice{Name: ide.Placeholder}, routes: idepool.DefaultRoutes()},
		{name: "swarm", runtime: RuntimeSwarm, choice: nb, routes: idepool.DefaultRoutes()},
		{name: "default given workloads", runtime: RuntimeProcess, choice: nb,
			file:   `{"profiles": [{"name": "default", "workloads": [{"name": "x", "command": ["x"]}]}]}`,
			routes: idepool.DefaultRoutes(), workloads: true},
		{name: "default given routes", runtime: RuntimeProcess, choice: nb,
			file:   `{"profiles": [{"name": "default", "routes": [{"name": "code", "port": 9000}]}]}`,
			routes: []idepool.Route{{Name: "code", Port: 9000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := profilesConfig(t, tt.file)
			c.Runtime, c.IDE = tt.runtime, tt.choice
			ps, err := c.Profiles()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				if !reflect.DeepEqual(p.Routes, tt.routes) {
					t.Errorf("%s: routes %+v, want %+v", p.Name, p.Routes, tt.routes)
				}
				if got := len(p.Workloads) > 0; got != tt.workloads {
					t.Errorf("%s: workloads %+v", p.Name, p.Workloads)
				}
				if tt.workloads && tt.file == "" && !reflect.DeepEqual(p.Workloads, []idepool.Workload{w}) {
					t.Errorf("%s: workloads %+v, want the IDE's %+v", p.Name, p.Workloads, w)
				}
			}
		})
	}
}

// TestEmbeddedIDEValues: EMBEDDED_IDE accepts exactly what ide.Detect does.
func TestEmbeddedIDEValues(t *testing.T) {
	for _, s := range Describe() {
		if s.Name == "EMBEDDED_IDE" {
			if !slices.Equal(s.Values, ide.Names) || s.Default != ide.Auto {
				t.Errorf("EMBEDDED_IDE values %q default %q, want %q and %q", s.Values, s.Default, ide.Names, ide.Auto)
			}
			return
		}
	}
	t.Error("EMBEDDED_IDE is not in the table")
}
