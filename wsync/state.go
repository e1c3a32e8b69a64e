package wsync

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const stateVersion = 1

// State is the base of the three-way merge, persisted outside the synced
// tree so a restarted engine resumes without re-downloading or clobbering.
type State struct {
	Version  int             `json:"version"`
	Endpoint string          `json:"endpoint,omitempty"`
	Bucket   string          `json:"bucket"`
	Prefix   string          `json:"prefix"`
	Entries  map[string]Base `json:"entries"`
}

// StateFileName is the state file for a workspace (bucket+prefix), so a
// container re-assigned to another workspace never mixes bases.
func StateFileName(endpoint, bucket, prefix string) string {
	h := sha256.Sum256([]byte(endpoint + "\x00" + bucket + "\x00" + prefix))
	return "wsync-" + hex.EncodeToString(h[:8]) + ".json"
}

// LoadState reads a state file; a missing file is an empty state.
func LoadState(file string) (*State, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: stateVersion, Entries: map[string]Base{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sync state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		// A torn or corrupt file cannot happen with atomic writes; if it
		// does, start without a base: the planner then adopts identical
		// files and keeps both versions of different ones, losing nothing.
		return &State{Version: stateVersion, Entries: map[string]Base{}}, fmt.Errorf("parse sync state %s (starting without a base): %w", file, err)
	}
	if s.Entries == nil {
		s.Entries = map[string]Base{}
	}
	return &s, nil
}

// Save writes the state atomically: temp file, fsync, rename, fsync dir.
func (s *State) Save(file string) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode sync state: %w", err)
	}
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(file)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write sync state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func (s *State) clone() map[string]Base {
	out := make(map[string]Base, len(s.Entries))
	for k, v := range s.Entries {
		out[k] = v
	}
	return out
}
