package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestTable checks the table itself: unique names, known topics, a
// description, a field whose type matches the kind, and defaults that parse.
func TestTable(t *testing.T) {
	wantType := map[Kind]any{
		KindString: new(string), KindPath: new(string), KindSecret: new(string), KindEnum: new(string),
		KindURL: new(string), KindHost: new(string), KindInt: new(int), KindPort: new(int), KindPercent: new(int),
		KindBytes: new(int64), KindFloat: new(float64), KindBool: new(bool), KindDuration: new(time.Duration),
		KindList: new([]string), KindKeys: new([]string),
	}
	seen := map[string]bool{}
	for _, s := range Describe() {
		if seen[s.Name] {
			t.Errorf("%s listed twice", s.Name)
		}
		seen[s.Name] = true
		if !slices.Contains(Topics(), s.Topic) {
			t.Errorf("%s: unknown topic %q", s.Name, s.Topic)
		}
		if s.Description == "" || s.bind == nil {
			t.Errorf("%s: needs a description and a field", s.Name)
			continue
		}
		var c Config
		if got, want := reflect.TypeOf(s.bind(&c)), reflect.TypeOf(wantType[s.Kind]); got != want {
			t.Errorf("%s: field type %v, kind %s wants %v", s.Name, got, s.Kind, want)
		}
		if s.Kind == KindEnum && !slices.Contains(s.Values, s.Default) {
			t.Errorf("%s: default %q is not among its values", s.Name, s.Default)
		}
		if (s.Kind == KindKeys || s.Kind == KindSecret) && !s.Secret {
			t.Errorf("%s: kind %s must be Secret", s.Name, s.Kind)
		}
		if s.Default != "" {
			if v, err := s.parse(s.Default); err != nil {
				t.Errorf("default: %v", err)
			} else if err := s.assign(&c, v); err != nil {
				t.Error(err)
			}
		}
	}
	if _, errs := build(env(nil)); len(errs) > 0 {
		t.Errorf("defaults: %v", errs)
	}
}

func TestDefaults(t *testing.T) {
	c := Defaults()
	wd, _ := os.Getwd()
	want := Config{
		Port: 3001, Domain: "localhost", PublicURL: "http://localhost:3001", AgentURL: "http://127.0.0.1:3001",
		MaxBodyBytes: 1 << 20, CookieSameSite: "auto", GCPercent: 400, GCMemoryLimit: 96 << 20, RateLimitRequests: 1200, QueueEnabled: true, QueueLimit: 1000, QueueTimeout: 10 * time.Minute, RateLimitWindow: 60 * time.Second,
		BodyTimeout: 30 * time.Second, BodiesPerClient: 128,
		Image: "idepool-ide:latest", PoolTarget: 10, CPULimit: 2, MemoryLimit: 4 << 30,
		InactivityTimeout: 600 * time.Second, CreateTimeout: 120 * time.Second, CreateConcurrency: 8, FlushTimeout: 30 * time.Second,
		AgentOrphanTimeout: 15 * time.Minute, SyncMaxDeletePercent: 50, SyncParallelism: 32,
		MaxMemoryPercent: 90, MaxCPUPercent: 90, HealthCheckInterval: 10 * time.Second,
		HealthCheckTimeout: 5 * time.Second, HealthCheckRetries: 3, Runtime: "process",
		DataDir: filepath.Join(wd, "idepool-data"), ProcessNice: 10, ProcessUser: "65534", Deployment: "idepool", Router: "builtin",
		TraefikAuthMiddleware: "idepool-auth@file", TraefikStripMiddleware: "idepool-strip@file",
		SwarmNetwork: "idepool", StopGracePeriod: 40 * time.Second, NodeSilence: 5 * time.Second, AWSRegion: "us-east-1", LogLevel: "info", LogFormat: "text",
		EmbeddedIDE: "auto",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Defaults():\n got %s\nwant %s", c, want)
	}
	if c.Addr() != ":3001" || c.SlogLevel() != slog.LevelInfo || !c.S3Credentials().IsZero() {
		t.Errorf("helpers: %q %v %v", c.Addr(), c.SlogLevel(), c.S3Credentials())
	}
}

// TestKinds runs valid and invalid values of every kind through the table.
func TestKinds(t *testing.T) {
	const k16, k20 = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"
	tests := []struct {
		env     map[string]string
		check   func(Config) any // returns the field to compare with want
		want    any
		wantErr string // substring; "" = no error
	}{
		{map[string]string{"PORT": "8080"}, func(c Config) any { return c.Port }, 8080, ""},
		{map[string]string{"PORT": " 8080 "}, func(c Config) any { return c.Port }, 8080, ""},
		{map[string]string{"PORT": "abc"}, nil, nil, `PORT: "abc" is not a port (want 1-65535)`},
		{map[string]string{"PORT": "0"}, nil, nil, `PORT: "0" is not a port`},
		{map[string]string{"PORT": "65536"}, nil, nil, `PORT: "65536"`},
		{map[string]string{"API_KEY": k16 + " , " + k20 + ","}, func(c Config) any { return c.APIKeys }, []string{k16, k20}, ""},
		{map[string]string{"API_KEY": k16, "API_KEYS": k20 + "," + k16}, func(c Config) any { return c.APIKeys }, []string{k16, k20}, ""},
		{map[string]string{"API_KEYS": k20}, func(c Config) any { return c.APIKeys }, []string{k20}, ""},
		{map[string]string{"API_KEY": k16 + ",short-key"}, nil, nil, "API_KEY: key 2 of 2 is 9 characters long (want at least 16"},
		{map[string]string{"PRE_WARMED_QUEUE_SIZE": "0"}, func(c Config) any { return c.PoolTarget }, 0, ""},
		{map[string]string{"PRE_WARMED_QUEUE_SIZE": "-1"}, nil, nil, `PRE_WARMED_QUEUE_SIZE: "-1" is not an integer (want an integer >= 0 and <= 10000)`},
		{map[string]string{"PRE_WARMED_QUEUE_SIZE": "1.5"}, nil, nil, `PRE_WARMED_QUEUE_SIZE: "1.5"`},
		{map[string]string{"PRE_WARMED_QUEUE_SIZE": "10001"}, nil, nil, `PRE_WARMED_QUEUE_SIZE: "10001"`},
		{map[string]string{"CONTAINER_CPU_LIMIT": "0.5"}, func(c Config) any { return c.CPULimit }, 0.5, ""},
		{map[string]string{"CONTAINER_CPU_LIMIT": "0"}, nil, nil, `CONTAINER_CPU_LIMIT: "0" is not a number (want a number > 0)`},
		{map[string]string{"CONTAINER_CPU_LIMIT": "NaN"}, nil, nil, `CONTAINER_CPU_LIMIT: "NaN"`},
		{map[string]string{"CONTAINER_CPU_LIMIT": "-2"}, nil, nil, `CONTAINER_CPU_LIMIT: "-2"`},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "4GiB"}, func(c Config) any { return c.MemoryLimit }, int64(4 << 30), ""},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "512MiB"}, func(c Config) any { return c.MemoryLimit }, int64(512 << 20), ""},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "4g"}, func(c Config) any { return c.MemoryLimit }, int64(4 << 30), ""},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "1.5 GiB"}, func(c Config) any { return c.MemoryLimit }, int64(3 << 29), ""},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "4GB"}, func(c Config) any { return c.MemoryLimit }, int64(4e9), ""},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "1024"}, func(c Config) any { return c.MemoryLimit }, int64(1024), ""},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "4XB"}, nil, nil, `CONTAINER_MEMORY_LIMIT: "4XB" is not a size`},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "0"}, nil, nil, `CONTAINER_MEMORY_LIMIT: "0"`},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "GiB"}, nil, nil, `CONTAINER_MEMORY_LIMIT: "GiB"`},
		{map[string]string{"CONTAINER_MEMORY_LIMIT": "99999999999TiB"}, nil, nil, `CONTAINER_MEMORY_LIMIT: "99999999999TiB"`},
		{map[string]string{"MAX_BODY_BYTES": "2MiB"}, func(c Config) any { return c.MaxBodyBytes }, int64(2 << 20), ""},
		{map[string]string{"CORS_ORIGINS": "https://a.example.com, http://localhost:5173"}, func(c Config) any { return c.CORSOrigins }, []string{"https://a.example.com", "http://localhost:5173"}, ""},
		{map[string]string{"FRAME_ANCESTORS": "https://lms.example.com"}, func(c Config) any { return c.FrameAncestors }, []string{"https://lms.example.com"}, ""},
		{map[string]string{"COOKIE_SAMESITE": "None"}, func(c Config) any { return c.CookieSameSite }, "none", ""},
		{map[string]string{"COOKIE_SAMESITE": "sometimes"}, nil, nil, `COOKIE_SAMESITE: "sometimes"`},
		{map[string]string{"RATE_LIMIT_REQUESTS": "0"}, func(c Config) any { return c.RateLimitRequests }, 0, ""},
		{map[string]string{"RATE_LIMIT_WINDOW_SECONDS": "90"}, func(c Config) any { return c.RateLimitWindow }, 90 * time.Second, ""},
		{map[string]string{"RATE_LIMIT_WINDOW_SECONDS": "0"}, nil, nil, `RATE_LIMIT_WINDOW_SECONDS: "0"`},
		{map[string]string{"MAX_MEMORY_PERCENT": "100"}, func(c Config) any { return c.MaxMemoryPercent }, 100, ""},
		{map[string]string{"MAX_MEMORY_PERCENT": "0"}, nil, nil, `MAX_MEMORY_PERCENT: "0" is not a percentage (want 1-100)`},
		{map[string]string{"MAX_CPU_PERCENT": "101"}, nil, nil, `MAX_CPU_PERCENT: "101" is not a percentage (want 1-100)`},
		{map[string]string{"INACTIVITY_TIMEOUT_SECONDS": "0"}, func(c Config) any { return c.InactivityTimeout }, time.Duration(0), ""},
		{map[string]string{"INACTIVITY_TIMEOUT_SECONDS": "900"}, func(c Config) any { return c.InactivityTimeout }, 15 * time.Minute, ""},
		{map[string]string{"INACTIVITY_TIMEOUT_SECONDS": "1h"}, func(c Config) any { return c.InactivityTimeout }, time.Hour, ""},
		{map[string]string{"INACTIVITY_TIMEOUT_SECONDS": "-5"}, nil, nil, `INACTIVITY_TIMEOUT_SECONDS: "-5" is not a duration`},
		{map[string]string{"HEALTH_CHECK_INTERVAL": "2.5"}, func(c Config) any { return c.HealthCheckInterval }, 2500 * time.Millisecond, ""},
		{map[string]string{"HEALTH_CHECK_INTERVAL": "1m30s"}, func(c Config) any { return c.HealthCheckInterval }, 90 * time.Second, ""},
		{map[string]string{"HEALTH_CHECK_INTERVAL": "0s"}, nil, nil, `HEALTH_CHECK_INTERVAL: "0s" is not a duration (want a duration > 0`},
		{map[string]string{"HEALTH_CHECK_TIMEOUT": "soon"}, nil, nil, `HEALTH_CHECK_TIMEOUT: "soon"`},
		{map[string]string{"HEALTH_CHECK_RETRIES": "0"}, nil, nil, `HEALTH_CHECK_RETRIES: "0" is not an integer (want an integer >= 1)`},
		{map[string]string{"CREATE_TIMEOUT": "5m"}, func(c Config) any { return c.CreateTimeout }, 5 * time.Minute, ""},
		{map[string]string{"FLUSH_TIMEOUT": "1e400"}, nil, nil, `FLUSH_TIMEOUT: "1e400"`},
		{map[string]string{"RUNTIME": "SWARM"}, func(c Config) any { return c.Runtime }, "swarm", ""},
		{map[string]string{"RUNTIME": "docker"}, nil, nil, `RUNTIME: "docker" is not an accepted value (want one of process, swarm, kubernetes, fake)`},
		{map[string]string{"ROUTER": "traefik", "RUNTIME": "swarm"}, func(c Config) any { return c.Router }, "traefik", ""},
		{map[string]string{"LOG_LEVEL": "DEBUG"}, func(c Config) any { return c.SlogLevel() }, slog.LevelDebug, ""},
		{map[string]string{"LOG_LEVEL": "trace"}, nil, nil, `LOG_LEVEL: "trace" is not an accepted value (want one of debug, info, warn, error)`},
		{map[string]string{"LOG_FORMAT": "json"}, func(c Config) any { return c.LogFormat }, "json", ""},
		{map[string]string{"DOMAIN": "IDE.Example.COM"}, func(c Config) any { return c.Domain }, "ide.example.com", ""},
		{map[string]string{"DOMAIN": "http://x"}, nil, nil, `DOMAIN: "http://x" is not a host (want a host name or an IP address)`},
		{map[string]string{"DOMAIN": "-bad-.com"}, nil, nil, `DOMAIN: "-bad-.com"`},
		{map[string]string{"PUBLIC_URL": "https://ide.example.com/base/"}, func(c Config) any { return c.PublicURL }, "https://ide.example.com/base", ""},
		{map[string]string{"PUBLIC_URL": "ide.example.com"}, nil, nil, `PUBLIC_URL: "ide.example.com" is not a URL (want an absolute URL with scheme http or https)`},
		{map[string]string{"PUBLIC_URL": "ftp://x"}, nil, nil, `PUBLIC_URL: "ftp://x"`},
		{map[string]string{"PUBLIC_URL": "https://x/?a=b"}, nil, nil, `PUBLIC_URL: "https://x/?a=b"`},
		{map[string]string{"AGENT_URL": "ws://orchestrator:3001"}, func(c Config) any { return c.AgentURL }, "ws://orchestrator:3001", ""},
		{map[string]string{"S3_ENDPOINT": "http://127.0.0.1:7070"}, func(c Config) any { return c.S3Endpoint }, "http://127.0.0.1:7070", ""},
		{map[string]string{"S3_ENDPOINT": "localhost:9000"}, nil, nil, `S3_ENDPOINT: "localhost:9000" is not a URL`},
		{map[string]string{"DEPLOYMENT": "prod-1"}, func(c Config) any { return c.Deployment }, "prod-1", ""},
		{map[string]string{"DEPLOYMENT": "Prod"}, nil, nil, `DEPLOYMENT: "Prod" is not valid (want 1-63 of a-z, 0-9 and '-', not starting or ending with '-')`},
		{map[string]string{"DEPLOYMENT": "-x"}, nil, nil, `DEPLOYMENT: "-x"`},
		{map[string]string{"SWARM_NETWORK": "my_net.1"}, func(c Config) any { return c.SwarmNetwork }, "my_net.1", ""},
		{map[string]string{"SWARM_NETWORK": "my net"}, nil, nil, `SWARM_NETWORK: "my net" is not valid (want a Docker network name)`},
		{map[string]string{"DOCKER_HOST": "unix:///var/run/docker.sock"}, func(c Config) any { return c.DockerHost }, "unix:///var/run/docker.sock", ""},
		{map[string]string{"DOCKER_HOST": "/var/run/docker.sock"}, nil, nil, `DOCKER_HOST: "/var/run/docker.sock"`},
		{map[string]string{"IDE_CONTAINER_IMAGE": "ghcr.io/x/ide:1.2"}, func(c Config) any { return c.Image }, "ghcr.io/x/ide:1.2", ""},
		{map[string]string{"IDE_CONTAINER_IMAGE": "a b"}, nil, nil, `IDE_CONTAINER_IMAGE: "a b"`},
		{map[string]string{"AWS_REGION": "eu-west-1"}, func(c Config) any { return c.AWSRegion }, "eu-west-1", ""},
		{map[string]string{"AWS_REGION": "EU West"}, nil, nil, `AWS_REGION: "EU West"`},
		{map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}, nil, nil, "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: set both or neither"},
		{map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}, func(c Config) any { return c.S3Credentials().SecretAccessKey }, "s3cr3t", ""},
		{map[string]string{"PROFILES_FILE": "profiles.json"}, func(c Config) any { return c.ProfilesFile }, "profiles.json", ""},
		{map[string]string{}, func(c Config) any { return c.GCPercent }, 400, ""},
		{map[string]string{"GC_PERCENT": "0"}, func(c Config) any { return c.GCPercent }, 0, ""},
		{map[string]string{"GC_PERCENT": "off"}, nil, nil, "GC_PERCENT"},
		{map[string]string{"GC_MEMORY_LIMIT": "0"}, func(c Config) any { return c.GCMemoryLimit }, int64(0), ""},
		{map[string]string{"GC_MEMORY_LIMIT": "256MiB"}, func(c Config) any { return c.GCMemoryLimit }, int64(256 << 20), ""},
		{map[string]string{"GC_MEMORY_LIMIT": "-1"}, nil, nil, "GC_MEMORY_LIMIT"},
		{map[string]string{}, func(c Config) any { return c.DebugAddr }, "", ""},
		{map[string]string{"DEBUG_ADDR": "127.0.0.1:6060"}, func(c Config) any { return c.DebugAddr }, "127.0.0.1:6060", ""},
		{map[string]string{"DEBUG_ADDR": "[::1]:0"}, func(c Config) any { return c.DebugAddr }, "[::1]:0", ""},
		{map[string]string{"DEBUG_ADDR": "localhost:6060"}, func(c Config) any { return c.DebugAddr }, "localhost:6060", ""},
		{map[string]string{"DEBUG_ADDR": "0.0.0.0:6060"}, nil, nil, "DEBUG_ADDR"},
		{map[string]string{"DEBUG_ADDR": ":6060"}, nil, nil, "DEBUG_ADDR"},
		{map[string]string{"DEBUG_ADDR": "10.0.0.1:6060"}, nil, nil, "DEBUG_ADDR"},
		{map[string]string{"PROCESS_NICE": "0"}, func(c Config) any { return c.ProcessNice }, 0, ""},
		{map[string]string{"PROCESS_NICE": "19"}, func(c Config) any { return c.ProcessNice }, 19, ""},
		{map[string]string{"PROCESS_NICE": "20"}, nil, nil, "PROCESS_NICE"},
		{map[string]string{"PROCESS_NICE": "-5"}, nil, nil, "PROCESS_NICE"},
		{map[string]string{"DATA_DIR": "/var/lib/idepool"}, func(c Config) any { return c.DataDir }, "/var/lib/idepool", ""},
		{map[string]string{"DATA_DIR": "/var/lib/../lib/idepool/"}, func(c Config) any { return c.DataDir }, "/var/lib/idepool", ""},
		// Derived URLs.
		{map[string]string{"DOMAIN": "ide.example.com"}, func(c Config) any { return c.PublicURL }, "https://ide.example.com", ""},
		{map[string]string{"DOMAIN": "10.1.2.3", "PORT": "80"}, func(c Config) any { return c.PublicURL }, "http://10.1.2.3:80", ""},
		{map[string]string{"DOMAIN": "::1"}, func(c Config) any { return c.PublicURL }, "http://[::1]:3001", ""},
		{map[string]string{"DOMAIN": "ide.example.com", "PUBLIC_URL": "http://proxy:8000"}, func(c Config) any { return c.PublicURL }, "http://proxy:8000", ""},
		{map[string]string{"PORT": "4000"}, func(c Config) any { return c.AgentURL }, "http://127.0.0.1:4000", ""},
		{map[string]string{"RUNTIME": "swarm", "DOMAIN": "ide.example.com"}, func(c Config) any { return c.AgentURL }, "https://ide.example.com", ""},
		{map[string]string{"RUNTIME": "swarm"}, func(c Config) any { return len(c.Warnings) }, 1, ""},
		{map[string]string{"RUNTIME": "swarm", "AGENT_URL": "http://idepool:3001/"}, func(c Config) any { return c.AgentURL }, "http://idepool:3001", ""},
	}
	for _, tt := range tests {
		name := fmt.Sprint(tt.env)
		t.Run(name, func(t *testing.T) {
			c, errs := build(env(tt.env))
			if tt.wantErr != "" {
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.wantErr) {
					t.Fatalf("errors %v, want one containing %q", errs, tt.wantErr)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("unexpected errors: %v", errs)
			}
			if got := tt.check(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestUnusedKinds covers kinds the table does not use yet (rows will come).
func TestUnusedKinds(t *testing.T) {
	tests := []struct {
		spec VarSpec
		raw  string
		want any
		err  bool
	}{
		{VarSpec{Name: "B", Kind: KindBool}, "yes", true, false},
		{VarSpec{Name: "B", Kind: KindBool}, "OFF", false, false},
		{VarSpec{Name: "B", Kind: KindBool}, "maybe", nil, true},
		{VarSpec{Name: "L", Kind: KindList}, " a, b ,,c ", []string{"a", "b", "c"}, false},
		{VarSpec{Name: "S", Kind: KindString}, "any thing", "any thing", false},
		{VarSpec{Name: "F", Kind: KindFloat, Max: 1}, "1.5", nil, true},
		{VarSpec{Name: "I", Kind: KindInt, Max: 5}, "5", 5, false},
	}
	for _, tt := range tests {
		got, err := tt.spec.parse(tt.raw)
		if (err != nil) != tt.err || (!tt.err && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("%s %q: got %#v, %v", tt.spec.Kind, tt.raw, got, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), tt.spec.Name+": ") {
			t.Errorf("error %q does not name the variable", err)
		}
	}
}

func TestAllErrorsReported(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	_, err := Load(env(map[string]string{"PORT": "abc", "RUNTIME": "docker", "MAX_CPU_PERCENT": "0", "API_KEY": "tiny-secret"}), "")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"PORT:", "RUNTIME:", "MAX_CPU_PERCENT:", "API_KEY:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "tiny-secret") {
		t.Errorf("error echoes a key: %q", err)
	}
}

func TestLoadDotenv(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	write := func(name, text string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// No .env at all: fine.
	c, err := Load(env(nil), "")
	if err != nil || c.EnvFile != "" || c.Port != 3001 {
		t.Fatalf("no .env: %v, %+v", err, c)
	}

	// The default .env; the real environment wins.
	write(".env", "# settings\nexport PORT=4000\nDOMAIN='ide.example.com'\nNOT_OURS=1\n")
	c, err = Load(env(map[string]string{"PORT": "5000"}), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 5000 || c.Domain != "ide.example.com" || c.EnvFile != ".env" {
		t.Errorf("precedence: port %d domain %q file %q", c.Port, c.Domain, c.EnvFile)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "NOT_OURS") {
		t.Errorf("warnings %q", c.Warnings)
	}
	// An empty real value counts as unset: the file's value applies.
	if c, _ := Load(env(map[string]string{"PORT": ""}), ""); c.Port != 4000 {
		t.Errorf("empty env: port %d", c.Port)
	}

	// Retired variables of the original get a hint.
	if c, err := Load(env(map[string]string{"DOCKER_SOCKET": "/var/run/docker.sock"}), ""); err != nil || !slices.ContainsFunc(c.Warnings, func(w string) bool {
		return strings.Contains(w, "DOCKER_SOCKET is no longer read: set DOCKER_HOST")
	}) {
		t.Errorf("retired: %v %q", err, c.Warnings)
	}

	// ENV_FILE names another file; the argument wins over ENV_FILE.
	other := write("other.env", "PORT=6000\n")
	third := write("third.env", "PORT=7000\n")
	if c, err := Load(env(map[string]string{"ENV_FILE": other}), ""); err != nil || c.Port != 6000 || c.EnvFile != other {
		t.Errorf("ENV_FILE: %v port %d file %q", err, c.Port, c.EnvFile)
	}
	if c, err := Load(env(map[string]string{"ENV_FILE": other}), third); err != nil || c.Port != 7000 {
		t.Errorf("argument: %v port %d", err, c.Port)
	}

	// A named file must exist.
	for _, e := range []map[string]string{{"ENV_FILE": "missing.env"}, nil} {
		arg := ""
		if e == nil {
			arg = "missing.env"
		}
		if _, err := Load(env(e), arg); err == nil || !strings.Contains(err.Error(), "ENV_FILE") || !strings.Contains(err.Error(), "missing.env") {
			t.Errorf("missing named file: %v", err)
		}
	}

	// Syntax errors name the file and line; invalid values in the file
	// are reported like environment ones.
	bad := write("bad.env", "PORT=1\nthis is not a setting\nRUNTIME=\"swarm\n")
	_, err = Load(env(nil), bad)
	if err == nil || !strings.Contains(err.Error(), bad+":2:") || !strings.Contains(err.Error(), bad+":3:") {
		t.Errorf("bad .env: %v", err)
	}
	inv := write("inv.env", "PORT=abc\n")
	if _, err := Load(env(nil), inv); err == nil || !strings.Contains(err.Error(), `PORT: "abc" is not a port`) {
		t.Errorf("invalid value in .env: %v", err)
	}
}

// TestRedaction: no way of printing a Config shows a secret.
func TestRedaction(t *testing.T) {
	const key, id, secret = "apikey-0123456789abcdef", "AKIAIDSHOULDNOTSHOW", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	c, errs := build(env(map[string]string{"API_KEY": key, "AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": secret}))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var outs []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		outs = append(outs, fmt.Sprintf(f, c), fmt.Sprintf(f, &c))
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("config", "config", c, "ptr", &c)
		outs = append(outs, b.String())
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	for _, out := range outs {
		for _, s := range []string{key, id, secret} {
			if strings.Contains(out, s) {
				t.Errorf("secret %q printed in %s", s, out)
			}
		}
		if !strings.Contains(out, "REDACTED") || !strings.Contains(out, "3001") {
			t.Errorf("output does not look like a config: %s", out)
		}
	}
	t.Logf("%v", c)
}
