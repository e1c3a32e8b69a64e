// Package modroot finds this module's root directory (go.mod, deploy/,
// scripts/) for tests and the helpers they call.
//
// It starts from the working directory the process started in, which for
// a test binary is its package's directory. It does not use the source
// file's path (runtime.Caller): under -trimpath, the build configuration
// the non-race checks, benchmarks and images share (scripts/test.sh),
// that path is relative to the module. It does not use the working
// directory at the time of the call either: an embedded S3 store
// (versitygw's posix backend) started in a test process changes it.
package modroot

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Module is the module whose root Dir finds.
const Module = "github.com/idepool/idepool"

// startDir is the working directory at start-up, before any test ran (see
// the package comment); read-only afterwards.
var startDir, startErr = os.Getwd()

// Dir returns the root of Module above the start-up working directory.
func Dir() (string, error) {
	if startErr != nil {
		return "", fmt.Errorf("module root: working directory: %w", startErr)
	}
	return find(startDir)
}

// find walks up from dir to the go.mod that declares Module (a tool's own
// module below it, e.g. tools/traefik, is passed by).
func find(dir string) (string, error) {
	for d := dir; ; {
		ok, err := declares(filepath.Join(d, "go.mod"))
		if err != nil {
			return "", err
		}
		if ok {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("module root: no go.mod of %s above %s", Module, dir)
		}
		d = parent
	}
}

// declares tells whether the go.mod at path declares Module; a missing
// file is no error.
func declares(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("module root: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(name), `"`) == Module, nil
		}
	}
	return false, sc.Err()
}
