// Package wsync keeps a container's workspace directory and the user's S3
// workspace (bucket + key prefix) in step, both ways, while the user works.
//
// It is a three-way merge, like Unison or Mutagen. The base — what both
// sides last agreed on per path (key, ETag, size, local MD5 and mtime) —
// lives in a state file outside the synced tree (a JSON snapshot written
// atomically plus an append-only journal, so a SIGKILL loses no agreement
// already reached). Every upload is journaled as pending (path, size, MD5)
// before its PUT; a pending upload never recorded as a base is settled
// against the next listing, so an upload that landed just before a kill is
// taken as the base rather than a conflict. A cycle scans the tree (hashing only files whose size
// or mtime moved), lists the prefix, and lets the pure Plan decide per
// path: push, pull, delete-local, delete-remote, conflict, adopt (same
// bytes on both sides) or forget. Cycles run after filesystem events
// (fsnotify, recursive, debounced; an overflow forces a rescan), on a poll
// interval (3 s, doubling while cycles find nothing to do, up to 15 s), and
// on Flush.
//
// Rules the engine keeps:
//
//   - A delete propagates only when the other side is unchanged since the
//     base; an edit always beats a delete.
//   - Both sides changed: both versions are kept. This container's version
//     stays under the name; the other one is saved as
//     "name.conflict-remote-<UTC time>.ext" locally and in S3.
//   - Unless this container was superseded: every object an agent writes
//     carries its claim's owner epoch (metadata idepool-epoch); when the
//     remote version of a file changed on both sides has a later epoch, a
//     later container owns the workspace (this one was cut off and
//     replaced), so the remote keeps the name and this side's version goes
//     beside it as "name.conflict-superseded-<UTC time>.ext".
//   - Writes are conditional (If-Match on the ETag the plan saw,
//     If-None-Match for new keys, If-Match on deletes), so a concurrent
//     remote writer is detected and re-planned, never overwritten. Servers
//     that answer NotImplemented get unconditional writes and detection by
//     listing only (reported once).
//   - Downloads go to a temp file in the target's directory and are renamed
//     into place only if the local file is still what the plan saw; large
//     objects come in parallel ranges, large files go up in multipart.
//   - Keys that are not plain relative paths ("..", absolute, NUL, control
//     characters, backslashes) are refused and reported; every local write
//     goes through an os.Root of the workspace, so nothing lands outside
//     it. Symlinks are skipped: never followed, never uploaded, never
//     written through, and not taken for deletions.
//   - Ignored: DefaultIgnore (node_modules, __pycache__, .venv, editor swap
//     files, ...) and the patterns of the workspace's .idepoolignore. .git
//     is synced: unpushed commits are work too.
//   - Files over MaxFileSize and files beyond MaxFiles are not synced and
//     are reported as "limit" events; they are never deleted either.
//   - The store has an identity: a marker object (MarkerRel, under the
//     prefix) whose ETag the base records. A listing without it, or with
//     another, means the store lost the workspace; the base is forgotten
//     (nothing is deleted locally, everything goes up again; a vanished
//     bucket is created again) and "remote-reset" is reported. .idepool/
//     is the engine's own and never synced.
//   - A cycle that would delete more than MaxDeletePercent of the local
//     files (beyond deleteFloor) holds those deletions ("deletions-held")
//     until ConfirmDeletions.
//
// AgentSyncer adapts the engine to the agent's Syncer interface; embeds3
// runs an S3-compatible store in-process for the zero-config run.
package wsync
