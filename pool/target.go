package pool

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/idepool/idepool"
)

// Window is a scheduled pool window: on Days, from Start to End in
// Timezone, the profile should hold Target containers for that window's
// users. The pool reaches it before Start (see EffectiveTarget) and shrinks
// back after End. Its JSON is the profiles file's "schedules" entry:
//
//	{"days": ["Mon", "Wed"], "start": "09:50", "end": "11:30", "timezone": "Europe/Berlin", "target": 320}
type Window struct {
	// Days are "Mon" … "Sun"; empty means every day.
	Days []string `json:"days,omitempty"`
	// Start and End are "HH:MM" local times; an End not after Start ends
	// the next day.
	Start string `json:"start"`
	End   string `json:"end"`
	// Timezone is an IANA name ("Europe/Berlin"); empty means UTC.
	Timezone string `json:"timezone,omitempty"`
	Target   int    `json:"target"`
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// window is a Window checked and compiled.
type window struct {
	w          Window
	days       [7]bool
	start, end int // minutes after midnight
	loc        *time.Location
}

func parseClock(s string) (int, bool) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(m) != 2 || len(h) < 1 || len(h) > 2 {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, false
	}
	return hh*60 + mm, true
}

func (w Window) compile() (window, error) {
	c := window{w: w}
	bad := func(format string, a ...any) (window, error) {
		return window{}, idepool.Errorf(idepool.EInvalid, "schedule window: "+format, a...)
	}
	if len(w.Days) == 0 {
		c.days = [7]bool{true, true, true, true, true, true, true}
	}
	for _, d := range w.Days {
		wd, ok := weekdays[strings.ToLower(strings.TrimSpace(d))]
		if !ok {
			return bad("day %q: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", d)
		}
		c.days[wd] = true
	}
	var ok bool
	if c.start, ok = parseClock(w.Start); !ok {
		return bad("start %q: want HH:MM", w.Start)
	}
	if c.end, ok = parseClock(w.End); !ok {
		return bad("end %q: want HH:MM", w.End)
	}
	if c.start == c.end {
		return bad("start and end are both %s", w.Start)
	}
	if w.Target < 0 {
		return bad("target must not be negative")
	}
	c.loc = time.UTC
	if w.Timezone != "" {
		loc, err := time.LoadLocation(w.Timezone)
		if err != nil {
			return bad("timezone %q: %v", w.Timezone, err)
		}
		c.loc = loc
	}
	return c, nil
}

// Validate reports the first thing wrong with w (unknown day, bad time,
// unknown time zone, negative target).
func (w Window) Validate() error {
	_, err := w.compile()
	return err
}

// String is the short form ParseWindow reads.
func (w Window) String() string {
	days := "daily"
	if len(w.Days) > 0 {
		days = strings.Join(w.Days, ",")
	}
	tz := w.Timezone
	if tz == "" {
		tz = "UTC"
	}
	return fmt.Sprintf("%s %s-%s %s: %d", days, w.Start, w.End, tz, w.Target)
}

// ParseWindow reads the short form "Mon,Wed 09:50-11:30 Europe/Berlin: 320"
// (an en dash works too; "daily" for every day; the zone may be left out
// for UTC).
func ParseWindow(s string) (Window, error) {
	bad := func() (Window, error) {
		return Window{}, idepool.Errorf(idepool.EInvalid, "schedule %q: want \"Mon,Wed 09:50-11:30 Europe/Berlin: 320\"", s)
	}
	// The times hold colons too: the target follows the last one.
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return bad()
	}
	spec, target := s[:i], s[i+1:]
	n, err := strconv.Atoi(strings.TrimSpace(target))
	if err != nil {
		return bad()
	}
	f := strings.Fields(strings.ReplaceAll(spec, "–", "-"))
	if len(f) < 2 || len(f) > 3 {
		return bad()
	}
	w := Window{Target: n}
	if !strings.EqualFold(f[0], "daily") {
		w.Days = strings.Split(f[0], ",")
	}
	var found bool
	if w.Start, w.End, found = strings.Cut(f[1], "-"); !found {
		return bad()
	}
	if len(f) == 3 {
		w.Timezone = f[2]
	}
	if err := w.Validate(); err != nil {
		return Window{}, err
	}
	return w, nil
}

// occurrence is one opening of a window.
type occurrence struct {
	open, close time.Time
	target      int
}

// occurrences returns the window's openings that overlap [from, to].
func (c window) occurrences(from, to time.Time) []occurrence {
	var out []occurrence
	local := from.In(c.loc)
	day := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, c.loc).AddDate(0, 0, -1)
	for i := 0; i < 400; i++ { // bounded: a year of days at most
		d := day.AddDate(0, 0, i)
		if d.After(to) {
			break
		}
		if !c.days[d.Weekday()] {
			continue
		}
		open := time.Date(d.Year(), d.Month(), d.Day(), c.start/60, c.start%60, 0, 0, c.loc)
		endDay := d
		if c.end <= c.start {
			endDay = d.AddDate(0, 0, 1)
		}
		cl := time.Date(endDay.Year(), endDay.Month(), endDay.Day(), c.end/60, c.end%60, 0, 0, c.loc)
		if cl.After(from) && !open.After(to) {
			out = append(out, occurrence{open: open, close: cl, target: c.w.Target})
		}
	}
	return out
}

// Adaptive lets a pool's target follow demand between Min and Max: the
// smoothed claim rate times the time a create takes, plus Headroom.
type Adaptive struct {
	Min int `json:"min"`
	Max int `json:"max"`
	// Headroom is a fraction added on top (0.25 = 25 %); zero means 0.25.
	Headroom float64 `json:"headroom,omitempty"`
}

// Validate checks the bounds.
func (a Adaptive) Validate() error {
	if a.Min < 0 || a.Max < a.Min || a.Headroom < 0 {
		return idepool.Errorf(idepool.EInvalid, "adaptive pool: want 0 <= min <= max and headroom >= 0 (got min %d, max %d, headroom %g)", a.Min, a.Max, a.Headroom)
	}
	return nil
}

// AdaptiveTarget is the demand-following target: ceil(rate × create ×
// (1+headroom)), kept between Min and Max. rate is claims per second.
func AdaptiveTarget(a Adaptive, rate float64, create time.Duration) int {
	h := a.Headroom
	if h <= 0 {
		h = 0.25
	}
	n := 0
	if rate > 0 && create > 0 {
		n = int(math.Ceil(rate * create.Seconds() * (1 + h)))
	}
	return min(max(n, a.Min), a.Max)
}

// Lead-time margins: a window's containers are asked for this much earlier
// than a create of all of them would take here, and at least MinLead before.
const (
	LeadMargin = 1.5
	MinLead    = time.Minute
)

// LeadTime is how long before a window opens the pool starts growing for n
// more containers: creating them parallel at a time, each taking create,
// times LeadMargin, and at least MinLead.
func LeadTime(n, parallel int, create time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	parallel = max(parallel, 1)
	rounds := (n + parallel - 1) / parallel
	d := time.Duration(float64(create) * float64(rounds) * LeadMargin)
	return max(d, MinLead)
}

// TargetInput is everything the effective target of one pool depends on.
type TargetInput struct {
	Now time.Time
	// Base is the configured (or API-set) target.
	Base     int
	Windows  []Window
	Adaptive *Adaptive
	// ClaimRate is the smoothed claim rate, per second.
	ClaimRate float64
	// CreateDuration is how long a create takes to become warm here
	// (measured); Parallel how many run at once.
	CreateDuration time.Duration
	Parallel       int
	// ClaimedAt are the claim times of the profile's live claimed
	// containers: those claimed since a window began filling count as that
	// window's users already served.
	ClaimedAt []time.Time
	// Capacity is the most warm containers the profile may hold (its
	// maximum minus what is claimed); -1 means no limit.
	Capacity int
}

// TargetResult is the effective target and why.
type TargetResult struct {
	Target int
	// Reason: "base", "adaptive" or "schedule".
	Reason string
	// Window is the window in force (or filling), if any.
	Window *Window
	// NextChange is when the answer may change by the clock alone (a
	// window starting to fill or closing); zero means never.
	NextChange time.Time
}

// EffectiveTarget computes a pool's warm target. It is pure.
//
// The base target, or the adaptive one when set, is the floor. A window in
// force, or opening within its lead time (how long creating its containers
// takes here, see LeadTime), raises the target to the window's Target minus
// the containers already claimed since it began filling: a window's number
// is how many users it expects, and claimed ones no longer need a warm
// container. After the window closes the target falls back and the pool
// shrinks. Capacity caps the result.
func EffectiveTarget(in TargetInput) TargetResult {
	res := TargetResult{Target: max(in.Base, 0), Reason: "base"}
	if in.Adaptive != nil {
		res.Target, res.Reason = AdaptiveTarget(*in.Adaptive, in.ClaimRate, in.CreateDuration), "adaptive"
	}
	next := func(t time.Time) {
		if t.After(in.Now) && (res.NextChange.IsZero() || t.Before(res.NextChange)) {
			res.NextChange = t
		}
	}
	for i := range in.Windows {
		c, err := in.Windows[i].compile()
		if err != nil {
			continue // validated on the way in; never let one break the pool
		}
		lead := LeadTime(c.w.Target, in.Parallel, in.CreateDuration)
		for _, o := range c.occurrences(in.Now, in.Now.Add(lead+8*24*time.Hour)) {
			fill := o.open.Add(-lead)
			next(fill)
			next(o.close)
			if in.Now.Before(fill) || !in.Now.Before(o.close) {
				continue
			}
			served := 0
			for _, t := range in.ClaimedAt {
				if !t.Before(fill) {
					served++
				}
			}
			if n := max(o.target-served, 0); n > res.Target || (res.Reason != "schedule" && n == res.Target) {
				res.Target, res.Reason = n, "schedule"
				w := in.Windows[i]
				w.Days = slices.Clone(w.Days)
				res.Window = &w
			}
		}
	}
	if in.Capacity >= 0 && res.Target > in.Capacity {
		res.Target = in.Capacity
	}
	return res
}

// rateEWMA is an exponentially smoothed event rate (events per second)
// with time constant tau.
type rateEWMA struct {
	rate float64
	last time.Time
}

func (r rateEWMA) at(now time.Time, tau time.Duration) float64 {
	if r.last.IsZero() || tau <= 0 {
		return 0
	}
	dt := now.Sub(r.last).Seconds()
	if dt < 0 {
		dt = 0
	}
	return r.rate * math.Exp(-dt/tau.Seconds())
}

func (r *rateEWMA) add(now time.Time, tau time.Duration) {
	if tau <= 0 {
		return
	}
	r.rate = r.at(now, tau) + 1/tau.Seconds()
	r.last = now
}
