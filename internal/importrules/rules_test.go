package importrules

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/idepool/idepool"

// TestRepository holds this module to the rules.
func TestRepository(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("the go command is needed to list the packages:", err)
	}
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	graph := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		graph[f[0]] = f[1:]
	}
	// A rule about a package that is gone checks nothing: rename it here.
	for _, p := range append(append(append([]string{agentTree, binary}, wiring...), adapters...), parts...) {
		if _, ok := graph[mod+"/"+p]; !ok {
			t.Errorf("the rules name %s, which is not a package here", p)
		}
	}
	if _, ok := graph[mod]; !ok {
		t.Fatalf("go list did not list the root package %s", mod)
	}
	for _, v := range Check(mod, graph) {
		t.Errorf("import rule broken: %v", v)
	}
}

// TestCheck: each rule catches its violation in a made-up graph, and
// allows what it should.
func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		from    string
		imports []string
		want    string // the violation, "" for none
	}{
		{"root: standard library", "", []string{"net/http", "context"}, ""},
		{"root: a package of ours", "", []string{"config"}, "the root package imports config: the root package (the domain) imports nothing of ours"},
		{"root: third-party", "", []string{"github.com/x/y"}, "the root package imports github.com/x/y: the root package (the domain) uses the standard library only"},
		{"server imports the agent", "server", []string{"agent"}, "server imports agent: nothing imports the in-container agent but cmd/idepool"},
		{"health imports the placeholder", "health", []string{"agent/placeholder"}, "health imports agent/placeholder: nothing imports the in-container agent but cmd/idepool"},
		{"the binary imports the agent", "cmd/idepool", []string{"agent"}, ""},
		{"the agent imports its subpackage", "agent", []string{"agent/placeholder", "control", "internal/peerset"}, ""},
		{"an end-to-end package imports the agent", "e2e/swarm", []string{"agent", "runtime/swarm"}, ""},
		{"a part wires an adapter", "pool", []string{"runtime/process"}, "pool imports runtime/process: only server and cmd/idepool wire adapters (runtime/swarm, runtime/process, runtime/fake, wsync/embeds3)"},
		{"a non-part wires an adapter", "wsync", []string{"wsync/embeds3"}, "wsync imports wsync/embeds3: only server and cmd/idepool wire adapters (runtime/swarm, runtime/process, runtime/fake, wsync/embeds3)"},
		{"the server wires adapters", "server", []string{"runtime/swarm", "runtime/process", "wsync/embeds3", "pool", "httpapi"}, ""},
		{"an adapter's own helper", "runtime/swarm/swarmtest", []string{"runtime/swarm"}, ""},
		{"a part imports another part", "httpapi", []string{"proxy"}, "httpapi imports proxy: a part (pool, httpapi, health, capacity, traefik, proxy, control, events, idle, metrics, dashboard, client, ide) imports of ours only the root package, internal/* and its own subpackages"},
		{"a part imports config", "pool", []string{"config"}, "pool imports config: a part (pool, httpapi, health, capacity, traefik, proxy, control, events, idle, metrics, dashboard, client, ide) imports of ours only the root package, internal/* and its own subpackages"},
		{"a part: root, internal, own subpackage, third-party", "pool", []string{"", "internal/clock", "pool/judge", "github.com/x/y", "sync"}, ""},
		{"a part's subpackage imports the part", "pool/judge", []string{"pool", ""}, ""},
		{"outside the module", "github.com/other/thing", []string{mod + "/agent"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := full(tt.from)
			var imports []string
			for _, i := range tt.imports {
				if strings.Contains(strings.SplitN(i, "/", 2)[0], ".") || isStdName(i) {
					imports = append(imports, i)
				} else {
					imports = append(imports, full(i))
				}
			}
			if strings.HasPrefix(tt.from, "github.com/") {
				from = tt.from
			}
			vs := Check(mod, map[string][]string{from: imports})
			var got string
			if len(vs) > 0 {
				got = vs[0].String()
			}
			if len(vs) > 1 || got != tt.want {
				t.Errorf("Check = %v\nwant %q", vs, tt.want)
			}
		})
	}
}

// full returns the import path of a module-relative path.
func full(p string) string {
	if p == "" {
		return mod
	}
	return mod + "/" + p
}

// isStdName tells the made-up graph's standard-library names from ours.
func isStdName(p string) bool {
	switch p {
	case "net/http", "context", "sync":
		return true
	}
	return false
}
