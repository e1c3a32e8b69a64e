// Package testbin builds the idepool binary once per test process, for tests
// that run real agents (the process runtime) or a real `idepool serve`.
package testbin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/idepool/idepool/internal/modroot"
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
		root, err := modroot.Dir()
		if err != nil {
			b.err = err
			return
		}
		out := filepath.Join(dir, "idepool")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// Static and -trimpath: the images' build configuration
		// (deploy/build-images.sh), so the two share Go's build cache.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./cmd/idepool")
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
