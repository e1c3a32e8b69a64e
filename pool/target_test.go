package pool

import (
	"reflect"
	"testing"
	"time"
)

func TestParseWindow(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Window
		bad  bool
	}{
		{in: "Mon,Wed 09:50-11:30 Europe/Berlin: 320", want: Window{Days: []string{"Mon", "Wed"}, Start: "09:50", End: "11:30", Timezone: "Europe/Berlin", Target: 320}},
		{in: "Mon,Wed 09:50–11:30 Europe/Berlin: 320", want: Window{Days: []string{"Mon", "Wed"}, Start: "09:50", End: "11:30", Timezone: "Europe/Berlin", Target: 320}},
		{in: "daily 22:00-02:00: 5", want: Window{Start: "22:00", End: "02:00", Target: 5}},
		{in: "Fri 08:00-09:00 UTC:0", want: Window{Days: []string{"Fri"}, Start: "08:00", End: "09:00", Timezone: "UTC", Target: 0}},
		{in: "Mon 09:50-11:30 Mars/Olympus: 3", bad: true},
		{in: "Funday 09:50-11:30: 3", bad: true},
		{in: "Mon 25:00-11:30: 3", bad: true},
		{in: "Mon 09:50-09:50: 3", bad: true},
		{in: "Mon 09:50-11:30: -3", bad: true},
		{in: "Mon 09:50-11:30", bad: true},
		{in: "", bad: true},
	} {
		got, err := ParseWindow(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: no error", c.in)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if again, err := ParseWindow(got.String()); err != nil || again.Target != got.Target || again.Start != got.Start {
			t.Errorf("%q: String() %q does not parse back: %v", c.in, got.String(), err)
		}
	}
}

func TestLeadTime(t *testing.T) {
	for _, c := range []struct {
		n, parallel int
		create      time.Duration
		want        time.Duration
	}{
		{0, 8, time.Second, 0},
		{1, 8, 2 * time.Second, MinLead},
		{320, 8, 10 * time.Second, 40 * 10 * time.Second * 3 / 2},
		{320, 0, time.Second, 320 * time.Second * 3 / 2},
	} {
		if got := LeadTime(c.n, c.parallel, c.create); got != c.want {
			t.Errorf("LeadTime(%d, %d, %s) = %s, want %s", c.n, c.parallel, c.create, got, c.want)
		}
	}
}

func TestAdaptiveTarget(t *testing.T) {
	a := Adaptive{Min: 2, Max: 50}
	for _, c := range []struct {
		rate   float64
		create time.Duration
		want   int
	}{
		{0, 30 * time.Second, 2},               // quiet: the minimum
		{0.1, 30 * time.Second, 4},             // 3 × 1.25 = 3.75 → 4
		{1, 30 * time.Second, 38},              // 30 × 1.25 = 37.5 → 38
		{5, 30 * time.Second, 50},              // capped
		{1, 0, 2},                              // no create time known: minimum
		{2, 1500 * time.Millisecond, 4},        // 3 × 1.25 = 3.75 → 4
		{2.5, 1500 * time.Millisecond, 5},      // 3.75 × 1.25 = 4.69 → 5
		{100, 1500 * time.Millisecond, 50},     // burst: capped at max
		{0.01, 1500 * time.Millisecond, 2},     // a trickle: the minimum
		{1, 10 * time.Second, 13},              // 12.5 → 13
		{1.0 / 60, 60 * time.Second, 2},        // one a minute, a minute each: 1.25 → 2
		{10.0 / 60, 120 * time.Second, 25},     // 20 × 1.25 = 25
		{10.0 / 60, 120 * time.Second / 2, 13}, // 10 × 1.25 = 12.5 → 13
	} {
		if got := AdaptiveTarget(a, c.rate, c.create); got != c.want {
			t.Errorf("AdaptiveTarget(rate %g, create %s) = %d, want %d", c.rate, c.create, got, c.want)
		}
	}
	if got := AdaptiveTarget(Adaptive{Min: 0, Max: 100, Headroom: 1}, 1, 10*time.Second); got != 20 {
		t.Errorf("headroom 100%%: %d, want 20", got)
	}
}

func TestRateEWMA(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tau := time.Minute
	var r rateEWMA
	if r.at(t0, tau) != 0 {
		t.Fatal("empty rate not zero")
	}
	// One claim a second for ten minutes: the rate settles at 1/s.
	for i := range 600 {
		r.add(t0.Add(time.Duration(i)*time.Second), tau)
	}
	if got := r.at(t0.Add(600*time.Second), tau); got < 0.95 || got > 1.05 {
		t.Fatalf("steady rate = %g, want about 1", got)
	}
	// Ten quiet minutes later it has all but gone.
	if got := r.at(t0.Add(20*time.Minute), tau); got > 0.001 {
		t.Fatalf("rate after quiet = %g", got)
	}
}

func TestQueueEstimate(t *testing.T) {
	c := 2 * time.Second
	for _, x := range []struct {
		pos, inFlight, parallel int
		want                    time.Duration
	}{
		{0, 0, 8, 0},
		{1, 1, 8, c},
		{5, 10, 8, c},
		{11, 10, 8, 2 * c},
		{19, 10, 8, 3 * c},
		{3, 0, 0, 4 * c},
	} {
		if got := QueueEstimate(x.pos, x.inFlight, x.parallel, c); got != x.want {
			t.Errorf("QueueEstimate(%d, %d, %d) = %s, want %s", x.pos, x.inFlight, x.parallel, got, x.want)
		}
	}
}

func TestEffectiveTarget(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// Monday 30 Nov 2026 (CET, UTC+1). The class opens at 09:50 Berlin.
	at := func(hhmm string) time.Time {
		tt, err := time.ParseInLocation("2006-01-02 15:04:05", "2026-11-30 "+hhmm, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return tt
	}
	class := Window{Days: []string{"Mon", "Wed"}, Start: "09:50", End: "11:30", Timezone: "Europe/Berlin", Target: 320}
	night := Window{Start: "22:00", End: "02:00", Target: 7} // daily, across midnight, UTC
	create := 10 * time.Second
	lead := LeadTime(320, 8, create) // 40 rounds × 10 s × 1.5 = 10 min
	if lead != 10*time.Minute {
		t.Fatalf("lead = %s", lead)
	}
	claimed := func(n int, at time.Time) []time.Time {
		out := make([]time.Time, n)
		for i := range out {
			out[i] = at
		}
		return out
	}
	for _, c := range []struct {
		name      string
		in        TargetInput
		want      int
		reason    string
		nextAfter time.Time // NextChange must equal this (zero: not checked)
	}{
		{"before the lead: base", TargetInput{Now: at("09:39:59"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8, Capacity: -1},
			5, "base", at("09:40:00")},
		{"lead starts: the window's target", TargetInput{Now: at("09:40:00"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8, Capacity: -1},
			320, "schedule", at("11:30:00")},
		{"open", TargetInput{Now: at("10:00:00"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8, Capacity: -1},
			320, "schedule", time.Time{}},
		{"open, 300 claimed since the lead: 20 more", TargetInput{Now: at("10:00:00"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8,
			ClaimedAt: claimed(300, at("09:55:00")), Capacity: -1}, 20, "schedule", time.Time{}},
		{"claims of an earlier class do not count", TargetInput{Now: at("10:00:00"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8,
			ClaimedAt: claimed(300, at("08:00:00")), Capacity: -1}, 320, "schedule", time.Time{}},
		{"everyone came: base is the floor", TargetInput{Now: at("10:00:00"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8,
			ClaimedAt: claimed(330, at("09:55:00")), Capacity: -1}, 5, "base", time.Time{}},
		{"after the window: base again", TargetInput{Now: at("11:30:00"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8, Capacity: -1},
			5, "base", time.Time{}},
		{"Tuesday: no window", TargetInput{Now: at("10:00:00").AddDate(0, 0, 1), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8, Capacity: -1},
			5, "base", time.Time{}},
		{"Wednesday: the window again", TargetInput{Now: at("10:00:00").AddDate(0, 0, 2), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8, Capacity: -1},
			320, "schedule", time.Time{}},
		{"capacity caps", TargetInput{Now: at("10:00:00"), Base: 5, Windows: []Window{class}, CreateDuration: create, Parallel: 8, Capacity: 100},
			100, "schedule", time.Time{}},
		{"slow creates start earlier", TargetInput{Now: at("09:00:00"), Base: 5, Windows: []Window{class}, CreateDuration: time.Minute, Parallel: 8, Capacity: -1},
			320, "schedule", time.Time{}},
		{"across midnight, after midnight", TargetInput{Now: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC), Base: 1, Windows: []Window{night}, CreateDuration: create, Parallel: 8, Capacity: -1},
			7, "schedule", time.Time{}},
		{"across midnight, afternoon", TargetInput{Now: time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC), Base: 1, Windows: []Window{night}, CreateDuration: create, Parallel: 8, Capacity: -1},
			1, "base", time.Date(2026, 11, 30, 21, 59, 0, 0, time.UTC)},
		{"adaptive floor under a window", TargetInput{Now: at("10:00:00"), Base: 5, Windows: []Window{class}, Adaptive: &Adaptive{Min: 1, Max: 400}, ClaimRate: 20,
			CreateDuration: create, Parallel: 8, Capacity: -1}, 320, "schedule", time.Time{}},
		{"adaptive replaces base", TargetInput{Now: at("12:00:00"), Base: 5, Adaptive: &Adaptive{Min: 1, Max: 400}, ClaimRate: 1,
			CreateDuration: create, Parallel: 8, Capacity: -1}, 13, "adaptive", time.Time{}},
		{"zero capacity", TargetInput{Now: at("12:00:00"), Base: 5, Capacity: 0}, 0, "base", time.Time{}},
	} {
		got := EffectiveTarget(c.in)
		if got.Target != c.want || got.Reason != c.reason {
			t.Errorf("%s: target %d (%s), want %d (%s)", c.name, got.Target, got.Reason, c.want, c.reason)
		}
		if !c.nextAfter.IsZero() && !got.NextChange.Equal(c.nextAfter) {
			t.Errorf("%s: next change %s, want %s", c.name, got.NextChange, c.nextAfter)
		}
		if got.Reason == "schedule" && got.Window == nil {
			t.Errorf("%s: schedule without its window", c.name)
		}
		if again := EffectiveTarget(c.in); !reflect.DeepEqual(again, got) {
			t.Errorf("%s: not pure", c.name)
		}
	}
}
