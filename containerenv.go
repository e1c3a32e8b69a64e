package idepool

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
)

// RoutePortEnv returns the variable that tells a route's workload its port:
// EnvRoutePortPrefix plus the route name in upper case, '-' as '_'.
func RoutePortEnv(route string) string {
	return EnvRoutePortPrefix + strings.ReplaceAll(strings.ToUpper(route), "-", "_")
}

// CheckImageSpec refuses what an image runtime (Swarm, Kubernetes) must
// not create: an invalid id, a profile without an image, and S3
// credentials in the environment (they travel only in the assignment).
func CheckImageSpec(spec ContainerSpec) error {
	if !ValidID(spec.ID) {
		return Errorf(EInvalid, "container id %q is not valid", spec.ID)
	}
	if spec.Profile.Image == "" {
		return Errorf(EInvalid, "profile %s has no image", spec.Profile.Name)
	}
	for _, env := range []map[string]string{spec.Profile.Env, spec.Env} {
		for k := range env {
			if secretEnv[strings.ToUpper(k)] {
				return Errorf(EInvalid, "environment variable %s must not be given to a container: S3 credentials travel only in the assignment", k)
			}
		}
	}
	return nil
}

// secretEnv are variables that would give a container S3 credentials.
var secretEnv = map[string]bool{
	"AWS_ACCESS_KEY_ID":     true,
	"AWS_SECRET_ACCESS_KEY": true,
	"AWS_SESSION_TOKEN":     true,
}

// ContainerEnv is a container's environment as the agent reads it, for
// runtimes whose containers see the profile's ports as they are (Swarm,
// Kubernetes): the profile's non-secret env, the caller's (agent token, URL,
// id), then what the runtime owns (route ports, routes and workloads as
// JSON, the workspace and state directories), which wins over both.
func ContainerEnv(spec ContainerSpec, workspaceDir, stateDir string) (map[string]string, error) {
	env := map[string]string{}
	maps.Copy(env, spec.Profile.Env)
	maps.Copy(env, spec.Env)
	for _, r := range spec.Profile.Routes {
		env[RoutePortEnv(r.Name)] = strconv.Itoa(r.Port)
	}
	routes := spec.Profile.Routes
	if routes == nil {
		routes = []Route{}
	}
	rj, err := json.Marshal(routes)
	if err != nil {
		return nil, fmt.Errorf("encode routes: %w", err)
	}
	workloads := spec.Profile.Workloads
	if workloads == nil {
		workloads = []Workload{}
	}
	wj, err := json.Marshal(workloads)
	if err != nil {
		return nil, fmt.Errorf("encode workloads: %w", err)
	}
	env[EnvRoutes] = string(rj)
	env[EnvWorkloads] = string(wj)
	env[EnvWorkspaceDir] = workspaceDir
	env[EnvStateDir] = stateDir
	if _, ok := env[EnvAgentID]; !ok {
		env[EnvAgentID] = spec.ID
	}
	return env, nil
}
