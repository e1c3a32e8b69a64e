package swarm_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/idepool/idepool/internal/s3test"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
	"github.com/moby/moby/client"
)

// startS3 runs versitygw on the host, listening on the gateway of
// docker_gwbridge: the address Swarm containers reach the host by (overlay
// tasks get a second interface on that bridge), and the host itself too.
func startS3(t testing.TB, c *client.Client) *s3test.Server {
	t.Helper()
	bin := s3test.Binary()
	if bin == "" {
		swarmtest.Missing(t, "versitygw not found; install: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	}
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
	l, err := net.Listen("tcp", gw+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", gw, err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &s3test.Server{Endpoint: "http://" + addr, AccessKey: "e2eaccess", SecretKey: "e2esecret-0123456789", Region: "us-east-1", Dir: t.TempDir()}
	cmd := exec.Command(bin, "-a", s.AccessKey, "-s", s.SecretKey, "-p", addr, "posix", s.Dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s", addr)
		}
	}
	return s
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
