package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/idepool/idepool"
)

// CookieName is the dashboard's session cookie.
const CookieName = "idepool_dashboard"

// KeyChecker returns a CheckKey func accepting any of keys. It compares
// SHA-256 digests in constant time and looks at every key, so neither the
// answer's timing nor its order tells which key (or how much of one) matched.
func KeyChecker(keys []string) func(string) bool {
	var sums [][32]byte
	for _, k := range keys {
		if k != "" {
			sums = append(sums, sha256.Sum256([]byte(k)))
		}
	}
	return func(candidate string) bool {
		if candidate == "" {
			return false
		}
		c := sha256.Sum256([]byte(candidate))
		ok := 0
		for i := range sums {
			ok |= subtle.ConstantTimeCompare(c[:], sums[i][:])
		}
		return ok == 1
	}
}

// keyID is a short, non-secret name of an API key for the audit log (the
// same scheme as the REST API's: 8 bytes of its SHA-256, hex).
func keyID(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:8])
}

// session is one signed-in browser. The cookie holds a random id; the map
// is keyed by the id's SHA-256, so a lookup reveals nothing through timing.
type session struct {
	hash    string // hex SHA-256 of the cookie value
	csrf    string
	keyID   string
	created time.Time
	expires time.Time
}

// short names the session in logs without revealing the cookie.
func (s *session) short() string { return s.hash[:12] }

// sessions is the server-side session store: bounded, with expiry.
type sessions struct {
	clock idepool.Clock
	ttl   time.Duration
	max   int

	mu sync.Mutex
	m  map[string]*session
}

func newSessions(clock idepool.Clock, ttl time.Duration, max int) *sessions {
	return &sessions{clock: clock, ttl: ttl, max: max, m: map[string]*session{}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

func hashValue(v string) string {
	s := sha256.Sum256([]byte(v))
	return hex.EncodeToString(s[:])
}

// create starts a session and returns it with the cookie value.
func (ss *sessions) create(keyID string) (*session, string) {
	value := randomHex(32)
	now := ss.clock.Now()
	s := &session{hash: hashValue(value), csrf: randomHex(32), keyID: keyID, created: now, expires: now.Add(ss.ttl)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.purgeLocked(now)
	for len(ss.m) >= ss.max {
		// Full: drop the oldest session rather than refuse a sign-in.
		var oldest *session
		for _, o := range ss.m {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(ss.m, oldest.hash)
	}
	ss.m[s.hash] = s
	return s, value
}

func (ss *sessions) purgeLocked(now time.Time) {
	for h, s := range ss.m {
		if !now.Before(s.expires) {
			delete(ss.m, h)
		}
	}
}

// get returns the live session of a cookie value.
func (ss *sessions) get(value string) (*session, bool) {
	if len(value) != 64 {
		return nil, false
	}
	h := hashValue(value)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[h]
	if !ok {
		return nil, false
	}
	if !ss.clock.Now().Before(s.expires) {
		delete(ss.m, h)
		return nil, false
	}
	return s, true
}

// valid reports whether s is still signed in (streams check it as they go).
func (ss *sessions) valid(s *session) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cur, ok := ss.m[s.hash]
	return ok && cur == s && ss.clock.Now().Before(s.expires)
}

func (ss *sessions) remove(s *session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, s.hash)
}

func (ss *sessions) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// secureRequest reports whether the browser reached us over HTTPS (directly
// or through a proxy that says so); the cookie is then Secure.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func sessionCookie(r *http.Request, value string, maxAge time.Duration) *http.Cookie {
	return &http.Cookie{
		Name: CookieName, Value: value, Path: Prefix, MaxAge: int(maxAge.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r),
	}
}

func clearCookie(r *http.Request) *http.Cookie {
	return &http.Cookie{Name: CookieName, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)}
}

// checkCSRF accepts the session's token from the form field "csrf" or the
// header X-CSRF-Token.
func checkCSRF(r *http.Request, s *session) bool {
	t := r.Header.Get("X-CSRF-Token")
	if t == "" {
		t = r.PostFormValue("csrf")
	}
	return t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(s.csrf)) == 1
}
