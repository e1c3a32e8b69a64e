package wsync

import "sort"

// Base is what both sides last agreed on for one path.
type Base struct {
	Key  string `json:"key"`
	ETag string `json:"etag"`
	Size int64  `json:"size"`
	// Hash is the hex MD5 of the local content (equal to a single-part
	// ETag, so identical content is recognised without a download).
	Hash string `json:"hash"`
	// MTime is the local file's modification time (Unix ns) when agreed;
	// with Size it lets a rescan skip hashing unchanged files.
	MTime int64 `json:"mtime"`
}

// LocalFile is a regular file in the workspace as a scan saw it.
type LocalFile struct {
	Size  int64
	MTime int64
	Hash  string
}

// Action is what the planner decided for one path.
type Action int

// Actions.
const (
	Nothing      Action = iota
	Push                // upload the local version
	Pull                // download the remote version
	DeleteLocal         // the remote side deleted an unchanged file
	DeleteRemote        // the local side deleted an unchanged object
	Conflict            // both changed differently: keep both
	Adopt               // both changed to the same content: record the base
	Forget              // both deleted: drop the base
)

var actionNames = [...]string{"nothing", "push", "pull", "delete-local", "delete-remote", "conflict", "adopt", "forget"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "action?"
}

// Decide is the three-way decision for one path. nil means "absent" (for
// base: never agreed on).
func Decide(base *Base, local *LocalFile, remote *ObjectInfo) Action {
	lc := localChanged(base, local)
	rc := remoteChanged(base, remote)
	switch {
	case !lc && !rc:
		return Nothing
	case lc && !rc:
		if local != nil {
			return Push
		}
		if remote != nil {
			return DeleteRemote
		}
		return Forget
	case !lc && rc:
		if remote != nil {
			return Pull
		}
		if local != nil {
			return DeleteLocal
		}
		return Forget
	}
	// Both sides changed since the base.
	switch {
	case local == nil && remote == nil:
		return Forget
	case local == nil:
		return Pull // deleted here, edited there: the edit wins
	case remote == nil:
		return Push // edited here, deleted there: the edit wins
	case local.Hash != "" && local.Hash == remote.ETag:
		return Adopt
	default:
		return Conflict
	}
}

func localChanged(base *Base, local *LocalFile) bool {
	switch {
	case base == nil:
		return local != nil
	case local == nil:
		return true
	default:
		return local.Hash != base.Hash
	}
}

func remoteChanged(base *Base, remote *ObjectInfo) bool {
	switch {
	case base == nil:
		return remote != nil
	case remote == nil:
		return true
	default:
		return remote.ETag != base.ETag
	}
}

// Decision is one planned step.
type Decision struct {
	Path   string
	Action Action
	Base   *Base
	Local  *LocalFile
	Remote *ObjectInfo
}

// Cond is the write condition that makes the step safe against a
// concurrent remote writer: the remote must still be what the plan saw.
func (d Decision) Cond() Condition {
	if d.Remote != nil {
		return Condition{IfMatch: d.Remote.ETag}
	}
	return Condition{IfNoneMatch: true}
}

// Plan decides every path present in any of the three maps, except those
// skip reports (paths whose local state is unknown: unreadable, symlinks,
// over a limit). It is pure; decisions come sorted by path.
func Plan(base map[string]Base, local map[string]LocalFile, remote map[string]ObjectInfo, skip func(path string) bool) []Decision {
	paths := make(map[string]struct{}, len(base)+len(local)+len(remote))
	for p := range base {
		paths[p] = struct{}{}
	}
	for p := range local {
		paths[p] = struct{}{}
	}
	for p := range remote {
		paths[p] = struct{}{}
	}
	var out []Decision
	for p := range paths {
		if skip != nil && skip(p) {
			continue
		}
		d := Decision{Path: p}
		if b, ok := base[p]; ok {
			d.Base = &b
		}
		if l, ok := local[p]; ok {
			d.Local = &l
		}
		if r, ok := remote[p]; ok {
			d.Remote = &r
		}
		d.Action = Decide(d.Base, d.Local, d.Remote)
		if d.Action != Nothing {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
