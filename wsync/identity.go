package wsync

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MarkerRel is the workspace's identity marker, under its prefix: an object
// holding a random id, written once per store (as Syncthing's folder
// marker). The base remembers its ETag; a listing without it, or with
// another, means the store lost the workspace (emptied, or replaced by an
// empty one), and to a three-way merge that would look like "everything
// was deleted remotely". The engine then forgets the base instead, so
// nothing is deleted locally and every file goes up again.
const MarkerRel = reservedDir + "/workspace-id"

// reservedDir is the store's own directory in a workspace: never synced
// either way.
const reservedDir = ".idepool"

func reserved(rel string) bool {
	return rel == reservedDir || strings.HasPrefix(rel, reservedDir+"/")
}

// deleteFloor: a cycle may always delete this many local files; the
// mass-deletion guard counts only beyond it (deleting 1 of 2 files is a
// user's choice, not a lost store).
const deleteFloor = 3

func (e *Engine) marker() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.Marker
}

// checkIdentity compares the listed marker with the one the base was
// agreed against. If the store lost it, the base is forgotten (durably,
// before any step) and emptied in place: with no base, the planner pushes
// what is only on disk, pulls what is only in the store, and deletes
// nothing. reset reports that.
func (e *Engine) checkIdentity(base map[string]Base, listed *ObjectInfo) (reset bool) {
	agreed := e.marker()
	if agreed == "" || listed != nil && listed.ETag == agreed {
		return false
	}
	e.log.Warn("the workspace's store lost its identity marker; forgetting the base, deleting nothing", "had", agreed, "found", listed != nil)
	_ = e.record(journalEntry{Path: MarkerRel, Reset: true})
	clear(base)
	return true
}

// ensureMarker adopts the listed marker, or writes a new one (create-only:
// a concurrent writer's marker is adopted by the next cycle).
func (e *Engine) ensureMarker(ctx context.Context, listed *ObjectInfo) error {
	etag := ""
	if listed != nil {
		etag = listed.ETag
	} else {
		var rb [16]byte
		_, _ = rand.Read(rb[:])
		body := []byte("idepool workspace " + hex.EncodeToString(rb[:]) + "\n")
		key := KeyFromRel(e.prefix, MarkerRel)
		cond := Condition{IfNoneMatch: true}
		if e.condOff.disabled() {
			cond = Condition{}
		}
		obj, err := e.store.Put(ctx, key, bytes.NewReader(body), int64(len(body)), cond)
		if errors.Is(err, ErrConditionsUnsupported) {
			e.disableConditions()
			obj, err = e.store.Put(ctx, key, bytes.NewReader(body), int64(len(body)), Condition{})
		}
		if err != nil {
			return err
		}
		etag = obj.ETag
	}
	if etag == "" {
		return errors.New("the store gave the marker no ETag")
	}
	return e.record(journalEntry{Path: MarkerRel, Marker: &etag})
}

// markerRetryAfter spaces the attempts to write a marker the store refuses
// (read-only credentials): one PUT per poll would be waste.
const markerRetryAfter = 5 * time.Minute

func (e *Engine) markerDue() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.opts.Clock.Now().Before(e.markerRetry)
}

func (e *Engine) markerFailed(err error) {
	e.mu.Lock()
	e.markerRetry = e.opts.Clock.Now().Add(markerRetryAfter)
	e.mu.Unlock()
	e.emitEvery(Event{Type: "error", Path: MarkerRel, Message: "cannot write the workspace's identity marker, so a store that loses its data cannot be told from deletions (the mass-deletion guard still applies): " + err.Error()}, false, time.Hour)
}

// recreateBucket creates the bucket again when it vanished under a
// workspace this engine had synced (a store replaced by an empty one).
// A workspace never synced is not created: a wrong bucket name stays an
// error.
func (e *Engine) recreateBucket(ctx context.Context) bool {
	bc, ok := e.store.(interface{ CreateBucket(context.Context) error })
	if !ok || e.marker() == "" {
		return false
	}
	e.mu.Lock()
	due := !e.opts.Clock.Now().Before(e.bucketRetry)
	e.mu.Unlock()
	if !due {
		return false
	}
	if err := bc.CreateBucket(ctx); err != nil {
		e.mu.Lock()
		e.bucketRetry = e.opts.Clock.Now().Add(markerRetryAfter)
		e.mu.Unlock()
		e.emitEvery(Event{Type: "error", Message: "the workspace's bucket is gone and could not be created again: " + err.Error()}, false, 5*time.Minute)
		return false
	}
	e.log.Warn("the workspace's bucket was gone; created it again")
	return true
}

// guardDeletions holds back the local deletions of a cycle that would
// delete more than MaxDeletePercent of the local files (beyond
// deleteFloor), as rclone bisync's --max-delete: such a wave is more
// likely a store that lost data than a user's wish. Deletions confirmed by
// ConfirmDeletions pass once.
func (e *Engine) guardDeletions(plan []Decision, localFiles int) []Decision {
	e.mu.Lock()
	confirmed := e.confirmed
	e.confirmed = nil
	e.mu.Unlock()
	var del []string
	for _, d := range plan {
		if d.Action == DeleteLocal && !confirmed[d.Path] {
			del = append(del, d.Path)
		}
	}
	n, pct := len(del), e.opts.MaxDeletePercent
	if pct >= 100 || n <= deleteFloor || n*100 <= pct*localFiles {
		e.mu.Lock()
		e.held, e.heldReported = nil, 0
		e.mu.Unlock()
		return plan
	}
	held := make(map[string]bool, n)
	for _, p := range del {
		held[p] = true
	}
	out := make([]Decision, 0, len(plan)-n)
	for _, d := range plan {
		if d.Action != DeleteLocal || !held[d.Path] {
			out = append(out, d)
		}
	}
	e.mu.Lock()
	e.held = held
	report := e.heldReported != n
	e.heldReported = n
	e.mu.Unlock()
	if report {
		e.emit(Event{Type: "deletions-held", Message: fmt.Sprintf("%d of %d local files were deleted in the store at once (more than %d%%); they are kept on disk until the deletions are confirmed", n, localFiles, pct)}, false)
	}
	return out
}

// ConfirmDeletions lets the held deletions through in the next cycle
// (asked for now) and returns how many there are.
func (e *Engine) ConfirmDeletions() int {
	e.mu.Lock()
	n := len(e.held)
	if n > 0 {
		e.confirmed = e.held
	}
	e.mu.Unlock()
	if n > 0 {
		e.Kick()
	}
	return n
}
