// Package idepool is the domain of the idepool orchestrator: containers,
// profiles, workspaces, their states and events, the Runtime contract every
// runtime implements, and the error codes the API maps to HTTP.
//
// It imports nothing but the standard library; adapters (runtimes, the HTTP
// API, the router, the agent) live in subpackages and are wired together only
// by cmd/idepool (through package server).
package idepool

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// DefaultProfile is the name of the profile the original's environment
// variables describe.
const DefaultProfile = "default"

// Default routes of a profile, as the original published them.
var defaultRoutes = []Route{
	{Name: "code", Port: 8080},
	{Name: "vnc", Port: 6080},
	{Name: "web", Port: 3000},
}

// DefaultRoutes returns a fresh copy of the default route table
// (code:8080, vnc:6080, web:3000).
func DefaultRoutes() []Route {
	out := make([]Route, len(defaultRoutes))
	copy(out, defaultRoutes)
	return out
}

// Route is one named HTTP endpoint of a container, reachable at
// /<Name>/<container id>/ through the router.
type Route struct {
	Name string `json:"name"`
	// Port is the port the workload listens on inside the container. In the
	// process runtime each container gets its own free host port instead;
	// Instance.Endpoints says where a route is really reachable.
	Port int `json:"port"`
	// KeepPrefix forwards /<name>/<id>/x unchanged instead of stripping the
	// prefix to /x; for workloads that know their base path.
	KeepPrefix bool `json:"keepPrefix,omitempty"`
	// HealthPath is probed to decide whether the workload answers ("/" when
	// empty).
	HealthPath string `json:"healthPath,omitempty"`
}

// Workload is one process the agent starts and supervises inside a container.
type Workload struct {
	Name    string            `json:"name"`
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
}

// Profile says what a container is made of. The original's environment
// variables define the profile "default"; more come from the profiles file.
type Profile struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// CPULimit is in cores (2 = two cores); MemoryLimit in bytes.
	CPULimit    float64 `json:"cpuLimit"`
	MemoryLimit int64   `json:"memoryLimit"`
	// Reservations are what admission control and the scheduler count; zero
	// means "same as the limit".
	CPUReservation    float64 `json:"cpuReservation,omitempty"`
	MemoryReservation int64   `json:"memoryReservation,omitempty"`
	Routes            []Route `json:"routes"`
	// PoolTarget is how many warm containers to keep.
	PoolTarget int `json:"poolTarget"`
	// Workloads the agent starts; none means the built-in placeholder on
	// every route.
	Workloads []Workload `json:"workloads,omitempty"`
	// Env is extra, non-secret environment for the container.
	Env map[string]string `json:"env,omitempty"`
	// Constraints are Swarm placement constraints ("node.labels.ide==true").
	Constraints []string `json:"constraints,omitempty"`
	// IdleTimeout stops a claimed container without user activity; zero
	// means never.
	IdleTimeout time.Duration `json:"idleTimeout,omitempty"`
	// MaxAge recycles warm containers older than this; zero means never.
	MaxAge time.Duration `json:"maxAge,omitempty"`
}

// Route returns the route called name.
func (p Profile) Route(name string) (Route, bool) {
	for _, r := range p.Routes {
		if r.Name == name {
			return r, true
		}
	}
	return Route{}, false
}

// EffectiveCPUReservation is the CPU admission control counts for one container.
func (p Profile) EffectiveCPUReservation() float64 {
	if p.CPUReservation > 0 {
		return p.CPUReservation
	}
	return p.CPULimit
}

// EffectiveMemoryReservation is the memory admission control counts for one container.
func (p Profile) EffectiveMemoryReservation() int64 {
	if p.MemoryReservation > 0 {
		return p.MemoryReservation
	}
	return p.MemoryLimit
}

// ReservedPaths returns the first path segments idepool serves besides the
// API's own paths (which httpapi adds): the dashboard, metrics, the agents'
// channel, Traefik's ForwardAuth, the event stream. A container route named
// like one would be shadowed.
func ReservedPaths() []string {
	return []string{"_auth", "agent", "api", "dashboard", "events", "metrics", "openapi.json", "static"}
}

var (
	profileNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	routeNameRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
)

// MinCPULimit is the smallest CPU limit, in cores, that a container can be
// held to.
const MinCPULimit = 0.01

// Validate reports the first thing wrong with a profile.
func (p Profile) Validate() error {
	if !profileNameRE.MatchString(p.Name) {
		return Errorf(EInvalid, "profile name %q: want 1-63 of a-z, 0-9, '-', '_', starting with a letter or digit", p.Name)
	}
	if p.CPULimit < 0 || p.MemoryLimit < 0 || p.CPUReservation < 0 || p.MemoryReservation < 0 {
		return Errorf(EInvalid, "profile %s: limits and reservations must not be negative", p.Name)
	}
	if p.CPULimit > 0 && p.CPULimit < MinCPULimit {
		// The kernel refuses a smaller CFS quota ("invalid argument" from
		// cpu.cfs_quota_us), and Docker and the kubelet round up to it.
		return Errorf(EInvalid, "profile %s: cpu limit %g is below %g core, the least a runtime enforces (1 ms of CPU per 100 ms)", p.Name, p.CPULimit, MinCPULimit)
	}
	if p.CPUReservation > 0 && p.CPULimit > 0 && p.CPUReservation > p.CPULimit {
		return Errorf(EInvalid, "profile %s: cpu reservation %.2f exceeds limit %.2f", p.Name, p.CPUReservation, p.CPULimit)
	}
	if p.MemoryReservation > 0 && p.MemoryLimit > 0 && p.MemoryReservation > p.MemoryLimit {
		return Errorf(EInvalid, "profile %s: memory reservation exceeds limit", p.Name)
	}
	if p.PoolTarget < 0 {
		return Errorf(EInvalid, "profile %s: pool target must not be negative", p.Name)
	}
	if len(p.Routes) == 0 {
		return Errorf(EInvalid, "profile %s: at least one route is needed", p.Name)
	}
	seen := map[string]bool{}
	ports := map[int]bool{}
	for _, r := range p.Routes {
		if !routeNameRE.MatchString(r.Name) {
			return Errorf(EInvalid, "profile %s: route name %q: want a-z, 0-9, '-', starting with a letter", p.Name, r.Name)
		}
		if slices.Contains(ReservedPaths(), r.Name) {
			return Errorf(EInvalid, "profile %s: route name %q is reserved", p.Name, r.Name)
		}
		if seen[r.Name] {
			return Errorf(EInvalid, "profile %s: route %q listed twice", p.Name, r.Name)
		}
		seen[r.Name] = true
		if r.Port < 1 || r.Port > 65535 {
			return Errorf(EInvalid, "profile %s: route %s: port %d out of range 1-65535", p.Name, r.Name, r.Port)
		}
		if ports[r.Port] {
			return Errorf(EInvalid, "profile %s: port %d used by two routes", p.Name, r.Port)
		}
		ports[r.Port] = true
	}
	for _, w := range p.Workloads {
		if w.Name == "" || len(w.Command) == 0 {
			return Errorf(EInvalid, "profile %s: every workload needs a name and a command", p.Name)
		}
	}
	return nil
}

// RouteNames returns the profile's route names, sorted.
func (p Profile) RouteNames() []string {
	out := make([]string, 0, len(p.Routes))
	for _, r := range p.Routes {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}

// Workspace is where a user's files live: an S3 bucket, an optional key
// prefix and a region. At most one live container serves a workspace.
type Workspace struct {
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix,omitempty"`
	Region string `json:"region,omitempty"`
	// BucketID is the original's opaque s3BucketId, kept for its clients.
	BucketID string `json:"bucketId,omitempty"`
}

// Key identifies the workspace for the one-container-per-workspace rule:
// bucket and normalised prefix ("bucket/" + "a/b/").
func (w Workspace) Key() string {
	return w.Bucket + "/" + NormalizePrefix(w.Prefix)
}

// IsZero reports whether no workspace is set.
func (w Workspace) IsZero() bool { return w.Bucket == "" }

// NormalizePrefix trims slashes and adds one trailing slash to a non-empty
// prefix, so "a/b", "/a/b/" and "a/b/" name the same workspace.
func NormalizePrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return p + "/"
}

// Validate checks the bucket against S3's naming rules and the prefix
// against keys that could escape a workspace.
func (w Workspace) Validate() error {
	if err := ValidateBucketName(w.Bucket); err != nil {
		return err
	}
	if err := ValidatePrefix(w.Prefix); err != nil {
		return err
	}
	if w.Region != "" && !regionRE.MatchString(w.Region) {
		return Errorf(EInvalid, "s3Region %q: want a region name such as us-east-1", w.Region)
	}
	return nil
}

var regionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// bucketChars: a-z, 0-9, '.' and '-', starting and ending with a letter or
// digit (length checked before). A loop, not a regular expression: every
// start validates a bucket name, 200 at once in a class's first second.
func bucketChars(name string) bool {
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !alnum(c) && (c != '.' && c != '-' || i == 0 || i == len(name)-1) {
			return false
		}
	}
	return true
}

// maybeIP: only digits, dots and colons can spell an IP address.
func maybeIP(name string) bool {
	return strings.Trim(name, "0123456789.:abcdef") == "" && strings.ContainsAny(name, ".:")
}

// ValidateBucketName applies S3's general-purpose bucket naming rules.
func ValidateBucketName(name string) error {
	bad := func(why string) error {
		return &Error{Code: EInvalidBucket, Message: fmt.Sprintf("s3Bucket %q: %s", name, why),
			Details: map[string]any{"rules": "3-63 characters of a-z, 0-9, '.', '-'; starts and ends with a letter or digit; no '..'; not an IP address; no xn-- prefix, -s3alias or --ol-s3 suffix"}}
	}
	switch {
	case name == "":
		return &Error{Code: EInvalidBucket, Message: "s3Bucket is required"}
	case len(name) < 3 || len(name) > 63:
		return bad("length must be 3 to 63")
	case !bucketChars(name):
		return bad("only lowercase letters, digits, '.' and '-', starting and ending with a letter or digit")
	case strings.Contains(name, ".."):
		return bad("must not contain '..'")
	case strings.Contains(name, ".-") || strings.Contains(name, "-."):
		return bad("must not contain '.-' or '-.'")
	case maybeIP(name) && net.ParseIP(name) != nil:
		return bad("must not be an IP address")
	case strings.HasPrefix(name, "xn--") || strings.HasPrefix(name, "sthree-"):
		return bad("reserved prefix")
	case strings.HasSuffix(name, "-s3alias") || strings.HasSuffix(name, "--ol-s3"):
		return bad("reserved suffix")
	}
	return nil
}

// ValidatePrefix refuses prefixes that are not plain relative key paths.
func ValidatePrefix(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > 512 {
		return Errorf(EInvalid, "s3Prefix: at most 512 characters")
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return Errorf(EInvalid, "s3Prefix %q: empty, '.' and '..' segments are not allowed", p)
		}
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return Errorf(EInvalid, "s3Prefix %q: control characters and backslashes are not allowed", p)
		}
	}
	return nil
}

// Credentials are S3 credentials. They travel only inside an agent's
// assignment message; never in labels, env, logs or URLs. String and
// LogValue redact them.
type Credentials struct {
	AccessKeyID     string `json:"accessKeyId,omitempty"`
	SecretAccessKey string `json:"secretAccessKey,omitempty"`
	SessionToken    string `json:"sessionToken,omitempty"`
}

// IsZero reports whether no credentials are set.
func (c Credentials) IsZero() bool { return c.AccessKeyID == "" && c.SecretAccessKey == "" }

// String never prints the secret.
func (c Credentials) String() string {
	if c.IsZero() {
		return "Credentials{}"
	}
	return "Credentials{AccessKeyID:" + redactID(c.AccessKeyID) + " SecretAccessKey:REDACTED}"
}

// GoString keeps %#v from printing the secret.
func (c Credentials) GoString() string { return c.String() }

func redactID(id string) string {
	if len(id) <= 4 {
		return "****"
	}
	return id[:4] + "****"
}
