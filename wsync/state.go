package wsync

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
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
	// Pending: uploads started but not (yet) recorded as a base, resolved
	// against the next remote listing (ResolvePending).
	Pending map[string]Pending `json:"pending,omitempty"`
	// Marker is the ETag of the workspace's identity marker (MarkerRel) the
	// base was agreed against; empty until one is written or adopted. A
	// listing without it, or with another, means the store was reset.
	Marker string `json:"marker,omitempty"`
}

// Pending is an upload about to be made, recorded before the PUT so that a
// process killed after the PUT landed but before its base was recorded
// still knows what it pushed.
type Pending struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
	// Hash is the hex MD5 of the bytes being pushed; a single-part PUT gets
	// it as its ETag. A multipart ETag never equals it, so an interrupted
	// multipart push is not resolved (the no-base rules apply).
	Hash  string `json:"hash"`
	MTime int64  `json:"mtime"`
}

// ResolvePending decides the interrupted pushes against a remote listing:
// where the object now holds exactly the bytes that were being pushed
// (ETag = their MD5, same size), that version becomes the base; every
// other pending push is dropped (it never landed, or someone else wrote
// since), leaving the normal rules to decide. It is pure.
func ResolvePending(pending map[string]Pending, remote map[string]ObjectInfo) (bases map[string]Base, drop []string) {
	bases = map[string]Base{}
	for p, pe := range pending {
		r, ok := remote[p]
		if ok && pe.Hash != "" && r.ETag == pe.Hash && r.Size == pe.Size {
			bases[p] = Base{Key: pe.Key, ETag: r.ETag, Size: pe.Size, Hash: pe.Hash, MTime: pe.MTime}
			continue
		}
		drop = append(drop, p)
	}
	sort.Strings(drop)
	return bases, drop
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
		s := &State{Version: stateVersion, Entries: map[string]Base{}, Pending: map[string]Pending{}}
		s.replayJournal(file)
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sync state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		// A torn or corrupt file cannot happen with atomic writes; if it
		// does, start without a base: the planner then adopts identical
		// files and keeps both versions of different ones, losing nothing.
		return &State{Version: stateVersion, Entries: map[string]Base{}, Pending: map[string]Pending{}}, fmt.Errorf("parse sync state %s (starting without a base): %w", file, err)
	}
	if s.Entries == nil {
		s.Entries = map[string]Base{}
	}
	if s.Pending == nil {
		s.Pending = map[string]Pending{}
	}
	s.replayJournal(file)
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

func (s *State) clonePending() map[string]Pending {
	out := make(map[string]Pending, len(s.Pending))
	for k, v := range s.Pending {
		out[k] = v
	}
	return out
}

// The journal makes every base update durable against a SIGKILL without
// rewriting the whole state: one JSON line per update, appended (no fsync:
// the page cache survives a killed process). Save folds it into the
// snapshot and truncates it.
//
// A line is one of: a base set ("b" an object) or removed ("b" null), both
// of which also settle any pending push of the path; a pending push
// ("pending", written before the PUT); a dropped pending push ("unpend");
// the identity marker agreed on ("marker"); or a reset of the store
// ("reset").
type journalEntry struct {
	Path    string   `json:"p"`
	Base    *Base    `json:"b,omitempty"`
	Pending *Pending `json:"pending,omitempty"`
	Unpend  bool     `json:"unpend,omitempty"`
	// Marker records the identity marker's ETag (Path is MarkerRel);
	// Reset empties the base and forgets the marker (the store was reset).
	Marker *string `json:"marker,omitempty"`
	Reset  bool    `json:"reset,omitempty"`
}

func journalName(stateFile string) string { return stateFile + ".journal" }

// replayJournal applies the journal's complete lines to s.
func (s *State) replayJournal(stateFile string) {
	b, err := os.ReadFile(journalName(stateFile))
	if err != nil {
		return
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // torn last line: the update never happened
		}
		var je journalEntry
		if json.Unmarshal(b[:i], &je) == nil && je.Path != "" {
			s.apply(je)
		}
		b = b[i+1:]
	}
}

// apply is one journal line's update.
func (s *State) apply(je journalEntry) {
	switch {
	case je.Reset:
		clear(s.Entries)
		clear(s.Pending)
		s.Marker = ""
	case je.Marker != nil:
		s.Marker = *je.Marker
	case je.Pending != nil:
		s.Pending[je.Path] = *je.Pending
	case je.Unpend:
		delete(s.Pending, je.Path)
	case je.Base == nil:
		delete(s.Entries, je.Path)
		delete(s.Pending, je.Path)
	default:
		s.Entries[je.Path] = *je.Base
		delete(s.Pending, je.Path)
	}
}

type journal struct {
	f *os.File
}

func openJournal(stateFile string) (*journal, error) {
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.OpenFile(journalName(stateFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sync journal: %w", err)
	}
	return &journal{f: f}, nil
}

func (j *journal) append(je journalEntry) error {
	line, err := json.Marshal(je)
	if err != nil {
		return err
	}
	_, err = j.f.Write(append(line, '\n'))
	return err
}

func (j *journal) truncate() error { return j.f.Truncate(0) }

func (j *journal) close() error { return j.f.Close() }
