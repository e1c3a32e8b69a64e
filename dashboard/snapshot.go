package dashboard

import (
	"context"
	"fmt"
	"html/template"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idepool/idepool"
	"github.com/idepool/idepool/internal/human"
)

// snapshot is what a live view shows at one moment.
type snapshot struct {
	Time       time.Time       `json:"time"`
	Pools      []poolView      `json:"pools"`
	Containers []containerView `json:"containers"`
	// Total is the true number of live containers (Containers may hold
	// fewer: the first maxListed).
	Total     int        `json:"total"`
	Resources []Resource `json:"resources"`
	Error     string     `json:"error,omitempty"`
}

type poolView struct {
	idepool.PoolStatus
	Chart chart `json:"chart"`
}

type containerView struct {
	ID           string `json:"id"`
	Profile      string `json:"profile"`
	State        string `json:"state"`
	Workspace    string `json:"workspace"`
	User         string `json:"user"`
	Age          string `json:"age"`
	LastActivity string `json:"lastActivity"`
	Health       string `json:"health"`
	Node         string `json:"node,omitempty"`
	Message      string `json:"message,omitempty"`
}

// maxListed bounds the containers one snapshot carries.
const maxListed = 500

func (d *Dashboard) snapshot(ctx context.Context) snapshot {
	now := d.clock.Now()
	s := snapshot{Time: now, Pools: []poolView{}, Containers: []containerView{}, Resources: []Resource{}}
	pools := d.o.Orchestrator.Pools()
	sort.Slice(pools, func(i, j int) bool { return pools[i].Profile < pools[j].Profile })
	for _, p := range pools {
		s.Pools = append(s.Pools, poolView{PoolStatus: p, Chart: d.charts.chart(p.Profile, now, d.o.History)})
	}
	cs, total, err := d.o.Orchestrator.List(ctx, idepool.ContainerFilter{Limit: maxListed})
	if err != nil {
		s.Error = "containers: " + idepool.ErrorMessage(err)
	}
	s.Total = total
	// Claimed ones first, then the newest: what people look for.
	sort.SliceStable(cs, func(i, j int) bool {
		ci, cj := cs[i].State.Claimed(), cs[j].State.Claimed()
		if ci != cj {
			return ci
		}
		return cs[i].CreatedAt.After(cs[j].CreatedAt)
	})
	for _, c := range cs {
		v := containerView{ID: c.ID, Profile: c.Profile, State: string(c.State), Workspace: "-", User: c.UserID,
			Age: since(now, c.CreatedAt), LastActivity: since(now, c.LastActivity), Health: string(c.Health.Status),
			Node: c.Node, Message: c.Message}
		if c.Workspace != nil {
			v.Workspace = c.Workspace.Bucket + "/" + idepool.NormalizePrefix(c.Workspace.Prefix)
		}
		if v.User == "" {
			v.User = "-"
		}
		if v.Health == "" {
			v.Health = string(idepool.HealthUnknown)
		}
		s.Containers = append(s.Containers, v)
	}
	if d.o.Resources != nil {
		if rs := d.o.Resources(ctx); rs != nil {
			s.Resources = rs
		}
	}
	return s
}

// since formats the time from t to now for people ("45s", "3m", "2h5m").
func since(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return human.Duration(now.Sub(t))
}

// sample is one profile's pool at one moment.
type sample struct {
	t                               time.Time
	target, warm, starting, claimed int
}

// ring keeps the last len(buf) samples of one profile.
type ring struct {
	buf  []sample
	next int
	n    int
}

func (r *ring) add(s sample) {
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.n < len(r.buf) {
		r.n++
	}
}

// each calls f on the samples, oldest first.
func (r *ring) each(f func(sample)) {
	start := (r.next - r.n + len(r.buf)) % len(r.buf)
	for i := range r.n {
		f(r.buf[(start+i)%len(r.buf)])
	}
}

// history holds every profile's ring.
type history struct {
	size int
	mu   sync.Mutex
	m    map[string]*ring
}

func newHistory(size int) *history {
	if size < 2 {
		size = 2
	}
	return &history{size: size, m: map[string]*ring{}}
}

func (h *history) add(profile string, s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.m[profile]
	if r == nil {
		r = &ring{buf: make([]sample, h.size)}
		h.m[profile] = r
	}
	r.add(s)
}

// Chart geometry: one unit per sample slot of the default 10 s over an
// hour; the SVG scales.
const (
	chartW = 360
	chartH = 48
)

// chart is a profile's pool over the last hour as SVG polyline points
// (viewBox 0 0 360 48), one line per series.
type chart struct {
	Target   string `json:"target"`
	Warm     string `json:"warm"`
	Starting string `json:"starting"`
	Claimed  string `json:"claimed"`
	Max      int    `json:"max"`
	Samples  int    `json:"samples"`
}

func (h *history) chart(profile string, now time.Time, span time.Duration) chart {
	h.mu.Lock()
	defer h.mu.Unlock()
	var c chart
	r := h.m[profile]
	if r == nil {
		return c
	}
	var ss []sample
	r.each(func(s sample) {
		if now.Sub(s.t) <= span {
			ss = append(ss, s)
		}
	})
	c.Samples = len(ss)
	c.Max = 1
	for _, s := range ss {
		c.Max = max(c.Max, s.target, s.warm, s.starting, s.claimed)
	}
	var tg, wm, st, cl strings.Builder
	for _, s := range ss {
		x := chartW - float64(now.Sub(s.t))/float64(span)*chartW
		pt := func(b *strings.Builder, v int) {
			y := chartH - 2 - float64(v)/float64(c.Max)*(chartH-4)
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatFloat(x, 'f', 1, 64))
			b.WriteByte(',')
			b.WriteString(strconv.FormatFloat(y, 'f', 1, 64))
		}
		pt(&tg, s.target)
		pt(&wm, s.warm)
		pt(&st, s.starting)
		pt(&cl, s.claimed)
	}
	c.Target, c.Warm, c.Starting, c.Claimed = tg.String(), wm.String(), st.String(), cl.String()
	return c
}

// sampleOnce records every pool once.
func (d *Dashboard) sampleOnce() {
	now := d.clock.Now()
	for _, p := range d.o.Orchestrator.Pools() {
		d.charts.add(p.Profile, sample{t: now, target: p.Target, warm: p.Warm, starting: p.Starting, claimed: p.Claimed})
	}
}

// Run samples the pools for the charts every SampleEvery until ctx ends,
// then ends the live views (Close). Without it the charts stay empty;
// everything else works.
func (d *Dashboard) Run(ctx context.Context) error {
	d.sampleOnce()
	t := time.NewTicker(d.o.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.Close()
			return nil
		case <-t.C:
			d.sampleOnce()
		}
	}
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"bytes": func(n int64) string {
		if n <= 0 {
			return "-"
		}
		const unit = 1024
		if n < unit {
			return fmt.Sprintf("%d B", n)
		}
		div, exp := int64(unit), 0
		for m := n / unit; m >= unit && exp < 4; m /= unit {
			div *= unit
			exp++
		}
		return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
	},
	"percent": func(used, total int64) string {
		if total <= 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f%%)", float64(used)/float64(total)*100)
	},
	// cpu shows "37% of 2 cores"; without a core count nothing is known.
	"cpu": func(pct, cores float64) string {
		if cores <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f%% of %s cores", pct, strconv.FormatFloat(cores, 'f', -1, 64))
	},
	"num": func(f float64) string {
		if f == 0 {
			return "-"
		}
		return strconv.FormatFloat(f, 'f', -1, 64)
	},
}
