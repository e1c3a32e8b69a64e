package modroot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDirFromThisPackage(t *testing.T) {
	d, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "internal", "modroot", "modroot.go")); err != nil {
		t.Fatalf("Dir() = %s, which does not hold this package: %v", d, err)
	}
}

// A nested module (a tool's own go.mod) is passed by; a tree without the
// module is an error, not the filesystem's root.
func TestFindPassesOtherModules(t *testing.T) {
	root := t.TempDir()
	write := func(path, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "go.mod"), "// the module\nmodule "+Module+"\n\ngo 1.26\n")
	write(filepath.Join(root, "tools", "x", "go.mod"), "module example.com/tool\n")
	deep := filepath.Join(root, "tools", "x", "sub")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := find(deep); err != nil || got != root {
		t.Fatalf("find(%s) = %q, %v; want %q", deep, got, err, root)
	}
	other := t.TempDir()
	write(filepath.Join(other, "go.mod"), "module example.com/other\n")
	if got, err := find(other); err == nil {
		t.Fatalf("find in another module = %q, want an error", got)
	}
}
