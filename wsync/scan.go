package wsync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"
)

// scanResult is the local side of a cycle: the workspace's files as the
// scan found them, and what it could not read.
type scanResult struct {
	files   map[string]LocalFile
	skip    map[string]bool // paths whose local state is unknown
	skipDir []string        // unreadable directories ("a/b/")
	ig      *Ignorer
}

func (s *scanResult) skipped(p string) bool {
	if s.skip[p] || s.ig.Ignored(p) {
		return true
	}
	for _, d := range s.skipDir {
		if strings.HasPrefix(p, d) {
			return true
		}
	}
	return false
}

func (e *Engine) ignorer() *Ignorer {
	pats := append(DefaultIgnore(), e.opts.Ignore...)
	if f, err := e.root.Open(IgnoreFile); err == nil {
		b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
		_ = f.Close()
		pats = append(pats, ParseIgnoreFile(string(b))...)
	}
	return NewIgnorer(pats)
}

// scan walks the workspace without following symlinks. Files whose size
// and mtime match the base reuse its hash.
func (e *Engine) scan(base map[string]Base) *scanResult {
	sc := &scanResult{files: map[string]LocalFile{}, skip: map[string]bool{}, ig: e.ignorer()}
	e.mu.Lock()
	first := e.firstScan
	e.firstScan = false
	e.mu.Unlock()
	count := 0
	refresh := map[string]Base{}
	defer func() {
		for p, b := range refresh {
			e.setBase(p, &b)
		}
	}()
	_ = fs.WalkDir(e.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if p == "." {
			if err != nil {
				e.emit(Event{Type: "error", Message: "read workspace: " + err.Error()}, true)
				return fs.SkipAll
			}
			return nil
		}
		if err != nil {
			if d == nil || d.IsDir() {
				sc.skipDir = append(sc.skipDir, p+"/")
				e.emit(Event{Type: "error", Path: p, Message: "unreadable: " + err.Error()}, true)
				return fs.SkipDir
			}
			sc.skip[p] = true
			return nil
		}
		name := d.Name()
		if reserved(p) {
			// The store's own directory (identity marker): never synced,
			// never taken for a deletion.
			sc.skip[p] = true
			if d.IsDir() {
				sc.skipDir = append(sc.skipDir, p+"/")
				return fs.SkipDir
			}
			return nil
		}
		if first && strings.HasPrefix(name, tmpPrefix) && d.Type().IsRegular() {
			_ = e.root.Remove(p) // left by a killed engine
			return nil
		}
		if sc.ig.Ignored(p) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if checkRel(p) != nil {
			e.emit(Event{Type: "unsafe-key", Path: p, Message: "local name cannot be an object key; not synced"}, true)
			if d.IsDir() {
				sc.skipDir = append(sc.skipDir, p+"/")
				return fs.SkipDir
			}
			sc.skip[p] = true
			return nil
		}
		switch {
		case d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			// Symlinks are skipped: never followed, never uploaded as
			// their target, and not treated as a deletion either; nor is
			// anything pulled through one.
			sc.skip[p] = true
			sc.skipDir = append(sc.skipDir, p+"/")
			return nil
		case !d.Type().IsRegular():
			sc.skip[p] = true
			return nil
		}
		info, err := d.Info()
		if err != nil {
			sc.skip[p] = true
			return nil
		}
		if info.Size() > e.opts.MaxFileSize {
			sc.skip[p] = true
			e.emit(Event{Type: "limit", Path: p, Message: fmt.Sprintf("file is %d bytes, over the %d-byte limit; not synced", info.Size(), e.opts.MaxFileSize)}, true)
			return nil
		}
		b, hasBase := base[p]
		if count >= e.opts.MaxFiles && !hasBase {
			sc.skip[p] = true
			e.emit(Event{Type: "limit", Message: fmt.Sprintf("more than %d files; new files are not synced", e.opts.MaxFiles)}, true)
			return nil
		}
		count++
		lf := LocalFile{Size: info.Size(), MTime: info.ModTime().UnixNano()}
		if hasBase && b.Size == lf.Size && b.MTime == lf.MTime && b.MTime != 0 && b.Hash != "" {
			lf.Hash = b.Hash
		} else {
			h, err := e.hashFile(p)
			if err != nil {
				sc.skip[p] = true
				return nil
			}
			lf.Hash = h
			if hasBase && h == b.Hash && !racy(lf.MTime) {
				// Same bytes, new mtime (touched, or no longer racy):
				// remember the mtime so the next scan skips the hash.
				b.MTime, b.Size = lf.MTime, lf.Size
				refresh[p] = b
			}
		}
		sc.files[p] = lf
		return nil
	})
	return sc
}

func (e *Engine) hashFile(p string) (string, error) {
	f, err := e.root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// listRemote lists the workspace; marker is its identity marker, if listed.
func (e *Engine) listRemote(ctx context.Context, sc *scanResult) (out map[string]ObjectInfo, marker *ObjectInfo, err error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	objs, err := e.store.List(lctx, e.prefix)
	if err != nil {
		return nil, nil, err
	}
	out = make(map[string]ObjectInfo, len(objs))
	for _, o := range objs {
		rel, err := RelFromKey(e.prefix, o.Key)
		if err != nil {
			e.emit(Event{Type: "unsafe-key", Path: o.Key, Message: "refused: " + err.Error()}, true)
			continue
		}
		if rel == MarkerRel {
			m := o
			marker = &m
			continue
		}
		if rel == "" || reserved(rel) || sc.ig.Ignored(rel) {
			continue
		}
		if o.Size > e.opts.MaxFileSize {
			sc.skip[rel] = true
			e.emit(Event{Type: "limit", Path: rel, Message: fmt.Sprintf("object is %d bytes, over the %d-byte limit; not synced", o.Size, e.opts.MaxFileSize)}, true)
			continue
		}
		if len(out) >= e.opts.MaxFiles {
			sc.skip[rel] = true
			e.emit(Event{Type: "limit", Message: fmt.Sprintf("more than %d objects; the rest are not synced", e.opts.MaxFiles)}, true)
			continue
		}
		out[rel] = o
	}
	return out, marker, nil
}

// ErrList wraps a failure to list the remote side: nothing was decided.
var ErrList = errors.New("list remote workspace")

// errChanged: the local file moved under a step; the next cycle re-plans.
var errChanged = errors.New("local file changed during sync; will retry")
