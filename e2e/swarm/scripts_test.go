package swarm_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/e2etest"
	"github.com/idepool/idepool/runtime/swarm/swarmtest"
	"github.com/moby/moby/client"
)

// TestScriptsSyntax checks every shell script of deploy/ and scripts/ with
// `bash -n`, and with shellcheck (errors only) when it is installed. It
// needs no Docker.
func TestScriptsSyntax(t *testing.T) {
	root := e2etest.RepoRoot(t)
	var scripts []string
	for _, dir := range []string{"deploy", "deploy/cluster", "deploy/ide", "scripts"} {
		m, err := filepath.Glob(filepath.Join(root, dir, "*.sh"))
		if err != nil {
			t.Fatal(err)
		}
		scripts = append(scripts, m...)
	}
	if len(scripts) == 0 {
		t.Fatal("no scripts found under deploy/ and scripts/")
	}
	shellcheck, _ := exec.LookPath("shellcheck")
	for _, s := range scripts {
		rel, _ := filepath.Rel(root, s)
		t.Run(rel, func(t *testing.T) {
			if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
				t.Fatalf("bash -n %s: %v\n%s", rel, err, out)
			}
			if shellcheck == "" {
				return
			}
			cmd := exec.Command(shellcheck, "-x", "-S", "error", rel)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", rel, err, out)
			}
		})
	}
}

// runScript runs deploy/<name> with extra environment and a bounded time,
// returning its combined output and error.
func runScript(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	root := e2etest.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(root, "deploy", name)}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return out.String(), err
}

// TestDeployRefuses: deploy.sh refuses to run without DOMAIN (a DNS name),
// API_KEY and ACME_EMAIL, naming what is missing, and its --dry-run stack
// is HTTPS with Let's Encrypt, without Traefik's dashboard, with idepool
// updated stop-first, and without the API key.
func TestDeployRefuses(t *testing.T) {
	good := map[string]string{
		"DOMAIN":     "ide.example.com",
		"API_KEY":    "k-" + e2etest.RandomHex(20),
		"ACME_EMAIL": "ops@example.com",
	}
	with := func(overrides ...string) []string {
		env := []string{"IDEPOOL_ENV_FILE=", "IDEPOOL_IMAGE="}
		for k, v := range good {
			env = append(env, k+"="+v)
		}
		return append(env, overrides...)
	}
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"no domain", with("DOMAIN="), "DOMAIN is not set"},
		{"localhost", with("DOMAIN=localhost"), "not a public DNS name"},
		{"ip address", with("DOMAIN=203.0.113.7"), "not a public DNS name"},
		{"no api key", with("API_KEY="), "API_KEY is not set"},
		{"short api key", with("API_KEY=" + good["API_KEY"] + ",short"), "32+ characters"},
		{"no acme email", with("ACME_EMAIL="), "ACME_EMAIL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runScript(t, time.Minute, tc.env, "deploy.sh", "--dry-run")
			if err == nil {
				t.Fatalf("deploy.sh ran; want a refusal mentioning %q\n%s", tc.want, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("deploy.sh refused with %q; want it to mention %q", out, tc.want)
			}
		})
	}

	t.Run("dry run", func(t *testing.T) {
		if _, err := exec.LookPath("docker"); err != nil {
			swarmtest.Missing(t, "docker CLI not found (deploy.sh --dry-run uses docker stack config)")
		}
		if err := exec.Command("docker", "info").Run(); err != nil {
			swarmtest.Missing(t, "docker engine not reachable: %v", err)
		}
		out, err := runScript(t, time.Minute, with(), "deploy.sh", "--dry-run")
		if err != nil {
			t.Fatalf("deploy.sh --dry-run: %v\n%s", err, out)
		}
		for _, want := range []string{
			"--entrypoints.websecure.address=:443",
			"--certificatesresolvers.letsencrypt.acme.email=ops@example.com",
			"--entrypoints.web.http.redirections.entrypoint.to=websecure",
			"traefik.http.routers.idepool.tls.certresolver: letsencrypt",
			"Host(`ide.example.com`)",
			"order: stop-first",
			"ENV_FILE: /run/secrets/idepool.env",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("dry-run stack lacks %q\n%s", want, out)
			}
		}
		if strings.Contains(out, good["API_KEY"]) {
			t.Errorf("dry-run output shows the API key")
		}
		if strings.Contains(out, "--api") {
			t.Errorf("dry-run stack enables Traefik's API/dashboard")
		}
	})
}

// codeURL matches the URL setup-local.sh prints for the started container.
var codeURL = regexp.MustCompile(`http://localhost/code/([a-z0-9]+)/\?token=\S+`)

// TestSetupLocal is the Must-show "setup-local.sh run from a clean engine
// ends with a working start request": it runs the real script (Swarm,
// network, images, the stack on port 80, a start request through the API
// and Traefik), checks the result from outside, re-runs it (idempotent: the
// same container is reused), then runs teardown.sh and checks that nothing
// of the deployment is left.
func TestSetupLocal(t *testing.T) {
	enabled(t)
	c := swarmtest.Require(t)
	if out, _ := exec.Command("docker", "stack", "ls", "--format", "{{.Name}}").Output(); containsLine(string(out), "idepool") {
		swarmtest.Missing(t, "a stack named idepool already runs on this engine; this test would replace it (deploy/teardown.sh removes it)")
	}
	stateDir := t.TempDir()
	env := []string{"STATE_DIR=" + stateDir, "IDEPOOL_IMAGE=" + idepoolImage, "IDEPOOL_IDE_IMAGE=" + ideImage}
	t.Cleanup(func() {
		out, err := runScript(t, 5*time.Minute, nil, "teardown.sh", "--volumes")
		if err != nil {
			t.Errorf("teardown.sh --volumes: %v\n%s", err, out)
		}
	})

	// The first run builds the local S3 store's image (minutes, once), so
	// the bound is generous; the figure is logged.
	start := time.Now()
	out, err := runScript(t, 20*time.Minute, env, "setup-local.sh")
	if err != nil {
		t.Fatalf("setup-local.sh: %v\n%s", err, out)
	}
	t.Logf("setup-local.sh took %v", time.Since(start).Round(time.Second))
	m := codeURL.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("setup-local.sh printed no http://localhost/code/<id>/?token=… URL\n%s", out)
	}
	id := m[1]

	keyFile := filepath.Join(stateDir, "api-key")
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatalf("API key file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", keyFile, st.Mode().Perm())
	}
	raw, _ := os.ReadFile(keyFile)
	key := strings.TrimSpace(string(raw))
	if !strings.Contains(out, key) {
		t.Errorf("the generated API key was not printed on the first run")
	}

	// From outside: the printed URL opens (token → cookie → the IDE), and
	// the API lists the container as running.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	if status, body, _, err := e2etest.HTTPGet(hc, m[0], ""); err != nil || status != http.StatusOK {
		t.Errorf("GET %s: %d %v\n%s", m[0], status, err, body)
	}
	api, err := idepoolclient.New("http://localhost", key, idepoolclient.Options{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := api.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("GET /api/containers/%s: %v", id, err)
	}
	if ctr.State != idepool.StateRunning {
		t.Errorf("container %s is %s, want running", id, ctr.State)
	}

	// Idempotent: a second run changes nothing, reuses the container and
	// does not print the key again.
	out2, err := runScript(t, 5*time.Minute, append(env, "SKIP_BUILD=1"), "setup-local.sh")
	if err != nil {
		t.Fatalf("setup-local.sh (second run): %v\n%s", err, out2)
	}
	if m2 := codeURL.FindStringSubmatch(out2); m2 == nil || m2[1] != id {
		t.Errorf("second run: want the same container %s reused\n%s", id, out2)
	}
	if strings.Contains(out2, key) {
		t.Errorf("second run printed the API key again")
	}

	// Teardown removes only what is ours, and all of it.
	out3, err := runScript(t, 5*time.Minute, nil, "teardown.sh", "--volumes")
	if err != nil {
		t.Fatalf("teardown.sh: %v\n%s", err, out3)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if svcs, ctrs, err := swarmtest.Leftovers(ctx, c, "idepool"); err != nil || svcs+ctrs > 0 {
		t.Errorf("after teardown.sh: %d services, %d containers of deployment idepool left (%v)", svcs, ctrs, err)
	}
	sl, err := c.ServiceList(ctx, client.ServiceListOptions{Filters: make(client.Filters).Add("label", "com.docker.stack.namespace=idepool")})
	if err != nil || len(sl.Items) > 0 {
		t.Errorf("after teardown.sh: %d services of the stack left (%v)", len(sl.Items), err)
	}
	if _, err := c.NetworkInspect(ctx, "idepool", client.NetworkInspectOptions{}); err == nil {
		t.Errorf("after teardown.sh: network idepool still exists")
	}
	for _, img := range []string{idepoolImage, ideImage} {
		if _, err := c.ImageInspect(ctx, img); err != nil {
			t.Errorf("teardown.sh without --images removed image %s: %v", img, err)
		}
	}
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}
