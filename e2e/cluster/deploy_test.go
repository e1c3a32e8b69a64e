//go:build cluster

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
)

// workspaceBucket is the local S3 store's bucket (deploy/build-s3.sh).
const workspaceBucket = "workspaces"

// TestClusterDeploy (issue 17, item 8): on 3 managers deployed with the
// project's own scripts, the entry answers on every manager, through
// Traefik's web entrypoint and through the built-in router's; a start
// response's URLs are PUBLIC_URL's; teardown.sh --volumes leaves nothing of
// the deployment on any node; the stack then deploys again (setup-local.sh
// on a cleaned cluster) for the tests that follow.
func TestClusterDeploy(t *testing.T) {
	d := sharedManagers(t)
	c := d.c

	for i := 1; i <= c.nodes; i++ {
		for _, port := range []int{80, builtinPort} {
			start := time.Now()
			h, err := d.client(i, port).Health(context.Background())
			if err != nil {
				t.Errorf("%s:%d: health: %v", c.NodeIP(i), port, err)
				continue
			}
			t.Logf("%s (%s:%d): health %q in %v", c.Node(i), c.NodeIP(i), port, h.Status, time.Since(start).Round(time.Microsecond))
		}
	}

	res, err := d.api.Start(context.Background(), idepoolclient.StartRequest{Bucket: workspaceBucket, Prefix: "deploy/", UserID: "deploy"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if want := d.publicURL + "/code/" + res.ID + "/"; !strings.HasPrefix(res.URLs.CodeServer, want) {
		t.Errorf("start's codeServer URL %q, want it under PUBLIC_URL: %s…", res.URLs.CodeServer, want)
	}
	if strings.Contains(res.URLs.CodeServer, "localhost") {
		t.Errorf("start's codeServer URL %q names localhost", res.URLs.CodeServer)
	}

	// Teardown, run on node 1 as an operator would: nothing of idepool
	// remains on any node (the teardown job's own containers go within
	// seconds of it; the images stay, on purpose).
	start := time.Now()
	c.run(5*time.Minute, "unstack")
	t.Logf("teardown.sh --volumes took %v", time.Since(start).Round(time.Millisecond))
	waited := pollUntil(t, time.Minute, "nothing of the deployment on any node", func() (bool, string) {
		left := deploymentLeftovers(c)
		return len(left) == 0, strings.Join(left, "; ")
	})
	t.Logf("every node clean %v after teardown.sh ended", waited.Round(time.Millisecond))

	start = time.Now()
	c.run(5*time.Minute, "stack")
	d.readKey()
	t.Logf("stack deployed again in %v", time.Since(start).Round(time.Millisecond))
}

// deploymentLeftovers lists what of the deployment is on some node: the
// Swarm's services, secrets, the network idepool, and each node's
// containers and volumes.
func deploymentLeftovers(c *cluster) []string {
	var left []string
	for _, q := range [][]string{
		{"service", "ls", "-q"},
		{"secret", "ls", "-q"},
		{"network", "ls", "-q", "--filter", "name=^idepool$"},
		{"config", "ls", "-q"},
	} {
		out, err := c.Docker(1, q...)
		if err != nil {
			left = append(left, err.Error())
		} else if f := strings.Fields(out); len(f) > 0 {
			left = append(left, fmt.Sprintf("%s: %v", q[0], f))
		}
	}
	for i := 1; i <= c.nodes; i++ {
		for _, q := range [][]string{{"ps", "-aq"}, {"volume", "ls", "-q"}} {
			out, err := c.Docker(i, q...)
			if err != nil {
				left = append(left, err.Error())
			} else if f := strings.Fields(out); len(f) > 0 {
				left = append(left, fmt.Sprintf("%s %s: %v", c.Node(i), q[0], f))
			}
		}
	}
	return left
}

// TestClusterEveryNodeWorks (issue 17, item 2): warm containers on every
// node; claims until one container on each node is claimed; for each, its
// /code/<id>/ answers (first byte timed) through Traefik and through the
// built-in router, a websocket round trip works through both, and a file
// written in its workspace reaches the S3 store.
func TestClusterEveryNodeWorks(t *testing.T) {
	d := sharedManagers(t)
	c := d.c
	ctx := context.Background()

	const target = 3
	if _, err := d.api.SetPoolTarget(ctx, idepool.DefaultProfile, target); err != nil {
		t.Fatalf("pool target %d: %v", target, err)
	}
	filled := pollUntil(t, 3*time.Minute, "the pool full", func() (bool, string) {
		ps, err := d.api.Pools(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range ps {
			if p.Profile == idepool.DefaultProfile {
				return p.Warm >= target, fmt.Sprintf("%+v", p)
			}
		}
		return false, fmt.Sprintf("no default pool in %+v", ps)
	})
	t.Logf("pool of %d warm in %v", target, filled.Round(time.Millisecond))

	// Claim until every node has a claimed container (the pool refills
	// behind the claims; Swarm spreads the new ones).
	type claim struct {
		id, node, code, prefix string
	}
	byNode := map[string]claim{}
	for k := 0; len(byNode) < c.nodes; k++ {
		if k == 12 {
			t.Fatalf("12 claims reached only the nodes %v", claimedNodes(byNode))
		}
		prefix := fmt.Sprintf("every-%d/", k)
		start := time.Now()
		res, err := d.api.Start(ctx, idepoolclient.StartRequest{Bucket: workspaceBucket, Prefix: prefix, UserID: fmt.Sprintf("u%d", k), Wait: true})
		if err != nil {
			t.Fatalf("start %s: %v", prefix, err)
		}
		took := time.Since(start)
		got, err := d.api.Get(ctx, res.ID)
		if err != nil {
			t.Fatalf("get %s: %v", res.ID, err)
		}
		t.Logf("claim %d: %s on %s (%s, warm %v) in %v", k, res.ID, got.Node, res.Claim, res.IsPreWarmed, took.Round(time.Millisecond))
		if _, ok := byNode[got.Node]; !ok && got.Node != "" {
			byNode[got.Node] = claim{id: res.ID, node: got.Node, code: res.URLs.CodeServer, prefix: prefix}
		}
	}

	for i := 1; i <= c.nodes; i++ {
		cl, ok := byNode[c.Node(i)]
		if !ok {
			t.Fatalf("no claim on %s: %v", c.Node(i), claimedNodes(byNode))
		}
		t.Run(c.Node(i), func(t *testing.T) {
			jar, _ := cookiejar.New(nil)
			hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
			// The start URL's one-time token becomes the cookie (Traefik's
			// ForwardAuth answers the exchange).
			// A cold claim's container (when the warm ones did not cover
			// every node) can be ready a moment before the overlay
			// reaches it from Traefik's and idepool's node: a 502 then is
			// asked again, as in TestClusterFailover. idepool's router
			// itself retries a refused or unreachable dial (proxy's
			// retryDial), so through it this should not happen.
			status, _, err := firstByte(hc, cl.code)
			for try := 0; status == http.StatusBadGateway && try < 10; try++ {
				t.Logf("GET %s: %d %v; again", redactToken(cl.code), status, err)
				time.Sleep(500 * time.Millisecond)
				status, _, err = firstByte(hc, cl.code)
			}
			if err != nil || status != http.StatusOK {
				t.Fatalf("GET %s: %d %v", redactToken(cl.code), status, err)
			}
			cookie := routeCookie(jar, d.publicURL, cl.id)
			if cookie == "" {
				t.Fatalf("no idepool_%s cookie after the token exchange", cl.id)
			}
			for _, r := range []struct{ name, base string }{
				{"traefik", d.publicURL},
				{"built-in", fmt.Sprintf("%s:%d", d.publicURL, builtinPort)},
			} {
				status, ttfb, err := firstByte(&http.Client{Timeout: 30 * time.Second, Jar: jar}, r.base+"/code/"+cl.id+"/")
				if err != nil || status != http.StatusOK {
					t.Errorf("%s: GET /code/%s/: %d %v", r.name, cl.id, status, err)
					continue
				}
				wsStart := time.Now()
				if err := wsEcho(strings.Replace(r.base, "http", "ws", 1)+"/code/"+cl.id+"/ws", cookie); err != nil {
					t.Errorf("%s: websocket: %v", r.name, err)
					continue
				}
				t.Logf("%s %s: first byte %v, websocket round trip %v", cl.id, r.name, ttfb.Round(time.Microsecond), time.Since(wsStart).Round(time.Microsecond))
			}

			// A file in the workspace reaches S3 (the agent syncs it).
			name := "from-" + c.Node(i) + ".txt"
			content := "written on " + c.Node(i) + " at " + time.Now().Format(time.RFC3339Nano)
			if err := putWorkspaceFile(c, i, cl.id, name, content); err != nil {
				t.Fatal(err)
			}
			synced := pollUntil(t, time.Minute, name+" in S3", func() (bool, string) {
				got, err := storeObject(c, cl.prefix+name)
				if err != nil {
					return false, err.Error()
				}
				return got == content, fmt.Sprintf("%q", got)
			})
			t.Logf("%s: %s reached S3 in %v", cl.id, name, synced.Round(time.Millisecond))
		})
	}
}

func claimedNodes[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// firstByte GETs u (following redirects) and returns the final status and
// the time to the final answer's first byte.
func firstByte(hc *http.Client, u string) (int, time.Duration, error) {
	var start time.Time
	var ttfb time.Duration
	trace := &httptrace.ClientTrace{
		GetConn:              func(string) { start = time.Now() },
		GotFirstResponseByte: func() { ttfb = time.Since(start) },
	}
	ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, 0, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	if res.StatusCode >= 400 {
		// Whose answer it is (Traefik's plain text, idepool's envelope)
		// says where a failure was.
		b, _ := io.ReadAll(io.LimitReader(res.Body, 300))
		return res.StatusCode, ttfb, fmt.Errorf("answer %q (Server %q)", b, res.Header.Get("Server"))
	}
	return res.StatusCode, ttfb, nil
}

// routeCookie is the Cookie header value of container id's route cookie.
func routeCookie(jar http.CookieJar, base, id string) string {
	u, _ := url.Parse(base)
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "idepool_"+id {
			return ck.String()
		}
	}
	return ""
}

// redactToken hides a URL's one-time token in messages.
func redactToken(u string) string {
	if i := strings.Index(u, "token="); i >= 0 {
		return u[:i] + "token=<redacted>"
	}
	return u
}

// wsEcho does one websocket round trip (the test IDE's echo at /ws).
func wsEcho(wsURL, cookie string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {cookie}}})
	if err != nil {
		return fmt.Errorf("dial %s: %w", wsURL, err)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_, got, err := conn.Read(ctx)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(got) != "ping" {
		return fmt.Errorf("echo %q, want %q", got, "ping")
	}
	return conn.Close(websocket.StatusNormalClosure, "")
}

// taskOf returns the Docker id of IDE container id's running task
// container on node i.
func taskOf(c *cluster, i int, id string) (string, error) {
	out, err := c.Docker(i, "ps", "-q", "--filter", "label=idepool.id="+id)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) != 1 {
		return "", fmt.Errorf("container %s on %s: %d running task containers", id, c.Node(i), len(f))
	}
	return f[0], nil
}

// putWorkspaceFile writes /workspace/<name> of IDE container id on node i
// with docker cp (the IDE image has no shell), readable by its agent.
func putWorkspaceFile(c *cluster, i int, id, name, content string) error {
	ctr, err := taskOf(c, i, id)
	if err != nil {
		return err
	}
	cmd := exec.Command("docker", "exec", "-i", c.Node(i), "sh", "-c",
		fmt.Sprintf("cat >/tmp/%[1]s && chmod 644 /tmp/%[1]s && docker cp /tmp/%[1]s %[2]s:/workspace/%[1]s && rm /tmp/%[1]s", name, ctr))
	cmd.Stdin = strings.NewReader(content)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("write %s into %s: %w: %s", name, id, err, out)
	}
	return nil
}

// errNoStore: the S3 store's container runs on no node that answers.
var errNoStore = errors.New("no running S3 store container")

// storeObject reads object key of the bucket from the local S3 store's
// posix directory, through its container (docker cp to a tar on stdout).
func storeObject(c *cluster, key string) (string, error) {
	for i := 1; i <= c.nodes; i++ {
		out, err := c.Docker(i, "ps", "-q", "--filter", "label=com.docker.swarm.service.name=idepool_s3")
		if err != nil || strings.TrimSpace(out) == "" {
			continue
		}
		b, err := exec.Command("docker", "exec", c.Node(i), "sh", "-c",
			fmt.Sprintf("docker cp %s:/data/%s/%s - | tar -xO", strings.Fields(out)[0], workspaceBucket, key)).Output()
		if err != nil {
			return "", fmt.Errorf("read %s from the S3 store on %s: %w", key, c.Node(i), err)
		}
		return string(b), nil
	}
	return "", errNoStore
}
