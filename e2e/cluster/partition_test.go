//go:build cluster

package cluster

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// partitionFor is how long the worker stays cut off: the issue asks for 30
// to 60 s, long enough for Swarm to call the node down and idepool to
// replace its claimed container elsewhere.
const partitionFor = 30 * time.Second

// s3List lists the object keys under prefix/ in the local S3 store's posix
// directory (docker cp of the directory as a tar: the store's image has no
// shell).
func (c *cluster) s3List(prefix string) ([]string, error) {
	for i := 1; i <= c.nodes; i++ {
		out, err := c.Docker(i, "ps", "-q", "--filter", "label=com.docker.swarm.service.name=idepool_s3")
		if err != nil || strings.TrimSpace(out) == "" {
			continue
		}
		ctr := strings.Fields(out)[0]
		b, err := exec.Command("docker", "exec", c.Node(i), "sh", "-c",
			fmt.Sprintf("docker cp %s:/data/workspaces/%s - | tar -t", ctr, prefix)).Output()
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		var keys []string
		for _, l := range strings.Fields(string(b)) {
			// "prefix/", "prefix/a.txt", versitygw's metadata dirs aside.
			name := strings.TrimPrefix(l, prefix+"/")
			if name == "" || strings.HasSuffix(name, "/") || strings.Contains(name, "/") {
				continue
			}
			keys = append(keys, name)
		}
		return keys, nil
	}
	return nil, fmt.Errorf("no running S3 store container")
}

// TestClusterPartition cuts a worker holding a claimed container off the
// cluster's network for 30 s (docker network disconnect: the node and its
// containers keep running and writing, nobody reaches them), while the
// student goes on in the replacement idepool makes elsewhere. Edits are
// made on both sides of the partition, one file on both. After the heal
// every edit must exist, in the replacement or as a conflict copy in the
// workspace, none silently lost; the stale copy is stopped; the workspace
// ends with one live container. It prints detection, replacement and heal
// times.
func TestClusterPartition(t *testing.T) {
	c, a := stackCluster(t, 3)
	// A worker without the S3 store: cut off with it, nobody could sync.
	victim := 3
	if c.serviceNode("idepool_s3") == victim {
		victim = 2
	}
	cl, prefix := a.claimOn(c, victim, "part")
	// A file both sides will change, synced before the partition: the
	// three-way base of both.
	if err := c.writeFile(victim, cl.ID, "shared.txt", "v1"); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, time.Minute, "shared.txt v1 in S3", func() (bool, string) {
		got, err := c.s3File(prefix + "/shared.txt")
		return got == "v1", fmt.Sprintf("%q %v", got, err)
	})

	// The partition.
	cut := time.Now()
	if out, err := exec.Command("docker", "network", "disconnect", c.name, c.Node(victim)).CombinedOutput(); err != nil {
		t.Fatalf("disconnect %s: %v: %s", c.Node(victim), err, out)
	}
	healed := false
	heal := func() {
		if healed {
			return
		}
		healed = true
		if out, err := exec.Command("docker", "network", "connect", "--ip", c.NodeIP(victim), c.name, c.Node(victim)).CombinedOutput(); err != nil {
			t.Errorf("reconnect %s: %v: %s", c.Node(victim), err, out)
		}
	}
	defer heal()

	// The student's edits on the stale side during the partition (the
	// container still runs; only its network is gone).
	if err := c.writeFile(victim, cl.ID, "shared.txt", "v2 from the stale side"); err != nil {
		t.Fatal(err)
	}
	if err := c.writeFile(victim, cl.ID, "stale.txt", "only on the stale side"); err != nil {
		t.Fatal(err)
	}

	// idepool replaces the claimed container elsewhere.
	nc, took := a.runningElsewhere(c, prefix, victim, cl.ID, 2*time.Minute, "a replacement on another node")
	t.Logf("PARTITION: %s replaced by %s on %s, running %v after the cut", cl.ID, nc.ID, nc.Node, took.Round(time.Millisecond))
	ni := c.nodeIndex(nc.Node)
	if got, err := c.readFile(ni, nc.ID, "shared.txt"); err != nil || got != "v1" {
		t.Errorf("replacement's shared.txt = %q (%v), want the last synced v1", got, err)
	}
	// The student goes on in the replacement.
	if err := c.writeFile(ni, nc.ID, "shared.txt", "v2 from the replacement"); err != nil {
		t.Fatal(err)
	}
	if err := c.writeFile(ni, nc.ID, "new.txt", "only in the replacement"); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, time.Minute, "the replacement's edits in S3", func() (bool, string) {
		s, err1 := c.s3File(prefix + "/shared.txt")
		n, err2 := c.s3File(prefix + "/new.txt")
		return s == "v2 from the replacement" && n == "only in the replacement", fmt.Sprintf("%q %q %v %v", s, n, err1, err2)
	})

	// Hold the partition to its length, then heal.
	if rest := partitionFor - time.Since(cut); rest > 0 {
		time.Sleep(rest) // the fault's length, not a wait for a result
	}
	healAt := time.Now()
	heal()
	t.Logf("PARTITION: healed after %v", healAt.Sub(cut).Round(time.Millisecond))

	// The stale copy is stopped.
	stopped := pollUntil(t, 3*time.Minute, "the stale copy stopped", func() (bool, string) {
		n := c.liveTasks(cl.ID)
		return n == 0, fmt.Sprintf("%d live task containers of %s", n, cl.ID)
	})
	t.Logf("HEAL: the stale copy %s stopped %v after the heal", cl.ID, stopped.Round(time.Millisecond))

	// Every edit exists: the stale side's under its own name or as a
	// conflict copy beside the replacement's newer version.
	var keys []string
	pollUntil(t, 2*time.Minute, "the stale side's edits in the workspace", func() (bool, string) {
		var err error
		keys, err = c.s3List(prefix)
		if err != nil {
			return false, err.Error()
		}
		staleOnly, _ := c.s3File(prefix + "/stale.txt")
		conflict := false
		for _, k := range keys {
			if strings.HasPrefix(k, "shared.") && k != "shared.txt" {
				if got, _ := c.s3File(prefix + "/" + k); got == "v2 from the stale side" {
					conflict = true
				}
			}
		}
		return staleOnly == "only on the stale side" && conflict, fmt.Sprintf("keys %v, stale.txt %q, conflict copy %v", keys, staleOnly, conflict)
	})
	if got, _ := c.s3File(prefix + "/shared.txt"); got != "v2 from the replacement" {
		t.Errorf("shared.txt = %q after the heal: the stale copy overwrote the replacement's edit", got)
	}
	if got, _ := c.s3File(prefix + "/new.txt"); got != "only in the replacement" {
		t.Errorf("new.txt = %q after the heal", got)
	}
	t.Logf("HEAL: workspace %s after the heal: %v", prefix, keys)

	// The replacement sees the stale side's file too, and is the one live
	// container of the workspace.
	pollUntil(t, 2*time.Minute, "stale.txt in the replacement", func() (bool, string) {
		got, err := c.readFile(ni, nc.ID, "stale.txt")
		return got == "only on the stale side", fmt.Sprintf("%q %v", got, err)
	})
	sc, err := a.start(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if sc.ID != nc.ID {
		t.Errorf("start after the heal answered %s, want the replacement %s", sc.ID, nc.ID)
	}
	if n := c.liveTasks(cl.ID) + c.liveTasks(nc.ID); n != 1 {
		t.Errorf("workspace %s: %d live task containers, want 1", prefix, n)
	}
}
