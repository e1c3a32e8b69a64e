//go:build cluster

package cluster

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// spread counts the live containers of a profile per node, as idepool's
// list says.
func (a *stackAPI) spread(profile, state string) (map[string]int, error) {
	var list struct {
		Containers []struct {
			Profile string `json:"profile"`
			State   string `json:"state"`
			Node    string `json:"node"`
		} `json:"containers"`
	}
	if _, err := a.do("GET", "/api/containers?limit=500", nil, &list); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, c := range list.Containers {
		if c.Profile == profile && (state == "" || c.State == state) {
			out[c.Node]++
		}
	}
	return out, nil
}

func spreadString(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

// TestClusterPlacement, on 1 manager + 2 workers: the warm pool spreads
// over the nodes (printed); a node that lacks the IDE image is named in
// /api/pool and the pool fills on the others; a profile constrained to a
// node label runs only on the labelled node; a profile that fits no node
// is refused at once with a clear error, never placed or queued.
func TestClusterPlacement(t *testing.T) {
	const pool = 6
	c, a := stackCluster(t, pool)

	sp, err := a.spread("default", "warm")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SPREAD: %d warm containers: %s", pool, spreadString(sp))
	if len(sp) < 2 {
		t.Errorf("warm pool on %d node(s) (%s), want it spread", len(sp), spreadString(sp))
	}

	// Node 3 loses the IDE image: creates placed there are rejected; idepool
	// names it and places the next ones elsewhere.
	bare := 3
	if out, err := c.Docker(bare, "image", "rm", "-f", "idepool-ide:test"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := a.do("PUT", "/api/pool/default", map[string]int{"target": pool + 6}, nil); err != nil {
		t.Fatal(err)
	}
	took := pollUntil(t, 3*time.Minute, "the pool full without node 3", func() (bool, string) {
		p, err := a.pool()
		if err != nil {
			return false, err.Error()
		}
		named := false
		for _, n := range p.NodesLackingImage {
			named = named || n.Node == c.Node(bare)
		}
		return named && p.Warm >= pool+6, fmt.Sprintf("%+v", p)
	})
	p, _ := a.pool()
	sp, _ = a.spread("default", "warm")
	t.Logf("IMAGE: %s named as lacking the image (%+v); pool of %d full %v after the target rose: %s",
		c.Node(bare), p.NodesLackingImage, pool+6, took.Round(time.Millisecond), spreadString(sp))

	// Profiles through a Swarm config: one pinned to a node label, one
	// that fits no node.
	if out, err := c.Docker(1, "node", "update", "--label-add", "ide=labelled", c.Node(2)); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	profiles := `{"profiles":[
 {"name":"labelled","constraints":["node.labels.ide==labelled"],"poolTarget":3},
 {"name":"huge","memoryLimit":"1TiB","memoryReservation":"1TiB","poolTarget":0}]}`
	cmd := exec.Command("docker", "exec", "-i", c.Node(1), "docker", "config", "create", "idepool-profiles", "-")
	cmd.Stdin = strings.NewReader(profiles)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker config create: %v: %s", err, out)
	}
	if out, err := c.Docker(1, "service", "update", "--detach=false", "--no-resolve-image",
		"--config-add", "source=idepool-profiles,target=/profiles.json,mode=0444",
		"--env-add", "PROFILES_FILE=/profiles.json", "idepool_idepool"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pollUntil(t, 3*time.Minute, "the labelled pool full", func() (bool, string) {
		p, err := a.poolOf("labelled")
		return err == nil && p.Warm >= 3, fmt.Sprintf("%+v %v", p, err)
	})
	sp, _ = a.spread("labelled", "")
	t.Logf("LABELS: profile labelled (node.labels.ide==labelled on %s): %s", c.Node(2), spreadString(sp))
	for node := range sp {
		if node != c.Node(2) {
			t.Errorf("a labelled container on %s", node)
		}
	}

	var answer map[string]any
	status, err := a.do("POST", "/api/containers/start", map[string]string{
		"s3Bucket": "workspaces", "s3Prefix": "huge/", "userId": "u-huge", "profile": "huge"}, &answer)
	t.Logf("NODE-FIT: a start of a profile no node fits: %d %v %v", status, answer, err)
	if hp, err := a.poolOf("huge"); err == nil {
		t.Logf("NODE-FIT: pool huge: %+v", hp)
	}
	// Refused at once (the queue is on: waiting would never end), saying
	// why.
	if status != 503 || err == nil || !strings.Contains(err.Error(), "no node of the cluster can ever run a huge container") {
		t.Errorf("start of a profile no node fits: %d %v, want 503 saying no node can ever run it", status, err)
	}
}
