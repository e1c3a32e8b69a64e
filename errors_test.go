package idepool

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"slices"
	"testing"
)

// TestStatusTable: every code declared in errors.go has one row in the
// table, with an error status; an unknown code is 500.
func TestStatusTable(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []Code
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for _, v := range vs.Values {
				lit := v.(*ast.BasicLit)
				declared = append(declared, Code(lit.Value[1:len(lit.Value)-1]))
			}
		}
	}
	codes := Codes()
	if len(declared) < 20 {
		t.Fatalf("found only %d declared codes; is the parse right?", len(declared))
	}
	for _, c := range declared {
		if n := countOf(codes, c); n != 1 {
			t.Errorf("code %s has %d rows in the status table, want 1", c, n)
		}
	}
	for _, c := range codes {
		if !slices.Contains(declared, c) {
			t.Errorf("table row %s is not a declared code", c)
		}
		if st := c.HTTPStatus(); st < 400 || st > 599 {
			t.Errorf("%s → %d", c, st)
		}
	}
	for _, tt := range []struct {
		code Code
		want int
	}{
		{"SOMETHING_NEW", 500}, {ENotFound, 404}, {ETooLarge, 413}, {EBadGateway, 502},
		{ERuntime, 500}, {ERuntimeUnreachable, 503}, {EClientClosed, 499},
	} {
		if got := tt.code.HTTPStatus(); got != tt.want {
			t.Errorf("%s.HTTPStatus() = %d, want %d", tt.code, got, tt.want)
		}
	}
}

func countOf(cs []Code, c Code) (n int) {
	for _, x := range cs {
		if x == c {
			n++
		}
	}
	return n
}

// TestCodeForStatus: the inverse round-trips. Every status in the table
// has exactly one bare code, which maps back to it; other statuses fall
// back by class.
func TestCodeForStatus(t *testing.T) {
	bare := map[int]int{}
	for _, e := range codeTable {
		if e.bare {
			bare[e.status]++
		}
	}
	for _, c := range Codes() {
		st := c.HTTPStatus()
		if bare[st] != 1 {
			t.Errorf("status %d has %d bare codes, want 1", st, bare[st])
		}
		back := CodeForStatus(st)
		if back.HTTPStatus() != st {
			t.Errorf("%s: %d → %s → %d", c, st, back, back.HTTPStatus())
		}
	}
	for _, tt := range []struct {
		status int
		want   Code
	}{
		{http.StatusNotFound, ERouteNotFound}, {http.StatusServiceUnavailable, EUnavailable},
		{http.StatusTooManyRequests, ERateLimited}, {http.StatusBadGateway, EBadGateway},
		{http.StatusTeapot, EInvalid}, {http.StatusNotImplemented, EInternal}, {302, EInternal},
	} {
		if got := CodeForStatus(tt.status); got != tt.want {
			t.Errorf("CodeForStatus(%d) = %s, want %s", tt.status, got, tt.want)
		}
	}
}
