package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// Schedule is one scheduled pool window of a profile (profiles file
// "schedules"): on Days (Mon … Sun; none = every day) from Start to End
// ("HH:MM", local to Timezone, an IANA name; empty = UTC; an End not after
// Start ends the next day) the profile expects Target users. Its fields
// match pool.Window, so pool.Window(s) converts it.
type Schedule struct {
	Days     []string `json:"days,omitempty"`
	Start    string   `json:"start"`
	End      string   `json:"end"`
	Timezone string   `json:"timezone,omitempty"`
	Target   int      `json:"target"`
}

// Adaptive bounds a demand-following pool target (profiles file
// "adaptive"); its fields match pool.Adaptive.
type Adaptive struct {
	Min      int     `json:"min"`
	Max      int     `json:"max"`
	Headroom float64 `json:"headroom,omitempty"`
}

// Policy is a profile's classroom settings from the profiles file.
type Policy struct {
	Schedules []Schedule
	Adaptive  *Adaptive
	// MaxContainers and MaxPerUser: 0 means no limit.
	MaxContainers int
	MaxPerUser    int
}

// IsZero reports whether nothing is set.
func (p Policy) IsZero() bool {
	return len(p.Schedules) == 0 && p.Adaptive == nil && p.MaxContainers == 0 && p.MaxPerUser == 0
}

var scheduleDays = map[string]bool{"mon": true, "tue": true, "wed": true, "thu": true, "fri": true, "sat": true, "sun": true}

func validClock(s string) bool {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(m) != 2 || len(h) < 1 || len(h) > 2 {
		return false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	return err1 == nil && err2 == nil && hh >= 0 && mm >= 0 && mm <= 59 && (hh < 24 || hh == 24 && mm == 0)
}

// validate checks a schedule; the time zone must load (the binary embeds
// time/tzdata, so this works in images without /usr/share/zoneinfo).
func (s Schedule) validate() error {
	for _, d := range s.Days {
		if !scheduleDays[strings.ToLower(d)] {
			return fmt.Errorf("day %q: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", d)
		}
	}
	if !validClock(s.Start) || !validClock(s.End) {
		return fmt.Errorf("start %q and end %q: want HH:MM", s.Start, s.End)
	}
	if s.Start == s.End {
		return fmt.Errorf("start and end are both %s", s.Start)
	}
	if s.Target < 0 {
		return fmt.Errorf("target %d must not be negative", s.Target)
	}
	if s.Timezone != "" {
		if _, err := time.LoadLocation(s.Timezone); err != nil {
			return fmt.Errorf("timezone %q: %v", s.Timezone, err)
		}
	}
	return nil
}

// policy returns e's classroom settings, checked.
func (e profileJSON) policy() (Policy, error) {
	p := Policy{Schedules: e.Schedules, Adaptive: e.Adaptive}
	if e.MaxContainers != nil {
		p.MaxContainers = *e.MaxContainers
	}
	if e.MaxPerUser != nil {
		p.MaxPerUser = *e.MaxPerUser
	}
	for i, s := range p.Schedules {
		if err := s.validate(); err != nil {
			return Policy{}, fmt.Errorf("profile %s: schedules[%d]: %w", e.Name, i, err)
		}
	}
	if a := p.Adaptive; a != nil && (a.Min < 0 || a.Max < a.Min || a.Headroom < 0) {
		return Policy{}, fmt.Errorf("profile %s: adaptive: want 0 <= min <= max and headroom >= 0", e.Name)
	}
	if p.MaxContainers < 0 || p.MaxPerUser < 0 {
		return Policy{}, fmt.Errorf("profile %s: maxContainers and maxPerUser must not be negative", e.Name)
	}
	return p, nil
}

// Policies returns the classroom settings (schedules, adaptive bounds,
// limits) of the profiles that set any, by profile name.
func (c Config) Policies() (map[string]Policy, error) {
	out := map[string]Policy{}
	if c.ProfilesFile == "" {
		return out, nil
	}
	entries, err := readProfilesFile(c.ProfilesFile)
	if err != nil {
		return nil, fmt.Errorf("PROFILES_FILE %s: %w", c.ProfilesFile, err)
	}
	for _, e := range entries {
		p, err := e.policy()
		if err != nil {
			return nil, idepool.WrapError(idepool.EMisconfigured, err, "PROFILES_FILE %s: %v", c.ProfilesFile, err)
		}
		if !p.IsZero() {
			out[e.Name] = p
		}
	}
	return out, nil
}
