package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/wsync/embeds3"
)

// embeddedS3 is the store of the zero-config run.
type embeddedS3 struct {
	*embeds3.Server
	accessKey, secretKey string
}

// startEmbeddedS3 runs the embedded S3-compatible store under DATA_DIR/s3.
func startEmbeddedS3(ctx context.Context, cfg config.Config, log *slog.Logger) (*embeddedS3, error) {
	dir := filepath.Join(cfg.DataDir, "s3")
	ak, sk, err := embeds3.LoadOrCreateCredentials(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded S3 store: %w", err)
	}
	addr := cfg.S3EmbeddedAddr
	if addr == "" {
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port+1))
	}
	srv, err := embeds3.Run(context.WithoutCancel(ctx), embeds3.Config{
		Dir: dir, Addr: addr, AccessKey: ak, SecretKey: sk, Region: cfg.AWSRegion,
		Logger: log.With("part", "s3"),
	})
	if err != nil {
		return nil, fmt.Errorf("embedded S3 store on %s (set S3_EMBEDDED_ADDR, or S3_ENDPOINT for a real store): %w", addr, err)
	}
	// The start-up summary says it, with a warning (logStartup).
	log.Debug("no S3 configured: workspaces are kept by an embedded S3-compatible store, on this machine only",
		"endpoint", srv.Endpoint, "dir", dir)
	return &embeddedS3{Server: srv, accessKey: ak, secretKey: sk}, nil
}
