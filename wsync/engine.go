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
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/idepool/idepool"
	"golang.org/x/sync/errgroup"
)

// Options tune the engine; zero values take the defaults in brackets.
type Options struct {
	// PollInterval: how often the remote side is listed and the local tree
	// rescanned without a filesystem event [3s]. A rescan only stats files;
	// it hashes those whose size or mtime moved.
	PollInterval time.Duration
	// Debounce: quiet time after the last local event before a cycle
	// [250ms]; MaxDebounce caps the wait under a stream of events [2s].
	Debounce    time.Duration
	MaxDebounce time.Duration
	// MaxFileSize: larger files are not synced and reported [5 GiB].
	MaxFileSize int64
	// MaxFiles: at most this many files are synced [100000].
	MaxFiles int
	// Parallelism: transfers at once [8].
	Parallelism int
	// LargeFile: files at least this big are downloaded in parallel ranges
	// of ChunkSize [16 MiB, 8 MiB].
	LargeFile int64
	ChunkSize int64
	// Ignore: extra ignore patterns besides DefaultIgnore and .idepoolignore.
	Ignore []string
	// Host names this side in conflict copies [os.Hostname].
	Host string
	// Clock for timestamps [system clock].
	Clock idepool.Clock
	// MaxDeletePercent guards mass deletions: when one cycle would delete
	// more than this share of the local files because they vanished from
	// the store (and more than deleteFloor of them), those deletions are
	// held until ConfirmDeletions [50; 100 or more: no guard].
	MaxDeletePercent int

	// Used by AgentSyncer only: figures are reported this often [10s];
	// S3 multipart tuning and the bound on one small request (S3Config).
	StatsInterval      time.Duration
	MultipartThreshold int64
	PartSize           int64
	RequestTimeout     time.Duration
}

func (o Options) withDefaults() Options {
	if o.PollInterval <= 0 {
		o.PollInterval = 3 * time.Second
	}
	if o.Debounce <= 0 {
		o.Debounce = 250 * time.Millisecond
	}
	if o.MaxDebounce < o.Debounce {
		o.MaxDebounce = max(2*time.Second, o.Debounce)
	}
	if o.MaxFileSize <= 0 {
		o.MaxFileSize = 5 << 30
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = 100_000
	}
	if o.Parallelism <= 0 {
		o.Parallelism = 8
	}
	if o.LargeFile <= 0 {
		o.LargeFile = 16 << 20
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 8 << 20
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if o.MaxDeletePercent <= 0 {
		o.MaxDeletePercent = 50
	}
	return o
}

// Event is something the engine tells its owner about.
type Event struct {
	// Type: "conflict", "error", "limit", "unsafe-key", "retry",
	// "remote-reset" (the store lost the workspace's identity marker:
	// nothing was deleted locally, the files go up again) or
	// "deletions-held" (a mass deletion waits for ConfirmDeletions).
	Type    string
	Path    string
	Message string
}

// Config wires an engine.
type Config struct {
	Dir       string // the synced tree
	StateFile string // the base; must be outside Dir
	Store     Store
	Prefix    string // normalised key prefix ("" or "a/b/")
	Logger    *slog.Logger
	Options   Options
	OnEvent   func(Event)
}

// Engine keeps a directory and a key prefix of a Store in step, three-way.
type Engine struct {
	dir       string
	root      *os.Root
	store     Store
	prefix    string
	stateFile string
	log       *slog.Logger
	opts      Options
	onEvent   func(Event)
	journal   *journal
	condOff   syncFlag
	kick      chan struct{}

	watchMu sync.Mutex
	watch   *watcher // installed by Watch, taken over by Run

	cycleMu sync.Mutex // one cycle at a time

	mu          sync.Mutex // guards the fields below
	state       *State
	stats       idepool.SyncStats
	lastSave    time.Time
	reported    map[string]time.Time
	dirtySince  time.Time
	firstScan   bool
	listFailing bool
	stateDirty  bool // base changed since the last snapshot
	// lastActivity is the newest local change pushed: user activity.
	lastActivity time.Time
	// held: local deletions the mass-deletion guard holds back; confirmed:
	// those ConfirmDeletions let through in the next cycle.
	held, confirmed map[string]bool
	heldReported    int
	// markerRetry, bucketRetry: a marker write or a bucket creation failed;
	// not tried again before then.
	markerRetry, bucketRetry time.Time
}

// NewEngine opens the workspace and loads the base.
func NewEngine(cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Dir == "" || cfg.StateFile == "" {
		return nil, errors.New("wsync: Dir, StateFile and Store are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create workspace: %w", err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("open workspace: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := LoadState(cfg.StateFile)
	if err != nil {
		log.Warn("sync state unreadable", "err", err)
	}
	j, err := openJournal(cfg.StateFile)
	if err != nil {
		_ = root.Close()
		return nil, err
	}
	return &Engine{journal: j,
		dir: cfg.Dir, root: root, store: cfg.Store, prefix: idepool.NormalizePrefix(cfg.Prefix),
		stateFile: cfg.StateFile, log: log, opts: cfg.Options.withDefaults(), onEvent: cfg.OnEvent,
		kick: make(chan struct{}, 1), state: st, reported: map[string]time.Time{}, firstScan: true,
	}, nil
}

// Close releases the workspace handle (and a watcher Run never took).
func (e *Engine) Close() error {
	e.watchMu.Lock()
	w := e.watch
	e.watch = nil
	e.watchMu.Unlock()
	if w != nil {
		w.close()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return errors.Join(e.root.Close(), e.journal.close())
}

// Stats returns the figures so far.
func (e *Engine) Stats() idepool.SyncStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.DeletionsHeld = len(e.held)
	if !e.dirtySince.IsZero() {
		s.Lag = e.opts.Clock.Now().Sub(e.dirtySince)
	}
	return s
}

func (e *Engine) emit(ev Event, dedupe bool) {
	e.emitEvery(ev, dedupe, 0)
}

// emitEvery reports ev unless the same event was reported before (dedupe)
// or less than every ago (every > 0), so a persistent problem is not
// reported on every cycle.
func (e *Engine) emitEvery(ev Event, dedupe bool, every time.Duration) {
	if dedupe || every > 0 {
		k := ev.Type + "\x00" + ev.Path + "\x00" + ev.Message
		now := time.Now()
		e.mu.Lock()
		last, seen := e.reported[k]
		if !seen || (!dedupe && now.Sub(last) >= every) {
			e.reported[k] = now
			seen = false
		}
		e.mu.Unlock()
		if seen {
			return
		}
	}
	switch ev.Type {
	case "error":
		e.log.Warn("sync error", "path", ev.Path, "msg", ev.Message)
	case "conflict":
		e.log.Info("sync conflict", "path", ev.Path, "msg", ev.Message)
	default:
		e.log.Info("sync "+ev.Type, "path", ev.Path, "msg", ev.Message)
	}
	if e.onEvent != nil {
		e.onEvent(ev)
	}
}

// CycleResult says what one cycle did.
type CycleResult struct {
	Actions map[Action]int
	Failed  int
	// Retry: a conditional write found the remote changed; another cycle
	// will re-plan that path.
	Retry bool
}

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

// SyncOnce runs one full cycle: scan, list, plan, execute, save the base.
// The error joins every step that failed.
func (e *Engine) SyncOnce(ctx context.Context) (CycleResult, error) {
	e.cycleMu.Lock()
	defer e.cycleMu.Unlock()
	started := e.opts.Clock.Now()
	res := CycleResult{Actions: map[Action]int{}}

	e.mu.Lock()
	base := e.state.clone()
	e.mu.Unlock()

	sc := e.scan(base)
	remote, marker, err := e.listRemote(ctx, sc)
	if errors.Is(err, ErrNoBucket) && e.recreateBucket(ctx) {
		remote, marker, err = e.listRemote(ctx, sc)
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrList, err)
		e.mu.Lock()
		already := e.listFailing
		e.listFailing = true
		e.stats.Errors++
		e.stats.LastError = err.Error()
		e.mu.Unlock()
		if !already { // report the outage once, not every poll
			e.emit(Event{Type: "error", Message: err.Error()}, false)
		}
		return res, err
	}
	e.mu.Lock()
	e.listFailing = false
	e.mu.Unlock()
	reset := e.checkIdentity(base, marker)
	e.resolvePending(base, remote)
	plan := Plan(base, sc.files, remote, sc.skipped)
	plan = e.guardDeletions(plan, len(sc.files))
	if reset {
		pushes := 0
		for _, d := range plan {
			if d.Action == Push || d.Action == Conflict {
				pushes++
			}
		}
		e.emit(Event{Type: "remote-reset", Message: fmt.Sprintf("the workspace's store lost its identity marker (emptied or replaced by an empty one): nothing is deleted locally; %d files go up again from disk", pushes)}, false)
	}
	e.mu.Lock()
	e.stats.Pending = len(plan)
	e.mu.Unlock()

	var (
		errMu sync.Mutex
		errs  []error
	)
	var g errgroup.Group
	g.SetLimit(e.opts.Parallelism)
	if e.marker() == "" && e.markerDue() {
		g.Go(func() error {
			err := e.ensureMarker(ctx, marker)
			switch {
			case err == nil:
			case errors.Is(err, ErrPreconditionFailed):
				errMu.Lock()
				res.Retry = true // written concurrently: adopted next cycle
				errMu.Unlock()
			case ctx.Err() == nil:
				// Not the cycle's failure: a read-only workspace still
				// syncs, without this protection (the guard remains).
				e.markerFailed(err)
			}
			return nil
		})
	}
	for _, d := range plan {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			err := e.execute(ctx, d)
			e.mu.Lock()
			e.stats.Pending--
			e.mu.Unlock()
			errMu.Lock()
			defer errMu.Unlock()
			res.Actions[d.Action]++
			switch {
			case err == nil:
			case errors.Is(err, ErrPreconditionFailed) || errors.Is(err, errChanged):
				res.Retry = true
				e.emit(Event{Type: "retry", Path: d.Path, Message: err.Error()}, false)
			default:
				res.Failed++
				errs = append(errs, fmt.Errorf("%s %s: %w", d.Action, d.Path, err))
				if ctx.Err() == nil { // a stop is not an error
					e.noteError(d.Path, err)
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := e.saveState(true); err != nil {
		errs = append(errs, err)
		e.noteError("", err)
	}
	e.mu.Lock()
	e.stats.Pending = 0
	if len(errs) == 0 && !res.Retry && ctx.Err() == nil {
		e.stats.LastSync = e.opts.Clock.Now()
		if !e.dirtySince.IsZero() && !e.dirtySince.After(started) {
			e.dirtySince = time.Time{}
		}
	}
	e.mu.Unlock()
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return res, errors.Join(errs...)
}

func (e *Engine) noteError(p string, err error) {
	e.mu.Lock()
	e.stats.Errors++
	e.stats.LastError = err.Error()
	e.mu.Unlock()
	e.emitEvery(Event{Type: "error", Path: p, Message: err.Error()}, false, 5*time.Minute)
}

// saveState writes the base snapshot and empties the journal. Between
// snapshots (end of every cycle, or 30 s into a long one) each update is
// already in the journal.
func (e *Engine) saveState(force bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if !e.stateDirty || !force && now.Sub(e.lastSave) < 30*time.Second {
		return nil
	}
	e.lastSave = now
	e.stateDirty = false
	if err := e.state.Save(e.stateFile); err != nil {
		e.stateDirty = true // the journal still holds every update
		return err
	}
	return e.journal.truncate()
}

// racyWindow: a file modified this recently can change again within the
// same mtime tick keeping its size, so its mtime does not yet prove it
// unchanged (Git's "racy clean" problem). Such a base gets MTime 0, which
// forces a re-hash until the scan refreshes it.
const racyWindow = 2 * time.Second

func racy(mtime int64) bool { return time.Since(time.Unix(0, mtime)) < racyWindow }

func (e *Engine) setBase(p string, b *Base) {
	if b != nil && racy(b.MTime) {
		c := *b
		c.MTime = 0
		b = &c
	}
	e.record(journalEntry{Path: p, Base: b})
}

// setPending records, before a PUT, what is about to be pushed to p, so a
// kill between the PUT landing and its base being recorded is recovered
// (see ResolvePending). It is in the journal (one write(2)) before it
// returns.
func (e *Engine) setPending(p string, pe Pending) error {
	return e.record(journalEntry{Path: p, Pending: &pe})
}

// dropPending forgets a pending push that did not land as recorded.
func (e *Engine) dropPending(p string) { _ = e.record(journalEntry{Path: p, Unpend: true}) }

// record applies one update to the base and appends it to the journal.
func (e *Engine) record(je journalEntry) error {
	e.mu.Lock()
	e.state.apply(je)
	err := e.journal.append(je)
	e.stateDirty = true
	e.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("sync journal: %w", err)
		e.noteError(je.Path, err)
	}
	_ = e.saveState(false)
	return err
}

// resolvePending settles the pushes a previous cycle (or a killed process)
// started but never recorded, against the listing, updating base (the
// planner's input) accordingly. Runs between cycles' transfers only.
func (e *Engine) resolvePending(base map[string]Base, remote map[string]ObjectInfo) {
	e.mu.Lock()
	pending := e.state.clonePending()
	e.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	bases, drop := ResolvePending(pending, remote)
	for p, b := range bases {
		e.log.Debug("interrupted upload landed; recorded as base", "path", p, "etag", b.ETag)
		e.setBase(p, &b)
		base[p] = b
	}
	for _, p := range drop {
		e.dropPending(p)
	}
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

// LastActivity is the time of the newest local change the engine pushed
// (a file's mtime, or when a deletion was seen): the user's activity.
func (e *Engine) LastActivity() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastActivity
}

func (e *Engine) noteActivity(t time.Time) {
	e.mu.Lock()
	if t.After(e.lastActivity) {
		e.lastActivity = t
	}
	e.mu.Unlock()
}

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
	return ObjectInfo{Key: key, ETag: remote.ETag, Size: size}, nil
}

// conflict keeps both versions: the local file stays under its name, the
// remote version is saved as name.conflict-remote-<time>.ext on both sides,
// and the local version then replaces the remote one conditionally.
func (e *Engine) conflict(ctx context.Context, d Decision) error {
	stamp := e.opts.Clock.Now().UTC().Format("20060102T150405Z")
	cname := ConflictName(d.Path, "remote", stamp)
	for i := 2; ; i++ {
		if _, err := e.root.Lstat(cname); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if i > 100 {
			return errors.New("no free conflict name")
		}
		cname = ConflictName(d.Path, fmt.Sprintf("remote%d", i), stamp)
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

// Watch installs the filesystem watcher now, before Run: changes from
// this moment on are caught by events, not left to the next poll. (An
// agent calls it before it reports its workspace synced, so a save made
// the instant the IDE opens is pushed at once.)
func (e *Engine) Watch() {
	e.watchMu.Lock()
	defer e.watchMu.Unlock()
	if e.watch == nil {
		e.watch = newWatcher(e, context.Background())
	}
}

// Run keeps syncing until ctx ends: filesystem events (debounced), a
// periodic poll of both sides, and explicit kicks. It uses the watcher
// Watch installed, if any.
func (e *Engine) Run(ctx context.Context) error {
	e.watchMu.Lock()
	w := e.watch
	e.watch = nil
	e.watchMu.Unlock()
	if w == nil {
		w = newWatcher(e, ctx)
	}
	defer w.close()
	poll := time.NewTicker(e.opts.PollInterval)
	defer poll.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var first time.Time // first event of the current debounce window
	retries := 0        // quick re-plans in a row
	arm := func(d time.Duration) {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		if deadline := first.Add(e.opts.MaxDebounce); now.Add(d).After(deadline) {
			d = max(0, deadline.Sub(now))
		}
		timer.Reset(d)
	}
	cycle := func() {
		first = time.Time{}
		timer.Stop()
		t0 := time.Now()
		res, err := e.SyncOnce(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.Debug("sync cycle failed", "err", err)
		}
		e.log.Debug("sync cycle", "took", time.Since(t0), "actions", len(res.Actions), "retry", res.Retry)
		// A path that changed under a step is re-planned soon, but only a
		// few times in a row; then the poll interval paces it.
		if res.Retry && ctx.Err() == nil && retries < 3 {
			retries++
			arm(e.opts.Debounce)
		} else if !res.Retry {
			retries = 0
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.changed:
			e.markDirty()
			arm(e.opts.Debounce)
		case <-w.overflow:
			e.markDirty()
			arm(0)
		case <-timer.C:
			cycle()
		case <-poll.C:
			cycle()
		case <-e.kick:
			cycle()
		}
	}
}

func (e *Engine) markDirty() {
	e.mu.Lock()
	if e.dirtySince.IsZero() {
		e.dirtySince = e.opts.Clock.Now()
	}
	e.mu.Unlock()
}

// Kick asks a running Run loop for a cycle soon.
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Flush pushes everything pending: it runs cycles until one finishes with
// nothing left to retry (at most a few), and reports what failed.
func (e *Engine) Flush(ctx context.Context) error {
	for range 5 {
		res, err := e.SyncOnce(ctx)
		if err != nil {
			return err
		}
		if !res.Retry {
			return nil
		}
	}
	return errors.New("flush: the remote side kept changing; some paths are not pushed yet")
}
