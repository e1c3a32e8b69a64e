package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestEnsureAPIKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	key, generated, err := EnsureAPIKey(dir)
	if err != nil || !generated {
		t.Fatalf("first call: %v, generated %v", err, generated)
	}
	if !strings.HasPrefix(key, "idp_") || len(key) != 4+43 {
		t.Errorf("key %q: want idp_ and 43 base64url characters", key)
	}
	fi, err := os.Stat(filepath.Join(dir, APIKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", di.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("leftovers in %s: %v", dir, entries)
	}

	again, generated, err := EnsureAPIKey(dir)
	if err != nil || generated || again != key {
		t.Errorf("second call: %q %v %v, want the same key, not generated", again, generated, err)
	}

	other, _, err := EnsureAPIKey(t.TempDir())
	if err != nil || other == key {
		t.Errorf("another dir gave %q (%v)", other, err)
	}
}

func TestEnsureAPIKeyRefusesReadableFile(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		dir := t.TempDir()
		p := filepath.Join(dir, APIKeyFile)
		if err := os.WriteFile(p, []byte("idp_0123456789abcdefghij\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if _, _, err := EnsureAPIKey(dir); err == nil || !strings.Contains(err.Error(), "readable by group or others") {
			t.Errorf("mode %v: error %v", mode, err)
		}
	}
}

func TestEnsureAPIKeyBadFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, APIKeyFile), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureAPIKey(dir); err == nil {
		t.Error("a short key was accepted")
	}
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, APIKeyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureAPIKey(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
}

// Racing starts agree on one key, and exactly one of them generated it.
func TestEnsureAPIKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	keys := make([]string, n)
	gens := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], gens[i], errs[i] = EnsureAPIKey(dir) })
	}
	wg.Wait()
	generated := 0
	for i := range n {
		if errs[i] != nil || keys[i] != keys[0] {
			t.Errorf("call %d: %q %v", i, keys[i], errs[i])
		}
		if gens[i] {
			generated++
		}
	}
	if generated != 1 {
		t.Errorf("%d calls say they generated the key", generated)
	}
}

// TestReadAPIKeyFile: API_KEY_FILE holds keys separated by commas or lines
// (a Docker secret's file ends with a newline); a file others may read, a
// short key and an empty file are refused.
func TestReadAPIKeyFile(t *testing.T) {
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
	keys, err := ReadAPIKeyFile(write("ok", "idp_0123456789abcdef, idp_fedcba9876543210\nidp_aaaaaaaaaaaaaaaa\n", 0o400))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"idp_0123456789abcdef", "idp_fedcba9876543210", "idp_aaaaaaaaaaaaaaaa"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	for name, tc := range map[string]struct {
		content string
		mode    os.FileMode
	}{
		"readable": {"idp_0123456789abcdef\n", 0o644},
		"short":    {"short\n", 0o600},
		"empty":    {"\n", 0o600},
	} {
		if _, err := ReadAPIKeyFile(write(name, tc.content, tc.mode)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := ReadAPIKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
