// Package kubernetes is the idepool Runtime on Kubernetes: each container is
// one Pod named idepool-<id> in the runtime's namespace, with restart policy
// Never (a container that dies stays failed and the pool replaces it, as on
// Swarm). The Pod is the record of truth: its labels (idepool.managed and
// idepool.id, for selection) and its annotations label.idepool.io/<key>,
// which hold idepool's labels verbatim (Kubernetes label values cannot hold
// timestamps or S3 prefixes). Status comes from the Pod's phase and its
// container's state, events from an informer (a watch with resync), the
// admission figures from the nodes' allocatable resources minus the requests
// of the pods placed on them.
//
// The package uses k8s.io/client-go; its tests run against a real cluster
// (deploy/kubernetes/cluster.sh builds one on this machine).
package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idepool/idepool"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Names the runtime writes on every Pod.
const (
	// AnnotationPrefix + an idepool label key is the annotation that holds
	// the label's value.
	AnnotationPrefix = "label.idepool.io/"
	// ContainerName is the Pod's one container.
	ContainerName = "ide"
	podPrefix     = "idepool-"
)

// Paths inside every IDE container (the images agree on them; the same as
// runtime/swarm's).
const (
	WorkspaceDir = "/workspace"
	StateDir     = "/var/lib/idepool-agent"
)

// EnvAllowedPeers tells the agent which peers may connect to the route
// ports (agent.EnvAllowedPeers, not imported: the runtime does not depend on
// the agent).
const EnvAllowedPeers = "IDEPOOL_ALLOWED_PEERS"

// PodName returns the Pod name of container id.
func PodName(id string) string { return podPrefix + id }

// Options configure a Runtime. Zero fields take the defaults listed.
type Options struct {
	// Client talks to the cluster's core API (a clientset's CoreV1()); nil
	// makes one from Config. Only the core group's client: the whole
	// clientset would link every API group into idepool's binary (which is
	// also the agent of every IDE image).
	Client corev1client.CoreV1Interface
	// Networking talks to the networking.k8s.io group (Ingresses), needed
	// with Traefik; nil makes one from Config (an error with Client set).
	Networking networkingv1client.NetworkingV1Interface
	// Config is the API server's address and credentials when Client is
	// nil; nil: in-cluster (the pod's service account), else KUBECONFIG
	// or ~/.kube/config.
	Config *rest.Config
	// Namespace holds the Pods; "": the namespace idepool's own pod runs
	// in, else "default".
	Namespace string
	// Deployment is LabelManaged's value ("idepool"); it must be a valid
	// Kubernetes label value.
	Deployment string
	// ImagePullPolicy of the IDE container (IfNotPresent).
	ImagePullPolicy corev1.PullPolicy
	// NodeSelector and Tolerations are put on every Pod (the profile's
	// constraints come on top as node affinity).
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// AllowedPeers are the DNS names of the only peers the agent lets reach
	// the route ports (IDEPOOL_ALLOWED_PEERS); none: no relay.
	AllowedPeers []string
	// Traefik, when set, routes the Pods through Traefik's Kubernetes
	// Ingress provider (ingress.go); nil: only idepool's built-in router
	// reaches them, at their addresses.
	Traefik *TraefikOptions
	// StopGracePeriod between SIGTERM and SIGKILL (the Pod's
	// terminationGracePeriodSeconds; 10s).
	StopGracePeriod time.Duration
	// ResyncInterval is the informer's resync period behind Events (30s).
	ResyncInterval time.Duration
	// CallTimeout bounds each API call (30s).
	CallTimeout time.Duration
	Logger      *slog.Logger
	Clock       idepool.Clock
}

// Runtime is an idepool.Runtime on Kubernetes.
type Runtime struct {
	o   Options
	c   corev1client.CoreV1Interface
	net networkingv1client.NetworkingV1Interface // nil without Traefik
	ns  string
	log *slog.Logger

	// podsScope is "" while listing the pods of every namespace (for
	// Nodes) is allowed, else the namespace it falls back to once the
	// cluster said Forbidden.
	podsScope atomic.Pointer[string]
	// labelLocks serialise SetLabels per container (striped by id).
	labelLocks [32]sync.Mutex
	// uids remembers the UID of each Pod of ours seen (id → types.UID), so
	// that SetLabels (every claim writes labels) is one PATCH, not a GET
	// and a PATCH: the UID in the patch makes it land on that Pod or fail.
	uids sync.Map
}

var _ idepool.Runtime = (*Runtime)(nil)

// New returns a Runtime. It does not contact the cluster; Ping does.
func New(o Options) (*Runtime, error) {
	if o.Deployment == "" {
		o.Deployment = "idepool"
	}
	if errs := validation.IsValidLabelValue(o.Deployment); len(errs) > 0 {
		return nil, fmt.Errorf("kubernetes runtime: deployment %q is not a valid label value: %s", o.Deployment, strings.Join(errs, "; "))
	}
	if o.ImagePullPolicy == "" {
		o.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if o.StopGracePeriod <= 0 {
		o.StopGracePeriod = 10 * time.Second
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = 30 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = idepool.SystemClock{}
	}
	if t := o.Traefik; t != nil && (t.AuthMiddleware == "" || t.StripMiddleware == "") {
		return nil, errors.New("kubernetes runtime: traefik routing needs the ForwardAuth and strip-prefix middlewares' names")
	}
	c, nc := o.Client, o.Networking
	if c == nil || (nc == nil && o.Traefik != nil) {
		if o.Client != nil {
			return nil, errors.New("kubernetes runtime: traefik routing with a given Client needs a Networking client too")
		}
		cfg := o.Config
		if cfg == nil {
			var err error
			if cfg, err = LoadConfig(); err != nil {
				return nil, fmt.Errorf("kubernetes runtime: %w", err)
			}
		}
		// The API server's warnings (e.g. that kubernetes.io/ingress.class
		// is deprecated, which Traefik still reads) go to our log, not to
		// klog on stderr once per object.
		cfg = rest.CopyConfig(cfg)
		cfg.WarningHandlerWithContext = warningLogger{o.Logger}
		var err error
		if c, err = corev1client.NewForConfig(cfg); err != nil {
			return nil, fmt.Errorf("kubernetes runtime: client: %w", err)
		}
		if o.Traefik != nil {
			if nc, err = networkingv1client.NewForConfig(cfg); err != nil {
				return nil, fmt.Errorf("kubernetes runtime: networking client: %w", err)
			}
		}
	}
	ns := o.Namespace
	if ns == "" {
		ns = inClusterNamespace()
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Runtime{o: o, c: c, ns: ns, log: log.With("runtime", "kubernetes", "namespace", ns)}
	if o.Traefik != nil {
		r.net = nc
	}
	return r, nil
}

// LoadConfig returns the in-cluster configuration when running in a pod,
// else KUBECONFIG's (or ~/.kube/config's), with a client rate limit fit for
// a pool that creates and lists pods in bursts (client-go's default of 5
// requests a second would throttle a warm-up of ten containers).
func LoadConfig() (*rest.Config, error) {
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("load kubernetes client configuration: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

// warningLogger logs the API server's warnings at debug level.
type warningLogger struct{ log *slog.Logger }

func (w warningLogger) HandleWarningHeaderWithContext(ctx context.Context, code int, agent, text string) {
	if w.log != nil {
		w.log.DebugContext(ctx, "kubernetes api warning", "code", code, "text", text)
	}
}

// inClusterNamespace is the namespace of the pod this process runs in.
func inClusterNamespace() string {
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if ns := strings.TrimSpace(string(b)); err == nil && ns != "" {
		return ns
	}
	return "default"
}

// Name returns "kubernetes".
func (r *Runtime) Name() string { return "kubernetes" }

// Namespace returns the namespace of the Pods.
func (r *Runtime) Namespace() string { return r.ns }

// Deployment returns LabelManaged's value for this runtime.
func (r *Runtime) Deployment() string { return r.o.Deployment }

// Client returns the cluster client.
func (r *Runtime) Client() corev1client.CoreV1Interface { return r.c }

// Capabilities: the scheduler holds the requests (reservations) across
// nodes. Pods have a network of their own, but which addresses it has is
// the CNI's business (node podCIDRs are optional): AGENT_NETWORKS says it.
func (r *Runtime) Capabilities() idepool.Capabilities {
	return idepool.Capabilities{Reservations: true, Nodes: r.Nodes, NodeStates: r.NodeStates}
}

// Ping checks that the API server answers and that the namespace exists.
func (r *Runtime) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	if _, err := r.c.Pods(r.ns).List(ctx, metav1.ListOptions{Limit: 1, LabelSelector: r.selector()}); err != nil {
		return kubeError(err, "list pods in namespace %s", r.ns)
	}
	return nil
}

func (r *Runtime) selector() string { return idepool.LabelManaged + "=" + r.o.Deployment }

// Create makes the Pod idepool-<id> and returns at once (pending).
func (r *Runtime) Create(ctx context.Context, spec idepool.ContainerSpec) (idepool.Instance, error) {
	if err := idepool.CheckImageSpec(spec); err != nil {
		return idepool.Instance{}, err
	}
	pod, err := r.o.podSpec(r.ns, spec, r.o.Clock.Now())
	if err != nil {
		return idepool.Instance{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	got, err := r.c.Pods(r.ns).Create(cctx, pod, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsAlreadyExists(err) {
			return idepool.Instance{}, idepool.WrapError(idepool.EExists, err, "container %s already exists", spec.ID)
		}
		return idepool.Instance{}, kubeError(err, "create pod %s", pod.Name)
	}
	r.log.Debug("pod created", "container", spec.ID, "pod", got.Name, "image", spec.Profile.Image)
	if r.o.Traefik != nil {
		if err := r.ensureRoutes(ctx, got, nil); err != nil {
			// A Pod Traefik cannot route would be warm and useless: it
			// goes (with whatever of its routes was made, their owner).
			zero := int64(0)
			if derr := r.delete(context.WithoutCancel(ctx), got, &zero); derr != nil {
				r.log.Warn("remove pod without routes", "container", spec.ID, "err", derr)
			}
			return idepool.Instance{}, err
		}
	}
	r.uids.Store(spec.ID, got.UID)
	return r.instance(got), nil
}

// Remove deletes the Pod (its grace period is StopGracePeriod) and waits
// until the object is gone, which is when the kubelet has stopped its
// containers. Unknown ids and Pods of other deployments give nil, untouched.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if !idepool.ValidID(id) {
		return nil
	}
	pod, err := r.pod(ctx, id)
	switch {
	case idepool.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	r.uids.Delete(id)
	if err := r.delete(ctx, pod, nil); err != nil {
		return err
	}
	r.log.Debug("pod deleted", "container", id, "pod", pod.Name)
	return r.waitGone(ctx, pod)
}

// delete deletes exactly this Pod (its UID: never a later Pod of the same
// name), with grace, or none to force.
func (r *Runtime) delete(ctx context.Context, pod *corev1.Pod, grace *int64) error {
	if grace == nil {
		g := int64(r.o.StopGracePeriod.Seconds())
		grace = &g
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	uid := pod.UID
	err := r.c.Pods(r.ns).Delete(cctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: grace,
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return kubeError(err, "delete pod %s", pod.Name)
	}
	return nil
}

// nodeRecheck: how often waitGone asks whether a terminating Pod's node is
// lost.
const nodeRecheck = 5 * time.Second

// waitGone polls until the Pod of that UID no longer exists. A Pod on a
// node the cluster lost would wait for its kubelet forever: it is deleted
// without grace (its containers are either gone with the node or stopped by
// the kubelet when it returns, as the Pod no longer exists).
func (r *Runtime) waitGone(ctx context.Context, pod *corev1.Pod) error {
	forced := false
	var checked time.Time
	start := time.Now()
	// Polls at most once a second each (34 pods stopping together: 34 of
	// the client's 50 requests a second).
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
		cur, err := r.c.Pods(r.ns).Get(cctx, pod.Name, metav1.GetOptions{})
		cancel()
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			if ctx.Err() != nil {
				return idepool.WrapError(idepool.ETimeout, ctx.Err(), "container %s: pod deleted, still terminating", pod.Labels[idepool.LabelID])
			}
			return kubeError(err, "get pod %s", pod.Name)
		case cur.UID != pod.UID:
			return nil // gone, and someone made a new one of that name
		}
		// The node's state at most every nodeRecheck: a class's pods stop
		// together, and a node read on every poll of each of them spent the
		// client's rate limit (QPS 50), which its claims and creates share.
		lost := false
		if !forced && time.Since(start) > 2*time.Second && time.Since(checked) >= nodeRecheck && cur.Spec.NodeName != "" {
			checked = time.Now()
			lost = r.nodeLost(ctx, cur.Spec.NodeName)
		}
		if lost {
			zero := int64(0)
			if err := r.delete(ctx, cur, &zero); err != nil {
				return err
			}
			forced = true
		}
		select {
		case <-ctx.Done():
			return idepool.WrapError(idepool.ETimeout, ctx.Err(), "container %s: pod deleted, still terminating", cur.Labels[idepool.LabelID])
		case <-time.After(delay):
		}
	}
}

// nodeLost reports whether the node's kubelet stopped reporting (Ready
// Unknown) or the node object is gone.
func (r *Runtime) nodeLost(ctx context.Context, name string) bool {
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	n, err := r.c.Nodes().Get(cctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true
	}
	if err != nil {
		return false
	}
	return nodeState(n).Down
}

// Inspect returns one container; ENotFound when no Pod of this deployment
// has that id.
func (r *Runtime) Inspect(ctx context.Context, id string) (idepool.Instance, error) {
	pod, err := r.pod(ctx, id)
	if err != nil {
		return idepool.Instance{}, err
	}
	return r.instance(pod), nil
}

// pod returns the Pod of id if it belongs to this deployment.
func (r *Runtime) pod(ctx context.Context, id string) (*corev1.Pod, error) {
	notFound := idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	if !idepool.ValidID(id) {
		return nil, notFound
	}
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	pod, err := r.c.Pods(r.ns).Get(ctx, PodName(id), metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, notFound
		}
		return nil, kubeError(err, "get pod %s", PodName(id))
	}
	if !r.ours(pod) || pod.Labels[idepool.LabelID] != id {
		return nil, notFound
	}
	r.uids.Store(id, pod.UID)
	return pod, nil
}

// ours: the Pod carries this deployment's label and an idepool name.
func (r *Runtime) ours(p *corev1.Pod) bool {
	return p.Labels[idepool.LabelManaged] == r.o.Deployment && strings.HasPrefix(p.Name, podPrefix)
}

// List returns every Pod of this deployment with its status.
func (r *Runtime) List(ctx context.Context) ([]idepool.Instance, error) {
	insts, _, err := r.list(ctx)
	return insts, err
}

// list returns every Pod of this deployment, as instances and as Pods.
func (r *Runtime) list(ctx context.Context) ([]idepool.Instance, []*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	pl, err := r.c.Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: r.selector()})
	if err != nil {
		return nil, nil, kubeError(err, "list pods")
	}
	out := make([]idepool.Instance, 0, len(pl.Items))
	pods := make([]*corev1.Pod, 0, len(pl.Items))
	for i := range pl.Items {
		if p := &pl.Items[i]; r.ours(p) {
			in := r.instance(p)
			r.uids.Store(in.ID, p.UID)
			out = append(out, in)
			pods = append(pods, p)
		}
	}
	return out, pods, nil
}

// Recover lists the deployment's Pods: the cluster keeps them running while
// idepool is away, so there is nothing to re-attach. With Traefik, the
// routes of a Pod made just before idepool stopped are completed (a route
// without its Pod cannot be: the garbage collector removes it).
func (r *Runtime) Recover(ctx context.Context) ([]idepool.Instance, error) {
	insts, pods, err := r.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	if r.o.Traefik != nil {
		if err := r.recoverRoutes(ctx, pods); err != nil {
			// The Pods are there; the route gate (TRAEFIK_URL) keeps an
			// unroutable warm one out of the pool, and a claimed one
			// answers through idepool's own router meanwhile.
			r.log.Warn("recover traefik routes", "err", err)
		}
	}
	r.log.Info("recovered pods", "count", len(insts), "deployment", r.o.Deployment)
	return insts, nil
}

// SetLabels merges labels into the Pod's annotations with one JSON merge
// patch (a value of "" deletes the key), which changes nothing the kubelet
// acts on. The patch carries the Pod's UID, so it cannot land on a later
// Pod of the same name. The runtime's own labels cannot be set (EInvalid,
// nothing changed), nor keys that are not valid annotation names.
func (r *Runtime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	for k := range labels {
		if idepool.IsRuntimeLabel(k) {
			return idepool.Errorf(idepool.EInvalid, "label %s belongs to the runtime and cannot be changed", k)
		}
		if err := validLabelKey(k); err != nil {
			return err
		}
	}
	mu := &r.labelLocks[stripe(id, len(r.labelLocks))]
	mu.Lock()
	defer mu.Unlock()
	if uid, ok := r.uids.Load(id); ok && idepool.ValidID(id) {
		if len(labels) == 0 {
			// Nothing to write, but an unknown container is still an error.
			_, err := r.pod(ctx, id)
			return err
		}
		err := r.patchLabels(ctx, id, uid.(types.UID), labels)
		if !errors.Is(err, errOtherPod) {
			return err
		}
		// Another Pod of that name now: ask again whose it is.
		r.uids.Delete(id)
	}
	pod, err := r.pod(ctx, id)
	if err != nil {
		return err
	}
	if len(labels) == 0 {
		return nil
	}
	err = r.patchLabels(ctx, id, pod.UID, labels)
	if errors.Is(err, errOtherPod) {
		// Replaced by another Pod between the GET and the PATCH.
		return idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	return err
}

// errOtherPod: the Pod of that name is not the one of the UID patched.
var errOtherPod = errors.New("the pod of that name has another UID")

// patchLabels merges labels into the annotations of the Pod of that UID
// with one JSON merge patch; errOtherPod when the Pod of that name has
// another UID (the API server refuses to change metadata.uid: Invalid).
func (r *Runtime) patchLabels(ctx context.Context, id string, uid types.UID, labels map[string]string) error {
	ann := map[string]any{}
	for k, v := range labels {
		if v == "" {
			ann[AnnotationPrefix+k] = nil
		} else {
			ann[AnnotationPrefix+k] = v
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": uid, "annotations": ann}})
	if err != nil {
		return idepool.WrapError(idepool.EInternal, err, "encode label patch of %s", id)
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	_, err = r.c.Pods(r.ns).Patch(cctx, PodName(id), types.MergePatchType, patch, metav1.PatchOptions{})
	switch {
	case err == nil:
		return nil
	case uidRefused(err):
		return errOtherPod
	case apierrors.IsNotFound(err):
		r.uids.Delete(id)
		return idepool.Errorf(idepool.ENotFound, "container %s not found", id)
	}
	return kubeError(err, "patch labels of pod %s", PodName(id))
}

// uidRefused reports whether the API server refused a patch for its
// metadata.uid (which differs from the object's).
func uidRefused(err error) bool {
	var st apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &st) || st.Status().Details == nil {
		return false
	}
	for _, c := range st.Status().Details.Causes {
		if c.Field == "metadata.uid" {
			return true
		}
	}
	return false
}

func stripe(id string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % uint32(n))
}

// validLabelKey checks that an idepool label can be stored as an annotation.
func validLabelKey(k string) error {
	if errs := validation.IsQualifiedName(AnnotationPrefix + k); len(errs) > 0 {
		return idepool.Errorf(idepool.EInvalid, "label %q cannot be recorded on a pod: %s", k, strings.Join(errs, "; "))
	}
	return nil
}

// instance turns a Pod into an Instance.
func (r *Runtime) instance(p *corev1.Pod) idepool.Instance {
	labels := labelsOf(p)
	id := labels[idepool.LabelID]
	if id == "" {
		id = strings.TrimPrefix(p.Name, podPrefix)
	}
	st, msg := podStatus(p)
	inst := idepool.Instance{
		ID:        id,
		Status:    st,
		Labels:    labels,
		Endpoints: endpoints(p),
		CreatedAt: p.CreationTimestamp.UTC(),
		Node:      p.Spec.NodeName,
		Message:   msg,
	}
	if t, err := time.Parse(time.RFC3339Nano, labels[idepool.LabelCreated]); err == nil {
		inst.CreatedAt = t
	}
	if labels[idepool.LabelID] != id || labels[idepool.LabelProfile] == "" || p.Labels[idepool.LabelID] != id {
		inst.Status = idepool.StatusFailed
		inst.Message = "pod " + p.Name + " lacks idepool's id or profile label"
	}
	return inst
}

// labelsOf returns idepool's labels recorded on the Pod.
func labelsOf(p *corev1.Pod) map[string]string {
	out := make(map[string]string, len(p.Annotations))
	for k, v := range p.Annotations {
		if key, ok := strings.CutPrefix(k, AnnotationPrefix); ok {
			out[key] = v
		}
	}
	return out
}

// endpoints maps each route to the Pod's address and the route's port. The
// routes are read back from the container's own env (IDEPOOL_ROUTES), so a
// restarted idepool needs no profile to find them. Empty until the Pod has
// an address.
func endpoints(p *corev1.Pod) map[string]string {
	out := map[string]string{}
	if p.Status.PodIP == "" {
		return out
	}
	for _, rt := range routesOf(p) {
		out[rt.Name] = net.JoinHostPort(p.Status.PodIP, strconv.Itoa(rt.Port))
	}
	return out
}

func routesOf(p *corev1.Pod) []idepool.Route {
	for _, c := range p.Spec.Containers {
		if c.Name != ContainerName {
			continue
		}
		for _, e := range c.Env {
			if e.Name == idepool.EnvRoutes {
				var routes []idepool.Route
				if json.Unmarshal([]byte(strings.ReplaceAll(e.Value, "$$", "$")), &routes) == nil {
					return routes
				}
			}
		}
	}
	return nil
}

// kubeError wraps an API error with idepool's code: unreachable cluster
// (503), a refusal of what we asked (invalid, forbidden), or a runtime
// error.
func kubeError(err error, format string, args ...any) error {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err):
		return idepool.WrapError(idepool.ETimeout, err, format, args...)
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return idepool.WrapError(idepool.EInvalid, err, format, args...)
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return idepool.WrapError(idepool.EMisconfigured, err, format, args...)
	case apierrors.IsServiceUnavailable(err) || errors.As(err, &netErr):
		return idepool.WrapError(idepool.ERuntimeUnreachable, err, "kubernetes unreachable: "+format, args...)
	}
	return idepool.WrapError(idepool.ERuntime, err, format, args...)
}
