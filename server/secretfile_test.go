package server

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReadSecretFile: ROUTER_SECRET_FILE is read as is (trimmed); a file
// others may read, a short secret and a missing file are refused.
func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const secret = "0123456789abcdef0123456789abcdef"
	got, err := readSecretFile(write("ok", secret+"\n", 0o400))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != secret {
		t.Fatalf("secret %q, want %q", got, secret)
	}
	for name, p := range map[string]string{
		"readable": write("readable", secret, 0o644),
		"short":    write("short", "0123456789", 0o600),
		"missing":  filepath.Join(dir, "missing"),
	} {
		if _, err := readSecretFile(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
