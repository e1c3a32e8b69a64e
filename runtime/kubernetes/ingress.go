package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/traefik"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// TraefikOptions make every Pod routable by Traefik's Kubernetes Ingress
// provider (ROUTER=traefik). Next to each Pod the runtime makes a headless
// Service selecting it and an Ingress for its routes (two when some keep
// their prefix and others do not: the middlewares are the Ingress's), with
// the rules of package traefik. Both name the Pod as their owner, so the
// cluster's garbage collector removes them with it, whoever deletes it.
type TraefikOptions struct {
	// Routing: Domain, EntryPoints, CertResolver, Priority, and Middlewares
	// appended after idepool's own. ForwardAuthURL and Network are the
	// Swarm provider's and unused here (the ForwardAuth middleware is
	// AuthMiddleware, defined where Traefik reads it).
	Routing traefik.Options
	// IngressClass is the Ingresses' kubernetes.io/ingress.class
	// annotation (the value of the provider's ingressClass option); ""
	// leaves it out, for a Traefik that watches every Ingress.
	IngressClass string
	// AuthMiddleware is the ForwardAuth middleware every router passes
	// first, pointing at idepool's /_auth/forward, in Traefik's
	// name@provider form, e.g. "idepool-auth@file". Required.
	AuthMiddleware string
	// StripMiddleware strips /<route>/<id> from the routes that do not
	// keep their prefix, e.g. "idepool-strip@file" (a stripPrefixRegex of
	// ^/[^/]+/[^/]+). Required.
	StripMiddleware string
}

// Annotations of Traefik's Kubernetes Ingress provider.
const (
	ingressAnnotation = "traefik.ingress.kubernetes.io/router."
	ingressClassKey   = "kubernetes.io/ingress.class"
)

// routeObjects returns the Service and Ingresses that route pod's routes
// (read from the Pod itself, so a recovering idepool needs no profile)
// through Traefik. It is pure, so their shape is table-tested.
func (o *TraefikOptions) routeObjects(deployment string, pod *corev1.Pod) (*corev1.Service, []*networkingv1.Ingress) {
	id := pod.Labels[idepool.LabelID]
	routes := routesOf(pod)
	if len(routes) == 0 {
		return nil, nil
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name:      name,
			Namespace: pod.Namespace,
			Labels: map[string]string{
				idepool.LabelManaged:           deployment,
				idepool.LabelID:                id,
				"app.kubernetes.io/managed-by": "idepool",
				"app.kubernetes.io/component":  "ide-route",
			},
			// Gone with the Pod (the garbage collector's work): no leak
			// whoever deletes the Pod, idepool or anyone.
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}},
		}
	}
	svc := &corev1.Service{
		ObjectMeta: meta(pod.Name),
		Spec: corev1.ServiceSpec{
			// Headless: Traefik routes to the Pod's address from the
			// EndpointSlice; a cluster IP would cost kube-proxy rules per
			// IDE for nothing.
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{idepool.LabelManaged: deployment, idepool.LabelID: id},
		},
	}
	seen := map[int]bool{}
	for _, rt := range routes {
		if seen[rt.Port] {
			continue
		}
		seen[rt.Port] = true
		name := rt.Name
		if len(validation.IsValidPortName(name)) > 0 {
			name = "port-" + strconv.Itoa(rt.Port)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: name, Protocol: corev1.ProtocolTCP, Port: int32(rt.Port), TargetPort: intstr.FromInt32(int32(rt.Port)),
		})
	}

	var ings []*networkingv1.Ingress
	routers := traefik.Routers(id, idepool.Profile{Routes: routes}, o.Routing)
	for _, strip := range []bool{true, false} {
		var paths []networkingv1.HTTPIngressPath
		var first traefik.Router
		for _, r := range routers {
			if r.Strip != strip {
				continue
			}
			if len(paths) == 0 {
				first = r
			}
			backend := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
				Name: svc.Name, Port: networkingv1.ServiceBackendPort{Number: int32(r.Route.Port)},
			}}
			// Exact /<r>/<id> and Prefix /<r>/<id>/: Traefik's rule is then
			// Path || PathPrefix(`/<r>/<id>/`), as on Swarm, whether or not
			// its strictPrefixMatching is on (never /code/abcde for abcd).
			exact, prefix := networkingv1.PathTypeExact, networkingv1.PathTypePrefix
			paths = append(paths,
				networkingv1.HTTPIngressPath{Path: r.Prefix, PathType: &exact, Backend: backend},
				networkingv1.HTTPIngressPath{Path: r.Prefix + "/", PathType: &prefix, Backend: backend})
		}
		if len(paths) == 0 {
			continue
		}
		mws := []string{o.AuthMiddleware}
		name := pod.Name
		if strip {
			mws = append(mws, o.StripMiddleware)
		} else {
			name += "-keep"
		}
		mws = append(mws, o.Routing.Middlewares...)
		ing := &networkingv1.Ingress{ObjectMeta: meta(name)}
		ing.Annotations = map[string]string{
			ingressAnnotation + "entrypoints": strings.Join(first.EntryPoints, ","),
			ingressAnnotation + "priority":    strconv.Itoa(first.Priority),
			ingressAnnotation + "middlewares": strings.Join(mws, ","),
		}
		if o.IngressClass != "" {
			ing.Annotations[ingressClassKey] = o.IngressClass
		}
		if first.TLS {
			ing.Annotations[ingressAnnotation+"tls"] = "true"
			ing.Annotations[ingressAnnotation+"tls.certresolver"] = first.CertResolver
		}
		ing.Spec.Rules = []networkingv1.IngressRule{{
			Host:             first.Host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}},
		}}
		ings = append(ings, ing)
	}
	return svc, ings
}

// existingRoutes are the names of the Services and Ingresses of this
// deployment that exist.
type existingRoutes struct{ services, ingresses map[string]bool }

// listRoutes lists the deployment's Services and Ingresses (two calls,
// whatever the number of Pods).
func (r *Runtime) listRoutes(ctx context.Context) (existingRoutes, error) {
	ex := existingRoutes{services: map[string]bool{}, ingresses: map[string]bool{}}
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	sl, err := r.c.Services(r.ns).List(cctx, metav1.ListOptions{LabelSelector: r.selector()})
	if err != nil {
		return ex, kubeError(err, "list services")
	}
	for _, s := range sl.Items {
		ex.services[s.Name] = true
	}
	il, err := r.net.Ingresses(r.ns).List(cctx, metav1.ListOptions{LabelSelector: r.selector()})
	if err != nil {
		return ex, kubeError(err, "list ingresses")
	}
	for _, i := range il.Items {
		ex.ingresses[i.Name] = true
	}
	return ex, nil
}

// ensureRoutes makes pod's Service and Ingresses, those not in ex (nil:
// all; one that exists already is fine).
func (r *Runtime) ensureRoutes(ctx context.Context, pod *corev1.Pod, ex *existingRoutes) error {
	svc, ings := r.o.Traefik.routeObjects(r.o.Deployment, pod)
	if svc == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.o.CallTimeout)
	defer cancel()
	if ex == nil || !ex.services[svc.Name] {
		if _, err := r.c.Services(r.ns).Create(cctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return kubeError(err, "create service %s", svc.Name)
		}
	}
	for _, ing := range ings {
		if ex != nil && ex.ingresses[ing.Name] {
			continue
		}
		if _, err := r.net.Ingresses(r.ns).Create(cctx, ing, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return kubeError(err, "create ingress %s", ing.Name)
		}
	}
	return nil
}

// recoverRoutes makes what is missing of the routes of the Pods found at
// recovery (an idepool stopped between a Pod and its Ingress): one list
// of each kind, then a create per missing object.
func (r *Runtime) recoverRoutes(ctx context.Context, pods []*corev1.Pod) error {
	ex, err := r.listRoutes(ctx)
	if err != nil {
		return err
	}
	var errs []error
	made := 0
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		svc, ings := r.o.Traefik.routeObjects(r.o.Deployment, p)
		missing := svc != nil && !ex.services[svc.Name]
		for _, i := range ings {
			missing = missing || !ex.ingresses[i.Name]
		}
		if !missing {
			continue
		}
		if err := r.ensureRoutes(ctx, p, &ex); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", p.Name, err))
			continue
		}
		made++
	}
	if made > 0 {
		r.log.Info("recovered missing traefik routes", "pods", made)
	}
	return errors.Join(errs...)
}
