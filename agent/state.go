package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/idepool/idepool"
)

// stateFile holds the current assignment, minus its secrets: a restarted
// agent knows its workspace and generation, and an orchestrator that
// crashed before recording a claim in its runtime adopts it from the
// agent's hello (the claim's record).
const stateFile = "assignment.json"

type savedState struct {
	Generation int64             `json:"generation"`
	Workspace  idepool.Workspace `json:"workspace"`
	UserID     string            `json:"userId,omitempty"`
	S3Endpoint string            `json:"s3Endpoint,omitempty"`
	Epoch      int64             `json:"epoch,omitempty"`
	IdleExempt bool              `json:"idleExempt,omitempty"`
	PreWarmed  bool              `json:"preWarmed,omitempty"`
}

func stateOf(a idepool.Assignment) savedState {
	// Credentials and the VNC password are deliberately left out.
	return savedState{Generation: a.Generation, Workspace: a.Workspace, UserID: a.UserID, S3Endpoint: a.S3Endpoint,
		Epoch: a.Epoch, IdleExempt: a.IdleExempt, PreWarmed: a.PreWarmed}
}

// claim is the record the hello reports (nil when unassigned).
func (st savedState) claim() *idepool.ClaimRecord {
	if st.Workspace.IsZero() {
		return nil
	}
	return &idepool.ClaimRecord{Epoch: st.Epoch, UserID: st.UserID, IdleExempt: st.IdleExempt, PreWarmed: st.PreWarmed}
}

func loadState(dir string) (savedState, error) {
	var st savedState
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("agent: reading saved assignment: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return savedState{}, fmt.Errorf("agent: saved assignment %s is corrupt: %w", filepath.Join(dir, stateFile), err)
	}
	return st, nil
}

// saveState writes atomically (temp file, rename) before the agent
// acknowledges an assignment: it is the claim's durable record until the
// orchestrator's runtime labels catch up. No fsync: it is on the claim's
// hot path (an fsync costs ~6 ms here and serialises on the journal), and
// it would guard only against the host losing power, which loses the
// container and its unsynced files too.
func saveState(dir string, st savedState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, stateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("agent: saving assignment: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, stateFile))
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("agent: saving assignment: %w", werr)
	}
	return nil
}
