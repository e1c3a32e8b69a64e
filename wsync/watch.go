package wsync

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"

	"github.com/fsnotify/fsnotify"
)

// watcher turns recursive fsnotify events into two signals: something
// changed (debounce, then sync) and events were lost (rescan now). Without
// inotify it signals nothing and the periodic poll still syncs.
type watcher struct {
	changed  chan struct{}
	overflow chan struct{}
	w        *fsnotify.Watcher
	done     chan struct{}
	wg       sync.WaitGroup
}

func newWatcher(e *Engine, ctx context.Context) *watcher {
	wt := &watcher{changed: make(chan struct{}, 1), overflow: make(chan struct{}, 1), done: make(chan struct{})}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		e.log.Warn("filesystem events unavailable; relying on periodic rescans", "err", err)
		return wt
	}
	wt.w = fw
	ig := e.ignorer()
	wt.addTree(e, ig, e.dir)
	wt.wg.Add(1)
	go func() {
		defer wt.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-wt.done:
				return
			case ev, ok := <-fw.Events:
				if !ok {
					return
				}
				rel, err := filepath.Rel(e.dir, ev.Name)
				if err != nil {
					continue
				}
				rel = filepath.ToSlash(rel)
				if strings.HasPrefix(filepath.Base(rel), tmpPrefix) {
					continue
				}
				if filepath.Base(rel) == IgnoreFile {
					ig = e.ignorer()
				}
				if ig.Ignored(rel) {
					continue
				}
				if ev.Has(fsnotify.Create) {
					// New directories are watched at once; files created in
					// them before the watch was added are found by the
					// cycle's full scan.
					wt.addTree(e, ig, ev.Name)
				}
				signal(wt.changed)
			case err, ok := <-fw.Errors:
				if !ok {
					return
				}
				if errors.Is(err, fsnotify.ErrEventOverflow) {
					e.log.Info("filesystem event overflow; rescanning")
				} else {
					e.log.Debug("filesystem watch error", "err", err)
				}
				signal(wt.overflow)
			}
		}
	}()
	return wt
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// addTree watches dir and every non-ignored directory below it, without
// following symlinks.
func (wt *watcher) addTree(e *Engine, ig *Ignorer, dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if rel, rerr := filepath.Rel(e.dir, p); rerr == nil && rel != "." && ig.Ignored(filepath.ToSlash(rel)) {
			return fs.SkipDir
		}
		if err := wt.w.Add(p); err != nil {
			e.emit(Event{Type: "limit", Path: p, Message: "cannot watch directory (" + err.Error() + "); its changes are found by periodic rescans"}, true)
			return fs.SkipDir
		}
		return nil
	})
}

func (wt *watcher) close() {
	close(wt.done)
	if wt.w != nil {
		_ = wt.w.Close()
	}
	wt.wg.Wait()
}
