package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// profilesFile is the JSON of PROFILES_FILE. Pointer and nil-able fields
// tell "not given" (keep the base profile's value) from a given zero.
type profilesFile struct {
	Profiles []profileJSON `json:"profiles"`
}

type profileJSON struct {
	Name               string             `json:"name"`
	Image              *string            `json:"image"`
	CPULimit           *float64           `json:"cpuLimit"`
	MemoryLimit        *byteSize          `json:"memoryLimit"`
	CPUReservation     *float64           `json:"cpuReservation"`
	MemoryReservation  *byteSize          `json:"memoryReservation"`
	Routes             []idepool.Route    `json:"routes"`
	PoolTarget         *int               `json:"poolTarget"`
	Workloads          []idepool.Workload `json:"workloads"`
	Env                map[string]string  `json:"env"`
	Constraints        []string           `json:"constraints"`
	IdleTimeoutSeconds *int64             `json:"idleTimeoutSeconds"`
	MaxAgeSeconds      *int64             `json:"maxAgeSeconds"`
	// Classroom settings (issue 8): see Policy.
	Schedules     []Schedule `json:"schedules"`
	Adaptive      *Adaptive  `json:"adaptive"`
	MaxContainers *int       `json:"maxContainers"`
	MaxPerUser    *int       `json:"maxPerUser"`
}

// byteSize is a JSON byte count: a number of bytes or a string with a unit
// ("4GiB").
type byteSize int64

func (b *byteSize) UnmarshalJSON(data []byte) error {
	var s string
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
	} else {
		s = string(data)
	}
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// Profiles returns the profile "default" built from the environment
// variables (with the profiles file's "default" entry applied over it),
// then the profiles file's other profiles in file order. A profile other
// than default starts as a copy of the final default with poolTarget 0;
// the fields it gives replace the copy's. Every profile passes
// Profile.Validate. With the process runtime, a default given neither
// workloads nor routes runs c.IDE, the IDE server detected.
func (c Config) Profiles() ([]idepool.Profile, error) {
	def := idepool.Profile{
		Name:        idepool.DefaultProfile,
		Image:       c.Image,
		CPULimit:    c.CPULimit,
		MemoryLimit: c.MemoryLimit,
		Routes:      idepool.DefaultRoutes(),
		PoolTarget:  c.PoolTarget,
		IdleTimeout: c.InactivityTimeout,
	}
	var entries []profileJSON
	if c.ProfilesFile != "" {
		var err error
		if entries, err = readProfilesFile(c.ProfilesFile); err != nil {
			return nil, fmt.Errorf("PROFILES_FILE %s: %w", c.ProfilesFile, err)
		}
	}
	var errs []error
	fail := func(err error) { errs = append(errs, fmt.Errorf("PROFILES_FILE %s: %w", c.ProfilesFile, err)) }
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.Name] {
			fail(fmt.Errorf("profile %q listed twice", e.Name))
		}
		seen[e.Name] = true
		if _, err := e.policy(); err != nil {
			fail(err)
		}
		if e.Name == idepool.DefaultProfile {
			if err := e.applyTo(&def); err != nil {
				fail(err)
			}
		}
	}
	// The detected IDE (EMBEDDED_IDE) serves the process runtime's default
	// profile unless the profiles file gave it workloads or routes of its
	// own; the other profiles, copies of the default, inherit it.
	if c.Runtime == RuntimeProcess && def.Workloads == nil && slices.Equal(def.Routes, idepool.DefaultRoutes()) {
		c.IDE.Apply(&def)
	}
	if err := def.Validate(); err != nil {
		if seen[idepool.DefaultProfile] {
			fail(err)
		} else {
			errs = append(errs, fmt.Errorf("the default profile from the environment: %w", err))
		}
	}
	out := []idepool.Profile{def}
	for _, e := range entries {
		if e.Name == idepool.DefaultProfile {
			continue
		}
		p := cloneProfile(def)
		p.Name, p.PoolTarget = e.Name, 0
		if err := e.applyTo(&p); err != nil {
			fail(err)
			continue
		}
		if err := p.Validate(); err != nil {
			fail(err)
			continue
		}
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func readProfilesFile(path string) ([]profileJSON, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f profilesFile
	if err := dec.Decode(&f); err != nil {
		return nil, jsonError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON object")
	}
	return f.Profiles, nil
}

// jsonError adds the line to the decoder's errors that carry an offset.
func jsonError(data []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return err
	}
	return fmt.Errorf("line %d: %w", 1+bytes.Count(data[:off], []byte("\n")), err)
}

// applyTo replaces p's fields with those e gives.
func (e profileJSON) applyTo(p *idepool.Profile) error {
	if e.Image != nil {
		p.Image = *e.Image
	}
	if e.CPULimit != nil {
		p.CPULimit = *e.CPULimit
	}
	if e.MemoryLimit != nil {
		p.MemoryLimit = int64(*e.MemoryLimit)
	}
	if e.CPUReservation != nil {
		p.CPUReservation = *e.CPUReservation
	}
	if e.MemoryReservation != nil {
		p.MemoryReservation = int64(*e.MemoryReservation)
	}
	if e.Routes != nil {
		p.Routes = slices.Clone(e.Routes)
	}
	if e.PoolTarget != nil {
		p.PoolTarget = *e.PoolTarget
	}
	if e.Workloads != nil {
		p.Workloads = cloneWorkloads(e.Workloads)
	}
	if e.Env != nil {
		for k := range e.Env {
			if !envKeyRE.MatchString(k) || strings.HasPrefix(k, "IDEPOOL_") {
				return fmt.Errorf("profile %s: env %q: want a variable name not starting with IDEPOOL_ (reserved for the agent)", e.Name, k)
			}
		}
		p.Env = maps.Clone(e.Env)
	}
	if e.Constraints != nil {
		p.Constraints = slices.Clone(e.Constraints)
	}
	for _, d := range []struct {
		secs *int64
		to   *time.Duration
		json string
	}{{e.IdleTimeoutSeconds, &p.IdleTimeout, "idleTimeoutSeconds"}, {e.MaxAgeSeconds, &p.MaxAge, "maxAgeSeconds"}} {
		if d.secs == nil {
			continue
		}
		if *d.secs < 0 || *d.secs > int64(100*365*24*time.Hour/time.Second) {
			return fmt.Errorf("profile %s: %s %d: want 0 (never) or a positive number of seconds", e.Name, d.json, *d.secs)
		}
		*d.to = time.Duration(*d.secs) * time.Second
	}
	return nil
}

func cloneProfile(p idepool.Profile) idepool.Profile {
	p.Routes = slices.Clone(p.Routes)
	p.Workloads = cloneWorkloads(p.Workloads)
	p.Env = maps.Clone(p.Env)
	p.Constraints = slices.Clone(p.Constraints)
	return p
}

func cloneWorkloads(ws []idepool.Workload) []idepool.Workload {
	if ws == nil {
		return nil
	}
	out := make([]idepool.Workload, len(ws))
	for i, w := range ws {
		w.Command = slices.Clone(w.Command)
		w.Env = maps.Clone(w.Env)
		out[i] = w
	}
	return out
}
