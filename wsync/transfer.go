package wsync

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// yieldConflict is conflict for a superseded writer: the remote version
// was written under a later owner epoch (the workspace's replacement
// container wrote it while this one was cut off), so it keeps the name,
// here and in the store, and this side's version goes beside it as
// name.conflict-superseded-<time>.ext. Nothing of either side is lost and
// the replacement's work is never overwritten. tmp holds the downloaded
// remote version.
func (e *Engine) yieldConflict(ctx context.Context, d Decision, tmp string, remote ObjectInfo, hash, stamp string) error {
	cname, err := e.freeConflictName(d.Path, "superseded", stamp)
	if err != nil {
		return err
	}
	// This side's bytes first, under the conflict name (create only), then
	// the remote version in place of the local one.
	if err := e.root.Rename(d.Path, cname); err != nil {
		return fmt.Errorf("set this side's version aside: %w", err)
	}
	cb, err := e.push(ctx, cname, nil, Condition{IfNoneMatch: true})
	if err != nil {
		return fmt.Errorf("upload conflict copy: %w", err)
	}
	e.setBase(cname, cb)
	if err := e.root.Rename(tmp, d.Path); err != nil {
		return fmt.Errorf("take the remote version: %w", err)
	}
	st, err := e.root.Lstat(d.Path)
	if err != nil {
		return fmt.Errorf("take the remote version: %w", err)
	}
	e.setBase(d.Path, &Base{Key: KeyFromRel(e.prefix, d.Path), ETag: remote.ETag, Size: st.Size(), Hash: hash, MTime: st.ModTime().UnixNano()})
	e.mu.Lock()
	e.stats.Conflicts++
	e.stats.LastConflict = d.Path
	e.mu.Unlock()
	e.emit(Event{Type: "conflict", Path: d.Path, Message: fmt.Sprintf("changed on both sides while this container was superseded (a later container owns the workspace): its version kept as %s, this one as %s", d.Path, cname)}, false)
	return nil
}

// execute carries out one decision of a cycle's plan against the store
// (conditionally where the store supports it) and notes the activity.
func (e *Engine) execute(ctx context.Context, d Decision) error {
	err := e.execute1(ctx, d)
	if err == nil {
		switch d.Action {
		case Push, Conflict:
			if d.Local != nil {
				e.noteActivity(time.Unix(0, d.Local.MTime))
			}
		case DeleteRemote:
			e.noteActivity(e.opts.Clock.Now())
		}
	}
	return err
}

func (e *Engine) execute1(ctx context.Context, d Decision) error {
	switch d.Action {
	case Push:
		b, err := e.push(ctx, d.Path, d.Local, d.Cond())
		if err != nil {
			return err
		}
		e.setBase(d.Path, b)
	case Pull:
		b, err := e.pull(ctx, d.Path, d.Path, d.Local, d.Remote)
		if err != nil {
			return err
		}
		e.setBase(d.Path, b)
	case DeleteLocal:
		if !e.localSame(d.Path, d.Local) {
			return errChanged
		}
		if err := e.root.Remove(d.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove: %w", err)
		}
		e.setBase(d.Path, nil)
	case DeleteRemote:
		if err := e.deleteRemote(ctx, d.Path, d.Remote.ETag); err != nil {
			return err
		}
		e.setBase(d.Path, nil)
	case Adopt:
		e.setBase(d.Path, &Base{Key: KeyFromRel(e.prefix, d.Path), ETag: d.Remote.ETag, Size: d.Remote.Size, Hash: d.Local.Hash, MTime: d.Local.MTime})
	case Forget:
		e.setBase(d.Path, nil)
	case Conflict:
		return e.conflict(ctx, d)
	}
	return nil
}

func (e *Engine) deleteRemote(ctx context.Context, rel, etag string) error {
	key := KeyFromRel(e.prefix, rel)
	cond := Condition{IfMatch: etag}
	if e.condOff.disabled() {
		cond = Condition{}
	}
	err := e.store.Delete(ctx, key, cond)
	if errors.Is(err, ErrConditionsUnsupported) {
		e.disableConditions()
		err = e.store.Delete(ctx, key, Condition{})
	}
	return err
}

func (e *Engine) disableConditions() {
	if !e.condOff.disabled() {
		e.condOff.disable()
		e.emit(Event{Type: "error", Message: "the S3 server does not support conditional writes; concurrent remote writers are detected by listing only"}, true)
	}
}

// localSame reports whether the file is still what the plan saw.
func (e *Engine) localSame(rel string, want *LocalFile) bool {
	info, err := e.root.Lstat(rel)
	if want == nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	return err == nil && info.Mode().IsRegular() && info.Size() == want.Size && info.ModTime().UnixNano() == want.MTime
}

// push uploads a local file. The file is opened without following a
// symlink and must be regular; what is uploaded is what the base records.
func (e *Engine) push(ctx context.Context, rel string, seen *LocalFile, cond Condition) (*Base, error) {
	f, err := e.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errChanged
		}
		return nil, fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, errChanged
	}
	lf := LocalFile{Size: info.Size(), MTime: info.ModTime().UnixNano()}
	if seen != nil && lf.Size == seen.Size && lf.MTime == seen.MTime {
		lf.Hash = seen.Hash
	} else {
		h := md5.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, lf.Size)); err != nil {
			return nil, fmt.Errorf("hash: %w", err)
		}
		lf.Hash = hex.EncodeToString(h.Sum(nil))
	}
	if lf.Size > e.opts.MaxFileSize {
		return nil, fmt.Errorf("file grew over the %d-byte limit", e.opts.MaxFileSize)
	}
	key := KeyFromRel(e.prefix, rel)
	if e.condOff.disabled() {
		cond = Condition{}
	}
	// Intent first: if the process dies after the PUT lands but before the
	// base is recorded, the next start recognises its own upload.
	// A racy mtime does not prove the bytes (see racyWindow): record 0.
	pmt := lf.MTime
	if racy(pmt) {
		pmt = 0
	}
	if err := e.setPending(rel, Pending{Key: key, Size: lf.Size, Hash: lf.Hash, MTime: pmt}); err != nil {
		return nil, err
	}
	obj, err := e.store.Put(ctx, key, f, lf.Size, cond)
	if errors.Is(err, ErrConditionsUnsupported) {
		e.disableConditions()
		obj, err = e.store.Put(ctx, key, f, lf.Size, Condition{})
	}
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.stats.BytesUp += lf.Size
	e.stats.ObjectsUp++
	e.mu.Unlock()
	// If the file changed during the upload its mtime moved, so the next
	// scan re-hashes it and pushes again over this ETag.
	return &Base{Key: key, ETag: obj.ETag, Size: lf.Size, Hash: lf.Hash, MTime: lf.MTime}, nil
}

// pull downloads the remote object of rel into target (rel itself, or a
// conflict name) through a temp file in the same directory and a rename;
// seen is what the target was when planned (nil: absent).
func (e *Engine) pull(ctx context.Context, rel, target string, seen *LocalFile, remote *ObjectInfo) (*Base, error) {
	if fi, err := e.root.Lstat(target); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cannot pull %s: a %s is in the way", target, fi.Mode().Type())
	}
	tmp, obj, hash, err := e.download(ctx, KeyFromRel(e.prefix, rel), path.Dir(target), remote)
	if err != nil {
		return nil, err
	}
	defer func() { _ = e.root.Remove(tmp) }() // no-op after the rename
	if fi, err := e.root.Lstat(target); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cannot pull %s: a %s is in the way", target, fi.Mode().Type())
	}
	if !e.localSame(target, seen) {
		return nil, errChanged
	}
	if err := e.root.Rename(tmp, target); err != nil {
		return nil, fmt.Errorf("rename into place: %w", err)
	}
	info, err := e.root.Lstat(target)
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	return &Base{Key: KeyFromRel(e.prefix, target), ETag: obj.ETag, Size: info.Size(), Hash: hash, MTime: info.ModTime().UnixNano()}, nil
}

// download writes an object into a new temp file in dir and returns its
// name (removed again on failure), the object's ETag and the MD5 of the
// bytes written.
func (e *Engine) download(ctx context.Context, key, dir string, remote *ObjectInfo) (tmp string, obj ObjectInfo, hash string, err error) {
	if dir != "." {
		if err := e.root.MkdirAll(dir, 0o755); err != nil {
			return "", obj, "", fmt.Errorf("create directory: %w", err)
		}
	}
	var rb [8]byte
	_, _ = rand.Read(rb[:])
	tmp = path.Join(dir, tmpPrefix+hex.EncodeToString(rb[:]))
	f, err := e.root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", obj, "", fmt.Errorf("create temp file: %w", err)
	}
	fail := func(err error) (string, ObjectInfo, string, error) {
		_ = f.Close()
		_ = e.root.Remove(tmp)
		return "", ObjectInfo{}, "", err
	}
	h := md5.New()
	if remote != nil && remote.Size >= e.opts.LargeFile {
		obj, err = e.rangedDownload(ctx, key, f, remote)
		if err != nil {
			return fail(err)
		}
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, remote.Size)); err != nil {
			return fail(fmt.Errorf("hash: %w", err))
		}
	} else {
		body, info, err := e.store.Get(ctx, key, 0, -1)
		if err != nil {
			return fail(err)
		}
		n, err := io.Copy(io.MultiWriter(f, h), body)
		_ = body.Close()
		if err != nil {
			return fail(fmt.Errorf("download %s: %w", key, err))
		}
		info.Size = n
		obj = info
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("write: %w", err))
	}
	e.mu.Lock()
	e.stats.BytesDown += obj.Size
	e.stats.ObjectsDown++
	e.mu.Unlock()
	return tmp, obj, hex.EncodeToString(h.Sum(nil)), nil
}

// rangedDownload fetches a large object in parallel ranges; every range
// must come from the same object version (ETag).
func (e *Engine) rangedDownload(ctx context.Context, key string, f *os.File, remote *ObjectInfo) (ObjectInfo, error) {
	size := remote.Size
	chunks := int((size + e.opts.ChunkSize - 1) / e.opts.ChunkSize)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	var epoch atomic.Int64 // the same version throughout: any range's
	for i := range chunks {
		off := int64(i) * e.opts.ChunkSize
		n := min(e.opts.ChunkSize, size-off)
		g.Go(func() error {
			body, info, err := e.store.Get(gctx, key, off, n)
			if err != nil {
				return err
			}
			defer body.Close()
			if info.ETag != remote.ETag {
				return fmt.Errorf("%s changed during download: %w", key, ErrPreconditionFailed)
			}
			epoch.Store(info.Epoch)
			w := io.NewOffsetWriter(f, off)
			got, err := io.Copy(w, io.LimitReader(body, n))
			if err == nil && got != n {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return fmt.Errorf("download %s range %d: %w", key, off, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Key: key, ETag: remote.ETag, Size: size, Epoch: epoch.Load()}, nil
}

// conflict keeps both versions: the local file stays under its name, the
// remote version is saved as name.conflict-remote-<time>.ext on both sides,
// and the local version then replaces the remote one conditionally.
func (e *Engine) conflict(ctx context.Context, d Decision) error {
	stamp := e.opts.Clock.Now().UTC().Format("20060102T150405Z")
	cname, err := e.freeConflictName(d.Path, "remote", stamp)
	if err != nil {
		return err
	}
	tmp, obj, hash, err := e.download(ctx, KeyFromRel(e.prefix, d.Path), path.Dir(d.Path), d.Remote)
	if err != nil {
		return err
	}
	defer func() { _ = e.root.Remove(tmp) }()
	if hash == d.Local.Hash {
		// Same bytes (a multipart ETag hid it): nothing to keep twice.
		e.setBase(d.Path, &Base{Key: KeyFromRel(e.prefix, d.Path), ETag: obj.ETag, Size: d.Local.Size, Hash: hash, MTime: d.Local.MTime})
		return nil
	}
	if e.epoch != 0 && obj.Epoch > e.epoch {
		return e.yieldConflict(ctx, d, tmp, obj, hash, stamp)
	}
	if err := e.root.Rename(tmp, cname); err != nil {
		return fmt.Errorf("keep remote version: %w", err)
	}
	e.mu.Lock()
	e.stats.Conflicts++
	e.stats.LastConflict = d.Path
	e.mu.Unlock()
	e.emit(Event{Type: "conflict", Path: d.Path, Message: fmt.Sprintf("changed on both sides; this container's version kept as %s, the other as %s", d.Path, cname)}, false)
	cb, err := e.push(ctx, cname, nil, Condition{IfNoneMatch: true})
	if err != nil {
		return fmt.Errorf("upload conflict copy: %w", err)
	}
	e.setBase(cname, cb)
	b, err := e.push(ctx, d.Path, d.Local, Condition{IfMatch: obj.ETag})
	if err != nil {
		return err
	}
	e.setBase(d.Path, b)
	return nil
}

// freeConflictName is ConflictName(rel, who, stamp), or with who2, who3, …
// when a file of that name exists already.
func (e *Engine) freeConflictName(rel, who, stamp string) (string, error) {
	cname := ConflictName(rel, who, stamp)
	for i := 2; ; i++ {
		if _, err := e.root.Lstat(cname); errors.Is(err, fs.ErrNotExist) {
			return cname, nil
		}
		if i > 100 {
			return "", errors.New("no free conflict name")
		}
		cname = ConflictName(rel, fmt.Sprintf("%s%d", who, i), stamp)
	}
}
