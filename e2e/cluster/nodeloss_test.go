//go:build cluster

package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The node-loss and drain tests run idepool as the stack deploys it
// (cluster-local.sh up --workers --stack) on 1 manager + 2 workers, with
// Swarm's dispatcher heartbeat at 1 s (CLUSTER_HEARTBEAT) so the engine
// calls a dead node down in ~3 s. CLUSTER_IDEPOOL_IMAGE names an idepool
// image to run instead of idepool:dev (e.g. one built from a branch with
// IDEPOOL_IMAGE=idepool:branch deploy/build-images.sh).

// stackAPI is idepool's REST API as the host reaches it: through Traefik
// on node 1.
type stackAPI struct {
	t    *testing.T
	base string
	key  string
	hc   *http.Client
}

// do sends a request; out (if not nil) receives the JSON answer.
func (a *stackAPI) do(method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if out != nil && len(b) > 0 && res.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s %s: %w: %s", method, path, err, b)
		}
	}
	if res.StatusCode >= 300 {
		return res.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, res.Status, b)
	}
	return res.StatusCode, nil
}

// stackContainer is what the tests read of a container.
type stackContainer struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Node       string `json:"node"`
	ReplacedBy string `json:"replacedBy"`
	IsReused   bool   `json:"isReused"`
	S3Prefix   string `json:"s3Prefix"`
	URLs       struct {
		CodeServer string `json:"codeServer"`
	} `json:"urls"`
}

// session opens a start answer's code URL (host replaced by node 1's
// address) as a browser would and returns the cookies the router set.
func (a *stackAPI) session(codeURL string) ([]*http.Cookie, error) {
	u, err := url.Parse(codeURL)
	if err != nil {
		return nil, err
	}
	base, _ := url.Parse(a.base)
	u.Scheme, u.Host = base.Scheme, base.Host
	hc := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.Get(u.String())
	if err != nil {
		return nil, err
	}
	res.Body.Close()
	if len(res.Cookies()) == 0 {
		return nil, fmt.Errorf("GET %s: %s, no cookie", u.Path, res.Status)
	}
	return res.Cookies(), nil
}

// follow requests /code/<id>/ with cookies, without following a redirect.
func (a *stackAPI) follow(id string, cookies []*http.Cookie) (int, string, error) {
	req, err := http.NewRequest("GET", a.base+"/code/"+id+"/", nil)
	if err != nil {
		return 0, "", err
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	hc := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	res.Body.Close()
	loc := res.Header.Get("Location")
	if res.Header.Get("X-Idepool-Forward-Auth") != "" {
		loc += " (ForwardAuth's answer through Traefik)"
	}
	return res.StatusCode, loc, nil
}

type stackPool struct {
	Profile           string `json:"profile"`
	Target            int    `json:"target"`
	Warm              int    `json:"warm"`
	Starting          int    `json:"starting"`
	Claimed           int    `json:"claimed"`
	Failed            int    `json:"failed"`
	NodesLackingImage []struct {
		Node  string `json:"node"`
		Error string `json:"error"`
	} `json:"nodesLackingImage"`
}

// stackCluster brings up 1 manager + 2 workers with the stack, runs
// CLUSTER_IDEPOOL_IMAGE if set, with a pool of `pool` warm containers,
// and returns the cluster and idepool's API.
func stackCluster(t *testing.T, pool int) (*cluster, *stackAPI) {
	t.Helper()
	t.Setenv("CLUSTER_HEARTBEAT", "1s")
	images := []string{"idepool:dev", "idepool-ide:test", "idepool-s3:local", "idepool-traefik:v3.6.12"}
	img := os.Getenv("CLUSTER_IDEPOOL_IMAGE")
	if img != "" {
		images = append(images, img)
	}
	c := newCluster(t, 3, options{workers: true, stack: true, images: images})
	args := []string{"service", "update", "--detach=false", "--no-resolve-image",
		"--env-add", fmt.Sprintf("PRE_WARMED_QUEUE_SIZE=%d", pool)}
	if img != "" {
		args = append(args, "--image", img)
	}
	start := time.Now()
	if out, err := c.Docker(1, append(args, "idepool_idepool")...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("idepool updated (image %q, pool %d) in %v", img, pool, time.Since(start).Round(time.Millisecond))
	key, err := exec.Command("docker", "exec", c.Node(1), "cat", "/root/.config/idepool/local/api-key").Output()
	if err != nil {
		t.Fatalf("api key: %v", err)
	}
	a := &stackAPI{t: t, base: "http://" + c.NodeIP(1), key: strings.TrimSpace(string(key)), hc: &http.Client{Timeout: 90 * time.Second}}
	pollUntil(t, 3*time.Minute, "the pool full", func() (bool, string) {
		p, err := a.pool()
		if err != nil {
			return false, err.Error()
		}
		return p.Warm >= pool, fmt.Sprintf("%+v", p)
	})
	return c, a
}

func (a *stackAPI) pool() (stackPool, error) { return a.poolOf("default") }

func (a *stackAPI) poolOf(profile string) (stackPool, error) {
	var ps struct {
		Pools []stackPool `json:"pools"`
	}
	if _, err := a.do("GET", "/api/pool", nil, &ps); err != nil {
		return stackPool{}, err
	}
	for _, p := range ps.Pools {
		if p.Profile == profile {
			return p, nil
		}
	}
	return stackPool{}, fmt.Errorf("no pool %q in %+v", profile, ps.Pools)
}

func (a *stackAPI) start(prefix string) (stackContainer, error) {
	var c stackContainer
	body := map[string]string{"s3Bucket": "workspaces", "s3Prefix": prefix + "/", "userId": "u-" + prefix}
	status, err := a.do("POST", "/api/containers/start?wait=ready", body, &c)
	if status == 500 && err != nil && strings.Contains(err.Error(), "CONTAINER_START_FAILED") {
		// Seen once in CI: the warm container taken had its agent exit 1
		// before ready (cause not yet found; see the closing note of
		// issue 17). Said loudly, and the start asked again once: these
		// tests are about nodes, not that defect.
		a.t.Logf("KNOWN DEFECT: start of %s failed before ready (%v); asking again", prefix, err)
		c = stackContainer{}
		_, err = a.do("POST", "/api/containers/start?wait=ready", body, &c)
	}
	return c, err
}

func (a *stackAPI) get(id string) (stackContainer, error) {
	var c stackContainer
	_, err := a.do("GET", "/api/containers/"+id, nil, &c)
	return c, err
}

// nodeIndex returns the index of the node named name.
func (c *cluster) nodeIndex(name string) int {
	for i := 1; i <= c.nodes; i++ {
		if c.Node(i) == name {
			return i
		}
	}
	return 0
}

// taskContainer returns the Docker id of container id's task on node i.
func (c *cluster) taskContainer(i int, id string) (string, error) {
	out, err := c.Docker(i, "ps", "-q", "--filter", "label=idepool.id="+id)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) != 1 {
		return "", fmt.Errorf("container %s on %s: %d task containers running (%q)", id, c.Node(i), len(f), out)
	}
	return f[0], nil
}

// writeFile puts content at /workspace/<name> of container id on node i
// (docker cp: the IDE image has no shell). The file is written as root
// and readable by the agent.
func (c *cluster) writeFile(i int, id, name, content string) error {
	ctr, err := c.taskContainer(i, id)
	if err != nil {
		return err
	}
	cmd := exec.Command("docker", "exec", c.Node(i), "sh", "-c",
		fmt.Sprintf("printf %%s %q >/tmp/%s && chmod 644 /tmp/%s && docker cp /tmp/%s %s:/workspace/%s", content, name, name, name, ctr, name))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("write %s into %s: %w: %s", name, id, err, out)
	}
	return nil
}

// readFile reads /workspace/<name> of container id on node i ("" and an
// error when it is not there).
func (c *cluster) readFile(i int, id, name string) (string, error) {
	ctr, err := c.taskContainer(i, id)
	if err != nil {
		return "", err
	}
	return c.catFromContainer(i, ctr, "/workspace/"+name)
}

// catFromContainer reads one file of a container through docker cp (a tar
// on stdout), without a shell in the container.
func (c *cluster) catFromContainer(i int, ctr, path string) (string, error) {
	out, err := exec.Command("docker", "exec", c.Node(i), "sh", "-c",
		fmt.Sprintf("docker cp %s:%s - | tar -xO", ctr, path)).Output()
	if err != nil {
		return "", fmt.Errorf("read %s of %s on %s: %w", path, ctr, c.Node(i), err)
	}
	return string(out), nil
}

// s3File reads an object of the bucket "workspaces" from the local S3
// store's posix directory (/data/workspaces).
func (c *cluster) s3File(key string) (string, error) {
	for i := 1; i <= c.nodes; i++ {
		out, err := c.Docker(i, "ps", "-q", "--filter", "label=com.docker.swarm.service.name=idepool_s3")
		if err != nil || strings.TrimSpace(out) == "" {
			continue
		}
		return c.catFromContainer(i, strings.Fields(out)[0], "/data/workspaces/"+key)
	}
	return "", fmt.Errorf("no running S3 store container")
}

// liveTasks counts the running task containers of IDE container id on
// every node that answers.
func (c *cluster) liveTasks(id string) int {
	n := 0
	for i := 1; i <= c.nodes; i++ {
		out, err := c.Docker(i, "ps", "-q", "--filter", "label=idepool.id="+id)
		if err == nil {
			n += len(strings.Fields(out))
		}
	}
	return n
}

// TestClusterNodeLoss kills a worker node holding warm and claimed
// containers. It prints how long idepool took to notice (the claimed
// container's state leaves running / a start for its workspace answers
// another container) and to replace it, and checks: each claimed workspace
// gets a new container on another node holding its last synced files; a
// start for the workspace answers the new one; the pool refills; after the
// node is started again, its stale containers are gone and no workspace
// has two live containers.
func TestClusterNodeLoss(t *testing.T) {
	const pool = 4
	c, a := stackCluster(t, pool)

	// Claims until the victim (node 3, a worker) holds one; the others
	// stay claimed wherever they are.
	victim := 3
	type claim struct {
		prefix string
		c      stackContainer
		file   string
	}
	var onVictim []claim
	var all []claim
	for i := 0; i < 6 && len(onVictim) < 2; i++ {
		prefix := fmt.Sprintf("loss-%d", i)
		sc, err := a.start(prefix)
		if err != nil {
			t.Fatal(err)
		}
		cl := claim{prefix: prefix, c: sc}
		got, err := a.get(sc.ID)
		if err != nil {
			t.Fatal(err)
		}
		cl.c.Node = got.Node
		all = append(all, cl)
		if c.nodeIndex(got.Node) == victim {
			onVictim = append(onVictim, cl)
		}
	}
	if len(onVictim) == 0 {
		t.Fatalf("no claim landed on %s: %+v", c.Node(victim), all)
	}
	// An edit in each, synced to S3 before the loss.
	for k := range onVictim {
		cl := &onVictim[k]
		cl.file = fmt.Sprintf("edit of %s at %s", cl.prefix, time.Now().Format(time.RFC3339Nano))
		if err := c.writeFile(victim, cl.c.ID, "note.txt", cl.file); err != nil {
			t.Fatal(err)
		}
		took := pollUntil(t, time.Minute, "the edit in S3", func() (bool, string) {
			got, err := c.s3File(cl.prefix + "/note.txt")
			return got == cl.file, fmt.Sprintf("%q %v", got, err)
		})
		t.Logf("edit of %s on %s reached S3 in %v", cl.c.ID, c.Node(victim), took.Round(time.Millisecond))
	}
	pollUntil(t, 2*time.Minute, "the pool refilled after the claims", func() (bool, string) {
		p, err := a.pool()
		return err == nil && p.Warm >= pool, fmt.Sprintf("%+v %v", p, err)
	})
	warmOnVictim := 0
	var list struct {
		Containers []stackContainer `json:"containers"`
	}
	if _, err := a.do("GET", "/api/containers", nil, &list); err == nil {
		for _, sc := range list.Containers {
			if sc.State == "warm" && c.nodeIndex(sc.Node) == victim {
				warmOnVictim++
			}
		}
	}
	t.Logf("on %s: %d claimed, %d warm", c.Node(victim), len(onVictim), warmOnVictim)

	// The first one's user holds its route cookie.
	cookies, err := a.session(onVictim[0].c.URLs.CodeServer)
	if err != nil {
		t.Fatalf("session of %s: %v", onVictim[0].c.ID, err)
	}

	if hb, err := c.Docker(1, "info", "--format", "{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}"); err == nil {
		t.Logf("Swarm dispatcher heartbeat: %s", strings.TrimSpace(hb))
	}

	// Kill the node (its engine and every container on it, at once).
	killed := time.Now()
	if out, err := exec.Command("docker", "kill", c.Node(victim)).CombinedOutput(); err != nil {
		t.Fatalf("kill %s: %v: %s", c.Node(victim), err, out)
	}
	// Swarm's own detection, for comparison.
	swarmDown := make(chan time.Duration, 1)
	go func() {
		for time.Since(killed) < 3*time.Minute {
			out, err := c.Docker(1, "node", "inspect", "--format", "{{.Status.State}}", c.Node(victim))
			if err == nil && strings.TrimSpace(out) == "down" {
				swarmDown <- time.Since(killed)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		close(swarmDown)
	}()

	// Detection: idepool stops answering the dead container (its state
	// leaves running, or it is replaced).
	first := onVictim[0]
	detect := pollUntil(t, 2*time.Minute, "idepool notices the lost node", func() (bool, string) {
		got, err := a.get(first.c.ID)
		if err != nil {
			return false, err.Error()
		}
		return got.State != "running" && got.State != "syncing", got.State
	})
	t.Logf("DETECTION: %s's claimed container %s left running %v after the kill", c.Node(victim), first.c.ID, detect.Round(time.Millisecond))
	if d, ok := <-swarmDown; ok {
		t.Logf("SWARM: the engine called %s down %v after the kill", c.Node(victim), d.Round(time.Millisecond))
	}

	// Replacement: a start for each workspace answers a new container on
	// another node, with the file as last synced.
	for _, cl := range onVictim {
		nc, took := a.runningElsewhere(c, cl.prefix, victim, cl.c.ID, 3*time.Minute, "a replacement for "+cl.prefix)
		t.Logf("REPLACEMENT: %s → %s on %s, running %v after the kill (%v after detection)", cl.c.ID, nc.ID, nc.Node,
			time.Since(killed).Round(time.Millisecond), took.Round(time.Millisecond))
		old, err := a.get(cl.c.ID)
		if err != nil {
			t.Errorf("GET old %s: %v", cl.c.ID, err)
		} else if old.ReplacedBy != nc.ID {
			t.Errorf("old container %s: replacedBy %q, want %s", cl.c.ID, old.ReplacedBy, nc.ID)
		}
		if cl.c.ID == onVictim[0].c.ID {
			status, loc, err := a.follow(cl.c.ID, cookies)
			t.Logf("ROUTER: the old cookie's holder at /code/%s/: %d → %s", cl.c.ID, status, strings.Split(loc, "?")[0])
			if err != nil || status != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, "/code/"+nc.ID+"/") {
				t.Errorf("old cookie at /code/%s/: %d %q %v, want a redirect to /code/%s/", cl.c.ID, status, loc, err, nc.ID)
			}
		}
		got, err := c.readFile(c.nodeIndex(nc.Node), nc.ID, "note.txt")
		if err != nil || got != cl.file {
			t.Errorf("replacement %s: note.txt = %q (%v), want the last synced edit %q", nc.ID, got, err, cl.file)
		}
	}
	refill := pollUntil(t, 3*time.Minute, "the pool back at its target", func() (bool, string) {
		p, err := a.pool()
		return err == nil && p.Warm >= pool && p.Starting == 0, fmt.Sprintf("%+v %v", p, err)
	})
	t.Logf("REFILL: pool at target %v after the replacements (%v after the kill)", refill.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	// The node comes back: its stale containers go, no workspace has two.
	if out, err := exec.Command("docker", "start", c.Node(victim)).CombinedOutput(); err != nil {
		t.Fatalf("start %s: %v: %s", c.Node(victim), err, out)
	}
	stale := pollUntil(t, 3*time.Minute, "the stale containers gone from the returned node", func() (bool, string) {
		out, err := c.Docker(victim, "ps", "-q", "--filter", "label=idepool.managed")
		if err != nil {
			return false, err.Error()
		}
		for _, cl := range onVictim {
			if strings.TrimSpace(out) != "" && c.liveTasks(cl.c.ID) > 0 {
				return false, "stale " + cl.c.ID + " still runs"
			}
		}
		return true, ""
	})
	t.Logf("STALE: the returned node's stale containers gone %v after it started", stale.Round(time.Millisecond))
	for _, cl := range all {
		sc, err := a.start(cl.prefix)
		if err != nil {
			t.Errorf("start %s after the return: %v", cl.prefix, err)
			continue
		}
		live := 0
		for _, id := range []string{cl.c.ID, sc.ID} {
			if id == cl.c.ID && id == sc.ID {
				live = c.liveTasks(id)
				break
			}
			live += c.liveTasks(id)
		}
		if live != 1 {
			t.Errorf("workspace %s: %d live task containers (old %s, current %s), want 1", cl.prefix, live, cl.c.ID, sc.ID)
		}
	}
}

// serviceNode returns the index of the node running the stack service's
// task (0: none running).
func (c *cluster) serviceNode(service string) int {
	out, err := c.Docker(1, "service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "Running" {
			return c.nodeIndex(f[0])
		}
	}
	return 0
}

// TestClusterDrain drains a worker right after an edit was written in a
// claimed container on it. It prints how long the drain took and how long
// until the workspace ran again elsewhere, and checks: the edit is in S3
// and in the replacement (zero lost edits), the start for the workspace
// answers the replacement, and the workspace has one live container.
func TestClusterDrain(t *testing.T) {
	const pool = 2
	c, a := stackCluster(t, pool)

	// The victim: a worker without the S3 store (a drain would move the
	// local store, which keeps its data on the node: deploy's business).
	s3 := c.serviceNode("idepool_s3")
	victim := 2
	if s3 == victim {
		victim = 3
	}
	cl, prefix := a.claimOn(c, victim, "drain")
	t.Logf("claimed %s for %s on %s (S3 store on %s)", cl.ID, prefix, c.Node(victim), c.Node(s3))

	// The edit, and the drain at once.
	edit := fmt.Sprintf("draft of %s at %s", prefix, time.Now().Format(time.RFC3339Nano))
	if err := c.writeFile(victim, cl.ID, "draft.txt", edit); err != nil {
		t.Fatal(err)
	}
	drained := time.Now()
	if out, err := c.Docker(1, "node", "update", "--availability", "drain", c.Node(victim)); err != nil {
		t.Fatalf("drain: %v: %s", err, out)
	}
	took := pollUntil(t, 2*time.Minute, "the node empty", func() (bool, string) {
		out, err := c.Docker(victim, "ps", "-q", "--filter", "label=idepool.managed")
		return err == nil && strings.TrimSpace(out) == "", fmt.Sprintf("%q %v", out, err)
	})
	t.Logf("DRAIN: %s empty of IDE containers %v after the drain", c.Node(victim), took.Round(time.Millisecond))

	got, err := c.s3File(prefix + "/draft.txt")
	if err != nil || got != edit {
		t.Errorf("S3 after the drain: draft.txt = %q (%v), want the edit %q", got, err, edit)
	}
	// A drain may move the same container (its service's task) elsewhere.
	nc, _ := a.runningElsewhere(c, prefix, victim, "", 3*time.Minute, "the workspace running elsewhere")
	t.Logf("REPLACEMENT: %s → %s on %s, running %v after the drain", cl.ID, nc.ID, nc.Node, time.Since(drained).Round(time.Millisecond))
	if content, err := c.readFile(c.nodeIndex(nc.Node), nc.ID, "draft.txt"); err != nil || content != edit {
		t.Errorf("replacement %s: draft.txt = %q (%v), want the edit %q", nc.ID, content, err, edit)
	}
	if nc.ID != cl.ID {
		if old, err := a.get(cl.ID); err == nil && old.ReplacedBy != nc.ID {
			t.Errorf("old %s: replacedBy %q, want %s", cl.ID, old.ReplacedBy, nc.ID)
		}
		if n := c.liveTasks(cl.ID); n != 0 {
			t.Errorf("old %s: %d live task containers after the drain", cl.ID, n)
		}
	}
	if n := c.liveTasks(nc.ID); n != 1 {
		t.Errorf("workspace %s: %d live task containers of %s, want 1", prefix, n, nc.ID)
	}
}

// runningElsewhere asks a start for the workspace prefix until it answers
// a container running on a node other than victim, and other than the
// container old when old is set (a lost node's claimed container is
// replaced; a drained one may move). It returns that container (as GET
// shows it, with its node) and how long it took.
func (a *stackAPI) runningElsewhere(c *cluster, prefix string, victim int, old string, timeout time.Duration, what string) (stackContainer, time.Duration) {
	a.t.Helper()
	var nc stackContainer
	took := pollUntil(a.t, timeout, what, func() (bool, string) {
		sc, err := a.start(prefix)
		if err != nil {
			return false, err.Error()
		}
		got, err := a.get(sc.ID)
		if err != nil {
			return false, err.Error()
		}
		nc = got
		return (old == "" || sc.ID != old) && got.State == "running" && got.Node != "" && c.nodeIndex(got.Node) != victim, fmt.Sprintf("%+v", got)
	})
	return nc, took
}

// claimOn starts workspaces base-0, base-1, … until one's container runs
// on node victim, and returns it with its prefix (the others stay claimed).
func (a *stackAPI) claimOn(c *cluster, victim int, base string) (stackContainer, string) {
	a.t.Helper()
	for i := 0; i < 8; i++ {
		p := fmt.Sprintf("%s-%d", base, i)
		sc, err := a.start(p)
		if err != nil {
			a.t.Fatal(err)
		}
		got, err := a.get(sc.ID)
		if err != nil {
			a.t.Fatal(err)
		}
		if c.nodeIndex(got.Node) == victim {
			return got, p
		}
	}
	a.t.Fatalf("no claim of %s-* landed on %s", base, c.Node(victim))
	return stackContainer{}, ""
}
