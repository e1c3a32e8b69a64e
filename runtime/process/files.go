package process

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	idepool "github.com/idepool/idepool"
)

// meta is a container's record on disk (meta.json): the source of truth
// after a restart. It never holds a secret: the spec's Env (with the agent
// token) is given to the process only.
type meta struct {
	Version    int               `json:"version"`
	ID         string            `json:"id"`
	Deployment string            `json:"deployment"`
	Profile    idepool.Profile   `json:"profile"`
	Labels     map[string]string `json:"labels"`
	Ports      map[string]int    `json:"ports"`
	Process    identity          `json:"process"`
	// Cgroups are the container's own cgroup directories (Options.Limits).
	Cgroups   []string  `json:"cgroups,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

const metaVersion = 1

func readMeta(dir string) (meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return meta{}, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return meta{}, fmt.Errorf("parse meta.json: %w", err)
	}
	if m.ID == "" || m.Labels == nil {
		return meta{}, fmt.Errorf("meta.json: missing id or labels")
	}
	if l, err := lastLabels(dir); err != nil {
		return meta{}, err
	} else if l != nil {
		m.Labels = l
	}
	return m, nil
}

// labels.log records label changes after meta.json was written: one JSON
// object (the whole label set) per record, the last complete one wins. A
// claim records its labels with one append instead of rewriting meta.json
// (create, write, chmod, close, rename): under a burst of claims those
// directory operations were most of a claim's cost on this runtime.
const (
	labelLogName = "labels.log"
	// labelLogMax is when SetLabels folds the log into meta.json.
	labelLogMax = 64 << 10
)

// openLabels opens dir's labels.log for appending and returns its size.
func openLabels(dir string) (*os.File, int64, error) {
	f, err := os.OpenFile(filepath.Join(dir, labelLogName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// appendLabels appends one record to f (labels.log) with one write and
// returns its length. Each record starts and ends a line, so one torn by a
// crash never spoils the next.
func appendLabels(f *os.File, labels map[string]string) (int64, error) {
	rec := make([]byte, 0, 512)
	rec = append(rec, '\n', '{')
	first := true
	for k, v := range labels {
		if !first {
			rec = append(rec, ',')
		}
		first = false
		rec = appendJSONString(rec, k)
		rec = append(rec, ':')
		rec = appendJSONString(rec, v)
	}
	rec = append(rec, '}', '\n')
	n, err := f.Write(rec)
	return int64(n), err
}

// appendJSONString appends s as a JSON string. Written by hand because a
// claim writes one record and encoding/json's reflection and key sorting
// were a tenth of a claim's CPU; invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			i++
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
	return append(dst, '"')
}

// lastLabels returns the last complete record of dir's labels.log, or nil
// when there is none.
func lastLabels(dir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, labelLogName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	lines := bytes.Split(b, []byte{'\n'})
	for i := len(lines) - 1; i >= 0; i-- {
		var l map[string]string
		if len(lines[i]) > 0 && json.Unmarshal(lines[i], &l) == nil && l != nil {
			return l, nil
		}
	}
	return nil, nil
}

// writeMeta replaces meta.json atomically: a crash leaves the old or the new
// record, never half of one.
func writeMeta(dir string, m meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "meta.json"), b, 0o600)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	// No fsync: SetLabels records claims on the hot path, where an fsync
	// (~6 ms here, serialised by the journal) would dominate; a crash of
	// idepool cannot lose a renamed file, and a power loss that could also
	// kills every process this runtime runs.
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// capLog keeps the agent's log under max bytes. The agent writes to the file
// directly (no pipe through us, so it survives our exit), so the log is
// rotated by copy-and-truncate: the last max bytes go to agent.log.1, and
// agent.log, opened O_APPEND by the agent, starts again at zero. Lines written
// between the copy and the truncate are lost; that is the price.
func capLog(path string, max int64) error {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= max {
		return nil
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := src.Seek(-max, io.SeekEnd); err != nil {
		return err
	}
	dst, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, io.LimitReader(src, max)); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Truncate(path, 0)
}
