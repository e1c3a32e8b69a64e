// Package proctest finds, for tests, the processes a process runtime
// started: every agent and all it started carry IDEPOOL_STATE_DIR under
// their DATA_DIR's containers/ (an older runtime's leaks too, which the
// runtime's own marker would miss).
package proctest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/idepool/idepool"
)

// StartedUnder maps each live (not zombie) process whose agent state lies
// under dataDir/containers/ to its container id.
func StartedUnder(dataDir string) (map[int]string, error) {
	want := []byte(idepool.EnvStateDir + "=" + filepath.Join(dataDir, "containers") + "/")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	out := map[int]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		i := bytes.Index(env, want)
		if i < 0 || !alive(e.Name()) {
			continue
		}
		rest := env[i+len(want):]
		if j := bytes.IndexByte(rest, 0); j >= 0 {
			rest = rest[:j]
		}
		out[pid] = strings.SplitN(string(rest), "/", 2)[0]
	}
	return out, nil
}

// alive: the process exists and is neither a zombie nor dead (the state
// field follows the command name's last ')').
func alive(pid string) bool {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	j := bytes.LastIndexByte(stat, ')')
	if err != nil || j < 0 || j+2 >= len(stat) {
		return false
	}
	s := stat[j+2]
	return s != 'Z' && s != 'X' && s != 'x'
}
