package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// startup is what a person needs to know once serve runs, logged as a few
// short lines instead of one dump of the configuration (that is at DEBUG).
type startup struct {
	URL     string // where the API, dashboard and routes are served
	Runtime string
	DataDir string
	// Store names the workspace store: "embedded" (with its endpoint and
	// directory) or the configured S3 endpoint; never credentials.
	Store, StoreEndpoint string
	// KeySource is where the API key comes from: the key file under
	// DATA_DIR (KeyGenerated when this start made it) or API_KEY.
	KeySource    string
	KeyGenerated bool
	// IDE says which IDE the default profile's code route runs; empty
	// until the IDE detection fills it, and then left out.
	IDE string
}

// logStartup writes the summary: four lines, none long.
func (s *Server) logStartup(ctx context.Context) {
	su := s.startup
	s.log.LogAttrs(ctx, slog.LevelInfo, "idepool serving",
		slog.String("url", su.URL), slog.String("dashboard", "/dashboard"),
		slog.String("runtime", su.Runtime), slog.String("version", s.opts.Version))
	store := []slog.Attr{slog.String("store", su.Store)}
	level := slog.LevelInfo
	if su.StoreEndpoint != "" {
		store = append(store, slog.String("endpoint", su.StoreEndpoint))
	}
	if su.Store == "embedded" {
		// Worth a warning: a lost disk loses every workspace.
		level = slog.LevelWarn
		store = append(store, slog.String("note", "kept in DATA_DIR/s3, on this machine only; S3_ENDPOINT sets a real store"))
	}
	s.log.LogAttrs(ctx, level, "workspaces", store...)
	var pools []string
	for _, p := range s.pool.Pools() {
		pools = append(pools, fmt.Sprintf("%s=%d", p.Profile, p.Target))
	}
	attrs := []slog.Attr{slog.String("data_dir", su.DataDir), slog.String("api_key", su.KeySource),
		slog.String("pools", strings.Join(pools, ","))}
	s.log.LogAttrs(ctx, slog.LevelInfo, "settings", attrs...)
	if su.IDE != "" {
		// A line of its own: the description may be long.
		s.log.LogAttrs(ctx, slog.LevelInfo, "ide", slog.String("default_profile", su.IDE))
	}
}

// leftRunning counts the containers that outlive this serve (-1: unknown).
func (s *Server) leftRunning() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	insts, err := s.rt.List(ctx)
	if err != nil {
		return -1
	}
	n := 0
	for _, i := range insts {
		if !i.Status.Terminal() {
			n++
		}
	}
	return n
}

// logStopped tells the person who pressed Ctrl-C what still runs, and how
// to stop it: serve leaves its containers running on purpose, so that a
// restart adopts them.
func (s *Server) logStopped(left int) {
	switch {
	case left == 0:
		s.log.Info("idepool stopped; no containers left running")
	case left < 0:
		s.log.Warn("idepool stopped; its containers keep running (a restart adopts them); to stop them: idepool down",
			"data_dir", s.cfg.DataDir)
	default:
		s.log.Warn(fmt.Sprintf("idepool stopped; %d containers keep running (a restart adopts them); to stop them: idepool down", left),
			"data_dir", s.cfg.DataDir, "runtime", s.rt.Name())
	}
}
