package server

import (
	"github.com/idepool/idepool/config"
	"github.com/idepool/idepool/internal/dirlock"
)

// lockDataDir takes DATA_DIR's exclusive lock, so that a second serve on
// the same directory exits instead of adopting the first one's containers
// and breaking "one container per workspace". With RUNTIME=swarm it guards
// only what DATA_DIR holds (the API key, the router secret) against a
// second serve on this machine; serves on other machines that share a
// Swarm deployment are not seen.
func lockDataDir(cfg config.Config) (*dirlock.Lock, error) {
	return dirlock.Acquire(cfg.DataDir, "serve", cfg.Port)
}
