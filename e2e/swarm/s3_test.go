package swarm_test

import (
	"context"
	"testing"

	"github.com/idepool/idepool/internal/s3test"
	"github.com/moby/moby/client"
)

// startS3 runs versitygw on the host, listening on the gateway of
// docker_gwbridge: the address Swarm containers reach the host by (overlay
// tasks get a second interface on that bridge), and the host itself too.
func startS3(t testing.TB, c *client.Client) *s3test.Server {
	t.Helper()
	nw, err := c.NetworkInspect(context.Background(), "docker_gwbridge", client.NetworkInspectOptions{})
	if err != nil {
		t.Fatalf("inspect docker_gwbridge: %v", err)
	}
	var gw string
	for _, cfg := range nw.Network.IPAM.Config {
		if cfg.Gateway.Is4() {
			gw = cfg.Gateway.String()
		}
	}
	if gw == "" {
		t.Fatalf("docker_gwbridge has no IPv4 gateway: %+v", nw.Network.IPAM)
	}
	return s3test.StartOn(t, gw)
}

// s3Env is idepool's configuration for that server.
func s3Env(s *s3test.Server) map[string]string {
	return map[string]string{
		"S3_ENDPOINT":           s.Endpoint,
		"AWS_ACCESS_KEY_ID":     s.AccessKey,
		"AWS_SECRET_ACCESS_KEY": s.SecretKey,
		"AWS_REGION":            s.Region,
	}
}
