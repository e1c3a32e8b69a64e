// Package salvage pushes what a dead container left on disk to its S3
// workspace before the disk is deleted. It uses wsync's public API only:
// the agent's persisted base (wsync.LoadState) and the three-way decision
// (wsync.Decide), so it uploads exactly the files the agent had not, and
// never overwrites newer remote work.
//
// Unlike a sync cycle it only ever adds to the remote side: a file changed
// here and unchanged remotely is pushed under its name (conditionally, on
// the ETag it saw); a file changed on both sides is uploaded beside the
// remote one as "name.conflict-salvaged-<UTC time>.ext", the remote version
// keeping the name (the remote may be a newer container's work: the dead
// container's generation is the older one). Nothing is deleted or pulled,
// and the base is left as it was.
package salvage

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/wsync"
)

// Config is one salvage.
type Config struct {
	Dir       string // the dead container's workspace
	StateFile string // the agent's wsync state (its base); may not exist
	Store     wsync.Store
	Prefix    string // normalised key prefix
	// MaxFileSize: larger files are left (reported as failed) [5 GiB].
	MaxFileSize int64
	Now         func() time.Time
	Logger      *slog.Logger
}

// Result counts what a salvage did.
type Result struct {
	// Uploaded files went under their own names; Conflicts were kept as
	// conflict copies beside newer remote versions.
	Uploaded, Conflicts int
	// Failed files could not be uploaded (read error, over the size limit,
	// refused by the store).
	Failed int
	Bytes  int64
	// Paths are the workspace paths salvaged (sorted), at most 100.
	Paths []string
}

// Salvaged is the number of files that reached S3.
func (r Result) Salvaged() int { return r.Uploaded + r.Conflicts }

// ForAssignment salvages workspaceDir to a's workspace, three-way against
// the base the agent kept in stateDir, as the agent's syncer would name it.
func ForAssignment(ctx context.Context, workspaceDir, stateDir string, a idepool.Assignment, log *slog.Logger) (Result, error) {
	if err := a.Workspace.Validate(); err != nil {
		return Result{}, fmt.Errorf("salvage: %w", err)
	}
	store, err := wsync.NewS3Store(wsync.S3Config{
		Endpoint: a.S3Endpoint, Region: a.Workspace.Region, Bucket: a.Workspace.Bucket,
		AccessKeyID: a.Credentials.AccessKeyID, SecretAccessKey: a.Credentials.SecretAccessKey, SessionToken: a.Credentials.SessionToken,
		Epoch: a.Epoch,
	})
	if err != nil {
		return Result{}, fmt.Errorf("salvage: %w", err)
	}
	prefix := idepool.NormalizePrefix(a.Workspace.Prefix)
	return Run(ctx, Config{
		Dir: workspaceDir, StateFile: filepath.Join(stateDir, wsync.StateFileName(a.S3Endpoint, a.Workspace.Bucket, prefix)),
		Store: store, Prefix: prefix, Logger: log,
	})
}

// Run salvages cfg.Dir. The error is set when nothing could be decided
// (the workspace or the remote listing unreadable); per-file failures are
// counted in Result.Failed.
func Run(ctx context.Context, cfg Config) (Result, error) {
	var res Result
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = 5 << 30
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return res, fmt.Errorf("salvage: open workspace: %w", err)
	}
	defer root.Close()
	st, err := wsync.LoadState(cfg.StateFile)
	if err != nil {
		// Without a base every difference is a conflict copy: nothing
		// remote is overwritten, nothing local lost.
		log.Warn("salvage: sync base unreadable; comparing without it", "err", err)
	}
	bases := map[string]wsync.Base{}
	var pending map[string]wsync.Pending
	if st != nil {
		bases, pending = st.Entries, st.Pending
	}
	objs, err := cfg.Store.List(ctx, cfg.Prefix)
	if err != nil {
		return res, fmt.Errorf("salvage: list remote: %w", err)
	}
	remote := make(map[string]wsync.ObjectInfo, len(objs))
	for _, o := range objs {
		if rel, err := wsync.RelFromKey(cfg.Prefix, o.Key); err == nil && rel != "" {
			remote[rel] = o
		}
	}
	// An upload journaled as pending that landed is the base (see
	// wsync.ResolvePending), or it would come back as a conflict.
	resolved, _ := wsync.ResolvePending(pending, remote)
	for p, b := range resolved {
		bases[p] = b
	}
	var patterns []string
	patterns = append(patterns, wsync.DefaultIgnore()...)
	if b, err := root.ReadFile(".idepoolignore"); err == nil {
		patterns = append(patterns, wsync.ParseIgnoreFile(string(b))...)
	}
	ig := wsync.NewIgnorer(patterns)
	stamp := cfg.Now().UTC().Format("20060102T150405Z")

	walkErr := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." {
			return err
		}
		if err != nil {
			log.Warn("salvage: unreadable", "path", p, "err", err)
			res.Failed++
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if ig.Ignored(p) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if _, err := wsync.RelFromKey(cfg.Prefix, wsync.KeyFromRel(cfg.Prefix, p)); err != nil {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil // a name that cannot be a key was never synced either
		}
		if !d.Type().IsRegular() {
			return nil // directories are walked; symlinks and devices never uploaded
		}
		if err := salvageFile(ctx, cfg, root, p, bases, remote, stamp, &res); err != nil {
			log.Warn("salvage: file not saved", "path", p, "err", err)
			res.Failed++
		}
		return nil
	})
	if walkErr != nil {
		return res, fmt.Errorf("salvage: walk workspace: %w", walkErr)
	}
	sort.Strings(res.Paths)
	return res, nil
}

// salvageFile uploads one file where the three-way decision says it
// changed here.
func salvageFile(ctx context.Context, cfg Config, root *os.Root, p string, bases map[string]wsync.Base, remote map[string]wsync.ObjectInfo, stamp string, res *Result) error {
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.Size() > cfg.MaxFileSize {
		return fmt.Errorf("%d bytes, over the %d-byte limit", info.Size(), cfg.MaxFileSize)
	}
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	local := &wsync.LocalFile{Size: info.Size(), MTime: info.ModTime().UnixNano(), Hash: hex.EncodeToString(h.Sum(nil))}
	var base *wsync.Base
	if b, ok := bases[p]; ok {
		base = &b
	}
	var rem *wsync.ObjectInfo
	if r, ok := remote[p]; ok {
		rem = &r
	}
	switch wsync.Decide(base, local, rem) {
	case wsync.Push:
		cond := wsync.Condition{IfNoneMatch: true}
		if rem != nil {
			cond = wsync.Condition{IfMatch: rem.ETag}
		}
		_, err := cfg.Store.Put(ctx, wsync.KeyFromRel(cfg.Prefix, p), f, info.Size(), cond)
		if err == nil {
			res.note(p, info.Size(), false)
			return nil
		}
		if !errors.Is(err, wsync.ErrPreconditionFailed) && !errors.Is(err, wsync.ErrConditionsUnsupported) {
			return err
		}
		// Changed remotely since the listing (or unprovable without
		// conditions): keep it beside, never over, the remote one.
		return conflictCopy(ctx, cfg, f, info.Size(), p, stamp, res)
	case wsync.Conflict:
		return conflictCopy(ctx, cfg, f, info.Size(), p, stamp, res)
	default:
		return nil // unchanged here, or already the same remotely
	}
}

func conflictCopy(ctx context.Context, cfg Config, f io.ReaderAt, size int64, p, stamp string, res *Result) error {
	for i := 1; i <= 20; i++ {
		who := "salvaged"
		if i > 1 {
			who = fmt.Sprintf("salvaged%d", i)
		}
		name := wsync.ConflictName(p, who, stamp)
		_, err := cfg.Store.Put(ctx, wsync.KeyFromRel(cfg.Prefix, name), f, size, wsync.Condition{IfNoneMatch: true})
		if err == nil {
			res.note(p, size, true)
			return nil
		}
		if errors.Is(err, wsync.ErrConditionsUnsupported) {
			return fmt.Errorf("conflict copy %s: the store cannot create without overwriting: %w", name, err)
		}
		if !errors.Is(err, wsync.ErrPreconditionFailed) {
			return fmt.Errorf("conflict copy %s: %w", name, err)
		}
	}
	return errors.New("no free conflict name")
}

func (r *Result) note(p string, size int64, conflict bool) {
	if conflict {
		r.Conflicts++
	} else {
		r.Uploaded++
	}
	r.Bytes += size
	if len(r.Paths) < 100 {
		r.Paths = append(r.Paths, p)
	}
}
