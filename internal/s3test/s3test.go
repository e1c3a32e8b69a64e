// Package s3test starts a real S3-compatible server (versitygw) for tests.
//
// The binary is found through $VERSITYGW_BIN, then PATH, then
// $(go env GOPATH)/bin. When it is missing the test is skipped, except
// under CI=true where it fails: CI installs it
// (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Server is a running versitygw with a posix backend in a temp dir.
type Server struct {
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string
	Region    string
	Dir       string // the posix backend's root (buckets are directories)
	cmd       *exec.Cmd
}

// Binary returns the versitygw binary's path, or "" if none is found.
func Binary() string {
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, gp := range filepath.SplitList(gopath) {
		p := filepath.Join(gp, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start runs versitygw on loopback for the test and stops it on cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartOn(t, "127.0.0.1")
}

// StartOn is Start listening on host: an address of this machine that
// containers reach (a Docker bridge's gateway, a Kubernetes node's IP).
func StartOn(t testing.TB, host string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "versitygw not found ($VERSITYGW_BIN, PATH, GOPATH/bin); install: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	s := &Server{AccessKey: "testaccess", SecretKey: "testsecret-0123456789", Region: "us-east-1", Dir: dir}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeAddr(host)
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		cmd := exec.Command(bin, "-a", s.AccessKey, "-s", s.SecretKey, "-p", addr, "posix", dir)
		out := &limitedWriter{n: 64 << 10}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start versitygw: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := waitPort(addr, exited, 20*time.Second); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			lastErr = fmt.Errorf("%w; output: %s", err, out.String())
			continue
		}
		s.cmd = cmd
		s.Endpoint = "http://" + addr
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		return s
	}
	t.Fatalf("versitygw did not start: %v", lastErr)
	return nil
}

// Client is an SDK client for the server (path-style, static credentials).
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   &http.Client{Timeout: time.Minute},
	})
}

// CreateBucket makes a bucket, failing the test on error.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

func freeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func waitPort(addr string, exited <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("versitygw did not listen on " + addr + " in time")
}

// limitedWriter keeps the first n bytes of the server's output for error
// messages.
type limitedWriter struct {
	mu sync.Mutex
	b  strings.Builder
	n  int
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < w.n {
		w.b.Write(p[:min(len(p), w.n-w.b.Len())])
	}
	return len(p), nil
}

func (w *limitedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
