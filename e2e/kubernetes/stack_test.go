//go:build kubernetes

// Package kubernetes_test is idepool's end-to-end test on a real Kubernetes:
// the single-node cluster of deploy/kubernetes/cluster.sh (built here from
// the Go module proxy), idepool deployed into it by the project's own Helm
// chart (with its Traefik) or manifests (deploy/kubernetes/manifests,
// through kubectl kustomize), the
// S3 server (versitygw) on the host, reached from the pods by the node's
// address. The test talks to idepool through its Service, as a user in the
// cluster would.
//
// The build tag keeps it out of `go test ./...` (root, a cluster, minutes);
// scripts/test.sh runs it with CI=true:
//
//	go test -tags kubernetes -count=1 -v ./e2e/kubernetes/
//	go test -tags kubernetes -run '^$' -bench . -benchtime 1x ./e2e/kubernetes/
package kubernetes_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	idepoolclient "github.com/idepool/idepool/client"
	"github.com/idepool/idepool/internal/e2etest"
	"github.com/idepool/idepool/internal/s3test"
	rtk8s "github.com/idepool/idepool/runtime/kubernetes"
	"github.com/idepool/idepool/runtime/kubernetes/k8stest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	bucket       = "e2e"
	idepoolImage = "idepool:dev"
	ideImage     = "idepool-ide:test"
	poolSize     = 3
	helmVersion  = "v3.20.2" // deploy/kubernetes/build.sh
	// traefikImage is deploy/build-traefik.sh's (FROM scratch, the binary).
	traefikImage = "idepool-traefik:v3.6.12"
)

// stack is idepool deployed in a namespace of its own.
type stack struct {
	t      testing.TB
	cl     *k8stest.Cluster
	ns     string
	apiKey string
	apiURL string // http://<the Service's cluster IP>:3001
	// traefikURL is the chart's Traefik (http://<its cluster IP>:80), ""
	// without.
	traefikURL string
	api        *idepoolclient.Client
	s3         *s3test.Server
}

type stackOptions struct {
	poolTarget int
	// chart deploys with Helm (deploy/kubernetes/chart); otherwise the
	// plain manifests through kubectl kustomize.
	chart bool
	// traefik (with chart): the chart's Traefik routes the IDE pods too
	// (ROUTER=traefik), beside idepool's built-in router.
	traefik bool
	// profiles are more profiles' JSON objects, comma-separated.
	profiles string
}

// buildImages builds idepool:dev and idepool-ide:test (deploy/build-images.sh,
// idempotent) and imports them into the cluster's containerd.
func buildImages(t testing.TB, cl *k8stest.Cluster) {
	t.Helper()
	root := e2etest.RepoRoot(t)
	cmd := exec.Command("bash", filepath.Join(root, "deploy", "build-images.sh"))
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build-images.sh: %v\n%s", err, out)
	}
	cl.Import(t, idepoolImage, ideImage)
}

// startS3 runs versitygw on the host, on the node's address: the pods reach
// it there (through their bridge's gateway), and so does the test.
func startS3(t testing.TB, nodeIP string) *s3test.Server {
	t.Helper()
	s := s3test.StartOn(t, nodeIP)
	s.CreateBucket(t, bucket)
	return s
}

// newStack deploys idepool into a new namespace with the manifests and
// waits until its API answers. The namespace (and all in it) goes at the
// end; cluster-wide objects are removed too.
func newStack(t testing.TB, so stackOptions) *stack {
	t.Helper()
	cl := k8stest.Require(t)
	buildImages(t, cl)
	if so.traefik {
		cl.Import(t, traefikImage)
	}
	s := &stack{t: t, cl: cl, ns: cl.Namespace(t, "e2e"), apiKey: e2etest.RandomHex(24)}
	s.s3 = startS3(t, cl.Env["K8S_NODE_IP"])
	// A fixed cluster IP: the agents dial it (there is no cluster DNS in
	// the test cluster; a real one would use idepool.<ns>.svc).
	third := 10 + mrand.IntN(240)
	clusterIP := fmt.Sprintf("100.64.%d.%d", third, 10+mrand.IntN(240))
	s.apiURL = "http://" + clusterIP + ":3001"
	traefikIP := fmt.Sprintf("100.64.%d.%d", third+1, 10+mrand.IntN(240))

	profiles := `{"profiles": [
	  {"name": "default", "cpuReservation": 0.05},
	  {"name": "huge", "image": "` + ideImage + `", "cpuLimit": 64, "memoryLimit": "1TiB", "poolTarget": 0},
	  {"name": "big", "image": "` + ideImage + `", "cpuLimit": 1.2, "cpuReservation": 1.2, "memoryLimit": "96MiB", "poolTarget": 0}` + so.profiles + `
	]}`
	config := map[string]string{
		"DEPLOYMENT":             s.ns,
		"PUBLIC_URL":             s.apiURL,
		"AGENT_URL":              s.apiURL,
		"IDE_CONTAINER_IMAGE":    ideImage,
		"PRE_WARMED_QUEUE_SIZE":  fmt.Sprint(so.poolTarget),
		"CONTAINER_CPU_LIMIT":    "1",
		"CONTAINER_MEMORY_LIMIT": "96MiB",
		"PROFILES_FILE":          "/config/profiles.json",
		"S3_ENDPOINT":            s.s3.Endpoint,
		"AWS_REGION":             s.s3.Region,
		"STOP_GRACE_PERIOD":      "10s",
		"LOG_LEVEL":              "debug",
	}
	secret := map[string]string{
		"API_KEY":               s.apiKey,
		"AWS_ACCESS_KEY_ID":     s.s3.AccessKey,
		"AWS_SECRET_ACCESS_KEY": s.s3.SecretKey,
	}
	if so.traefik {
		// Traefik's Service by address: the test cluster has no DNS.
		s.traefikURL = "http://" + traefikIP + ":80"
		config["TRAEFIK_URL"] = s.traefikURL
	}
	if so.chart {
		s.helmInstall(t, clusterIP, traefikIP, so.traefik, config, secret, profiles)
	} else {
		s.createConfig(t, config, secret, profiles)
		s.apply(t, clusterIP)
	}

	api, err := idepoolclient.New(s.apiURL, s.apiKey, idepoolclient.Options{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s.api = api
	s.waitHealthy(3 * time.Minute)
	return s
}

// createConfig makes what the manifests expect the operator to make: the
// ConfigMaps idepool-config and idepool-profiles, the Secrets idepool and
// idepool-router.
func (s *stack) createConfig(t testing.TB, config, secret map[string]string, profiles string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	core := s.cl.Client.CoreV1()
	for _, cm := range []*corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Name: "idepool-config"}, Data: config},
		{ObjectMeta: metav1.ObjectMeta{Name: "idepool-profiles"}, Data: map[string]string{"profiles.json": profiles}},
	} {
		if _, err := core.ConfigMaps(s.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create configmap %s: %v", cm.Name, err)
		}
	}
	for _, sec := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "idepool"}, StringData: secret},
		{ObjectMeta: metav1.ObjectMeta{Name: "idepool-router"}, StringData: map[string]string{"router-secret": e2etest.RandomHex(32)}},
	} {
		if _, err := core.Secrets(s.ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create secret %s: %v", sec.Name, err)
		}
	}
}

// helmInstall renders the chart (helm template, a check of its own) and
// installs it as release idepool with these values, as an operator would.
func (s *stack) helmInstall(t testing.TB, clusterIP, traefikIP string, traefik bool, config, secret map[string]string, profiles string) {
	t.Helper()
	helm := filepath.Join(s.cl.Env["K8S_CACHE"], "helm-"+helmVersion)
	if _, err := os.Stat(helm); err != nil {
		k8stest.Missing(t, "helm not built (deploy/kubernetes/build.sh): %v", err)
	}
	dir := t.TempDir()
	values := map[string]any{
		"image":    map[string]any{"repository": "idepool", "tag": "dev", "pullPolicy": "IfNotPresent"},
		"config":   config,
		"secrets":  secret,
		"profiles": profiles,
		"service":  map[string]any{"clusterIP": clusterIP},
	}
	if traefik {
		values["traefik"] = map[string]any{"enabled": true, "service": map[string]any{"clusterIP": traefikIP}}
	}
	vf := filepath.Join(dir, "values.json") // JSON is YAML
	if err := os.WriteFile(vf, []byte(jsonString(values)), 0o600); err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(e2etest.RepoRoot(t), "deploy", "kubernetes", "chart")
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, helm, append(args, "--kubeconfig", s.cl.Env["KUBECONFIG"])...)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(dir, "cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, "config"),
			"HELM_DATA_HOME="+filepath.Join(dir, "data"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	rendered := run("template", "idepool", chart, "-n", s.ns, "-f", vf)
	for _, kind := range []string{"kind: Deployment", "kind: Service", "kind: Role", "kind: ClusterRole", "kind: NetworkPolicy"} {
		if !strings.Contains(rendered, kind) {
			t.Errorf("helm template renders no %s", kind)
		}
	}
	if traefik {
		for _, want := range []string{"name: idepool-traefik", "ROUTER: traefik", "idepool-auth:", `resources: ["ingresses"]`} {
			if !strings.Contains(rendered, want) {
				t.Errorf("helm template with traefik.enabled renders no %q", want)
			}
		}
	}
	start := time.Now()
	run("install", "idepool", chart, "-n", s.ns, "-f", vf)
	t.Logf("helm install in %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if s.t.Failed() {
			s.t.Logf("idepool logs:\n%s", s.logs())
		}
		// idepool first (the namespace's deletion would race with a pool
		// that refills), then the cluster-wide objects with the release.
		s.stopIdepool()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, helm, "uninstall", "idepool", "-n", s.ns, "--kubeconfig", s.cl.Env["KUBECONFIG"])
		if out, err := cmd.CombinedOutput(); err != nil {
			s.t.Errorf("helm uninstall: %v\n%s", err, out)
		}
	})
}

// stopIdepool deletes idepool's Deployment and waits until its pod is gone.
func (s *stack) stopIdepool() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = s.cl.Client.AppsV1().Deployments(s.ns).Delete(ctx, "idepool", metav1.DeleteOptions{})
	for ctx.Err() == nil {
		pl, err := s.cl.Client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=idepool"})
		if err != nil || len(pl.Items) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// apply renders the manifests through an overlay (this namespace, a fixed
// cluster IP, cluster-wide names of its own) with kubectl kustomize and
// applies them, as an operator would.
func (s *stack) apply(t testing.TB, clusterIP string) {
	t.Helper()
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(e2etest.RepoRoot(t), "deploy", "kubernetes", "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	nodes := "idepool-nodes-" + s.ns
	overlay := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: %[1]s
resources:
  - %[2]s
patches:
  - target: {kind: Namespace, name: idepool}
    patch: |
      $patch: delete
      apiVersion: v1
      kind: Namespace
      metadata: {name: idepool}
  - target: {kind: Service, name: idepool}
    patch: |
      - op: add
        path: /spec/clusterIP
        value: %[3]s
  - target: {kind: ClusterRole, name: idepool-nodes}
    patch: |
      - op: replace
        path: /metadata/name
        value: %[4]s
  - target: {kind: ClusterRoleBinding, name: idepool-nodes}
    patch: |
      - op: replace
        path: /metadata/name
        value: %[4]s
      - op: replace
        path: /roleRef/name
        value: %[4]s
      - op: replace
        path: /subjects/0/namespace
        value: %[1]s
`, s.ns, base, clusterIP, nodes)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	rendered := s.kubectl(t, nil, "kustomize", dir)
	s.kubectl(t, []byte(rendered), "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rbac := s.cl.Client.RbacV1()
		_ = rbac.ClusterRoleBindings().Delete(ctx, nodes, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(ctx, nodes, metav1.DeleteOptions{})
	})
	// idepool first, then the pods it made: the namespace's deletion at
	// cleanup would otherwise race with a pool that refills.
	t.Cleanup(func() {
		if s.t.Failed() {
			s.t.Logf("idepool logs:\n%s", s.logs())
		}
		s.stopIdepool()
	})
}

// kubectl runs the cluster's kubectl with stdin and returns its output.
func (s *stack) kubectl(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kc := s.cl.Env["KUBECONFIG"]
	cmd := exec.CommandContext(ctx, filepath.Join(filepath.Dir(kc), "bin", "kubectl"), append([]string{"--kubeconfig", kc}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// logs returns the tail of idepool's logs (its current pod's).
func (s *stack) logs() string {
	kc := s.cl.Env["KUBECONFIG"]
	out, _ := exec.Command(filepath.Join(filepath.Dir(kc), "bin", "kubectl"), "--kubeconfig", kc, "-n", s.ns,
		"logs", "deployment/idepool", "--tail", "80").CombinedOutput()
	return string(out)
}

// waitHealthy waits until idepool's API answers.
func (s *stack) waitHealthy(d time.Duration) {
	s.t.Helper()
	e2etest.WaitHealthy(s.t, s.api, d, 200*time.Millisecond, s.logs)
}

// waitPool waits until profile's pool has want warm containers.
func (s *stack) waitPool(profile string, want int, d time.Duration) idepool.PoolStatus {
	s.t.Helper()
	return e2etest.WaitPool(s.t, s.api, profile, want, d, s.logs)
}

// idePods returns the deployment's IDE pods by name.
func (s *stack) idePods() map[string]corev1.Pod {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pl, err := s.cl.Client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: idepool.LabelManaged + "=" + s.ns})
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range pl.Items {
		if p.DeletionTimestamp == nil {
			out[p.Name] = p
		}
	}
	return out
}

// writeWorkspace writes a file into a container's /workspace from the host,
// through the container's root file system as containerd mounted it (the
// image has no shell for kubectl exec or cp).
func (s *stack) writeWorkspace(t testing.TB, id, name, content string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := s.cl.Client.CoreV1().Pods(s.ns).Get(ctx, rtk8s.PodName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cid := k8stest.ContainerID(p, rtk8s.ContainerName)
	out, err := s.cl.Ctr(ctx, "tasks", "ls")
	if err != nil || !strings.Contains(string(out), cid) {
		t.Fatalf("container %s of %s not running: %v\n%s", cid, id, err, out)
	}
	root := filepath.Join(filepath.Dir(s.cl.Env["K8S_CONTAINERD"]), "containerd", "io.containerd.runtime.v2.task", "k8s.io", cid, "rootfs")
	path := filepath.Join(root, "workspace", name)
	if err := os.WriteFile(path+".tmp", []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := os.Chown(path+".tmp", 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// firstByte GETs url until it is not 503 "no endpoint yet" (the pool calls
// a container warm when its agent says hello, which on Kubernetes can come
// before the kubelet has reported the pod's address: see the report of
// issue 19), at most 15 s; it returns the last answer, the time from the
// first try to the answer's first byte, and how many 503s came first.
func firstByte(hc *http.Client, url, cookie string) (status int, body string, d time.Duration, retries int, err error) {
	start := time.Now()
	for {
		status, body, _, err = e2etest.HTTPGet(hc, url, cookie)
		if err != nil || status != http.StatusServiceUnavailable || !strings.Contains(body, "no endpoint yet") || time.Since(start) > 15*time.Second {
			return status, body, time.Since(start), retries, err
		}
		retries++
		time.Sleep(20 * time.Millisecond)
	}
}

// apiJSON sends a JSON request to idepool's API and decodes the answer.
func (s *stack) apiJSON(method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(jsonString(body))
	}
	req, err := http.NewRequest(method, s.apiURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out := map[string]any{}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, err
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
