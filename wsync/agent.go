package wsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// AgentSyncer is the agent's Syncer (package agent's interface, satisfied
// structurally): one engine per assignment.
type AgentSyncer struct {
	dir, stateDir string
	log           *slog.Logger
	opts          Options

	mu     sync.Mutex
	eng    *Engine
	cancel context.CancelFunc
	done   chan struct{}
	report func(idepool.AgentReport)
	gen    int64
	ws     idepool.Workspace
}

// NewAgentSyncer makes a syncer of workspaceDir keeping its base under
// stateDir, which must be outside workspaceDir (empty: DefaultStateDir).
// Zero Options take the defaults documented on Options.
func NewAgentSyncer(workspaceDir, stateDir string, logger *slog.Logger, opts Options) *AgentSyncer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = 10 * time.Second
	}
	if stateDir == "" {
		stateDir = DefaultStateDir(workspaceDir)
	}
	return &AgentSyncer{dir: workspaceDir, stateDir: stateDir, log: logger, opts: opts}
}

// Start pulls the assigned workspace, then keeps both sides in step in
// the background until Stop. It returns once the initial pull is done.
// A second Start (a new assignment) stops the previous one first.
func (s *AgentSyncer) Start(ctx context.Context, a idepool.Assignment, report func(idepool.AgentReport)) error {
	if err := a.Workspace.Validate(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if rel, err := filepath.Rel(s.dir, s.stateDir); s.stateDir == "" || err != nil || filepath.IsLocal(rel) {
		return errors.New("sync: the state directory must be set and outside the workspace")
	}
	if err := s.Stop(ctx); err != nil {
		return err
	}
	store, err := NewS3Store(S3Config{
		Endpoint: a.S3Endpoint, Region: a.Workspace.Region, Bucket: a.Workspace.Bucket,
		AccessKeyID: a.Credentials.AccessKeyID, SecretAccessKey: a.Credentials.SecretAccessKey, SessionToken: a.Credentials.SessionToken,
		MultipartThreshold: s.opts.MultipartThreshold, PartSize: s.opts.PartSize, RequestTimeout: s.opts.RequestTimeout,
		Epoch: a.Epoch,
	})
	if err != nil {
		return err
	}
	prefix := idepool.NormalizePrefix(a.Workspace.Prefix)
	log := s.log.With("bucket", a.Workspace.Bucket, "prefix", prefix, "generation", a.Generation)
	ws := a.Workspace
	eng, err := NewEngine(Config{
		Dir: s.dir, StateFile: filepath.Join(s.stateDir, StateFileName(a.S3Endpoint, a.Workspace.Bucket, prefix)),
		Store: store, Prefix: prefix, Logger: log, Options: s.opts, Epoch: a.Epoch,
		OnEvent: func(ev Event) { s.onEvent(ev) },
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.eng, s.report, s.gen, s.ws = eng, report, a.Generation, ws
	s.mu.Unlock()
	// The watcher goes in before the pull: once Start returns the agent
	// reports the workspace synced, and a save at that instant must not
	// wait for the next poll. The pull's own renames cost one extra cycle.
	eng.Watch()
	log.Info("initial pull")
	t0 := time.Now()
	if err := initialPull(ctx, eng, log); err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrList) {
			// Nothing could be pulled (bad credentials, no bucket,
			// unreachable endpoint): "synced" would be a lie.
			s.mu.Lock()
			s.eng, s.report = nil, nil
			s.mu.Unlock()
			_ = eng.Close()
			return fmt.Errorf("initial pull: %w", err)
		}
		// Some paths failed: keep going, the background loop retries them.
		log.Warn("initial sync incomplete", "err", err)
	}
	st := eng.Stats()
	log.Info("initial pull done", "objects", st.ObjectsDown, "bytes", st.BytesDown, "took", time.Since(t0).Round(time.Millisecond))
	s.sendStats()
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	s.mu.Lock()
	s.cancel, s.done = cancel, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		tick := time.NewTicker(s.opts.StatsInterval)
		defer tick.Stop()
		go func() {
			for {
				select {
				case <-rctx.Done():
					return
				case <-tick.C:
					s.sendStats()
				}
			}
		}()
		_ = eng.Run(rctx)
	}()
	return nil
}

func (s *AgentSyncer) onEvent(ev Event) {
	if ev.Type == "retry" {
		return
	}
	s.mu.Lock()
	report := s.report
	eng := s.eng
	s.mu.Unlock()
	if report == nil {
		return
	}
	r := idepool.AgentReport{Kind: idepool.AgentSyncEvent, Time: time.Now(), Event: ev.Type, Message: ev.Message}
	if ev.Path != "" {
		r.Message = ev.Path + ": " + ev.Message
	}
	if ev.Type == "error" {
		r.Error = r.Message
	}
	if eng != nil {
		st := eng.Stats()
		r.Sync = &st
		r.LastActivity = eng.LastActivity()
	}
	report(r)
}

// sendStats reports the current figures.
func (s *AgentSyncer) sendStats() {
	s.mu.Lock()
	eng, report := s.eng, s.report
	ws, gen := s.ws, s.gen
	s.mu.Unlock()
	if eng == nil || report == nil {
		return
	}
	st := eng.Stats()
	report(idepool.AgentReport{Kind: idepool.AgentSyncEvent, Time: time.Now(), Event: "stats", Sync: &st, Generation: gen, Workspace: &ws, LastActivity: eng.LastActivity()})
}

// Flush pushes everything pending.
func (s *AgentSyncer) Flush(ctx context.Context) error {
	s.mu.Lock()
	eng := s.eng
	s.mu.Unlock()
	if eng == nil {
		return nil
	}
	err := eng.Flush(ctx)
	s.sendStats()
	return err
}

// ConfirmDeletions lets the deletions the mass-deletion guard holds go
// through (in a cycle started now) and returns how many there are.
func (s *AgentSyncer) ConfirmDeletions() int {
	s.mu.Lock()
	eng := s.eng
	s.mu.Unlock()
	if eng == nil {
		return 0
	}
	return eng.ConfirmDeletions()
}

// Stats returns the figures of the current assignment.
func (s *AgentSyncer) Stats() idepool.SyncStats {
	s.mu.Lock()
	eng := s.eng
	s.mu.Unlock()
	if eng == nil {
		return idepool.SyncStats{}
	}
	return eng.Stats()
}

// Stop pushes pending local changes (bounded by ctx), then stops syncing.
func (s *AgentSyncer) Stop(ctx context.Context) error {
	s.mu.Lock()
	eng, cancel, done := s.eng, s.cancel, s.done
	s.eng, s.cancel, s.done = nil, nil, nil
	s.mu.Unlock()
	if eng == nil {
		return nil
	}
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	err := eng.Flush(ctx)
	if cerr := eng.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync stop: final flush: %w", err)
	}
	return nil
}

// DefaultStateDir is where a syncer keeps its base when the agent names
// none: next to, never inside, the workspace.
func DefaultStateDir(workspaceDir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(workspaceDir)), ".idepool-state")
}

// initialListPatience bounds how long the initial pull tries again a
// listing that failed for a reason that may pass (transient): on a cluster
// the store's name can be unknown to a node's DNS for a moment (a node
// briefly out of the gossip), or the store be moving to another node.
const initialListPatience = 30 * time.Second

// initialPull runs the first cycle. A listing the store refused
// (credentials, permissions, no bucket) fails at once; one that failed
// transiently is tried again, backing off, for up to initialListPatience,
// so a claimed container is not failed (and its user sent away) for a
// blip.
func initialPull(ctx context.Context, eng *Engine, log *slog.Logger) error {
	deadline := time.Now().Add(initialListPatience)
	wait := 250 * time.Millisecond
	for {
		_, err := eng.SyncOnce(ctx)
		if err == nil || ctx.Err() != nil || !errors.Is(err, ErrList) || !transient(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		log.Warn("initial pull: listing the workspace failed; trying again", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 4*time.Second)
	}
}
