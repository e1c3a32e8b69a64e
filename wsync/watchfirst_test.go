package wsync

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// The watcher is installed before the syncer reports the workspace synced:
// a file written from inside Start's first report (before Start returns,
// so before the agent can say "synced") is pushed by a filesystem event.
// The poll interval is an hour, so only the watcher can push it.
func TestSaveAtSyncedIsCaughtByTheWatcher(t *testing.T) {
	e := newEnv(t, "u1/")
	e.putRemote("existing.txt", []byte("from S3"))
	opts := testOptions()
	opts.PollInterval = time.Hour
	opts.StatsInterval = time.Hour
	s := NewAgentSyncer(e.dir, e.state, nil, opts)
	var once sync.Once
	report := func(r idepool.AgentReport) {
		once.Do(func() {
			// The first report of Start: the initial pull is done.
			if err := os.WriteFile(filepath.Join(e.dir, "saved-at-ready.txt"), []byte("quick save"), 0o644); err != nil {
				t.Error(err)
			}
		})
	}
	if err := s.Start(e.ctx(), e.assignment(), report); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(e.ctx()) })
	if b, ok := e.local("existing.txt"); !ok || string(b) != "from S3" {
		t.Fatalf("initial pull: %q", b)
	}
	// Generous bound; the poll would take an hour.
	eventually(t, 30*time.Second, func() error {
		if b, ok := e.remote("saved-at-ready.txt"); !ok || string(b) != "quick save" {
			return fmt.Errorf("saved-at-ready.txt not in S3 yet")
		}
		return nil
	})
}
