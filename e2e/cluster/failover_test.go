//go:build cluster

package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
)

// TestClusterFailover (issue 17, item 6): idepool runs as a Swarm service
// on 3 managers; the node it runs on is killed (docker kill of the node's
// container: power off). Swarm starts it on another manager; it adopts the
// containers from their labels. The test measures how long the API and the
// IDE traffic through Traefik (ForwardAuth asks idepool) were unavailable,
// probing both through node 1 every 100 ms, and checks after the failover:
// every claimed container still belongs to its workspace, no workspace has
// two containers, every IDE service is a container idepool knows and every
// container it lists has a service (no orphan), and the session cookies
// issued before the failover still open the IDE through both routers.
func TestClusterFailover(t *testing.T) {
	d := sharedManagers(t)
	c := d.c
	ctx := context.Background()

	victim := d.idepoolNode()
	if victim == 1 {
		t.Fatalf("idepool runs on %s, the entry node of this test; the stack keeps it off the S3 store's node 1", c.Node(1))
	}
	t.Logf("idepool runs on %s: that node dies", c.Node(victim))

	// Claimed containers before the failover, one at least on a surviving
	// node, whose session (cookie) is probed throughout.
	type claim struct {
		id, node, workspace, cookie string
	}
	var claims []claim
	var probe *claim
	jar, _ := cookiejar.New(nil)
	for k := 0; probe == nil || len(claims) < 2; k++ {
		if k == 8 {
			t.Fatalf("8 claims, none on a node that survives: %+v", claims)
		}
		prefix := fmt.Sprintf("failover-%d/", k)
		res, err := d.api.Start(ctx, idepoolclient.StartRequest{Bucket: workspaceBucket, Prefix: prefix, UserID: fmt.Sprintf("f%d", k), Wait: true})
		if err != nil {
			t.Fatalf("start %s: %v", prefix, err)
		}
		got, err := d.api.Get(ctx, res.ID)
		if err != nil {
			t.Fatalf("get %s: %v", res.ID, err)
		}
		hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
		// The route of a container just made (a cold claim's) can answer
		// 502 for a moment while the overlay reaches its new task: the
		// session is set up before the fault, not measured here.
		var status int
		for try := 0; ; try++ {
			status, _, err = firstByte(hc, res.URLs.CodeServer)
			if err == nil && status == http.StatusOK {
				break
			}
			if try == 20 {
				t.Fatalf("GET %s: %d %v", redactToken(res.URLs.CodeServer), status, err)
			}
			t.Logf("GET %s: %d %v; again", redactToken(res.URLs.CodeServer), status, err)
			time.Sleep(500 * time.Millisecond)
		}
		cl := claim{id: res.ID, node: got.Node, workspace: workspaceBucket + "/" + prefix, cookie: routeCookie(jar, d.publicURL, res.ID)}
		claims = append(claims, cl)
		if probe == nil && cl.node != c.Node(victim) {
			probe = &claims[len(claims)-1]
		}
	}
	for _, cl := range claims {
		t.Logf("claimed %s on %s for %s", cl.id, cl.node, cl.workspace)
	}
	probeID, probeCookie := probe.id, probe.cookie

	// Probes through node 1's Traefik: the API (an authenticated GET) and
	// the IDE (the probed container's /code/<id>/ with its cookie).
	apiGet := func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := d.api.Get(pctx, probeID)
		return err == nil
	}
	ideGet := func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(pctx, http.MethodGet, d.publicURL+"/code/"+probeID+"/", nil)
		req.Header.Set("Cookie", probeCookie)
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	apiOut, ideOut := &outage{}, &outage{}
	for _, p := range []struct {
		o   *outage
		get func() bool
	}{{apiOut, apiGet}, {ideOut, ideGet}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				p.o.record(p.get())
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	stopProbes := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopProbes()

	// The fault: the node's container is killed (no shutdown of its
	// engine, its tasks or idepool).
	t.Cleanup(func() {
		// The node boots again and rejoins (same address and disk).
		if out, err := exec.Command("docker", "start", c.Node(victim)).CombinedOutput(); err != nil {
			t.Logf("docker start %s: %v: %s", c.Node(victim), err, out)
		}
	})
	killed := time.Now()
	apiOut.mark(killed)
	ideOut.mark(killed)
	if out, err := exec.Command("docker", "kill", c.Node(victim)).CombinedOutput(); err != nil {
		t.Fatalf("docker kill %s: %v: %s", c.Node(victim), err, out)
	}

	pollUntil(t, 3*time.Minute, "the API and the IDE answer again through "+c.Node(1), func() (bool, string) {
		// idepool's process died with its node: the API fails for sure;
		// the IDE traffic may not (when Traefik need not ask idepool).
		a := apiOut.backAfterFailure()
		i := ideOut.backAfterFailure() || (a && !ideOut.failed())
		return a && i, fmt.Sprintf("API back %v, IDE back %v", a, i)
	})
	stopProbes()
	newNode := d.idepoolNode()
	t.Logf("idepool moved from %s to %s; both answer again %v after the kill", c.Node(victim), c.Node(newNode), time.Since(killed).Round(time.Millisecond))
	t.Logf("API unavailable for %v (first failure to last failure %v, %d failed probes)", apiOut.down().Round(time.Millisecond), apiOut.span().Round(time.Millisecond), apiOut.failures)
	t.Logf("IDE traffic through Traefik unavailable for %v (first failure to last failure %v, %d failed probes)", ideOut.down().Round(time.Millisecond), ideOut.span().Round(time.Millisecond), ideOut.failures)
	if newNode == victim {
		t.Fatalf("idepool still on the killed node %s", c.Node(victim))
	}

	// Every claimed container still belongs to its workspace.
	for _, cl := range claims {
		got, err := d.api.Get(ctx, cl.id)
		if err != nil {
			t.Errorf("%s (was on %s) after the failover: %v", cl.id, cl.node, err)
			continue
		}
		if cl.node == c.Node(victim) && got.State == idepool.StateStopped && got.Workspace != nil && got.Workspace.Key() == cl.workspace {
			// It died with its node, which idepool judged lost after
			// its move: replaced for its workspace (TestClusterNodeLoss
			// checks the replacement); the list below checks no two.
			t.Logf("%s (was on the killed %s) replaced after the failover", cl.id, cl.node)
			continue
		}
		if !got.State.Claimed() || got.Workspace == nil || got.Workspace.Key() != cl.workspace {
			t.Errorf("%s (was on %s) after the failover: %s for %+v, want claimed for %s", cl.id, cl.node, got.State, got.Workspace, cl.workspace)
		}
	}

	// No duplicate, no orphan: once the pool is settled, idepool's list
	// and the Swarm's IDE services are the same set, one container per
	// workspace.
	pollUntil(t, 2*time.Minute, "idepool's containers = the Swarm's IDE services, one per workspace", func() (bool, string) {
		all, err := d.api.ListAll(ctx, idepoolclient.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		known := map[string]bool{}
		perWorkspace := map[string][]string{}
		for _, ct := range all {
			known["idepool-"+ct.ID] = true
			if ct.Workspace != nil && ct.State != idepool.StateStopped {
				perWorkspace[ct.Workspace.Key()] = append(perWorkspace[ct.Workspace.Key()], ct.ID)
			}
		}
		for ws, ids := range perWorkspace {
			if len(ids) > 1 {
				return false, fmt.Sprintf("workspace %s has %v", ws, ids)
			}
		}
		out, err := c.Docker(1, "service", "ls", "--filter", "label=idepool.managed=idepool", "--format", "{{.Name}}")
		if err != nil {
			return false, err.Error()
		}
		services := map[string]bool{}
		for _, s := range strings.Fields(out) {
			if !strings.HasPrefix(s, "idepool_") { // the stack's own
				services[s] = true
			}
		}
		for s := range services {
			if !known[s] {
				return false, "orphan service " + s
			}
		}
		for s := range known {
			if !services[s] {
				return false, "container without a service " + s
			}
		}
		return true, ""
	})

	// The sessions opened before the failover still open the IDE (the
	// cookie key is a Swarm secret: the new idepool has the same one).
	for _, cl := range claims {
		if cl.node == c.Node(victim) {
			continue // its container died with the node (node loss is TestClusterNodeLoss's)
		}
		for _, base := range []string{d.publicURL, fmt.Sprintf("%s:%d", d.publicURL, builtinPort)} {
			req, _ := http.NewRequest(http.MethodGet, base+"/code/"+cl.id+"/", nil)
			req.Header.Set("Cookie", cl.cookie)
			res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				t.Errorf("%s through %s with the old cookie: %v", cl.id, base, err)
				continue
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("%s through %s with the old cookie: %s, want 200", cl.id, base, res.Status)
			}
		}
	}
}

// outage follows one probe after a fault: its failed probes, and its first
// answer after the last of them.
type outage struct {
	mu          sync.Mutex
	since       time.Time // the fault
	first, last time.Time // first and last failed probe after it
	recovered   time.Time // first answer after the last failure
	failures    int
	marked      bool
}

func (o *outage) mark(t time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.since, o.marked = t, true
}

func (o *outage) record(ok bool) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case !o.marked:
	case !ok:
		if o.first.IsZero() {
			o.first = now
		}
		o.last, o.failures, o.recovered = now, o.failures+1, time.Time{}
	case !o.first.IsZero() && o.recovered.IsZero():
		o.recovered = now
	}
}

// failed reports whether a probe failed after the fault.
func (o *outage) failed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.first.IsZero()
}

// backAfterFailure: it failed, and answered after its last failure.
func (o *outage) backAfterFailure() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.first.IsZero() && !o.recovered.IsZero()
}

// down is the time from the fault to the first answer after the last
// failure (0 if it never failed).
func (o *outage) down() time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.first.IsZero() {
		return 0
	}
	return o.recovered.Sub(o.since)
}

// span is the time from the first to the last failed probe.
func (o *outage) span() time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last.Sub(o.first)
}
