package kubernetes

import (
	"slices"
	"testing"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/traefik"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// TestRouteObjects: the Service and Ingresses of a Pod, as the API server
// gets them (the routing through a real Traefik is e2e/kubernetes's).
func TestRouteObjects(t *testing.T) {
	o := &Options{Deployment: "dep", StopGracePeriod: 10 * time.Second}
	pod := func(routes []idepool.Route) *corev1.Pod {
		p, err := o.podSpec("ns", idepool.ContainerSpec{ID: "abc123", Profile: idepool.Profile{Name: "p", Image: "ide:1", Routes: routes}}, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		p.UID = "uid-1"
		return p
	}
	auth := TraefikOptions{AuthMiddleware: "idepool-auth@file", StripMiddleware: "idepool-strip@file"}
	withClass := auth
	withClass.IngressClass, withClass.Routing = "idepool", traefik.Options{Domain: "ide.example.com", Middlewares: []string{"headers@file"}}

	type ing struct {
		name, mws, entry string
		paths            []string // pathType:path
		host             string
		tls              bool
	}
	for _, c := range []struct {
		name   string
		t      TraefikOptions
		routes []idepool.Route
		ports  []string
		want   []ing
	}{
		{"default routes", auth, idepool.DefaultRoutes(), []string{"code", "vnc", "web"}, []ing{{
			name: "idepool-abc123", mws: "idepool-auth@file,idepool-strip@file", entry: "web",
			paths: []string{"Exact:/code/abc123", "Prefix:/code/abc123/", "Exact:/vnc/abc123", "Prefix:/vnc/abc123/", "Exact:/web/abc123", "Prefix:/web/abc123/"},
		}}},
		{"kept prefix, a domain, a class", withClass, []idepool.Route{{Name: "code", Port: 8888, KeepPrefix: true}, {Name: "Term_1", Port: 7681}},
			[]string{"code", "port-7681"}, []ing{
				{name: "idepool-abc123", mws: "idepool-auth@file,idepool-strip@file,headers@file", entry: "web,websecure",
					paths: []string{"Exact:/Term_1/abc123", "Prefix:/Term_1/abc123/"}, host: "ide.example.com", tls: true},
				{name: "idepool-abc123-keep", mws: "idepool-auth@file,headers@file", entry: "web,websecure",
					paths: []string{"Exact:/code/abc123", "Prefix:/code/abc123/"}, host: "ide.example.com", tls: true},
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := pod(c.routes)
			svc, ings := c.t.routeObjects("dep", p)
			if svc.Name != "idepool-abc123" || svc.Spec.ClusterIP != corev1.ClusterIPNone ||
				svc.Spec.Selector[idepool.LabelID] != "abc123" || svc.Spec.Selector[idepool.LabelManaged] != "dep" {
				t.Errorf("service %+v", svc)
			}
			var ports []string
			for _, sp := range svc.Spec.Ports {
				ports = append(ports, sp.Name)
			}
			if !slices.Equal(ports, c.ports) {
				t.Errorf("service ports %v, want %v", ports, c.ports)
			}
			if len(ings) != len(c.want) {
				t.Fatalf("%d ingresses, want %d", len(ings), len(c.want))
			}
			for i, w := range c.want {
				g := ings[i]
				for _, m := range []*networkingv1.Ingress{g} {
					if len(m.OwnerReferences) != 1 || m.OwnerReferences[0].UID != "uid-1" || m.OwnerReferences[0].Kind != "Pod" {
						t.Errorf("ingress %s owner %+v", m.Name, m.OwnerReferences)
					}
				}
				a := g.Annotations
				if g.Name != w.name || a[ingressAnnotation+"middlewares"] != w.mws || a[ingressAnnotation+"entrypoints"] != w.entry ||
					a[ingressAnnotation+"priority"] != "100" || (a[ingressAnnotation+"tls"] == "true") != w.tls ||
					a[ingressClassKey] != c.t.IngressClass {
					t.Errorf("ingress %d: %s %v", i, g.Name, a)
				}
				var paths []string
				for _, hp := range g.Spec.Rules[0].HTTP.Paths {
					paths = append(paths, string(*hp.PathType)+":"+hp.Path)
					if hp.Backend.Service.Name != svc.Name {
						t.Errorf("backend %+v", hp.Backend)
					}
				}
				if !slices.Equal(paths, w.paths) || g.Spec.Rules[0].Host != w.host {
					t.Errorf("ingress %s: host %q paths %v, want %q %v", g.Name, g.Spec.Rules[0].Host, paths, w.host, w.paths)
				}
			}
			if len(svc.OwnerReferences) != 1 || svc.OwnerReferences[0].UID != "uid-1" {
				t.Errorf("service owner %+v", svc.OwnerReferences)
			}
		})
	}
}
