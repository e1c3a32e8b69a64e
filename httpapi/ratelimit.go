package httpapi

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// RateLimit configures the per-key limit on the container routes
// (/api/containers...), the original's: a fixed window per API key that
// opens at the key's first request.
type RateLimit struct {
	// Requests allowed per window and key; 0 disables the limit.
	Requests int
	// Window is the window's length (default 60 s).
	Window time.Duration
	// MaxKeys bounds the keys tracked (default 10 000). Only keys that
	// passed authentication are tracked, so this is a backstop.
	MaxKeys int
}

const (
	defaultRateWindow = 60 * time.Second
	defaultRateKeys   = 10_000
)

// limiter is a fixed-window counter per key. Idle keys (whose window has
// ended) are swept once per window, so memory follows the active keys.
type limiter struct {
	limit  int
	window time.Duration
	max    int

	mu        sync.Mutex
	entries   map[string]*rateWindow
	lastSweep time.Time
}

type rateWindow struct {
	count  int
	reset  time.Time
	warned bool // a refusal was logged in this window
}

// verdict is the outcome of one request.
type verdict struct {
	allowed   bool
	limit     int
	remaining int
	reset     time.Time
	// retryAfter is whole seconds until reset (at least 1) when refused.
	retryAfter int64
	// first is true for the window's first refusal (logged once).
	first bool
}

func newLimiter(rl RateLimit) *limiter {
	if rl.Requests <= 0 {
		return nil
	}
	if rl.Window <= 0 {
		rl.Window = defaultRateWindow
	}
	if rl.MaxKeys <= 0 {
		rl.MaxKeys = defaultRateKeys
	}
	return &limiter{limit: rl.Requests, window: rl.Window, max: rl.MaxKeys, entries: map[string]*rateWindow{}}
}

// take counts one request of key at now.
func (l *limiter) take(key string, now time.Time) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.window || len(l.entries) >= l.max {
		l.sweep(now)
	}
	e := l.entries[key]
	if e == nil || !now.Before(e.reset) {
		if e == nil && len(l.entries) >= l.max {
			l.evictOldest()
		}
		e = &rateWindow{reset: now.Add(l.window)}
		l.entries[key] = e
	}
	v := verdict{limit: l.limit, reset: e.reset}
	if e.count >= l.limit {
		v.retryAfter = int64((e.reset.Sub(now) + time.Second - 1) / time.Second)
		v.retryAfter = max(v.retryAfter, 1)
		v.first = !e.warned
		e.warned = true
		return v
	}
	e.count++
	v.allowed = true
	v.remaining = l.limit - e.count
	return v
}

// sweep drops every key whose window has ended.
func (l *limiter) sweep(now time.Time) {
	for k, e := range l.entries {
		if !now.Before(e.reset) {
			delete(l.entries, k)
		}
	}
	l.lastSweep = now
}

// evictOldest drops the window that ends first; only reached when MaxKeys
// keys are active at once.
func (l *limiter) evictOldest() {
	var oldest string
	var at time.Time
	for k, e := range l.entries {
		if oldest == "" || e.reset.Before(at) {
			oldest, at = k, e.reset
		}
	}
	delete(l.entries, oldest)
}

func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// rateLimit wraps a container route, inside authentication (KeyID is set).
// Every answer carries X-RateLimit-Limit, -Remaining and -Reset (ISO 8601,
// as the original sent it); a refusal is 429 with Retry-After.
func (s *Server) rateLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := KeyID(r.Context())
		now := s.clock.Now()
		v := s.limiter.take(key, now)
		h := w.Header()
		h.Set("X-RateLimit-Limit", strconv.Itoa(v.limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(v.remaining))
		h.Set("X-RateLimit-Reset", timestamp(v.reset))
		if v.allowed {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Retry-After", strconv.FormatInt(v.retryAfter, 10))
		if v.first {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "rate limit exceeded",
				slog.String("key", key), slog.Int("limit", v.limit), slog.String("reset", timestamp(v.reset)),
				slog.String("request_id", RequestID(r.Context())))
		}
		s.writeError(w, r, &idepool.Error{
			Code:    idepool.ERateLimited,
			Message: "Too many requests. Please try again later.",
			Details: map[string]any{"retryAfter": v.retryAfter, "resetTime": timestamp(v.reset), "limit": v.limit},
		})
	})
}
