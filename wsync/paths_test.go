package wsync

import (
	"path/filepath"
	"testing"
	"time"
)

func base2time() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

func TestRelFromKey(t *testing.T) {
	tests := []struct {
		prefix, key string
		want        string
		bad         bool
	}{
		{"", "a.txt", "a.txt", false},
		{"p/", "p/dir/a.txt", "dir/a.txt", false},
		{"p/", "p/dir/", "", false}, // directory marker: skipped
		{"", "../x", "", true},
		{"", "/etc/x", "", true},
		{"", "a/../../x", "", true},
		{"", "a/../b", "", true},
		{"", "./a", "", true},
		{"", "a//b", "", true},
		{"", "a\x00b", "", true},
		{"", "a\\..\\b", "", true},
		{"", "a\nb", "", true},
		{"", "..", "", true},
		{"p/", "q/x", "", true},
		{"p/", "p/../x", "", true},
		{"", "\xff", "", true},
	}
	for _, tt := range tests {
		got, err := RelFromKey(tt.prefix, tt.key)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("RelFromKey(%q, %q) = %q, %v; want %q, bad=%v", tt.prefix, tt.key, got, err, tt.want, tt.bad)
		}
	}
}

func TestJoinInside(t *testing.T) {
	dir := t.TempDir()
	if p, err := joinInside(dir, "a/b"); err != nil || p != filepath.Join(dir, "a", "b") {
		t.Fatalf("joinInside = %q, %v", p, err)
	}
	for _, rel := range []string{"../x", "/etc/x", "a/../../x"} {
		if _, err := joinInside(dir, rel); err == nil {
			t.Errorf("joinInside(%q) accepted", rel)
		}
	}
}

func TestIgnorer(t *testing.T) {
	ig := NewIgnorer(append(DefaultIgnore(), ParseIgnoreFile("# comment\nbuild/\n/dist\ndocs/*.pdf\n[bad\n")...))
	tests := map[string]bool{
		"node_modules":            true,
		"web/node_modules/x/y.js": true,
		"src/__pycache__/a.pyc":   true,
		".venv/bin/python":        true,
		"src/.main.go.swp":        true,
		".idepool-tmp-abc":        true,
		"build/out.o":             true,
		"dist/app.js":             true,
		"docs/manual.pdf":         true,
		"docs/sub/manual.pdf":     false,
		"src/main.go":             false,
		".git/config":             false,
		"node_modules_notes.txt":  false,
		"src/building.go":         false,
		"[bad":                    false,
	}
	for p, want := range tests {
		if got := ig.Ignored(p); got != want {
			t.Errorf("Ignored(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestConflictName(t *testing.T) {
	tests := map[string]string{
		"a/b/main.go": "a/b/main.conflict-remote-20260102T030405Z.go",
		"README":      "README.conflict-remote-20260102T030405Z",
		".bashrc":     ".bashrc.conflict-remote-20260102T030405Z",
		"x.tar.gz":    "x.tar.conflict-remote-20260102T030405Z.gz",
	}
	for in, want := range tests {
		if got := ConflictName(in, "remote", "20260102T030405Z"); got != want {
			t.Errorf("ConflictName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := ConflictName("f.txt", "my host/1", "T"); got != "f.conflict-my_host_1-T.txt" {
		t.Errorf("host is sanitised: %q", got)
	}
}
