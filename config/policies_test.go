package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestPoliciesFromProfilesFile(t *testing.T) {
	c := profilesConfig(t, `{"profiles": [
	  {"name": "default", "maxPerUser": 2},
	  {"name": "lab", "poolTarget": 5, "maxContainers": 320,
	   "schedules": [{"days": ["Mon", "Wed"], "start": "09:50", "end": "11:30", "timezone": "Europe/Berlin", "target": 320}],
	   "adaptive": {"min": 2, "max": 40, "headroom": 0.5}},
	  {"name": "plain"}
	]}`)
	if _, err := c.Profiles(); err != nil {
		t.Fatal(err)
	}
	got, err := c.Policies()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Policy{
		"default": {MaxPerUser: 2},
		"lab": {MaxContainers: 320, Adaptive: &Adaptive{Min: 2, Max: 40, Headroom: 0.5},
			Schedules: []Schedule{{Days: []string{"Mon", "Wed"}, Start: "09:50", End: "11:30", Timezone: "Europe/Berlin", Target: 320}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if none, err := profilesConfig(t, "").Policies(); err != nil || len(none) != 0 {
		t.Fatalf("no file: %v %v", none, err)
	}
}

func TestPoliciesInvalid(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"name": "a", "schedules": [{"days": ["Funday"], "start": "09:00", "end": "10:00", "target": 1}]}`, "day"},
		{`{"name": "a", "schedules": [{"start": "9", "end": "10:00", "target": 1}]}`, "HH:MM"},
		{`{"name": "a", "schedules": [{"start": "09:00", "end": "10:00", "timezone": "Mars/Olympus", "target": 1}]}`, "timezone"},
		{`{"name": "a", "schedules": [{"start": "09:00", "end": "10:00", "target": -1}]}`, "negative"},
		{`{"name": "a", "adaptive": {"min": 5, "max": 1}}`, "adaptive"},
		{`{"name": "a", "maxPerUser": -1}`, "negative"},
	} {
		cfg := profilesConfig(t, `{"profiles": [`+c.json+`]}`)
		_, err := cfg.Profiles()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Profiles error %v, want %q", c.json, err, c.want)
		}
		if _, err := cfg.Policies(); err == nil {
			t.Errorf("%s: Policies accepted it", c.json)
		}
	}
}
