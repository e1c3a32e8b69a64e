// Package importrules states DESIGN's import rules ("Packages" in
// ../shared/DESIGN.md, docs/architecture.md) as data and checks a package
// graph against them; its test runs the check on this repository, as the
// OpenAPI test holds routes.go to the document.
//
// Only the imports of non-test files count: tests use real parts (the
// placeholder workload, the process runtime) wherever they like.
package importrules

import (
	"fmt"
	"sort"
	"strings"
)

// Paths below are relative to the module: "" is the root package.
var (
	// Wiring builds the adapters and hands them to the parts.
	wiring = []string{"server", "cmd/idepool"}
	// Adapters implement one of our interfaces and are chosen by
	// configuration; only the wiring (and tests) may name one.
	adapters = []string{"runtime/swarm", "runtime/process", "runtime/fake", "wsync/embeds3"}
	// Parts (DESIGN's list and their peers) import the root package,
	// internal/*, their own subpackages and third-party libraries; no other
	// package of ours.
	parts = []string{"pool", "httpapi", "health", "capacity", "traefik", "proxy",
		"control", "events", "idle", "metrics", "dashboard", "client", "ide"}
	// agentTree is the in-container agent: only the binary (and the tree
	// itself) imports it, so the orchestrator never links what runs inside
	// a container.
	agentTree = "agent"
	binary    = "cmd/idepool"
)

// Violation is one import that breaks a rule.
type Violation struct {
	From, To, Rule string
}

func (v Violation) String() string {
	from := v.From
	if from == "" {
		from = "the root package"
	}
	return fmt.Sprintf("%s imports %s: %s", from, v.To, v.Rule)
}

// Check returns every import in graph that breaks a rule, sorted. graph maps
// each package of module (its full import path) to its imports (full paths,
// standard library and third-party included).
func Check(module string, graph map[string][]string) []Violation {
	var out []Violation
	for from, imports := range graph {
		f, ok := rel(module, from)
		if !ok {
			continue
		}
		for _, to := range imports {
			t, ours := rel(module, to)
			if !ours {
				if f == "" && !isStd(to) {
					out = append(out, Violation{f, to, "the root package (the domain) uses the standard library only"})
				}
				continue
			}
			if r := broken(f, t); r != "" {
				out = append(out, Violation{f, t, r})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

// broken names the rule that forbids from importing to (both ours,
// module-relative), or "".
func broken(from, to string) string {
	if from == "" {
		return "the root package (the domain) imports nothing of ours"
	}
	if under(to, agentTree) && !under(from, agentTree) && from != binary && !under(from, "e2e") {
		return "nothing imports the in-container agent but " + binary
	}
	if a, ok := containing(to, adapters); ok && !under(from, a) && !inAny(from, wiring) && !under(from, "e2e") {
		return "only " + strings.Join(wiring, " and ") + " wire adapters (" + strings.Join(adapters, ", ") + ")"
	}
	if p, ok := containing(from, parts); ok && to != "" && !under(to, "internal") && !under(to, p) {
		return "a part (" + strings.Join(parts, ", ") + ") imports of ours only the root package, internal/* and its own subpackages"
	}
	return ""
}

// rel returns path relative to module ("" for the module itself) and
// whether it is in module.
func rel(module, path string) (string, bool) {
	if path == module {
		return "", true
	}
	if r, ok := strings.CutPrefix(path, module+"/"); ok {
		return r, true
	}
	return "", false
}

// under reports whether p is dir or below it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// inAny reports whether p is one of dirs or below one.
func inAny(p string, dirs []string) bool {
	_, ok := containing(p, dirs)
	return ok
}

// containing returns the one of dirs that p is or is below.
func containing(p string, dirs []string) (string, bool) {
	for _, d := range dirs {
		if under(p, d) {
			return d, true
		}
	}
	return "", false
}

// isStd reports whether path is in the standard library: its first element
// has no dot.
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}
