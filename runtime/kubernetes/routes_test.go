package kubernetes

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idepool/idepool"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestTraefikRoutes, on the real cluster: with Traefik routing, Create
// makes the pod's Service and Ingress, owned by the pod; Recover remakes
// one that is missing; once the pod is removed the garbage collector
// deletes both (no leak). Traefik itself routing them is e2e/kubernetes's.
func TestTraefikRoutes(t *testing.T) {
	e := newEnv(t)
	e.traefik = &TraefikOptions{AuthMiddleware: "idepool-auth@file", StripMiddleware: "idepool-strip@file", IngressClass: "rttest"}
	rt, _ := e.runtime(t, newDeployment())
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	id := idepool.NewID()
	if _, err := rt.Create(ctx, idepool.ContainerSpec{ID: id, Profile: testProfile()}); err != nil {
		t.Fatal(err)
	}
	name := PodName(id)
	pod, err := e.cl.Client.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := e.cl.Client.CoreV1().Services(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("service of %s: %v", id, err)
	}
	ing, err := e.cl.Client.NetworkingV1().Ingresses(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ingress of %s: %v", id, err)
	}
	for what, refs := range map[string][]metav1.OwnerReference{"service": svc.OwnerReferences, "ingress": ing.OwnerReferences} {
		if len(refs) != 1 || refs[0].UID != pod.UID {
			t.Errorf("%s of %s owned by %+v, want the pod %s", what, id, refs, pod.UID)
		}
	}
	if ing.Annotations[ingressClassKey] != "rttest" || len(ing.Spec.Rules) != 1 || len(ing.Spec.Rules[0].HTTP.Paths) != 2*len(testProfile().Routes) {
		t.Errorf("ingress %+v", ing)
	}

	// An idepool that stopped between the pod and its ingress: Recover
	// completes it.
	if err := e.cl.Client.NetworkingV1().Ingresses(e.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Client.NetworkingV1().Ingresses(e.ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("ingress of %s after Recover: %v", id, err)
	}

	if err := rt.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		_, err1 := e.cl.Client.CoreV1().Services(e.ns).Get(ctx, name, metav1.GetOptions{})
		_, err2 := e.cl.Client.NetworkingV1().Ingresses(e.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2) {
			t.Logf("service and ingress gone %v after the pod", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("a minute after the pod's removal: service %v, ingress %v (want both not found)", err1, err2)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// failIngresses refuses every Ingress creation before it is sent.
type failIngresses struct{ next http.RoundTripper }

func (f failIngresses) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/ingresses") {
		return nil, errors.New("connection refused (injected)")
	}
	return f.next.RoundTrip(req)
}

// TestTraefikRoutesCreateFails: when a pod's Ingress cannot be made, Create
// fails and leaves nothing: the pod is deleted, and its Service with it.
func TestTraefikRoutesCreateFails(t *testing.T) {
	e := newEnv(t)
	cfg := rest.CopyConfig(e.cl.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return failIngresses{rt} })
	c, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dep := newDeployment()
	rt, err := New(Options{Client: c.CoreV1(), Networking: c.NetworkingV1(), Namespace: e.ns, Deployment: dep,
		StopGracePeriod: 2 * time.Second, Traefik: &TraefikOptions{AuthMiddleware: "a@file", StripMiddleware: "s@file"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	id := idepool.NewID()
	if _, err := rt.Create(ctx, idepool.ContainerSpec{ID: id, Profile: testProfile()}); err == nil {
		t.Fatal("Create succeeded although its ingress could not be made")
	}
	start := time.Now()
	for {
		_, err1 := e.cl.Client.CoreV1().Pods(e.ns).Get(ctx, PodName(id), metav1.GetOptions{})
		_, err2 := e.cl.Client.CoreV1().Services(e.ns).Get(ctx, PodName(id), metav1.GetOptions{})
		if apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2) {
			return
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("a minute after the failed Create: pod %v, service %v (want both not found)", err1, err2)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
