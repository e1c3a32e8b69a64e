package httpapi

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/idepool/idepool"
)

// ReservedRouteNames returns the names a profile's route must not have:
// the first segment of every API path (both mounts) and of idepool's other
// endpoints (idepool.ReservedPaths), sorted.
func ReservedRouteNames() []string {
	out := idepool.ReservedPaths()
	for _, rt := range (&Server{}).routes() {
		for _, p := range rt.paths() {
			seg, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
			if seg != "" && seg != "{$}" && !strings.HasPrefix(seg, "{") {
				out = append(out, seg)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CheckRouteNames refuses profiles with a route whose name is a path of
// idepool itself: /containers/<id>/ would reach the API, not the IDE. The
// server calls it at start-up; the error names every clash.
func CheckRouteNames(profiles []idepool.Profile) error {
	reserved := ReservedRouteNames()
	var errs []error
	for _, p := range profiles {
		for _, r := range p.Routes {
			if slices.Contains(reserved, r.Name) {
				errs = append(errs, &idepool.Error{Code: idepool.EMisconfigured,
					Message: fmt.Sprintf("profile %s: route %q clashes with idepool's own path /%s/; rename the route (reserved: %s)",
						p.Name, r.Name, r.Name, strings.Join(reserved, ", "))})
			}
		}
	}
	return errors.Join(errs...)
}
