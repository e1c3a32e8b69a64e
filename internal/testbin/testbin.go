// Package testbin builds the idepool binary once per test process, for tests
// that run real agents (the process runtime) or a real `idepool serve`.
package testbin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// Builder builds ./cmd/idepool once; the zero value is ready to use.
type Builder struct {
	once sync.Once
	path string
	err  error
}

// Path returns the path of a freshly built idepool binary (without -race:
// dozens of agents must stay light). dir receives the binary.
func (b *Builder) Path(dir string) (string, error) {
	b.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			b.err = err
			return
		}
		out := filepath.Join(dir, "idepool")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/idepool")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/idepool: %v\n%s", err, msg)
			return
		}
		b.path = out
	})
	return b.path, b.err
}

// moduleRoot finds the directory holding go.mod, from this source file.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("testbin: cannot locate source")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testbin: go.mod not found above %s", file)
		}
		dir = parent
	}
}
