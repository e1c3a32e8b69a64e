package traefik

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idepool/idepool"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// render prints labels one per line, sorted, so golden files diff well.
func render(l map[string]string) string {
	var b strings.Builder
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(k + "=" + l[k] + "\n")
	}
	return b.String()
}

func TestLabelsGolden(t *testing.T) {
	def := idepool.Profile{Name: "default", Image: "ide:1", Routes: idepool.DefaultRoutes()}
	keep := idepool.Profile{Name: "jupyter", Image: "ide:1", Routes: []idepool.Route{
		{Name: "code", Port: 8888, KeepPrefix: true},
		{Name: "terminal", Port: 7681},
	}}
	const auth = "http://idepool:3001/_auth/forward"
	tests := []struct {
		name    string
		profile idepool.Profile
		opts    Options
	}{
		{"localhost", def, Options{Domain: "localhost", ForwardAuthURL: auth, Network: "idepool"}},
		{"ip-with-port", def, Options{Domain: "10.0.0.5:8080", ForwardAuthURL: auth, Network: "idepool"}},
		{"domain", def, Options{Domain: "ide.example.com", ForwardAuthURL: auth, Network: "idepool"}},
		{"domain-custom", keep, Options{Domain: "ide.example.com", ForwardAuthURL: auth, Network: "ide-net",
			CertResolver: "le", EntryPoints: []string{"websecure"}, Priority: 20,
			Middlewares: []string{"container-iframe-headers@file"}}},
		{"no-auth-no-network", keep, Options{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := render(Labels("abc123def456", tc.profile, tc.opts))
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./traefik -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("labels differ from %s (go test ./traefik -update rewrites it)\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

func TestIsName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", false},
		{"localhost", false},
		{"localhost:8080", false},
		{"app.localhost", false},
		{"127.0.0.1", false},
		{"10.1.2.3:80", false},
		{"::1", false},
		{"[::1]:443", false},
		{"ide.example.com", true},
		{"ide.example.com:8443", true},
		{"ide", true},
	}
	for _, tc := range tests {
		if got := IsName(tc.in); got != tc.want {
			t.Errorf("IsName(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// Every label is a Traefik label, and every route gets a router whose
// service exists and whose middlewares are all defined (or from a provider).
func TestLabelsConsistent(t *testing.T) {
	p := idepool.Profile{Name: "p", Routes: []idepool.Route{{Name: "code", Port: 8080}, {Name: "web", Port: 3000, KeepPrefix: true}}}
	l := Labels("xyz9", p, Options{Domain: "a.b", ForwardAuthURL: "http://i/_auth/forward", Middlewares: []string{"h@file"}})
	for k := range l {
		if !IsLabel(k) {
			t.Errorf("label %q is not a traefik label", k)
		}
	}
	for _, r := range p.Routes {
		rk := "traefik.http.routers.idepool-xyz9-" + r.Name + "."
		svc := l[rk+"service"]
		if l["traefik.http.services."+svc+".loadbalancer.server.port"] == "" {
			t.Errorf("route %s: service %q has no port", r.Name, svc)
		}
		mws := strings.Split(l[rk+"middlewares"], ",")
		if mws[0] != "idepool-xyz9-auth" {
			t.Errorf("route %s: first middleware %q, want the ForwardAuth one", r.Name, mws[0])
		}
		for _, m := range mws {
			if strings.Contains(m, "@") {
				continue
			}
			found := false
			for k := range l {
				if strings.HasPrefix(k, "traefik.http.middlewares."+m+".") {
					found = true
				}
			}
			if !found {
				t.Errorf("route %s: middleware %q is not defined", r.Name, m)
			}
		}
	}
}
