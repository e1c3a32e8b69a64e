package wsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
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
	// MaxPollInterval: while cycles find nothing to do on either side, the
	// interval doubles up to this [5 × PollInterval]; a cycle that moved
	// anything, failed or must retry brings it back to PollInterval. Local
	// edits do not wait for a poll (the watcher starts a cycle), so only a
	// change made to the store by someone else is seen later in an idle
	// workspace; a class of idle containers lists the store a fifth as often.
	MaxPollInterval time.Duration
	// Debounce: quiet time after the last local event before a cycle
	// [250ms]; MaxDebounce caps the wait under a stream of events [2s].
	Debounce    time.Duration
	MaxDebounce time.Duration
	// MaxFileSize: larger files are not synced and reported [5 GiB].
	MaxFileSize int64
	// MaxFiles: at most this many files are synced [100000].
	MaxFiles int
	// Parallelism: transfers at once [32]: a claimed workspace's initial
	// pull is many small GETs, each mostly waiting on the store.
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
	if o.MaxPollInterval < o.PollInterval {
		o.MaxPollInterval = 5 * o.PollInterval
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
		o.Parallelism = 32
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
	// Epoch is this writer's owner epoch (Assignment.Epoch, also given to
	// the store so its writes carry it). When a file changed on both sides
	// and the remote version was written under a later epoch, this writer
	// has been superseded (its container was replaced while it was cut
	// off): the remote keeps the name and this side's version becomes the
	// conflict copy. 0: no fence, this side keeps the name.
	Epoch int64
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
	epoch     int64
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
		stateFile: cfg.StateFile, log: log, opts: cfg.Options.withDefaults(), onEvent: cfg.OnEvent, epoch: cfg.Epoch,
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
	interval := e.opts.PollInterval
	poll := time.NewTimer(interval)
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
		// Every cycle restarts the poll: a cycle an edit or a kick started
		// counts as the poll's.
		interval = nextPoll(interval, e.opts.PollInterval, e.opts.MaxPollInterval, res, err)
		poll.Reset(interval)
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

// nextPoll is the wait before the next poll after a cycle that ran with
// the interval cur: back to base after a cycle that did or tried anything
// (or failed), else doubled up to most.
func nextPoll(cur, base, most time.Duration, res CycleResult, err error) time.Duration {
	if err != nil || res.Retry || res.Failed > 0 {
		return base
	}
	for _, n := range res.Actions {
		if n > 0 {
			return base
		}
	}
	return min(2*cur, most)
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
