// Package dirlock holds the exclusive lock on a DATA_DIR, so that only one
// `idepool serve` (or `idepool down`) works on a directory's containers at a
// time. The lock is an flock(2) on DATA_DIR/serve.lock: the kernel drops it
// when its holder exits, even on SIGKILL, so a crash leaves no stale lock.
// The file holds the holder's pid and port, to name it to whoever is
// refused.
package dirlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FileName is the lock file under DATA_DIR.
const FileName = "serve.lock"

// Holder says who holds a lock.
type Holder struct {
	PID     int       `json:"pid"`
	Port    int       `json:"port,omitempty"`
	Command string    `json:"command"` // "serve" or "down"
	Since   time.Time `json:"since"`
}

func (h Holder) String() string {
	if h.PID == 0 {
		return "another idepool process (pid unknown)"
	}
	s := fmt.Sprintf("idepool %s (pid %d", h.Command, h.PID)
	if h.Port > 0 {
		s += fmt.Sprintf(", port %d", h.Port)
	}
	return s + ")"
}

// HeldError is returned when another process holds the lock.
type HeldError struct {
	Dir    string
	Holder Holder
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("DATA_DIR %s is in use by %s: stop it first, or use another DATA_DIR", e.Dir, e.Holder)
}

// Lock is a held lock. Close releases it.
type Lock struct {
	f      *os.File
	holder Holder
}

// Acquire takes the lock on dir without waiting; it fails with a *HeldError
// when another process (or another Lock in this one) holds it.
func Acquire(dir, command string, port int) (*Lock, error) {
	p := filepath.Join(dir, FileName)
	// os.OpenFile sets O_CLOEXEC: agents started later do not inherit the
	// lock, so they cannot keep it after serve dies.
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if !errors.Is(err, errHeld) {
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		return nil, &HeldError{Dir: dir, Holder: ReadHolder(dir)}
	}
	l := &Lock{f: f, holder: Holder{PID: os.Getpid(), Port: port, Command: command, Since: time.Now().UTC().Truncate(time.Second)}}
	if err := l.write(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// SetPort records the port the holder listens on (known after Acquire).
func (l *Lock) SetPort(port int) error {
	if l == nil || l.f == nil {
		return nil
	}
	l.holder.Port = port
	return l.write()
}

func (l *Lock) write() error {
	b, _ := json.Marshal(l.holder)
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", l.f.Name(), err)
	}
	if _, err := l.f.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("write %s: %w", l.f.Name(), err)
	}
	return nil
}

// Close releases the lock. The file stays: removing it would let two
// processes lock two different files of the same name.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}

// ReadHolder reads who holds (or last held) dir's lock; the zero Holder
// when unknown.
func ReadHolder(dir string) Holder {
	var h Holder
	// The holder writes its name right after locking; a refused process
	// may look in between, so it looks again briefly.
	for i := 0; i < 10; i++ {
		b, err := os.ReadFile(filepath.Join(dir, FileName))
		if err == nil && strings.TrimSpace(string(b)) != "" && json.Unmarshal(b, &h) == nil {
			return h
		}
		time.Sleep(20 * time.Millisecond)
	}
	return Holder{}
}

// Held reports whether another process holds dir's lock now, and who.
func Held(dir string) (Holder, bool, error) {
	l, err := Acquire(dir, "probe", 0)
	var he *HeldError
	switch {
	case errors.As(err, &he):
		return he.Holder, true, nil
	case err != nil:
		return Holder{}, false, err
	}
	l.Close()
	return Holder{}, false, nil
}
