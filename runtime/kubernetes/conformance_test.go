package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/runtime/kubernetes/k8stest"
	"github.com/idepool/idepool/runtime/runtimetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// testImage is runtime/swarm's placeholder program, built FROM scratch: it
// answers HTTP on every route port and exits 0 on SIGTERM.
const testImage = "idepool-k8stest:placeholder"

func testProfile() idepool.Profile {
	return idepool.Profile{
		Name:        "k8stest",
		Image:       testImage,
		CPULimit:    0.1,
		MemoryLimit: 32 << 20,
		Routes:      idepool.DefaultRoutes(),
	}
}

// env is one test's cluster, with the test image imported and a namespace.
type env struct {
	cl *k8stest.Cluster
	ns string
	// traefik, when set, is given to every runtime opened.
	traefik *TraefikOptions
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cl := k8stest.Require(t)
	cl.GoImage(t, testImage, "./runtime/swarm/testdata/placeholder")
	return &env{cl: cl, ns: cl.Namespace(t, "rttest")}
}

func newDeployment() string { return "k8stest-" + idepool.NewID()[:8] }

// lossyTransport is the real connection to the API server whose next pod
// creation, once armed, succeeds and is then reported as failed, as when
// the answer is lost on the way back: the partial state a later Remove
// must clean.
type lossyTransport struct {
	next  http.RoundTripper
	armed atomic.Bool
}

func (l *lossyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := l.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/pods") &&
		res.StatusCode == http.StatusCreated && l.armed.CompareAndSwap(true, false) {
		res.Body.Close()
		return nil, errors.New("connection reset by peer (injected after the pod was created)")
	}
	return res, err
}

// runtime opens a runtime of deployment dep over its own lossy connection.
func (e *env) runtime(t testing.TB, dep string) (*Runtime, *lossyTransport) {
	t.Helper()
	cfg := rest.CopyConfig(e.cl.Config)
	lt := &lossyTransport{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { lt.next = rt; return lt })
	c, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(Options{Client: c.CoreV1(), Networking: c.NetworkingV1(), Namespace: e.ns, Deployment: dep, StopGracePeriod: 2 * time.Second,
		ImagePullPolicy: corev1.PullNever, ResyncInterval: 5 * time.Second, Traefik: e.traefik})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	t.Cleanup(func() {
		// The safety net behind the tests' own Removes.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		zero := int64(0)
		if err := e.cl.Client.CoreV1().Pods(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
			metav1.ListOptions{LabelSelector: idepool.LabelManaged + "=" + dep}); err != nil {
			t.Errorf("cleanup of deployment %s: %v", dep, err)
		}
	})
	return rt, lt
}

// containerID returns the containerd id of id's IDE container.
func (e *env) containerID(t *testing.T, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, err := e.cl.Client.CoreV1().Pods(e.ns).Get(ctx, PodName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod of %s: %v", id, err)
	}
	cid := k8stest.ContainerID(p, ContainerName)
	if cid == "" {
		t.Fatalf("pod of %s has no container yet", id)
	}
	return cid
}

// kill SIGKILLs id's container through containerd, as a crash would.
func (e *env) kill(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := e.cl.Ctr(ctx, "tasks", "kill", "-s", "SIGKILL", e.containerID(t, id)); err != nil {
		t.Fatalf("kill %s: %v", id, err)
	}
}

// readEnv returns the environment containerd gave id's container (its OCI
// spec): what the process really got, after Kubernetes' expansion.
func (e *env) readEnv(t *testing.T, id string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := e.cl.Ctr(ctx, "containers", "info", e.containerID(t, id))
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Spec struct {
			Process struct {
				Env []string `json:"env"`
			} `json:"process"`
		}
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("container info of %s: %v", id, err)
	}
	m := map[string]string{}
	for _, kv := range info.Spec.Process.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	lossy := map[idepool.Runtime]*lossyTransport{}
	open := func(t *testing.T, dep string) idepool.Runtime {
		rt, lt := e.runtime(t, dep)
		mu.Lock()
		lossy[rt] = lt
		mu.Unlock()
		return rt
	}
	runtimetest.Run(t,
		func(t *testing.T) idepool.Runtime { return open(t, newDeployment()) },
		runtimetest.WithProfile(testProfile()),
		runtimetest.WithTimeoutScale(4),
		runtimetest.WithConcurrency(6),
		runtimetest.WithDeployment(func(rt idepool.Runtime) string { return rt.(*Runtime).Deployment() }),
		runtimetest.WithKill(func(t *testing.T, rt idepool.Runtime, id string) { e.kill(t, id) }),
		runtimetest.WithFailNextCreate(func(t *testing.T, rt idepool.Runtime) {
			mu.Lock()
			defer mu.Unlock()
			lossy[rt].armed.Store(true)
		}),
		runtimetest.WithReopen(func(t *testing.T, old idepool.Runtime) idepool.Runtime {
			return open(t, old.(*Runtime).Deployment())
		}),
		runtimetest.WithOtherDeployment(func(t *testing.T, rt idepool.Runtime) idepool.Runtime { return open(t, newDeployment()) }),
		runtimetest.WithReadEnv(func(t *testing.T, rt idepool.Runtime, inst idepool.Instance) map[string]string {
			return e.readEnv(t, inst.ID)
		}),
	)
}
