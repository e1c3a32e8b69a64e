package memnet_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTimePackages are the packages whose unit tests make time pass only in
// testing/synctest bubbles (docs/architecture.md, "Time"). Tests of real
// processes, real S3 and Docker (agent, server, runtime/process,
// runtime/swarm, wsync's integration tests, e2e) wait on real events and
// are not listed.
var fakeTimePackages = []string{
	"capacity", "client", "config", "control", "dashboard", "events", "health",
	"httpapi", "idle", "metrics", "pool", "runtime/fake",
}

// TestNoRealSleeps fails on a time.Sleep in those packages' tests that is
// neither inside a function passed to synctest.Test nor in a helper whose
// comment says it runs on the bubble's fake time.
func TestNoRealSleeps(t *testing.T) {
	for _, pkg := range fakeTimePackages {
		files, err := filepath.Glob(filepath.Join("..", "..", filepath.FromSlash(pkg), "*_test.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no test files (%v)", pkg, err)
		}
		for _, name := range files {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			bubbled := bubbleFuncs(f)
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				helper := bubbled[fd.Name.Name] || fd.Doc != nil && strings.Contains(fd.Doc.Text(), "fake time")
				for _, pos := range realSleeps(fd.Body) {
					if !helper {
						t.Errorf("%s: time.Sleep outside a synctest bubble (in %s)", fset.Position(pos), fd.Name.Name)
					}
				}
			}
		}
	}
}

// bubbleFuncs names the functions passed by name to synctest.Test
// (func TestX(t *testing.T) { synctest.Test(t, testX) }).
func bubbleFuncs(f *ast.File) map[string]bool {
	out := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok && isCall(call, "synctest", "Test") && len(call.Args) == 2 {
			if id, ok := call.Args[1].(*ast.Ident); ok {
				out[id.Name] = true
			}
		}
		return true
	})
	return out
}

// realSleeps returns the time.Sleep calls in n that are not inside the
// function passed to synctest.Test.
func realSleeps(n ast.Node) []token.Pos {
	var out []token.Pos
	ast.Inspect(n, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		switch {
		case isCall(call, "synctest", "Test"):
			return false // in the bubble
		case isCall(call, "time", "Sleep"):
			out = append(out, call.Pos())
		}
		return true
	})
	return out
}

func isCall(c *ast.CallExpr, pkg, fn string) bool {
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == pkg && sel.Sel.Name == fn
}
