package server_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idepool/idepool"
)

// TestHealthReplacesUnresponsiveWorkload is issue 5's health promise end to
// end on the process runtime, with real agents supervising a real workload
// (python's http.server on the code route): a workload that stops answering
// (SIGSTOP: alive, but silent) is detected by the health monitor; a warm
// container is stopped (reason unhealthy) and the pool refills; a claimed
// one is reported unhealthy (API and event) and then replaced in place by a
// new container bound to the same workspace with its files intact, the old
// id pointing to the new one (replacedBy, and a redirect for the holder of
// the old route cookie).
func TestHealthReplacesUnresponsiveWorkload(t *testing.T) {
	python := realPython(t)
	dataDir := t.TempDir()
	cleanupContainers(t, dataDir)
	cfg := e2eConfig(t, dataDir, 2, 0)
	cfg.ProfilesFile = writeProfilesFile(t, map[string]any{
		"name":   "default",
		"routes": []map[string]any{{"name": "code", "port": 8080}},
		"workloads": []map[string]any{{"name": "code", "command": []string{"sh", "-c",
			`exec "$0" -m http.server --bind 127.0.0.1 "$IDEPOOL_PORT_CODE"`, python}}},
	})
	in := start(t, cfg)
	defer in.stop(t)
	in.waitPool(t, "2 warm", time.Minute, func(w, s, c int) bool { return w == 2 && s == 0 })

	t.Run("warm", func(t *testing.T) {
		victim := listIDs(t, in)
		var id string
		for k, st := range victim {
			if st == string(idepool.StateWarm) {
				id = k
				break
			}
		}
		frozen := freezeWorkload(t, dataDir, id)

		ev := in.waitEvent(t, id, 30*time.Second, "health unhealthy", func(e idepool.Event) bool {
			return e.Type == idepool.EventHealth && e.Data["status"] == string(idepool.HealthUnhealthy)
		})
		t.Logf("warm %s: unhealthy %v after its workload froze (interval %v, timeout %v, retries %d)",
			id, ev.Time.Sub(frozen).Round(time.Millisecond), cfg.HealthCheckInterval, cfg.HealthCheckTimeout, cfg.HealthCheckRetries)
		in.waitEvent(t, id, 45*time.Second, "stopped (unhealthy)", func(e idepool.Event) bool {
			return e.Type == idepool.EventStopped && e.Reason == idepool.ReasonUnhealthy
		})
		code, c := in.getContainer(t, id)
		if code != 200 || c.State != string(idepool.StateStopped) || c.ShutdownReason != idepool.ReasonUnhealthy {
			t.Errorf("GET %s after its stop: %d state %q reason %q, want stopped/unhealthy", id, code, c.State, c.ShutdownReason)
		}
		// The pool refills with a new warm container.
		pollUntil(t, "a new warm container", 45*time.Second, func() (bool, string) {
			ids := listIDs(t, in)
			warm := 0
			for k, st := range ids {
				if st == string(idepool.StateWarm) && k != id {
					warm++
				}
			}
			return warm == 2, fmt.Sprint(ids)
		})
		t.Logf("warm %s: stopped and the pool back to 2 warm %v after the freeze (%v after the verdict)",
			id, time.Since(frozen).Round(time.Millisecond), time.Since(ev.Time).Round(time.Millisecond))
	})

	t.Run("claimed", func(t *testing.T) {
		const bucket, prefix, file, body = "health-claimed", "students/alice", "notes.txt", "work that must survive\n"
		var res startJSON
		if code := in.call(t, "POST", "/api/containers/start?wait=ready", map[string]any{"s3Bucket": bucket, "s3Prefix": prefix, "userId": "alice"}, &res); code != 201 {
			t.Fatalf("start: %d %+v", code, res)
		}
		old := res.ID
		pollUntil(t, "claimed container running", 30*time.Second, func() (bool, string) {
			_, c := in.getContainer(t, old)
			return c.State == string(idepool.StateRunning), c.State
		})
		// The user's route cookie, before anything goes wrong.
		user, routeBase := routeClient(t, res.URLs["codeServer"])

		// Work in the workspace, synced to S3 by the agent.
		if err := os.WriteFile(filepath.Join(dataDir, "containers", old, "workspace", file), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		store := embeddedS3Client(t, cfg.DataDir, cfg.S3EmbeddedAddr)
		key := prefix + "/" + file
		pollUntil(t, "the file in S3", 30*time.Second, func() (bool, string) {
			got, err := getObject(store, bucket, key)
			return err == nil && got == body, fmt.Sprintf("%q %v", got, err)
		})

		frozen := freezeWorkload(t, dataDir, old)

		// Reported: the verdict is in the API and on the event stream.
		ev := in.waitEvent(t, old, 30*time.Second, "health unhealthy", func(e idepool.Event) bool {
			return e.Type == idepool.EventHealth && e.Data["status"] == string(idepool.HealthUnhealthy)
		})
		t.Logf("claimed %s: unhealthy %v after its workload froze", old, ev.Time.Sub(frozen).Round(time.Millisecond))
		pollUntil(t, "GET shows unhealthy", 30*time.Second, func() (bool, string) {
			_, c := in.getContainer(t, old)
			return c.Health.Status == string(idepool.HealthUnhealthy), fmt.Sprintf("%+v", c.Health)
		})

		// Replaced in place: a new container for the same workspace.
		var newID string
		pollUntil(t, "replacedBy", 50*time.Second, func() (bool, string) {
			_, c := in.getContainer(t, old)
			newID = c.ReplacedBy
			return newID != "", fmt.Sprintf("state %s reason %q", c.State, c.ShutdownReason)
		})
		t.Logf("claimed %s: replaced by %s %v after the freeze (%v after the verdict)",
			old, newID, time.Since(frozen).Round(time.Millisecond), time.Since(ev.Time).Round(time.Millisecond))
		code, oc := in.getContainer(t, old)
		if code != 200 || oc.State != string(idepool.StateStopped) || oc.ShutdownReason != idepool.ReasonUnhealthy {
			t.Errorf("GET old %s: %d state %q reason %q, want stopped/unhealthy", old, code, oc.State, oc.ShutdownReason)
		}
		in.waitEvent(t, newID, 10*time.Second, "claim replacing the old one", func(e idepool.Event) bool {
			return e.Type == idepool.EventClaim && e.Data["replaces"] == old && e.Reason == idepool.ReasonUnhealthy
		})
		pollUntil(t, "replacement running", 30*time.Second, func() (bool, string) {
			_, c := in.getContainer(t, newID)
			return c.State == string(idepool.StateRunning), c.State
		})
		_, nc := in.getContainer(t, newID)
		if nc.Workspace == nil || nc.Workspace.Bucket != bucket || idepool.NormalizePrefix(nc.Workspace.Prefix) != prefix+"/" {
			t.Fatalf("replacement %s workspace %+v, want %s/%s", newID, nc.Workspace, bucket, prefix)
		}
		// The workspace is intact: in S3 and in the new container.
		if got, err := getObject(store, bucket, key); err != nil || got != body {
			t.Errorf("S3 after the replacement: %q %v", got, err)
		}
		local := filepath.Join(dataDir, "containers", newID, "workspace", file)
		pollUntil(t, "the file in the replacement's workspace", 10*time.Second, func() (bool, string) {
			b, err := os.ReadFile(local)
			return err == nil && string(b) == body, fmt.Sprintf("%q %v", b, err)
		})

		// The old cookie's holder is sent to the replacement, whose route
		// answers with the workspace listed.
		res2, err := user.Get(routeBase + "/code/" + old + "/")
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(res2.Body)
		res2.Body.Close()
		loc, _ := url.Parse(res2.Header.Get("Location"))
		if res2.StatusCode != http.StatusTemporaryRedirect || loc == nil || loc.Path != "/code/"+newID+"/" || loc.Query().Get("token") == "" {
			t.Fatalf("old route with the old cookie: %d Location %q %s, want 307 to /code/%s/?token=…", res2.StatusCode, res2.Header.Get("Location"), msg, newID)
		}
		res3, err := user.Get(routeBase + loc.RequestURI()) // token → cookie → 302
		if err != nil {
			t.Fatal(err)
		}
		res3.Body.Close()
		if res3.StatusCode != http.StatusFound {
			t.Fatalf("token of the redirect: %d", res3.StatusCode)
		}
		res4, err := user.Get(routeBase + "/code/" + newID + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(res4.Body)
		res4.Body.Close()
		if res4.StatusCode != 200 || !strings.Contains(string(page), file) {
			t.Fatalf("replacement's route: %d, want 200 listing %s: %.300s", res4.StatusCode, file, page)
		}
	})
}

// freezeWorkload stops (SIGSTOP) the workload process group of container id:
// alive, holding its port, but answering nothing. The group is killed when
// the test ends, whatever became of the container. It returns when it froze.
func freezeWorkload(t *testing.T, dataDir, id string) time.Time {
	t.Helper()
	agent := agentPID(t, dataDir, id)
	var pid int
	pollUntil(t, "workload process of "+id, 10*time.Second, func() (bool, string) {
		var err error
		pid, err = childPID(agent, "http.server")
		return err == nil, fmt.Sprint(err)
	})
	// The workload leads its own process group (the agent starts it so).
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP workload %d of %s: %v", pid, id, err)
	}
	t.Cleanup(func() {
		// Only if it is still ours (pids are reused).
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmd), "http.server") {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	t.Logf("froze workload %d of %s", pid, id)
	return time.Now()
}
